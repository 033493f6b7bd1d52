/// @file test_lpips.cpp
/// @brief The LPIPS perceptual distance (nn/lpips.hpp): the whole network's backward against finite
///        differences (double reference backend, a narrow network of the same structure), the CPU
///        backend against the float reference, and VGG16 with the `lpips` package's real linear heads
///        against the package itself on photo crops (tools/make_lpips_fixtures.py; the backbone is
///        the deterministic one of common/lpips_random.hpp, VGG16's ImageNet weights do not exist
///        offline). Errors name the problem.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/compare.hpp"
#include "common/gradcheck.hpp"
#include "common/lpips_random.hpp"
#include "qlip/cpu.hpp"
#include "qlip/io/image.hpp"
#include "qlip/io/json.hpp"
#include "qlip/io/safetensors.hpp"
#include "qlip/model/lpips_weights.hpp"
#include "qlip/nn/lpips.hpp"

namespace qlip {
namespace {

const std::string kHeads = std::string(QLIP_VOCAB_DIR) + "/lpips_vgg_v0.1_heads.safetensors";
const std::string kPhotos = "/usr/lib/python3/dist-packages/skimage/data";
std::string fixture(const std::string& f) { return std::string(QLIP_TEST_DATA_DIR) + "/lpips/" + f; }

/// Heads with positive weights (as the trained ones are: a distance is a weighted sum of squares).
template <class Net>
void fill_test_heads(Net& net) {
  std::uint64_t t = 100;
  for (auto& l : net.lin) {
    ++t;
    for (std::int64_t i = 0; i < l.numel(); ++i)
      l.value.data()[i] = static_cast<typename Net::T>(0.5 + 0.5 * test::lpips_test_uniform(t, static_cast<std::uint64_t>(i)));
  }
}

template <class T>
Tensor<T, 4> normal_images(std::int64_t b, std::int64_t s, std::uint64_t seed) {
  Tensor<double, 4> d({b, 3, s, s});
  test::fill_normal(d, seed, 0.5);
  Tensor<T, 4> out(d.shape());
  for (std::int64_t i = 0; i < d.numel(); ++i) out.data()[i] = static_cast<T>(d.data()[i]);
  return out;
}

TEST(Lpips, WholeNetworkBackwardMatchesFiniteDifferences) {
  using Net = nn::Lpips<1, reference_backend<double>>;  // widths 1..8, the VGG16 structure
  Net net;
  LpipsWeights<Net> w(net);
  test::fill_lpips_test_backbone(net);
  fill_test_heads(net);
  net.set_input_affine({1.3, 0.9, 1.1}, {0.1, -0.2, 0.05});  // a folded pixel-space map
  constexpr std::int64_t kB = 2, kS = 16;
  net.prepare(kB, kS, kS);
  Tensor<double, 4> x0 = normal_images<double>(kB, kS, 1), x1 = normal_images<double>(kB, kS, 2), dx0(x0.shape());
  Tensor<double, 1> d({kB});
  constexpr double kDloss = 1.7;
  (void)net.forward(x0.view(), x1.view(), d.view());
  net.backward(kDloss, dx0.view());
  auto loss = [&] { return kDloss * net.forward(x0.view(), x1.view(), d.view()); };
  EXPECT_TRUE(test::check_gradients(loss, {{"x0", test::span_of(x0), test::span_of(dx0)}}));
}

TEST(Lpips, CpuMatchesTheFloatReference) {
  using Cpu = nn::Lpips<8, cpu_backend>;
  using Ref = nn::Lpips<8, reference_backend<float>>;
  Cpu cpu;
  Ref ref;
  LpipsWeights<Cpu> wc(cpu);
  LpipsWeights<Ref> wr(ref);
  test::fill_lpips_test_backbone(cpu);
  fill_test_heads(cpu);
  test::fill_lpips_test_backbone(ref);
  fill_test_heads(ref);
  constexpr std::int64_t kB = 3, kS = 24;  // 24 → 12 → 6 → 3 → 1: floor pooling on odd extents
  cpu.prepare(kB, kS, kS);
  ref.prepare(kB, kS, kS);
  const Tensor<float, 4> x0 = normal_images<float>(kB, kS, 3), x1 = normal_images<float>(kB, kS, 4);
  Tensor<float, 1> dc({kB}), dr({kB});
  Tensor<float, 4> gc(x0.shape()), gr(x0.shape());
  const double mc = cpu.forward(x0.view(), x1.view(), dc.view());
  const double mr = ref.forward(x0.view(), x1.view(), dr.view());
  EXPECT_NEAR(mc, mr, test::kF32Reduction.atol + test::kF32Reduction.rtol * std::fabs(mr));
  EXPECT_TRUE(test::all_close(test::as_const_view(dc), test::as_const_view(dr), test::kF32Reduction));
  cpu.backward(1.0, gc.view());
  ref.backward(1.0, gr.view());
  EXPECT_TRUE(test::all_close(test::as_const_view(gc), test::as_const_view(gr), test::kF32Reduction));
}

/// The fixture's (photo, top, left) pairs as two [B, 3, crop, crop] batches in [-1, 1] (u8/127.5 − 1,
/// the fixture's float32 map).
void load_pairs(const nlohmann::json& pairs, std::int64_t crop, Tensor<float, 4>& x0, Tensor<float, 4>& x1) {
  const std::int64_t b = static_cast<std::int64_t>(pairs.size());
  x0 = Tensor<float, 4>({b, 3, crop, crop});
  x1 = Tensor<float, 4>({b, 3, crop, crop});
  const auto load_crop = [&](const nlohmann::json& spec, Tensor<float, 4>& dst, std::int64_t i) {
    const Image im = read_image(kPhotos + "/" + spec.at(0).get<std::string>());
    const int top = spec.at(1).get<int>(), left = spec.at(2).get<int>();
    for (int c = 0; c < 3; ++c)
      for (std::int64_t y = 0; y < crop; ++y)
        for (std::int64_t x = 0; x < crop; ++x) {
          const std::size_t at = (static_cast<std::size_t>(top + y) * static_cast<std::size_t>(im.width) +
                                  static_cast<std::size_t>(left + x)) * 3 + static_cast<std::size_t>(c);
          dst(i, c, y, x) = static_cast<float>(im.pixels[at]) / 127.5f - 1.0f;
        }
  };
  for (std::int64_t i = 0; i < b; ++i) {
    load_crop(pairs[static_cast<std::size_t>(i)].at("x0"), x0, i);
    load_crop(pairs[static_cast<std::size_t>(i)].at("x1"), x1, i);
  }
}

TEST(Lpips, Vgg16WithTheRealHeadsEqualsTheLpipsPackageOnPhotos) {
  if (!std::filesystem::exists(kHeads)) GTEST_SKIP() << kHeads << " is missing: run scripts/setup.sh";
  if (!std::filesystem::exists(kPhotos + "/astronaut.png")) GTEST_SKIP() << "scikit-image's photos are missing: run scripts/setup.sh";
  using Net = nn::Lpips<64, cpu_backend>;
  Net net;
  LpipsWeights<Net> w(net);
  test::fill_lpips_test_backbone(net);
  w.load(kHeads, LpipsLoad::heads_only);

  const nlohmann::json fx = read_json(fixture("lpips_photos.json"));
  Tensor<float, 4> x0, x1;
  load_pairs(fx.at("pairs"), fx.at("crop").get<std::int64_t>(), x0, x1);
  const std::int64_t b = x0.size(0);
  net.prepare(b, x0.size(2), x0.size(3));
  Tensor<float, 1> d({b});
  (void)net.forward(x0.view(), x1.view(), d.view());
  Tensor<float, 1> want({b});
  for (std::int64_t i = 0; i < b; ++i) want(i) = fx.at("distance").at(static_cast<std::size_t>(i)).get<float>();
  EXPECT_TRUE(test::all_close(test::as_const_view(d), test::as_const_view(want), test::kF32Op));
  EXPECT_GT(want(1), want(0)) << "another photo is farther than a 1-pixel shift";
  EXPECT_EQ(d(3), 0.0f) << "identical images";

  // The gradient on its own 16×16 crops, which keep every ReLU input and pool window of x0 away
  // from a kink (the script's margin): at a kink fp32 rounding may pick either side.
  Tensor<float, 4> g0, g1;
  load_pairs(fx.at("grad_pairs"), fx.at("grad_crop").get<std::int64_t>(), g0, g1);
  net.prepare(g0.size(0), g0.size(2), g0.size(3));
  Tensor<float, 1> dg({g0.size(0)});
  (void)net.forward(g0.view(), g1.view(), dg.view());
  Tensor<float, 4> g(g0.shape());
  net.backward(1.0, g.view());
  const SafetensorsFile gf = SafetensorsFile::open(fixture("lpips_grad.safetensors"));
  const Tensor<float, 4> gwant = gf.to_float<4>("grad_x0");
  // Scale-aware atol: the gradient's elements are ~1e-4, so an absolute 1e-4 would pass anything.
  double max_abs = 0;
  for (std::int64_t i = 0; i < gwant.numel(); ++i) max_abs = std::max(max_abs, std::fabs(static_cast<double>(gwant.data()[i])));
  EXPECT_TRUE(test::all_close(test::as_const_view(g), test::as_const_view(gwant),
                              {test::kF32Reduction.atol * max_abs, test::kF32Reduction.rtol}));
}

TEST(Lpips, BadInputNamesTheProblem) {
  using Net = nn::Lpips<2, cpu_backend>;
  Net net;
  LpipsWeights<Net> w(net);
  test::expect_error_naming([&] { net.prepare(2, 8, 8); }, "at least 16x16");
  net.prepare(1, 16, 16);
  Tensor<float, 4> a({2, 3, 16, 16});
  Tensor<float, 1> d({2});
  test::expect_error_naming([&] { (void)net.forward(a.view(), a.view(), d.view()); }, "buffers were prepared for [1, 3, 16, 16]");
  // A file of the heads has no backbone; heads of VGG16's widths do not fit a narrow network.
  if (std::filesystem::exists(kHeads)) {
    test::expect_error_naming([&] { w.load(kHeads); }, "no tensor 'net.slice1.0.weight' (the VGG16 backbone");
    test::expect_error_naming([&] { w.load(kHeads, LpipsLoad::heads_only); },
                              "'lin0.model.1.weight' has shape [1, 64, 1, 1], expected [1, 2, 1, 1]");
  }
}

}  // namespace
}  // namespace qlip
