/// @file test_resize_crop.cpp
/// @brief clip_resize_crop computes only what the center crop keeps: proof that it is bit-identical
///        to the full Pillow resize followed by the crop (the former implementation, kept here
///        verbatim as the oracle) on odd sizes, and that a 2 x 130000 strip is fast and correct.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "io/io_test_util.hpp"
#include "qlip/core/philox.hpp"
#include "qlip/io/preprocess.hpp"

namespace {

using qlip::ClipPreprocessConfig;
using qlip::Image;
using qlip::test::throws_error;

using qlip::test::random_image;

// ---- the oracle: the former whole-image resize (Pillow's ImagingResample), then the crop ----

struct FullCoeffs {
  int ksize = 0;
  std::vector<int> first, count;
  std::vector<std::int32_t> weights;
};

QLIP_NO_FP_CONTRACT FullCoeffs full_coeffs(int in_size, int out_size) {
  QLIP_NO_FP_CONTRACT_BODY
  const double scale = static_cast<double>(in_size) / out_size;
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = 2.0 * filterscale;
  FullCoeffs c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.first.resize(static_cast<std::size_t>(out_size));
  c.count.resize(static_cast<std::size_t>(out_size));
  c.weights.assign(static_cast<std::size_t>(out_size) * c.ksize, 0);
  std::vector<double> k(static_cast<std::size_t>(c.ksize));
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      const double w = qlip::detail::pil_bicubic((x + xmin - center + 0.5) * ss);
      k[static_cast<std::size_t>(x)] = w;
      ww += w;
    }
    for (int x = 0; x < xmax; ++x) {
      double w = k[static_cast<std::size_t>(x)];
      if (ww != 0.0) w /= ww;
      const double f = w * (1 << qlip::detail::kPilPrecisionBits);
      c.weights[static_cast<std::size_t>(xx) * c.ksize + x] = static_cast<std::int32_t>(w < 0 ? -0.5 + f : 0.5 + f);
    }
    c.first[static_cast<std::size_t>(xx)] = xmin;
    c.count[static_cast<std::size_t>(xx)] = xmax;
  }
  return c;
}

Image full_resize(const Image& in, int out_w, int out_h) {
  const int C = in.channels;
  const bool need_h = out_w != in.width, need_v = out_h != in.height;
  if (!need_h && !need_v) return in;
  const FullCoeffs ch = full_coeffs(in.width, out_w);
  const FullCoeffs cv = full_coeffs(in.height, out_h);
  const std::int64_t half = std::int64_t{1} << (qlip::detail::kPilPrecisionBits - 1);
  const int y_first = need_v ? cv.first[0] : 0;
  const int y_last = need_v
                         ? cv.first[static_cast<std::size_t>(out_h - 1)] + cv.count[static_cast<std::size_t>(out_h - 1)]
                         : in.height;
  Image tmp;
  const Image* src = &in;
  int row0 = 0;
  if (need_h) {
    tmp = Image::zeros(out_w, y_last - y_first, C);
    for (int y = 0; y < tmp.height; ++y) {
      for (int xx = 0; xx < out_w; ++xx) {
        const int xmin = ch.first[static_cast<std::size_t>(xx)], n = ch.count[static_cast<std::size_t>(xx)];
        const std::int32_t* k = &ch.weights[static_cast<std::size_t>(xx) * ch.ksize];
        for (int c = 0; c < C; ++c) {
          std::int64_t acc = half;
          for (int x = 0; x < n; ++x) acc += static_cast<std::int64_t>(in.at(y + y_first, xmin + x, c)) * k[x];
          tmp.at(y, xx, c) = qlip::detail::pil_clip8(acc);
        }
      }
    }
    src = &tmp;
    row0 = -y_first;
  }
  if (!need_v) return tmp;
  Image out = Image::zeros(src->width, out_h, C);
  for (int yy = 0; yy < out_h; ++yy) {
    const int ymin = cv.first[static_cast<std::size_t>(yy)] + row0, n = cv.count[static_cast<std::size_t>(yy)];
    const std::int32_t* k = &cv.weights[static_cast<std::size_t>(yy) * cv.ksize];
    for (int x = 0; x < src->width; ++x)
      for (int c = 0; c < C; ++c) {
        std::int64_t acc = half;
        for (int y = 0; y < n; ++y) acc += static_cast<std::int64_t>(src->at(ymin + y, x, c)) * k[y];
        out.at(yy, x, c) = qlip::detail::pil_clip8(acc);
      }
  }
  return out;
}

/// Full resize to the CLIP size, then transformers' center_crop with zero padding.
Image full_resize_then_crop(const Image& rgb, const ClipPreprocessConfig& cfg) {
  const auto [w, h] = qlip::clip_resize_size(rgb.width, rgb.height, cfg.shortest_edge);
  const Image r = full_resize(rgb, w, h);
  Image out = Image::zeros(cfg.crop_width, cfg.crop_height, 3);
  auto floor_half = [](int d) { return d >= 0 ? d / 2 : -((-d + 1) / 2); };
  const int top = floor_half(r.height - cfg.crop_height), left = floor_half(r.width - cfg.crop_width);
  for (int y = 0; y < cfg.crop_height; ++y)
    for (int x = 0; x < cfg.crop_width; ++x) {
      const int sy = y + top, sx = x + left;
      if (sy < 0 || sy >= r.height || sx < 0 || sx >= r.width) continue;
      for (int c = 0; c < 3; ++c) out.at(y, x, c) = r.at(sy, sx, c);
    }
  return out;
}

TEST(ResizeCrop, EqualsFullResizeThenCropOnOddSizes) {
  struct Size {
    int w, h;
  };
  const Size sizes[] = {{1, 1},    {1, 7},    {7, 3},    {2, 989}, {989, 2},
                        {65, 111}, {111, 65}, {300, 17}, {33, 32}, {257, 255}};
  struct Crop {
    int edge, ch, cw;
  };
  // Down- and upscaling, crops smaller than, equal to and larger than the resized image (padding).
  const Crop crops[] = {{32, 32, 32}, {7, 5, 9}, {33, 31, 29}, {64, 64, 64}, {16, 20, 12}, {111, 111, 111}, {5, 40, 3}};
  std::uint64_t seed = 100;
  int compared = 0;
  for (const Size& s : sizes)
    for (const Crop& k : crops) {
      ClipPreprocessConfig cfg;
      cfg.shortest_edge = k.edge;
      cfg.crop_height = k.ch;
      cfg.crop_width = k.cw;
      const Image im = random_image(s.w, s.h, 3, ++seed);
      const Image want = full_resize_then_crop(im, cfg);
      const Image got = qlip::clip_resize_crop(im, cfg);
      ASSERT_EQ(got.width, want.width);
      ASSERT_EQ(got.height, want.height);
      EXPECT_EQ(got.pixels, want.pixels) << s.w << "x" << s.h << " at edge " << k.edge << ", crop " << k.ch << "x"
                                         << k.cw;
      ++compared;
    }
  EXPECT_EQ(compared, 70);
}

TEST(ResizeCrop, RegionEqualsFullResize) {
  // Any window of any resize, with 1, 3 and 4 channels, and with one axis unchanged (Pillow skips
  // that axis's pass).
  struct Case {
    int in_w, in_h, c, out_w, out_h, x0, y0, w, h;
  };
  const Case cases[] = {
      {40, 30, 3, 17, 23, 0, 0, 17, 23},  {40, 30, 3, 17, 23, 5, 7, 3, 11},   {40, 30, 1, 91, 13, 90, 12, 1, 1},
      {13, 29, 4, 13, 61, 0, 17, 13, 20}, {13, 29, 3, 50, 29, 11, 0, 30, 29}, {13, 29, 3, 13, 29, 2, 3, 4, 5},
      {7, 1000, 3, 3, 401, 1, 200, 2, 7},
  };
  std::uint64_t seed = 7;
  for (const Case& k : cases) {
    const Image im = random_image(k.in_w, k.in_h, k.c, ++seed);
    const Image full = full_resize(im, k.out_w, k.out_h);
    const Image got = qlip::resize_bicubic_pil_region(im, k.out_w, k.out_h, k.x0, k.y0, k.w, k.h);
    ASSERT_EQ(got.width, k.w);
    ASSERT_EQ(got.height, k.h);
    ASSERT_EQ(got.channels, k.c);
    bool same = true;
    for (int y = 0; y < k.h; ++y)
      for (int x = 0; x < k.w; ++x)
        for (int c = 0; c < k.c; ++c) same &= got.at(y, x, c) == full.at(k.y0 + y, k.x0 + x, c);
    EXPECT_TRUE(same) << k.in_w << "x" << k.in_h << " -> " << k.out_w << "x" << k.out_h << " window " << k.w << "x"
                      << k.h << "+" << k.x0 << "+" << k.y0;
    EXPECT_EQ(qlip::resize_bicubic_pil(im, k.out_w, k.out_h).pixels, full.pixels);
  }
  const Image im = random_image(10, 10, 3, 1);
  EXPECT_TRUE(
      throws_error([&] { (void)qlip::resize_bicubic_pil_region(im, 20, 20, 15, 0, 6, 5); }, {"not inside 20x20"}));
  EXPECT_TRUE(throws_error([&] { (void)qlip::resize_bicubic_pil_region(im, 20, 20, 0, 0, 0, 5); }, {"region"}));
}

/// The 962-byte 2 x 130000 PNG case: resized to 256 x 16,640,000 by CLIP's rule, of which the crop
/// keeps 256 x 256. Rows repeat with period 10, and the vertical scale is exactly 1/128, so away
/// from the ends the resized image repeats with period 1280 rows: the crop (rows 8,319,872 onward,
/// ≡ 1152 mod 1280) equals rows 1152.. of the same pattern 2 x 20 fully resized by the oracle.
TEST(ResizeCrop, LongStripIsFastAndExact) {
  auto strip = [](int h) {
    Image im = Image::zeros(2, h, 3);
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < 2; ++x)
        for (int c = 0; c < 3; ++c) im.at(y, x, c) = static_cast<std::uint8_t>((y % 10) * 25 + x * 7 + c * 50);
    return im;
  };
  const std::vector<std::uint8_t> png = qlip::encode_png(strip(130000));
  EXPECT_LT(png.size(), 4096u);  // a tiny file
  ClipPreprocessConfig cfg;
  cfg.shortest_edge = cfg.crop_height = cfg.crop_width = 256;
  Image got;
  const auto t0 = std::chrono::steady_clock::now();
  const Image big = qlip::decode_image(png.data(), png.size(), "strip.png");
  got = qlip::clip_resize_crop(big, cfg);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(s, 1.0) << "decode + resize + crop of 2x130000 took " << s << " s";
  EXPECT_EQ(qlip::clip_resize_size(2, 130000, 256), (std::array<int, 2>{256, 16640000}));

  const Image small = full_resize(strip(20), 256, 2560);
  ASSERT_EQ((16640000 - 256) / 2 % 1280, 1152);
  Image want = Image::zeros(256, 256, 3);
  for (int y = 0; y < 256; ++y)
    for (int x = 0; x < 256; ++x)
      for (int c = 0; c < 3; ++c) want.at(y, x, c) = small.at(1152 + y, x, c);
  ASSERT_EQ(got.width, 256);
  ASSERT_EQ(got.height, 256);
  EXPECT_EQ(got.pixels, want.pixels);

  // Without the crop the whole 256 x 16,640,000 image would be built: refused by the pixel budget.
  cfg.do_center_crop = false;
  EXPECT_TRUE(throws_error([&] { (void)qlip::clip_resize_crop(big, cfg); }, {"without a center crop", "pixel budget"}));
}

}  // namespace
