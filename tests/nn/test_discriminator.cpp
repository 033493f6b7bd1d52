/// @file test_discriminator.cpp
/// @brief The StyleGAN2 discriminator (nn/discriminator.hpp): its backward (input and every
///        parameter of every block: fromrgb, conv0, conv1, skip, and the epilogue's conv, fc, out)
///        and the R1 penalty's parameter gradient (forward mode over the backward) against finite
///        differences on the double reference backend, for one- and two-block networks; the CPU
///        backend against the float reference; errors.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "common/compare.hpp"
#include "common/gradcheck.hpp"
#include "qlip/cpu.hpp"
#include "qlip/nn/discriminator.hpp"

namespace qlip {
namespace {

// One block (8 → epilogue at 4), groups of 4; two blocks (16, 8), groups of 2. Widths 2–3.
constexpr nn::DiscriminatorConfig kOneBlock{8, 3, 16, 3, 4};
constexpr nn::DiscriminatorConfig kTwoBlocks{16, 3, 32, 2, 2};

/// Parameter storage of one discriminator: every tensor in its own vector, values from Philox
/// (weights N(0, 1) as StyleGAN2 initialises them, biases N(0, 0.1) so their gradients are tested
/// away from 0).
template <class T>
struct Storage {
  std::vector<std::string> names;
  std::vector<std::vector<T>> values, grads;

  template <class D>
  void bind(D& d, std::uint64_t seed) {
    d.visit_parameters([&](const std::string& name, auto& p) {
      names.push_back(name);
      values.emplace_back(static_cast<std::size_t>(p.numel()));
      grads.emplace_back(static_cast<std::size_t>(p.numel()), T(0));
      Philox rng(seed + names.size());
      const double scale = name.ends_with(".bias") ? 0.1 : 1.0;
      for (std::int64_t i = 0; i < p.numel(); ++i)
        values.back()[static_cast<std::size_t>(i)] =
            static_cast<T>(static_cast<float>(scale * rng.normal(static_cast<std::uint64_t>(i))));
      p.value = decltype(p.value)(values.back().data(), p.shape);
      p.grad = decltype(p.grad)(grads.back().data(), p.shape);
    });
  }
  void zero_grads() {
    for (auto& g : grads) std::fill(g.begin(), g.end(), T(0));
  }
  std::vector<test::GradInput> inputs() {
    std::vector<test::GradInput> in;
    for (std::size_t i = 0; i < names.size(); ++i)
      in.push_back({names[i], std::span<double>(values[i]), std::span<const double>(grads[i])});
    return in;
  }
};

template <nn::DiscriminatorConfig C>
void check_backward_against_finite_differences(std::int64_t batch, std::uint64_t seed) {
  using D = nn::Discriminator<C, reference_backend<double>>;
  D d;
  Storage<double> s;
  s.bind(d, seed);
  d.prepare(batch);
  Tensor<double, 4> x({batch, C.image_channels, C.resolution, C.resolution}), dx(x.shape());
  Tensor<double, 1> logits({batch}), dl({batch});
  test::fill_normal(x, seed + 100);
  test::fill_normal(dl, seed + 101);
  d.forward(x.view(), logits.view());
  d.backward(dl.view(), dx.view(), 1.0);
  std::vector<test::GradInput> in = s.inputs();
  in.push_back({"x", test::span_of(x), test::span_of(dx)});
  // fromrgb (weight, bias), per block conv0 and conv1 (weight, bias) and skip (weight), the
  // epilogue's conv, fc and out (weight, bias), and x.
  EXPECT_EQ(in.size(), 2u + 5u * D::kBlocks + 6u + 1u);
  auto loss = [&] {
    d.forward(x.view(), logits.view());
    return test::weighted_sum(dl, logits);
  };
  EXPECT_TRUE(test::check_gradients(loss, in));
}

TEST(DiscriminatorGrad, BackwardOfEveryBlockMatchesFiniteDifferences) {
  check_backward_against_finite_differences<kOneBlock>(4, 1);
  check_backward_against_finite_differences<kTwoBlocks>(4, 2);
}

template <nn::DiscriminatorConfig C>
void check_r1_against_finite_differences(std::int64_t batch, std::uint64_t seed) {
  using D = nn::Discriminator<C, reference_backend<double>>;
  D d;
  Storage<double> s;
  s.bind(d, seed);
  d.prepare(batch);
  Tensor<double, 4> x({batch, C.image_channels, C.resolution, C.resolution});
  Tensor<double, 1> logits({batch}), ones({batch});
  test::fill_normal(x, seed + 100);
  for (std::int64_t i = 0; i < batch; ++i) ones(i) = 1.0;
  // The penalty is mean_b ‖∇ₓ Σ D‖²: compare it with the input gradient of backward().
  d.forward(x.view(), logits.view());
  Tensor<double, 4> g(x.shape());
  d.backward(ones.view(), g.view(), 0.0);
  double want = 0.0;
  for (std::int64_t i = 0; i < g.numel(); ++i) want += g.data()[i] * g.data()[i];
  s.zero_grads();
  const double weight = 0.7;
  const double r1 = d.r1(weight);
  EXPECT_NEAR(r1, want / static_cast<double>(batch), 1e-12 * std::abs(want));
  for (auto& gr : s.grads)
    for (double& v : gr) v /= weight;
  auto penalty = [&] {
    d.forward(x.view(), logits.view());
    return d.r1(0.0);
  };
  EXPECT_TRUE(test::check_gradients(penalty, s.inputs()));
}

TEST(DiscriminatorGrad, R1ParameterGradientMatchesFiniteDifferences) {
  check_r1_against_finite_differences<kOneBlock>(4, 11);
  check_r1_against_finite_differences<kTwoBlocks>(4, 12);
}

TEST(Discriminator, CpuEqualsTheFloatReference) {
  constexpr nn::DiscriminatorConfig C{32, 3, 256, 8, 4};  // three blocks, widths 8
  constexpr std::int64_t kBatch = 8;
  nn::Discriminator<C, reference_backend<float>> ref;
  nn::Discriminator<C, cpu_backend> cpu;
  Storage<float> sr, sc;
  sr.bind(ref, 5);
  sc.bind(cpu, 5);
  ref.prepare(kBatch);
  cpu.prepare(kBatch);
  Tensor<double, 4> xd({kBatch, 3, 32, 32});
  Tensor<double, 1> dld({kBatch});
  test::fill_normal(xd, 6);
  test::fill_normal(dld, 7);
  const Tensor<float, 4> x = test::to_float(xd);
  const Tensor<float, 1> dl = test::to_float(dld);
  Tensor<float, 1> lr({kBatch}), lc({kBatch});
  Tensor<float, 4> dxr(x.shape()), dxc(x.shape());
  ref.forward(x.view(), lr.view());
  cpu.forward(x.view(), lc.view());
  EXPECT_TRUE(test::all_close(lc.view(), lr.view(), test::kF32Reduction));
  ref.backward(dl.view(), dxr.view(), 1.0);
  cpu.backward(dl.view(), dxc.view(), 1.0);
  EXPECT_TRUE(test::all_close(dxc.view(), dxr.view(), test::kF32Reduction));
  const double r1r = ref.r1(5.0), r1c = cpu.r1(5.0);
  EXPECT_NEAR(r1c, r1r, 1e-4 * std::abs(r1r));
  for (std::size_t i = 0; i < sr.names.size(); ++i) {
    SCOPED_TRACE(sr.names[i]);
    const std::int64_t n = static_cast<std::int64_t>(sr.grads[i].size());
    EXPECT_TRUE(test::all_close(HostView<const float, 1>(sc.grads[i].data(), {n}),
                                HostView<const float, 1>(sr.grads[i].data(), {n}), test::kF32Reduction));
  }
}

TEST(Discriminator, ParameterNamesAndShapesAreStyleGan2s) {
  constexpr nn::DiscriminatorConfig C{32, 3, 1024, 32, 4};  // the demo's: 32 channels at every resolution
  nn::Discriminator<C, cpu_backend> d;
  std::vector<std::string> names;
  std::int64_t count = 0;
  d.visit_parameters([&](const std::string& name, auto& p) {
    constexpr int kRank = static_cast<int>(std::tuple_size_v<std::remove_cvref_t<decltype(p.shape)>>);
    names.push_back(name + " " + shape_string<kRank>(p.shape));
    count += p.numel();
  });
  ASSERT_EQ(names.size(), 2u + 3u * 5u + 6u);
  EXPECT_EQ(names.front(), "b32.fromrgb.weight [32, 3, 1, 1]");
  EXPECT_EQ(names[2], "b32.conv0.weight [32, 32, 3, 3]");
  EXPECT_EQ(names[4], "b32.conv1.weight [32, 32, 3, 3]");
  EXPECT_EQ(names[6], "b32.skip.weight [32, 32, 1, 1]");
  EXPECT_EQ(names[names.size() - 4], "b4.fc.weight [32, 512]");
  EXPECT_EQ(names.back(), "b4.out.bias [1]");
  // fromrgb 128 + 3·(9248 + 9248 + 1024) + conv 9536 + fc 16416 + out 33
  EXPECT_EQ(count, 128 + 3 * (9248 + 9248 + 1024) + 9536 + 16416 + 33);
}

TEST(Discriminator, ABatchThatDoesNotSplitIntoGroupsIsRefused) {
  nn::Discriminator<kOneBlock, cpu_backend> d;
  test::expect_error_naming([&] { d.prepare(6); }, "a batch of 6 is not a multiple of the minibatch-std group size 4");
}

}  // namespace
}  // namespace qlip
