/// @file test_fashion_mnist.cpp
/// @brief Fashion-MNIST: the real files of Debian's dataset-fashion-mnist (scripts/setup.sh installs
///        them, so their absence fails with the package's name), the split checks on generated
///        files, and the conversion to CLIP inputs (grey_to_clip, FashionMnistSource).

#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <optional>
#include <algorithm>
#include <string>
#include <vector>

#include "common/compare.hpp"
#include "common/data_pipeline_util.hpp"
#include "qlip/data/fashion_mnist.hpp"

namespace qlip::data::test {
namespace {

using qlip::test::expect_error_naming;

/// The real split, read once per test binary; a missing package fails the test with its name.
const FashionMnist* real_split(FashionMnistSplit split) {
  static std::array<std::optional<FashionMnist>, 2> cache;
  static std::array<std::string, 2> error;
  const auto k = static_cast<std::size_t>(split);
  if (!cache[k] && error[k].empty()) {
    try {
      cache[k].emplace(FashionMnist::load(split));
    } catch (const Error& e) {
      error[k] = e.what();
    }
  }
  if (!cache[k]) {
    ADD_FAILURE() << error[k];
    return nullptr;
  }
  return &*cache[k];
}

TEST(FashionMnist, MissingDatasetNamesThePackage) {
  ScratchDir dir;
  try {
    (void)FashionMnist::load(FashionMnistSplit::test, {dir.str(), dir.file("other")});
    ADD_FAILURE() << "no error for an empty folder";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("Fashion-MNIST (test split) not found in " + dir.str() + ", " + dir.file("other")), std::string::npos) << m;
    EXPECT_NE(m.find("install Debian's dataset-fashion-mnist (scripts/setup.sh does)"), std::string::npos) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  }
}

TEST(FashionMnist, RealTrainSplit) {
  const FashionMnist* d = real_split(FashionMnistSplit::train);
  if (!d) return;
  ASSERT_EQ(d->size(), kFashionMnistTrainSize);
  // The published splits are balanced: 6,000 images per class.
  std::array<std::int64_t, 10> hist{};
  for (std::int64_t i = 0; i < d->size(); ++i) ++hist[static_cast<std::size_t>(d->label(i))];
  for (std::size_t c = 0; c < 10; ++c) EXPECT_EQ(hist[c], 6000) << kFashionMnistClasses[c];
  // The first labels of train-labels-idx1-ubyte (any reader, e.g. the package's utils/mnist_reader.py).
  const std::vector<std::int32_t> first{9, 0, 0, 3, 0, 2, 7, 2, 5, 5};
  for (std::size_t i = 0; i < first.size(); ++i) EXPECT_EQ(d->label(static_cast<std::int64_t>(i)), first[i]) << i;
  EXPECT_EQ(d->class_name(0), "Ankle boot");
  // Pixel range and sum over all 47,040,000 bytes (mean 72.94, the dataset's published 0.2860 · 255).
  std::uint8_t lo = 255, hi = 0;
  std::uint64_t sum = 0;
  for (std::int64_t i = 0; i < d->size(); ++i) {
    const std::uint8_t* p = d->image(i);
    for (int k = 0; k < 28 * 28; ++k) {
      lo = std::min(lo, p[k]);
      hi = std::max(hi, p[k]);
      sum += p[k];
    }
  }
  EXPECT_EQ(lo, 0);
  EXPECT_EQ(hi, 255);
  EXPECT_EQ(sum, 3431114169u);
}

TEST(FashionMnist, RealTestSplit) {
  const FashionMnist* d = real_split(FashionMnistSplit::test);
  if (!d) return;
  ASSERT_EQ(d->size(), kFashionMnistTestSize);
  std::array<std::int64_t, 10> hist{}, hist1k{};
  for (std::int64_t i = 0; i < d->size(); ++i) ++hist[static_cast<std::size_t>(d->label(i))];
  for (std::size_t c = 0; c < 10; ++c) EXPECT_EQ(hist[c], 1000) << kFashionMnistClasses[c];
  // A subset keeps its samples: the first 1,000 test labels' histogram.
  const FashionMnist head = d->subset(0, 1000);
  ASSERT_EQ(head.size(), 1000);
  for (std::int64_t i = 0; i < head.size(); ++i) ++hist1k[static_cast<std::size_t>(head.label(i))];
  EXPECT_EQ(hist1k, (std::array<std::int64_t, 10>{107, 105, 111, 93, 115, 87, 97, 95, 95, 95}));
  const std::vector<std::int32_t> first{9, 2, 1, 1, 6, 1, 4, 6, 5, 7};
  for (std::size_t i = 0; i < first.size(); ++i) EXPECT_EQ(d->label(static_cast<std::int64_t>(i)), first[i]) << i;
  const FashionMnist tail = d->subset(9990, 10);
  EXPECT_EQ(tail.label(0), d->label(9990));
  EXPECT_EQ(std::vector<std::uint8_t>(tail.image(3), tail.image(3) + 784), std::vector<std::uint8_t>(d->image(9993), d->image(9993) + 784));
  std::uint64_t sum = 0;
  for (std::int64_t i = 0; i < d->size(); ++i) sum += std::accumulate(d->image(i), d->image(i) + 784, std::uint64_t{0});
  EXPECT_EQ(sum, 573469082u);
  expect_error_naming([&] { (void)d->subset(9990, 11); }, "FashionMnist::subset [9990, 10001)");
  expect_error_naming([&] { (void)d->label(10000); }, "sample 10000 outside [0, 10000)");
}

std::vector<std::uint8_t> idx(std::vector<std::uint32_t> dims, const std::vector<std::uint8_t>& data) {
  std::vector<std::uint8_t> b{0, 0, 8, static_cast<std::uint8_t>(dims.size())};
  for (auto d : dims)
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<std::uint8_t>(d >> s));
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

TEST(FashionMnist, SplitFilesAreChecked) {
  ScratchDir dir;
  // Plain (not gzip) files are found too; three images, two labels.
  write_bytes(dir.file("t10k-images-idx3-ubyte"), idx({3, 28, 28}, std::vector<std::uint8_t>(3 * 784, 7)));
  write_bytes(dir.file("t10k-labels-idx1-ubyte"), idx({2}, {1, 2}));
  expect_error_naming([&] { (void)FashionMnist::load(FashionMnistSplit::test, {dir.str()}); },
                      dir.file("t10k-labels-idx1-ubyte") + ": 2 labels for the 3 images of " + dir.file("t10k-images-idx3-ubyte"));
  write_bytes(dir.file("t10k-labels-idx1-ubyte"), idx({3}, {1, 10, 2}));
  expect_error_naming([&] { (void)FashionMnist::load(FashionMnistSplit::test, {dir.str()}); },
                      "label 10 of sample 1 is not a class in [0, 10)");
  write_bytes(dir.file("t10k-labels-idx1-ubyte"), idx({3}, {1, 9, 2}));
  const FashionMnist d = FashionMnist::load(FashionMnistSplit::test, {dir.file("missing"), dir.str()});
  EXPECT_EQ(d.size(), 3);
  EXPECT_EQ(d.class_name(1), "Ankle boot");
  // Images of the wrong size.
  write_bytes(dir.file("t10k-images-idx3-ubyte"), idx({3, 32, 32}, std::vector<std::uint8_t>(3 * 1024, 7)));
  expect_error_naming([&] { (void)FashionMnist::load(FashionMnistSplit::test, {dir.str()}); },
                      "IDX dims [3, 32, 32], expected [*, 28, 28]");
  // The train split is not there.
  expect_error_naming([&] { (void)FashionMnist::load(FashionMnistSplit::train, {dir.str()}); },
                      "Fashion-MNIST (train split) not found in " + dir.str());
}

TEST(FashionMnist, ClassNames) {
  const auto names = fashion_mnist_class_names();
  EXPECT_EQ(names, (std::vector<std::string>{"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                             "Sneaker", "Bag", "Ankle boot"}));
}

/// (v / 255 − mean_c) / std_c as preprocess.hpp computes it (rescale in double, normalise in float).
float clip_value(double v255, int c) {
  const ClipPreprocessConfig cfg;
  const auto cc = static_cast<std::size_t>(c);
  return (static_cast<float>(v255 / 255.0) - cfg.mean[cc]) / cfg.std[cc];
}

std::vector<std::uint8_t> test_pattern(int h, int w) {
  std::vector<std::uint8_t> g(static_cast<std::size_t>(h * w));
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) g[static_cast<std::size_t>(y * w + x)] = static_cast<std::uint8_t>((y * 29 + x * 13) % 256);
  return g;
}

TEST(GreyToClip, SameSizeIsNormalisationOnly) {
  // At S = 28 neither resize changes a pixel (PIL skips an unchanged axis; bilinear taps land on pixels).
  const auto g = test_pattern(28, 28);
  for (Resize r : {Resize::bicubic, Resize::bilinear}) {
    Tensor<float, 3> out(Extents<3>{3, 28, 28});
    grey_to_clip(g.data(), 28, 28, r, out.view());
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < 28; ++y)
        for (int x = 0; x < 28; ++x) {
          const float want = clip_value(g[static_cast<std::size_t>(y * 28 + x)], c);
          ASSERT_NEAR(out(c, y, x), want, 1e-6f * std::abs(want) + 1e-6f) << "resize " << int(r) << " at " << c << "," << y << "," << x;
        }
  }
}

TEST(GreyToClip, ConstantImageStaysConstant) {
  const std::vector<std::uint8_t> g(28 * 28, 200);
  for (Resize r : {Resize::bicubic, Resize::bilinear}) {
    Tensor<float, 3> out(Extents<3>{3, 61, 61});
    grey_to_clip(g.data(), 28, 28, r, out.view());
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < 61; ++y)
        for (int x = 0; x < 61; ++x) ASSERT_NEAR(out(c, y, x), clip_value(200, c), 1e-5f) << int(r);
  }
}

TEST(GreyToClip, BilinearIsTorchsHalfPixelInterpolation) {
  // 2× upscale: output d samples source (d + 0.5)/2 − 0.5, clamped at 0, so output 0 is pixel 0,
  // output 1 is 0.75·p0 + 0.25·p1, output 2 is 0.25·p0 + 0.75·p1 (along each axis).
  const auto g = test_pattern(5, 4);
  Tensor<float, 3> out(Extents<3>{3, 8, 8});
  // A non-square source: 5 rows → 8 (scale 0.625), 4 columns → 8 (scale 0.5).
  grey_to_clip(g.data(), 5, 4, Resize::bilinear, out.view());
  auto px = [&](int y, int x) { return static_cast<double>(g[static_cast<std::size_t>(y * 4 + x)]); };
  auto ref = [&](int oy, int ox) {
    const double sy = std::max(0.0, (oy + 0.5) * 0.625 - 0.5), sx = std::max(0.0, (ox + 0.5) * 0.5 - 0.5);
    const int y0 = std::min(static_cast<int>(sy), 4), x0 = std::min(static_cast<int>(sx), 3);
    const int y1 = std::min(y0 + 1, 4), x1 = std::min(x0 + 1, 3);
    const double wy = sy - y0, wx = sx - x0;
    return (1 - wy) * ((1 - wx) * px(y0, x0) + wx * px(y0, x1)) + wy * ((1 - wx) * px(y1, x0) + wx * px(y1, x1));
  };
  EXPECT_NEAR(ref(0, 1), 0.75 * px(0, 0) + 0.25 * px(0, 1), 1e-9);  // the formula above, spelled out
  const ClipPreprocessConfig cfg;
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < 8; ++y)
      for (int x = 0; x < 8; ++x) {
        const double want = (ref(y, x) / 255.0 - cfg.mean[static_cast<std::size_t>(c)]) / cfg.std[static_cast<std::size_t>(c)];
        ASSERT_NEAR(out(c, y, x), want, 1e-5) << c << "," << y << "," << x;
      }
}

TEST(GreyToClip, BicubicIsClipPreprocessingOfTheRgbImage) {
  // grey_to_clip(bicubic) must be CLIPImageProcessor on the image converted to RGB: compare with
  // preprocess_clip at the same size on an explicitly replicated RGB image.
  const auto g = test_pattern(28, 28);
  Image rgb = Image::zeros(28, 28, 3);
  for (int y = 0; y < 28; ++y)
    for (int x = 0; x < 28; ++x)
      for (int c = 0; c < 3; ++c) rgb.at(y, x, c) = g[static_cast<std::size_t>(y * 28 + x)];
  ClipPreprocessConfig cfg;
  cfg.shortest_edge = cfg.crop_height = cfg.crop_width = 64;
  Tensor<float, 3> want(Extents<3>{3, 64, 64}), got(Extents<3>{3, 64, 64});
  preprocess_clip(rgb, cfg, want.view());
  grey_to_clip(g.data(), 28, 28, Resize::bicubic, got.view());
  for (std::int64_t i = 0; i < want.numel(); ++i) ASSERT_EQ(got.data()[i], want.data()[i]) << i;
  // And the three channels come from one grey value: (out_c · std_c + mean_c) agrees across c.
  for (int y = 0; y < 64; y += 7)
    for (int x = 0; x < 64; x += 5) {
      const double v0 = got(0, y, x) * cfg.std[0] + cfg.mean[0];
      for (int c = 1; c < 3; ++c)
        EXPECT_NEAR(got(c, y, x) * cfg.std[static_cast<std::size_t>(c)] + cfg.mean[static_cast<std::size_t>(c)], v0, 1e-6);
    }
}

TEST(GreyToClip, ArgumentErrors) {
  const auto g = test_pattern(28, 28);
  Tensor<float, 3> bad(Extents<3>{3, 8, 9});
  expect_error_naming([&] { grey_to_clip(g.data(), 28, 28, Resize::bicubic, bad.view()); }, "grey_to_clip output has shape [3, 8, 9]");
  Tensor<float, 3> ok(Extents<3>{3, 8, 8});
  expect_error_naming([&] { grey_to_clip(g.data(), 0, 28, Resize::bilinear, ok.view()); }, "grey_to_clip: zero-size image");
}

TEST(FashionMnistSource, SamplesOfTheRealTestSplit) {
  const FashionMnist* d = real_split(FashionMnistSplit::test);
  if (!d) return;
  FashionMnistSourceOptions opt;
  opt.resolution = 32;
  opt.seed = 5;
  const FashionMnistSource src(d->subset(0, 64), opt);
  EXPECT_EQ(src.size(), 64);
  EXPECT_EQ(src.resolution(), 32);
  EXPECT_TRUE(src.has_labels());
  EXPECT_EQ(src.name(), "Fashion-MNIST test");
  Tensor<float, 3> px(Extents<3>{3, 32, 32}), ref(Extents<3>{3, 32, 32});
  const ClipPreprocessConfig cfg;
  for (std::int64_t i = 0; i < src.size(); i += 9) {
    const SampleLoad s = src.load(i, 2, px.view());
    ASSERT_TRUE(s.ok);
    EXPECT_EQ(s.label, d->label(i));
    EXPECT_EQ(s.caption, class_caption(d->class_name(i), 5, 2, i, default_caption_templates()));
    EXPECT_NE(s.caption.find(std::string(d->class_name(i))), std::string::npos) << s.caption;
    grey_to_clip(d->image(i), 28, 28, Resize::bicubic, ref.view());
    for (std::int64_t k = 0; k < px.numel(); ++k) ASSERT_EQ(px.data()[k], ref.data()[k]);
    // CLIP-normalised values of 8-bit pixels lie in [(0 − mean)/std, (1 − mean)/std].
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < 32; ++y)
        for (int x = 0; x < 32; ++x) {
          const auto cc = static_cast<std::size_t>(c);
          ASSERT_GE(px(c, y, x), (0.0f - cfg.mean[cc]) / cfg.std[cc] - 1e-6f);
          ASSERT_LE(px(c, y, x), (1.0f - cfg.mean[cc]) / cfg.std[cc] + 1e-6f);
        }
  }
  expect_error_naming([&] { (void)src.load(64, 0, px.view()); }, "Fashion-MNIST test: sample index 64 outside [0, 64)");
  Tensor<float, 3> wrong(Extents<3>{3, 28, 28});
  expect_error_naming([&] { (void)src.load(0, 0, wrong.view()); }, "DataSource::load pixels has shape [3, 28, 28], expected [3, 32, 32]");
  FashionMnistSourceOptions no_placeholder = opt;
  no_placeholder.templates = {"a photo."};
  expect_error_naming([&] { FashionMnistSource(d->subset(0, 1), no_placeholder); }, "has no \"{}\" placeholder");
}

}  // namespace
}  // namespace qlip::data::test
