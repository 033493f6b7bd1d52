/// @file test_image.cpp
/// @brief read_image / write_png / make_grid / psnr / ssim: decoding of real photos, PNG round trips,
///        error messages, atomic writes, and the metrics against the Python references
///        (numpy PSNR, pytorch_msssim SSIM) committed in tests/data/io/metrics.json.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "io/io_test_util.hpp"
#include "io/photos.hpp"
#include "qlip/core/philox.hpp"
#include "qlip/io/image.hpp"
#include "qlip/io/json.hpp"

namespace {

using qlip::Image;
using qlip::test::throws_error;

using qlip::test::random_image;

Image crop(const Image& im, int top, int left, int h, int w) {
  Image out = Image::zeros(w, h, im.channels);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < im.channels; ++c) out.at(y, x, c) = im.at(top + y, left + x, c);
  return out;
}

TEST(Image, ReadsPhotosAsRgb) {
  std::string path;
  ASSERT_TRUE(qlip::test::locate_photo("astronaut.png", "", path));
  Image a = qlip::read_image(path);
  EXPECT_EQ(a.width, 512);
  EXPECT_EQ(a.height, 512);
  EXPECT_EQ(a.channels, 3);
  EXPECT_EQ(a.pixels.size(), 512u * 512u * 3u);

  ASSERT_TRUE(qlip::test::locate_photo("cell.png", "", path));  // grayscale: replicated to RGB
  Image g = qlip::read_image(path);
  EXPECT_EQ(g.width, 550);
  EXPECT_EQ(g.height, 660);
  ASSERT_EQ(g.channels, 3);
  bool grey = true;
  for (std::size_t i = 0; i < g.pixels.size(); i += 3) grey &= g.pixels[i] == g.pixels[i + 1] && g.pixels[i] == g.pixels[i + 2];
  EXPECT_TRUE(grey);

  ASSERT_TRUE(qlip::test::locate_photo("horse.png", "", path));  // RGBA: alpha dropped
  EXPECT_EQ(qlip::read_image(path).channels, 3);
  ASSERT_TRUE(qlip::test::locate_photo("rocket.jpg", "", path));  // JPEG
  Image r = qlip::read_image(path);
  EXPECT_EQ(r.width, 640);
  EXPECT_EQ(r.height, 427);
}

TEST(Image, PngRoundTripIsExact) {
  qlip::test::ScratchDir dir;
  Image im = random_image(37, 23, 3, 9);
  const std::string path = dir.file("rt.png");
  qlip::write_png(path, im);
  Image back = qlip::read_image(path);
  EXPECT_EQ(back.width, 37);
  EXPECT_EQ(back.height, 23);
  EXPECT_EQ(back.pixels, im.pixels);
  // A one-channel image comes back as RGB with the grey replicated.
  Image grey = random_image(5, 4, 1, 10);
  qlip::write_png(path, grey);
  Image g3 = qlip::read_image(path);
  EXPECT_EQ(g3.pixels, qlip::to_rgb(grey).pixels);
  EXPECT_EQ(g3.at(3, 4, 2), grey.at(3, 4, 0));
  EXPECT_EQ(dir.list(), std::vector<std::string>{"rt.png"});
}

TEST(Image, ReadErrorsAreClear) {
  qlip::test::ScratchDir dir;
  EXPECT_TRUE(throws_error([&] { (void)qlip::read_image(dir.file("missing.png")); }, {"missing.png", "cannot open"}));
  qlip::test::write_bytes(dir.file("text.png"), "this is not an image at all");
  EXPECT_TRUE(throws_error([&] { (void)qlip::read_image(dir.file("text.png")); }, {"unsupported image format: ", "text.png: "}));
  qlip::test::write_bytes(dir.file("empty.png"), "");
  EXPECT_TRUE(throws_error([&] { (void)qlip::read_image(dir.file("empty.png")); }, {"not an image file: ", "empty.png", "empty"}));
  EXPECT_TRUE(throws_error([&] { (void)qlip::read_image(dir.path()); }, {"directory"}));
  // A PNG cut after its header: decodable header, missing data (more cuts in test_image_decode.cpp).
  qlip::write_png(dir.file("ok.png"), random_image(64, 64, 3, 11));
  std::string bytes = qlip::test::read_bytes(dir.file("ok.png"));
  qlip::test::write_bytes(dir.file("cut.png"), bytes.substr(0, 60));
  EXPECT_TRUE(throws_error([&] { (void)qlip::read_image(dir.file("cut.png")); }, {"truncated PNG file: ", "cut.png"}));
}

TEST(Image, WritePngIsAtomic) {
  qlip::test::ScratchDir dir;
  const std::string path = dir.file("keep.png");
  qlip::write_png(path, random_image(8, 8, 3, 12));
  const std::string before = qlip::test::read_bytes(path);
  Image broken = random_image(8, 8, 3, 13);
  broken.pixels.resize(10);  // inconsistent buffer: rejected before any file is touched
  EXPECT_TRUE(throws_error([&] { qlip::write_png(path, broken); }, {"pixel buffer"}));
  EXPECT_TRUE(throws_error([&] { qlip::write_png(dir.file("nodir/x.png"), random_image(4, 4, 3, 1)); }, {"nodir"}));
  EXPECT_EQ(qlip::test::read_bytes(path), before);
  EXPECT_EQ(dir.list(), std::vector<std::string>{"keep.png"});
}

TEST(Image, MakeGridPlacesCellsWithPadding) {
  Image a = random_image(4, 3, 3, 1), b = random_image(2, 5, 3, 2), c = random_image(4, 5, 3, 3);
  Image g = qlip::make_grid({a, b, c}, 2, 1);
  // Cells are 4x5; 2 columns, 2 rows: width 2·(4+1)+1 = 11, height 2·(5+1)+1 = 13.
  ASSERT_EQ(g.width, 11);
  ASSERT_EQ(g.height, 13);
  for (int y = 0; y < 3; ++y)
    for (int x = 0; x < 4; ++x)
      for (int ch = 0; ch < 3; ++ch) EXPECT_EQ(g.at(1 + y, 1 + x, ch), a.at(y, x, ch));
  for (int y = 0; y < 5; ++y)
    for (int x = 0; x < 2; ++x)
      for (int ch = 0; ch < 3; ++ch) EXPECT_EQ(g.at(1 + y, 6 + x, ch), b.at(y, x, ch));
  for (int y = 0; y < 5; ++y)
    for (int x = 0; x < 4; ++x)
      for (int ch = 0; ch < 3; ++ch) EXPECT_EQ(g.at(7 + y, 1 + x, ch), c.at(y, x, ch));
  for (int x = 0; x < 11; ++x) EXPECT_EQ(g.at(0, x, 0), 0);   // top padding
  for (int y = 0; y < 13; ++y) EXPECT_EQ(g.at(y, 5, 1), 0);   // padding between columns
  for (int y = 7; y < 12; ++y) EXPECT_EQ(g.at(y, 8, 2), 0);   // empty fourth cell
  EXPECT_TRUE(throws_error([] { (void)qlip::make_grid({}, 2); }, {"no images"}));
  EXPECT_TRUE(throws_error([&] { (void)qlip::make_grid({a}, 0); }, {"columns"}));
  EXPECT_TRUE(throws_error([&] { (void)qlip::make_grid({a, random_image(2, 2, 1, 4)}, 2); }, {"channels"}));
}

TEST(Image, PsnrSsimMatchPythonReferences) {
  auto j = qlip::read_json(QLIP_TEST_DATA_DIR "/io/metrics.json");
  const auto& cases = j.at("cases");
  ASSERT_GE(cases.size(), 4u);
  for (const auto& c : cases) {
    std::string pa, pb;
    ASSERT_TRUE(qlip::test::locate_photo(c.at("a").get<std::string>(), c.at("sha256_a").get<std::string>(), pa));
    ASSERT_TRUE(qlip::test::locate_photo(c.at("b").get<std::string>(), c.at("sha256_b").get<std::string>(), pb));
    Image a = qlip::read_image(pa), b = qlip::read_image(pb);
    auto cut = [](const Image& im, const nlohmann::json& box) {
      if (box.is_null()) return im;
      return crop(im, box[0].get<int>(), box[1].get<int>(), box[2].get<int>(), box[3].get<int>());
    };
    a = cut(a, c.at("crop_a"));
    b = cut(b, c.at("crop_b"));
    const double want_psnr = c.at("psnr").get<double>(), want_ssim = c.at("ssim").get<double>();
    const double got_psnr = qlip::psnr(a, b), got_ssim = qlip::ssim(a, b);
    // PSNR: exact integer SSE, so only the last bits of log10 can differ.
    EXPECT_NEAR(got_psnr, want_psnr, 1e-9 * want_psnr) << c.at("a") << " vs " << c.at("b");
    // SSIM: float64 on both sides with the same float32 window; only summation order differs.
    EXPECT_NEAR(got_ssim, want_ssim, 1e-9) << c.at("a") << " vs " << c.at("b");
    std::printf("%s vs %s: psnr %.9f (ref %.9f), ssim %.10f (ref %.10f)\n", c.at("a").get<std::string>().c_str(),
                c.at("b").get<std::string>().c_str(), got_psnr, want_psnr, got_ssim, want_ssim);
  }
}

TEST(Image, MetricEdgeCases) {
  Image a = random_image(20, 15, 3, 5);
  EXPECT_TRUE(std::isinf(qlip::psnr(a, a)));
  EXPECT_EQ(qlip::ssim(a, a), 1.0);
  Image b = a;
  b.pixels[0] = static_cast<std::uint8_t>(b.pixels[0] ^ 1);
  // One pixel differs by 1: MSE = 1/900.
  EXPECT_NEAR(qlip::psnr(a, b), 20.0 * std::log10(255.0 * 30.0), 1e-12);
  EXPECT_TRUE(throws_error([&] { (void)qlip::psnr(a, random_image(20, 14, 3, 6)); }, {"psnr", "differ"}));
  EXPECT_TRUE(throws_error([&] { (void)qlip::ssim(a, random_image(20, 15, 1, 6)); }, {"ssim", "differ"}));
  EXPECT_TRUE(throws_error([&] { (void)qlip::ssim(Image::zeros(0, 0), Image::zeros(0, 0)); }, {"zero-size"}));
}

}  // namespace
