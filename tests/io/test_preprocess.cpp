/// @file test_preprocess.cpp
/// @brief CLIP preprocessing against transformers.CLIPImageProcessor (QLIP's config: 256, CLIP
///        mean/std) on real photos (fixture made by tools/make_preprocess_fixtures.py), plus the
///        config parser, the inverse, the batched helpers and the error cases.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "common/compare.hpp"
#include "io/io_test_util.hpp"
#include "io/photos.hpp"
#include "qlip/core/allocator.hpp"
#include "qlip/core/philox.hpp"
#include "qlip/io/preprocess.hpp"
#include "qlip/io/safetensors.hpp"

namespace {

using qlip::ClipPreprocessConfig;
using qlip::Image;
using qlip::test::throws_error;

const std::string kConfig = QLIP_TEST_DATA_DIR "/io/preprocessor_config.json";

TEST(Preprocess, ConfigParsing) {
  auto cfg = ClipPreprocessConfig::load(kConfig);
  EXPECT_EQ(cfg.shortest_edge, 256);
  EXPECT_EQ(cfg.crop_height, 256);
  EXPECT_EQ(cfg.crop_width, 256);
  EXPECT_TRUE(cfg.do_resize && cfg.do_center_crop && cfg.do_normalize);
  EXPECT_EQ(cfg.mean[0], 0.48145466f);
  EXPECT_EQ(cfg.std[2], 0.27577711f);

  auto dict = ClipPreprocessConfig::from_json(
      nlohmann::json::parse(R"({"size": {"shortest_edge": 392}, "crop_size": {"height": 390, "width": 391},
                               "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "do_center_crop": false})"));
  EXPECT_EQ(dict.shortest_edge, 392);
  EXPECT_EQ(dict.crop_height, 390);
  EXPECT_EQ(dict.crop_width, 391);
  EXPECT_FALSE(dict.do_center_crop);
  EXPECT_EQ(dict.mean[1], 0.5f);

  EXPECT_TRUE(throws_error([] { (void)ClipPreprocessConfig::from_json(nlohmann::json::parse(R"({"resample": 2})")); }, {"resample = 2"}));
  EXPECT_TRUE(throws_error([] { (void)ClipPreprocessConfig::from_json(nlohmann::json::parse(R"({"image_std": [1, 2]})")); }, {"image_std", "3"}));
  EXPECT_TRUE(throws_error([] { (void)ClipPreprocessConfig::from_json(nlohmann::json::parse(R"({"size": "big"})")); }, {"'size'"}));
  EXPECT_TRUE(throws_error([] { (void)ClipPreprocessConfig::from_json(nlohmann::json::parse(R"({"size": {"height": 5, "width": 5}})")); }, {"shortest_edge"}));
  EXPECT_TRUE(throws_error([] { (void)ClipPreprocessConfig::load("/nonexistent/preprocessor_config.json"); }, {"/nonexistent/preprocessor_config.json"}));
}

TEST(Preprocess, ResizeSizeFollowsTransformersRounding) {
  // int(256 * long / short), shortest edge first.
  EXPECT_EQ(qlip::clip_resize_size(451, 300, 256), (std::array<int, 2>{384, 256}));  // 384.85 → 384
  EXPECT_EQ(qlip::clip_resize_size(550, 660, 256), (std::array<int, 2>{256, 307}));  // 307.2 → 307
  EXPECT_EQ(qlip::clip_resize_size(512, 512, 256), (std::array<int, 2>{256, 256}));
  EXPECT_EQ(qlip::clip_resize_size(3, 1000, 224), (std::array<int, 2>{224, 74666}));
  EXPECT_EQ(qlip::clip_resize_size(1000, 872, 256), (std::array<int, 2>{293, 256}));
}

/// Acceptance: every pixel of every photo equal to HF's output (|dev| < 1e-6 in [0,1] pixel units,
/// i.e. the same uint8 level before normalisation).
TEST(Preprocess, MatchesClipImageProcessorOnRealPhotos) {
  auto fixture = qlip::SafetensorsFile::open(QLIP_TEST_DATA_DIR "/io/preprocess.safetensors");
  const auto& meta = fixture.metadata();
  const int count = std::stoi(meta.at("count"));
  ASSERT_GE(count, 5);
  auto cfg = ClipPreprocessConfig::load(kConfig);
  qlip::Tensor<float, 3> out({3, 256, 256});
  double worst_levels_all = 0;
  for (int i = 0; i < count; ++i) {
    const std::string key = "image" + std::to_string(i);
    const std::string name = meta.at(key + ".file");
    std::string path;
    ASSERT_TRUE(qlip::test::locate_photo(name, meta.at(key + ".sha256"), path));
    const Image photo = qlip::read_image(path);
    qlip::preprocess_clip(photo, cfg, out.view());

    auto levels = fixture.view<std::uint8_t, 3>(key);  // [3, 256, 256] HF output as exact uint8 levels
    std::int64_t exact = 0, n = 0;
    double worst = 0;  // in [0,1] pixel units
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < 256; ++y)
        for (int x = 0; x < 256; ++x) {
          // HF's value, computed the way HF computes it (float64 rescale → float32, float32 normalise).
          const float ref = (static_cast<float>(levels(c, y, x) / 255.0) - cfg.mean[c]) / cfg.std[c];
          const double dev = std::fabs(static_cast<double>(out(c, y, x)) - ref) * cfg.std[c];
          worst = std::max(worst, dev);
          exact += dev < 1e-6;
          ++n;
        }
    worst_levels_all = std::max(worst_levels_all, worst * 255.0);
    std::printf("%-22s %-5s %-9s max |dev| %.3g (= %.2f levels), exact pixels %.4f%%\n", name.c_str(),
                meta.at(key + ".mode").c_str(), meta.at(key + ".size").c_str(), worst, worst * 255.0,
                100.0 * static_cast<double>(exact) / static_cast<double>(n));
    // The decoders are PIL's (libpng, libjpeg-turbo with its defaults) and the resize reimplements
    // Pillow's integer arithmetic, so every photo, PNG and JPEG alike, must match bit for bit.
    EXPECT_EQ(exact, n) << name << ": should reproduce HF exactly; worst pixel off by " << worst * 255.0 << " levels";
  }
  std::printf("worst deviation over all photos: %.2f levels of 255\n", worst_levels_all);
}

TEST(Preprocess, PostprocessInvertsPreprocess) {
  std::string path;
  ASSERT_TRUE(qlip::test::locate_photo("chelsea.png", "", path));
  const Image photo = qlip::read_image(path);
  auto cfg = ClipPreprocessConfig::load(kConfig);
  qlip::Tensor<float, 3> out({3, 256, 256});
  qlip::preprocess_clip(photo, cfg, out.view());
  Image back = qlip::postprocess_clip(out.view(), cfg.mean, cfg.std);
  Image direct = qlip::clip_resize_crop(photo, cfg);
  EXPECT_EQ(back.width, 256);
  EXPECT_EQ(back.pixels, direct.pixels);

  // Clamping and rounding: values beyond [0,1] saturate, NaN becomes 0.
  qlip::Tensor<float, 3> t({3, 1, 3});
  const std::array<float, 3> zero{0, 0, 0}, one{1, 1, 1};
  const float vals[3] = {-0.5f, 2.0f, std::nanf("")};
  for (int c = 0; c < 3; ++c)
    for (int x = 0; x < 3; ++x) t(c, 0, x) = vals[x];
  t(0, 0, 0) = 0.5f / 255.0f + 1e-6f;  // rounds up to level 1
  Image s = qlip::postprocess_clip(t.view(), zero, one);
  EXPECT_EQ(s.at(0, 0, 0), 1);
  EXPECT_EQ(s.at(0, 0, 1), 0);
  EXPECT_EQ(s.at(0, 1, 0), 255);
  EXPECT_EQ(s.at(0, 2, 2), 0);
}

TEST(Preprocess, BatchedHelpersMatchSingleImages) {
  auto cfg = ClipPreprocessConfig::load(kConfig);
  std::string p1, p2;
  ASSERT_TRUE(qlip::test::locate_photo("astronaut.png", "", p1));
  ASSERT_TRUE(qlip::test::locate_photo("coffee.png", "", p2));
  std::vector<Image> imgs = {qlip::read_image(p1), qlip::read_image(p2)};
  qlip::Tensor<float, 4> batch({2, 3, 256, 256});
  qlip::preprocess_clip_batch(imgs, cfg, batch.view());
  qlip::Tensor<float, 3> one({3, 256, 256});
  for (int b = 0; b < 2; ++b) {
    qlip::preprocess_clip(imgs[static_cast<std::size_t>(b)], cfg, one.view());
    EXPECT_TRUE(qlip::test::all_close(qlip::HostView<const float, 3>(batch.view().select(0, b)), one.view(), qlip::test::kExact));
  }
  auto back = qlip::postprocess_clip_batch(batch.view(), cfg.mean, cfg.std);
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[1].pixels, qlip::clip_resize_crop(imgs[1], cfg).pixels);
  qlip::Tensor<float, 4> wrong({3, 3, 256, 256});
  EXPECT_TRUE(throws_error([&] { qlip::preprocess_clip_batch(imgs, cfg, wrong.view()); }, {"batch"}));
}

TEST(Preprocess, StridedOutputAndSmallCropPadding) {
  // Output through a strided view (HWC storage seen as CHW) gives the same values.
  auto cfg = ClipPreprocessConfig{};
  cfg.shortest_edge = 16;
  cfg.crop_height = 20;  // larger than the resized height: transformers pads with black
  cfg.crop_width = 12;
  Image im = Image::zeros(30, 10, 3);
  qlip::Philox rng(3);
  for (std::size_t i = 0; i < im.pixels.size(); ++i) im.pixels[i] = static_cast<std::uint8_t>(rng.uniform(i) * 256.0f);
  // Resized to 48x16; crop 20x12: rows -2..17 of 16 (two black rows on top, two at the bottom),
  // columns 18..29.
  Image px = qlip::clip_resize_crop(im, cfg);
  ASSERT_EQ(px.width, 12);
  ASSERT_EQ(px.height, 20);
  Image resized = qlip::resize_bicubic_pil(im, 48, 16);
  for (int x = 0; x < 12; ++x) {
    EXPECT_EQ(px.at(0, x, 0), 0);
    EXPECT_EQ(px.at(19, x, 2), 0);
    EXPECT_EQ(px.at(2, x, 1), resized.at(0, 18 + x, 1));
    EXPECT_EQ(px.at(17, x, 0), resized.at(15, 18 + x, 0));
  }
  qlip::Tensor<float, 3> hwc({20, 12, 3});
  qlip::Tensor<float, 3> chw({3, 20, 12});
  auto strided = hwc.view().transpose(0, 2).transpose(1, 2);  // [3, 20, 12] over HWC memory
  qlip::preprocess_clip(im, cfg, strided);
  qlip::preprocess_clip(im, cfg, chw.view());
  EXPECT_TRUE(qlip::test::all_close(qlip::HostView<const float, 3>(strided), chw.view(), qlip::test::kExact));
}

TEST(Preprocess, Errors) {
  auto cfg = ClipPreprocessConfig::load(kConfig);
  qlip::Tensor<float, 3> out({3, 256, 256});
  EXPECT_TRUE(throws_error([&] { qlip::preprocess_clip(Image::zeros(0, 10), cfg, out.view()); }, {"zero-size"}));
  EXPECT_TRUE(throws_error([&] { qlip::preprocess_clip(Image::zeros(10, 0), cfg, out.view()); }, {"zero-size"}));
  qlip::Tensor<float, 3> wrong({3, 224, 224});
  EXPECT_TRUE(throws_error([&] { qlip::preprocess_clip(Image::zeros(300, 300), cfg, wrong.view()); }, {"[3, 224, 224]", "[3, 256, 256]"}));
  Image bad = Image::zeros(4, 4);
  bad.pixels.resize(3);
  EXPECT_TRUE(throws_error([&] { qlip::preprocess_clip(bad, cfg, out.view()); }, {"pixel buffer"}));
  qlip::Tensor<float, 3> two({2, 4, 4});
  EXPECT_TRUE(throws_error([&] { (void)qlip::postprocess_clip(two.view(), cfg.mean, cfg.std); }, {"[3, H, W]"}));
}

}  // namespace
