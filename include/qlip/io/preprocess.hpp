/// @file preprocess.hpp
/// @brief CLIP image preprocessing, pixel-compatible with transformers' CLIPImageProcessor (the slow,
///        PIL-based one) as configured by QLIP's preprocessor_config.json (MODEL.md §2.1), and the
///        inverse used to turn reconstructions back into 8-bit images.
///
/// Pipeline (CLIPImageProcessor.preprocess): convert to RGB → resize so the shortest edge is S with
/// PIL BICUBIC (antialiased) → center crop → ×1/255 → (x − mean)/std → CHW float32.
/// The resize reimplements Pillow's ImagingResample for 8-bit images (src/libImaging/Resample.c):
/// separable passes (horizontal first), the filter support widened by the downscale factor
/// (antialias), a = −0.5 cubic, per-output-pixel normalised weights converted to 22-bit fixed
/// point, and the intermediate image rounded and clamped to uint8 between the passes. With that,
/// and the decoders PIL uses (image.hpp), decoded photos give bit-identical pixels to HF. Only the
/// part of the resized image that the center crop keeps is computed (same pixels, bounded cost).
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/io/image.hpp"
#include "qlip/io/json.hpp"

// Pillow's coefficients are computed without fused multiply-add (its wheels target baseline x86-64);
// a contracted a·b+c can change a weight in the last bit and flip an 8-bit rounding. Forbid it.
#if defined(__clang__)
#define QLIP_NO_FP_CONTRACT
#define QLIP_NO_FP_CONTRACT_BODY _Pragma("clang fp contract(off)")
#elif defined(__GNUC__)
#define QLIP_NO_FP_CONTRACT __attribute__((optimize("fp-contract=off")))
#define QLIP_NO_FP_CONTRACT_BODY
#else
#define QLIP_NO_FP_CONTRACT
#define QLIP_NO_FP_CONTRACT_BODY
#endif

namespace qlip {

/// The fields of a CLIP preprocessor_config.json that affect pixels. Defaults are OpenAI CLIP's
/// (224); QLIP's configs use 256 (B) or 392 (L): read them with load().
struct ClipPreprocessConfig {
  int shortest_edge = 224;
  int crop_height = 224, crop_width = 224;
  bool do_resize = true, do_center_crop = true, do_normalize = true;
  bool do_rescale = true;
  double rescale_factor = 1.0 / 255.0;
  std::array<float, 3> mean{0.48145466f, 0.4578275f, 0.40821073f};
  std::array<float, 3> std{0.26862954f, 0.26130258f, 0.27577711f};

  /// Parses the HF JSON. Accepts "size" as an int or {"shortest_edge": n}, "crop_size" as an int or
  /// {"height": h, "width": w}. Only resample = 3 (PIL BICUBIC) is implemented; anything else throws.
  static ClipPreprocessConfig from_json(const nlohmann::json& j) {
    ClipPreprocessConfig c;
    QLIP_CHECK(j.is_object(), "preprocessor config is a JSON ", j.type_name(), ", expected an object");
    c.do_resize = json_get_or<bool>(j, "do_resize", c.do_resize);
    c.do_center_crop = json_get_or<bool>(j, "do_center_crop", c.do_center_crop);
    c.do_normalize = json_get_or<bool>(j, "do_normalize", c.do_normalize);
    c.do_rescale = json_get_or<bool>(j, "do_rescale", c.do_rescale);
    c.rescale_factor = json_get_or<double>(j, "rescale_factor", c.rescale_factor);
    if (json_has(j, "size")) {
      const auto& s = j["size"];
      if (s.is_object()) {
        if (!s.contains("shortest_edge")) {
          QLIP_THROW("preprocessor config: only size = {\"shortest_edge\": n} or an int is supported, got ", json_excerpt(s));
        }
        c.shortest_edge = json_get<int>(j, "size.shortest_edge");
      } else {
        c.shortest_edge = json_get<int>(j, "size");
      }
    }
    if (json_has(j, "crop_size")) {
      const auto& s = j["crop_size"];
      if (s.is_object()) {
        c.crop_height = json_get<int>(j, "crop_size.height");
        c.crop_width = json_get<int>(j, "crop_size.width");
      } else {
        c.crop_height = c.crop_width = json_get<int>(j, "crop_size");
      }
    }
    const int resample = json_get_or<int>(j, "resample", 3);
    QLIP_CHECK(resample == 3, "preprocessor config: resample = ", resample,
               " is not supported (only 3 = PIL BICUBIC, which CLIP and QLIP use)");
    if (json_has(j, "image_mean")) c.mean = read_triplet(j, "image_mean");
    if (json_has(j, "image_std")) c.std = read_triplet(j, "image_std");
    QLIP_CHECK(c.shortest_edge > 0 && c.crop_height > 0 && c.crop_width > 0, "preprocessor config: sizes must be positive (size ",
               c.shortest_edge, ", crop ", c.crop_height, "x", c.crop_width, ")");
    for (float s : c.std) QLIP_CHECK(s > 0.0f, "preprocessor config: image_std must be positive");
    return c;
  }

  /// Reads preprocessor_config.json; errors name the file.
  static ClipPreprocessConfig load(const std::string& path) {
    nlohmann::json j = read_json(path);
    try {
      return from_json(j);
    } catch (const Error& e) {
      QLIP_THROW(path, ": ", e.what());
    }
  }

 private:
  static std::array<float, 3> read_triplet(const nlohmann::json& j, const char* key) {
    auto v = json_get<std::vector<double>>(j, key);
    QLIP_CHECK(v.size() == 3, "preprocessor config: '", key, "' has ", v.size(), " values, expected 3");
    return {static_cast<float>(v[0]), static_cast<float>(v[1]), static_cast<float>(v[2])};
  }
};

namespace detail {

/// Pillow's bicubic kernel (a = −0.5), Resample.c bicubic_filter.
QLIP_NO_FP_CONTRACT inline double pil_bicubic(double x) {
  QLIP_NO_FP_CONTRACT_BODY
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

/// Per-output-pixel taps of one resampling axis, as Pillow's precompute_coeffs +
/// normalize_coeffs_8bpc produce them, for the outputs [out_first, out_first + n) of an axis of
/// out_size pixels: tap j of output out_first + i reads input first[i] + j with the 22-bit
/// fixed-point weight weights[i·ksize + j], for j < count[i]. Each output's taps depend only on
/// (in_size, out_size, its index), so any range gives the same taps as the whole axis.
struct PilAxisCoeffs {
  int ksize = 0;
  std::vector<int> first, count;
  std::vector<std::int32_t> weights;
};

inline constexpr int kPilPrecisionBits = 32 - 8 - 2;

QLIP_NO_FP_CONTRACT inline PilAxisCoeffs pil_precompute_coeffs(int in_size, int out_size, int out_first, int n) {
  QLIP_NO_FP_CONTRACT_BODY
  constexpr double kSupport = 2.0;  // bicubic
  const double scale = static_cast<double>(in_size) / out_size;
  const double filterscale = scale < 1.0 ? 1.0 : scale;  // antialias: widen the kernel when shrinking
  const double support = kSupport * filterscale;
  PilAxisCoeffs c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.first.resize(static_cast<std::size_t>(n));
  c.count.resize(static_cast<std::size_t>(n));
  c.weights.assign(static_cast<std::size_t>(n) * static_cast<std::size_t>(c.ksize), 0);
  std::vector<double> k(static_cast<std::size_t>(c.ksize));
  for (int i = 0; i < n; ++i) {
    const int xx = out_first + i;
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);  // truncation toward zero, as in C
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      const double w = pil_bicubic((x + xmin - center + 0.5) * ss);
      k[static_cast<std::size_t>(x)] = w;
      ww += w;
    }
    for (int x = 0; x < xmax; ++x) {
      double w = k[static_cast<std::size_t>(x)];
      if (ww != 0.0) w /= ww;
      // normalize_coeffs_8bpc: round half away from zero into fixed point.
      const double f = w * (1 << kPilPrecisionBits);
      c.weights[static_cast<std::size_t>(i) * static_cast<std::size_t>(c.ksize) + static_cast<std::size_t>(x)] =
          static_cast<std::int32_t>(w < 0 ? -0.5 + f : 0.5 + f);
    }
    c.first[static_cast<std::size_t>(i)] = xmin;
    c.count[static_cast<std::size_t>(i)] = xmax;
  }
  return c;
}

/// Pillow's clip8: drop the fixed-point fraction, clamp to [0, 255].
inline std::uint8_t pil_clip8(std::int64_t acc) {
  const std::int64_t v = acc >> kPilPrecisionBits;  // arithmetic shift: negative stays negative
  return static_cast<std::uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

}  // namespace detail

/// The region [x0, x0 + w) × [y0, y0 + h) of resize_bicubic_pil(in, out_w, out_h), computed without
/// building the rest: only the kept output columns are resampled horizontally, and only on the
/// input rows that the kept output rows read. Bit-identical to resizing fully and then cropping,
/// because every output pixel of Pillow's separable resample is computed from its own taps (its
/// column's taps on each input row, then its row's taps on those uint8 intermediates); nothing is
/// shared between output pixels except the input.
inline Image resize_bicubic_pil_region(const Image& in, int out_w, int out_h, int x0, int y0, int w, int h) {
  detail::check_image(in, "resize_bicubic_pil");
  QLIP_CHECK(!in.empty(), "resize_bicubic_pil: zero-size input image");
  QLIP_CHECK(out_w > 0 && out_h > 0, "resize_bicubic_pil: bad output size ", out_w, "x", out_h);
  QLIP_CHECK(x0 >= 0 && y0 >= 0 && w > 0 && h > 0 && x0 <= out_w - w && y0 <= out_h - h,
             "resize_bicubic_pil: region ", w, "x", h, "+", x0, "+", y0, " is not inside ", out_w, "x", out_h);
  const int C = in.channels;
  // Pillow skips the pass of an axis whose size does not change (need_horizontal / need_vertical).
  const bool need_h = out_w != in.width, need_v = out_h != in.height;
  const std::int64_t half = std::int64_t{1} << (detail::kPilPrecisionBits - 1);
  const std::size_t row_bytes = static_cast<std::size_t>(in.width) * static_cast<std::size_t>(C);

  // Vertical taps of the kept rows, and the input rows they read (Pillow's ybox_first..ybox_last,
  // restricted to the kept rows; `first` is non-decreasing, and so is first + count).
  detail::PilAxisCoeffs cv;
  int y_first = y0, y_last = y0 + h;
  if (need_v) {
    cv = detail::pil_precompute_coeffs(in.height, out_h, y0, h);
    y_first = cv.first.front();
    y_last = cv.first.back() + cv.count.back();
  }
  // Horizontal pass: the kept columns of input rows [y_first, y_last) into tmp (w columns).
  Image tmp = Image::zeros(w, y_last - y_first, C);
  if (need_h) {
    const detail::PilAxisCoeffs ch = detail::pil_precompute_coeffs(in.width, out_w, x0, w);
    for (int y = 0; y < tmp.height; ++y) {
      const std::uint8_t* row = &in.pixels[static_cast<std::size_t>(y + y_first) * row_bytes];
      for (int i = 0; i < w; ++i) {
        const int xmin = ch.first[static_cast<std::size_t>(i)], n = ch.count[static_cast<std::size_t>(i)];
        const std::int32_t* k = &ch.weights[static_cast<std::size_t>(i) * static_cast<std::size_t>(ch.ksize)];
        for (int c = 0; c < C; ++c) {
          std::int64_t acc = half;
          for (int x = 0; x < n; ++x) acc += static_cast<std::int64_t>(row[(xmin + x) * C + c]) * k[x];
          tmp.at(y, i, c) = detail::pil_clip8(acc);
        }
      }
    }
  } else {
    for (int y = 0; y < tmp.height; ++y) {
      const std::uint8_t* row = &in.pixels[static_cast<std::size_t>(y + y_first) * row_bytes + static_cast<std::size_t>(x0) * C];
      std::copy(row, row + static_cast<std::size_t>(w) * C, &tmp.pixels[static_cast<std::size_t>(tmp.index(y, 0, 0))]);
    }
  }
  if (!need_v) return tmp;

  Image out = Image::zeros(w, h, C);
  for (int i = 0; i < h; ++i) {
    const int ymin = cv.first[static_cast<std::size_t>(i)] - y_first, n = cv.count[static_cast<std::size_t>(i)];
    const std::int32_t* k = &cv.weights[static_cast<std::size_t>(i) * static_cast<std::size_t>(cv.ksize)];
    for (int x = 0; x < w; ++x) {
      for (int c = 0; c < C; ++c) {
        std::int64_t acc = half;
        for (int y = 0; y < n; ++y) acc += static_cast<std::int64_t>(tmp.at(ymin + y, x, c)) * k[y];
        out.at(i, x, c) = detail::pil_clip8(acc);
      }
    }
  }
  return out;
}

/// Resizes an 8-bit image to out_w × out_h exactly as Pillow's Image.resize(..., BICUBIC) does for
/// 8-bit modes (see the file comment). Returns a copy when the size is unchanged, as Pillow does.
inline Image resize_bicubic_pil(const Image& in, int out_w, int out_h) {
  return resize_bicubic_pil_region(in, out_w, out_h, 0, 0, out_w, out_h);
}

/// The (width, height) CLIPImageProcessor resizes to: the shortest edge becomes `shortest_edge`,
/// the other int(shortest_edge · long / short) (truncated, as transformers'
/// get_resize_output_image_size with default_to_square=False computes it).
inline std::array<int, 2> clip_resize_size(int width, int height, int shortest_edge) {
  QLIP_CHECK(width > 0 && height > 0, "clip_resize_size: zero-size image ", width, "x", height);
  const bool w_short = width <= height;
  const std::int64_t s = w_short ? width : height, l = w_short ? height : width;
  // Python: int(size * long / short) — an exact integer product, one correctly rounded division.
  const double ratio = static_cast<double>(static_cast<std::int64_t>(shortest_edge) * l) / static_cast<double>(s);
  const std::int64_t new_long = static_cast<std::int64_t>(ratio);
  // Only the cropped part is ever computed (clip_resize_crop), so the bound is just int range.
  QLIP_CHECK(new_long >= 1 && new_long <= std::numeric_limits<int>::max(), "clip_resize_size: resized long edge ", new_long,
             " out of range (", width, "x", height, " at shortest edge ", shortest_edge, ")");
  return w_short ? std::array<int, 2>{shortest_edge, static_cast<int>(new_long)}
                 : std::array<int, 2>{static_cast<int>(new_long), shortest_edge};
}

/// The uint8 image after resize and center crop (before rescale/normalise): useful for previews
/// and the exact-pixel tests. The crop is transformers' center_crop: offset
/// floor((size − crop)/2), zero (black) padding where the crop is larger than the image. Only the
/// part of the resized image that the crop keeps is computed (resize_bicubic_pil_region), so a
/// 2 × 130000 strip costs a 256 × 256 resample, not a 256 × 16,640,000 one; the pixels are the same.
inline Image clip_resize_crop(const Image& image, const ClipPreprocessConfig& cfg) {
  detail::check_image(image, "preprocess_clip");
  QLIP_CHECK(!image.empty(), "preprocess_clip: zero-size image (", image.width, "x", image.height, ")");
  Image converted;
  if (image.channels != 3) converted = to_rgb(image);
  const Image& rgb = image.channels == 3 ? image : converted;
  int rw = rgb.width, rh = rgb.height;  // size after the resize
  if (cfg.do_resize) {
    const auto size = clip_resize_size(rgb.width, rgb.height, cfg.shortest_edge);
    rw = size[0];
    rh = size[1];
  }
  if (!cfg.do_center_crop) {
    if (!cfg.do_resize) return rgb;
    QLIP_CHECK(static_cast<std::int64_t>(rw) * rh <= kMaxImagePixels, "preprocess_clip: resizing ", rgb.width, "x",
               rgb.height, " to ", rw, "x", rh, " without a center crop exceeds the pixel budget (", kMaxImagePixels, ")");
    return resize_bicubic_pil(rgb, rw, rh);
  }
  auto floor_half = [](int d) { return d >= 0 ? d / 2 : -((-d + 1) / 2); };  // Python's d // 2
  const int top = floor_half(rh - cfg.crop_height);
  const int left = floor_half(rw - cfg.crop_width);
  // The kept window of the resized image: the crop rectangle clipped to [0, rw) × [0, rh).
  const int x0 = std::max(left, 0), x1 = std::min(left + cfg.crop_width, rw);
  const int y0 = std::max(top, 0), y1 = std::min(top + cfg.crop_height, rh);
  Image out = Image::zeros(cfg.crop_width, cfg.crop_height, 3);
  if (x0 >= x1 || y0 >= y1) return out;
  const Image kept = cfg.do_resize ? resize_bicubic_pil_region(rgb, rw, rh, x0, y0, x1 - x0, y1 - y0) : Image{};
  for (int y = y0; y < y1; ++y)
    for (int x = x0; x < x1; ++x)
      for (int c = 0; c < 3; ++c) out.at(y - top, x - left, c) = cfg.do_resize ? kept.at(y - y0, x - x0, c) : rgb.at(y, x, c);
  return out;
}

/// Preprocesses one image into `out` [3, crop_h, crop_w] (CHW, any strides). Throws on a zero-size
/// image and when `out` does not have the shape the config produces.
inline void preprocess_clip(const Image& image, const ClipPreprocessConfig& cfg, HostView<float, 3> out) {
  const Image px = clip_resize_crop(image, cfg);
  // Braced list, not Extents<3>{...}: R cannot be deduced through std::array<int64_t, size_t N>.
  check_shape(out, {3, px.height, px.width}, "preprocess_clip output");
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < px.height; ++y)
      for (int x = 0; x < px.width; ++x) {
        // As transformers does: rescale in float64 then cast to float32; normalise in float32.
        float v = static_cast<float>(px.at(y, x, c));
        if (cfg.do_rescale) v = static_cast<float>(static_cast<double>(px.at(y, x, c)) * cfg.rescale_factor);
        if (cfg.do_normalize) v = (v - cfg.mean[static_cast<std::size_t>(c)]) / cfg.std[static_cast<std::size_t>(c)];
        out(c, y, x) = v;
      }
}

/// Batched: image b goes to out[b] of a [B, 3, crop_h, crop_w] view.
inline void preprocess_clip_batch(const std::vector<Image>& images, const ClipPreprocessConfig& cfg,
                                  HostView<float, 4> out) {
  QLIP_CHECK(out.size(0) == static_cast<std::int64_t>(images.size()), "preprocess_clip_batch: output batch ", out.size(0),
             " != ", images.size(), " images");
  for (std::size_t b = 0; b < images.size(); ++b) preprocess_clip(images[b], cfg, out.select(0, static_cast<std::int64_t>(b)));
}

/// Inverse of the normalisation for viewing reconstructions (MODEL.md §7.2): x·std + mean, clamped to
/// [0, 1], then floor(v·255 + 0.5) (torchvision's save_image rounding) to uint8. `chw` is [3, H, W].
inline Image postprocess_clip(HostView<const float, 3> chw, const std::array<float, 3>& mean, const std::array<float, 3>& std) {
  QLIP_CHECK(chw.size(0) == 3, "postprocess_clip: expected [3, H, W], got ", shape_string<3>(chw.shape()));
  QLIP_CHECK(chw.size(1) > 0 && chw.size(2) > 0, "postprocess_clip: zero-size image");
  Image im = Image::zeros(static_cast<int>(chw.size(2)), static_cast<int>(chw.size(1)), 3);
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < im.height; ++y)
      for (int x = 0; x < im.width; ++x) {
        float v = chw(c, y, x) * std[static_cast<std::size_t>(c)] + mean[static_cast<std::size_t>(c)];
        v = std::isnan(v) ? 0.0f : std::min(1.0f, std::max(0.0f, v));  // NaN → black, not UB in the cast
        im.at(y, x, c) = static_cast<std::uint8_t>(std::floor(v * 255.0f + 0.5f));
      }
  return im;
}

/// Batched inverse: [B, 3, H, W] → B images.
inline std::vector<Image> postprocess_clip_batch(HostView<const float, 4> bchw, const std::array<float, 3>& mean,
                                                 const std::array<float, 3>& std) {
  std::vector<Image> out;
  out.reserve(static_cast<std::size_t>(bchw.size(0)));
  for (std::int64_t b = 0; b < bchw.size(0); ++b) out.push_back(postprocess_clip(bchw.select(0, b), mean, std));
  return out;
}

}  // namespace qlip
