/// @file um3_images.hpp
/// @brief The QLIP side of UM³ inference: codes → pixels (the QLIP decoder), pixels → the linear
///        probe's features (post-LayerNorm CLS of the QLIP encoder), and the probe itself, fit on
///        real Fashion-MNIST training images, which classifies generated images (prompt following).
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "cli/progress.hpp"
#include "qlip/eval/linear_probe.hpp"
#include "qlip/io/image.hpp"
#include "um3/um3_files.hpp"

namespace qlip::um3_cli {

/// Decoded images of `count` code rows (CLIP-normalised pixels [count, 3, S, S]) and, when
/// `images` is given, their 8-bit pictures.
inline Tensor<float, 4> decode_codes(const DemoQlip& qlip, std::span<const std::uint32_t> codes, std::int64_t count,
                                     const ClipPreprocessConfig& pre, std::vector<Image>* images) {
  const int s = DemoQlip::image_size();
  const std::int64_t batch = std::min<std::int64_t>(100, count);
  Tensor<float, 4> out({count, 3, s, s});
  Arena ws(DemoQlip::decode_workspace_bytes(batch));
  for (std::int64_t first = 0; first < count; first += batch) {
    const std::int64_t n = std::min(batch, count - first);
    ArenaScope scope(ws);
    const Decoding dec =
        qlip.decode(ws, HostView<const std::uint32_t, 2>(codes.data() + first * kPatches, {n, kPatches}));
    std::copy_n(dec.pixels.data(), dec.pixels.numel(), out.data() + first * 3 * s * s);
  }
  if (images)
    for (std::int64_t i = 0; i < count; ++i)
      images->push_back(postprocess_clip(HostView<const float, 4>(out.view()).select(0, i), pre.mean, pre.std));
  return out;
}

/// The probe's features [count, width] of CLIP-normalised pixels.
inline Tensor<float, 2> probe_features(const DemoQlip& qlip, HostView<const float, 4> pixels) {
  const std::int64_t count = pixels.size(0), batch = std::min<std::int64_t>(250, count);
  ImageEncodeOptions opt;
  opt.quantize = false;
  Arena ws(DemoQlip::encode_image_workspace_bytes(batch, opt));
  Tensor<float, 2> out({count, DemoQlip::kVisionWidth});
  for (std::int64_t first = 0; first < count; first += batch) {
    const std::int64_t n = std::min(batch, count - first);
    ArenaScope scope(ws);
    const ImageEncoding enc = qlip.encode_image(ws, pixels.slice(0, first, first + n), opt);
    std::copy_n(enc.cls.data(), enc.cls.numel(), out.data() + first * DemoQlip::kVisionWidth);
  }
  return out;
}

/// Pixels and labels of the first `count` images of a Fashion-MNIST split.
inline std::pair<Tensor<float, 4>, std::vector<int>> split_pixels(const ClipPreprocessConfig& pre,
                                                                  data::FashionMnistSplit split, std::int64_t count) {
  data::FashionMnistSourceOptions so;
  so.resolution = DemoQlip::image_size();
  so.norm = pre;
  const data::FashionMnistSource source(data::FashionMnist::load(split, data::default_fashion_mnist_dirs()), so);
  count = std::min(count, source.size());
  const int s = DemoQlip::image_size();
  Tensor<float, 4> px({count, 3, s, s});
  std::vector<int> labels;
  for (std::int64_t i = 0; i < count; ++i) labels.push_back(source.load(i, 0, px.view().select(0, i)).label);
  return {std::move(px), std::move(labels)};
}

/// The 28-bit codes of CLIP-normalised pixels [count, 3, S, S]: [count · kPatches].
inline std::vector<std::uint32_t> encode_codes(const DemoQlip& qlip, HostView<const float, 4> pixels) {
  const std::int64_t count = pixels.size(0), batch = std::min<std::int64_t>(250, count);
  Arena ws(DemoQlip::encode_image_workspace_bytes(batch));
  std::vector<std::uint32_t> out(static_cast<std::size_t>(count * kPatches));
  for (std::int64_t first = 0; first < count; first += batch) {
    const std::int64_t n = std::min(batch, count - first);
    ArenaScope scope(ws);
    const ImageEncoding enc = qlip.encode_image(ws, pixels.slice(0, first, first + n));
    std::copy_n(enc.indices.data(), n * kPatches, out.data() + first * kPatches);
  }
  return out;
}

}  // namespace qlip::um3_cli
