/// @file test_bsq_loss_grad.cpp
/// @brief BSQ straight-through quantiser and quantiser loss: the double reference against finite
///        differences (both entropy modes, g = 1, 2, 4, L = 4, 8, saturated probabilities, each
///        loss term alone, probabilities near the 1e-8 inside entr), explicit values at the
///        sign's kink and for the ε, the two modes against each other, the CPU backend against the
///        float reference (strided views, the arena size, thread-count independence) and the
///        argument checks.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "common/compare.hpp"
#include "common/gradcheck.hpp"
#include "common/loss_test_util.hpp"
#include "qlip/core/allocator.hpp"
#include "qlip/cpu/bsq_loss.hpp"
#include "qlip/cpu/threading.hpp"
#include "qlip/reference/bsq_loss.hpp"

namespace qlip {
namespace {

using test::fill_normal;
using test::span_of;

/// Rows scaled to unit length: the quantiser's input in QLIP is the L2-normalised u.
void normalize_rows(Tensor<double, 2>& t) {
  for (std::int64_t i = 0; i < t.size(0); ++i) {
    double n = 0.0;
    for (std::int64_t j = 0; j < t.size(1); ++j) n += t(i, j) * t(i, j);
    for (std::int64_t j = 0; j < t.size(1); ++j) t(i, j) /= std::sqrt(n);
  }
}

BsqLossConfig config(BsqEntropyMode mode, int g, double inv_t, double gamma0 = 0.7, double gamma1 = 1.3,
                     double beta = 0.25, bool l2_norm = true) {
  BsqLossConfig cfg;
  cfg.mode = mode;
  cfg.group_size = g;
  cfg.inv_temperature = inv_t;
  cfg.gamma0 = gamma0;
  cfg.gamma1 = gamma1;
  cfg.beta = beta;
  cfg.l2_norm = l2_norm;
  return cfg;
}

const char* mode_name(BsqEntropyMode m) { return m == BsqEntropyMode::group ? "group" : "analytical"; }

/// dloss·loss_q as a function of z, its analytic gradient from bsq_loss_backward, compared.
::testing::AssertionResult check_bsq_gradient(Tensor<double, 2>& z, const BsqLossConfig& cfg, double dloss) {
  Tensor<double, 2> dz(z.shape());
  reference::bsq_loss_backward<double>(z.view(), cfg, dloss, HostView<const double, 2>(), dz.view());
  auto loss = [&] { return dloss * reference::bsq_loss<double>(z.view(), cfg).loss; };
  return test::check_gradients(loss, {{"z", span_of(z), span_of(dz)}});
}

TEST(BsqLossGrad, ReferenceMatchesFiniteDifferences) {
  std::uint64_t seed = 700;
  for (const BsqEntropyMode mode : {BsqEntropyMode::analytical, BsqEntropyMode::group})
    for (const std::int64_t l : {4, 8})
      for (const int g : {1, 2, 4}) {
        // T = 1 on z ~ N(0, 0.5²): soft probabilities. T = 100 on unit rows (QLIP's setting):
        // saturated ones, many far below 1e-8.
        for (const bool saturated : {false, true}) {
          SCOPED_TRACE(::testing::Message() << mode_name(mode) << " L " << l << " g " << g
                                            << (saturated ? " T 100 unit rows" : " T 1"));
          Tensor<double, 2> z({5, l});
          fill_normal(z, ++seed, 0.5);
          if (saturated) normalize_rows(z);
          EXPECT_TRUE(check_bsq_gradient(z, config(mode, g, saturated ? 100.0 : 1.0), 0.9));
        }
      }
}

TEST(BsqLossGrad, EachTermAloneMatchesFiniteDifferences) {
  // γ0 only, γ1 only, β only, and without the l2_norm scale: a wrong term cannot hide behind another.
  std::uint64_t seed = 800;
  struct Weights {
    double gamma0, gamma1, beta;
    bool l2_norm;
  };
  for (const BsqEntropyMode mode : {BsqEntropyMode::analytical, BsqEntropyMode::group})
    for (const Weights w : {Weights{1, 0, 0, true}, Weights{0, 1, 0, true}, Weights{0, 0, 1, true},
                            Weights{0.5, 2, 0.3, false}}) {
      SCOPED_TRACE(::testing::Message() << mode_name(mode) << " γ0 " << w.gamma0 << " γ1 " << w.gamma1 << " β "
                                        << w.beta << (w.l2_norm ? "" : " no l2_norm"));
      Tensor<double, 2> z({7, 6});
      fill_normal(z, ++seed, 0.4);
      EXPECT_TRUE(check_bsq_gradient(z, config(mode, 2, 2.5, w.gamma0, w.gamma1, w.beta, w.l2_norm), 1.1));
    }
  Tensor<double, 2> one({1, 4});  // a single token: p̄ is that token's p
  fill_normal(one, 900, 0.5);
  EXPECT_TRUE(check_bsq_gradient(one, config(BsqEntropyMode::group, 4, 1.5), 1.0));
}

TEST(BsqLossGrad, EpsilonSitsInsideEntr) {
  // One token, one bit, analytical, c = 1: p(−1) = σ(−4T·z) ≈ e^−360, so without the ε the entropy
  // would be ~1e−154; with it, H = entr(p + ε) + entr(1 − p + ε) ≈ 1.74e−7.
  Tensor<double, 2> z({1, 1});
  z(0, 0) = 0.9;
  const BsqLossConfig cfg = config(BsqEntropyMode::analytical, 1, 100.0, 1.0, 1.0, 0.0, false);
  const double p = 1.0 / (1.0 + std::exp(4.0 * 100.0 * 0.9)), e = kBsqEntropyEps;
  const double expected = -(p + e) * std::log(p + e) - (1.0 - p + e) * std::log(1.0 - p + e);
  const BsqLossResult r = reference::bsq_loss<double>(z.view(), cfg);
  EXPECT_TRUE(test::scalar_close(r.per_sample_entropy, expected, {0.0, 1e-9}));
  EXPECT_TRUE(test::scalar_close(r.codebook_entropy, expected, {0.0, 1e-9}));
  EXPECT_GT(r.per_sample_entropy, 1e-7);
  EXPECT_EQ(r.entropy_penalty, 0.0);  // γ0 = γ1 and one token: the two entropies coincide
  // The CPU op, on the float input.
  Tensor<float, 2> zf({1, 1});
  zf(0, 0) = 0.9f;
  Arena ws(bsq_loss_workspace_bytes(1, cfg));
  const BsqLossResult cpu = ops::bsq_loss(cpu_backend{}, ws, zf.view(), cfg);
  const double pf = 1.0 / (1.0 + std::exp(4.0 * 100.0 * static_cast<double>(zf(0, 0))));
  const double expected_f = -(pf + e) * std::log(pf + e) - (1.0 - pf + e) * std::log(1.0 - pf + e);
  EXPECT_TRUE(test::scalar_close(cpu.per_sample_entropy, expected_f, {0.0, 1e-9}));
  EXPECT_TRUE(test::scalar_close(cpu.codebook_entropy, expected_f, {0.0, 1e-9}));
}

TEST(BsqLossGrad, EpsilonInsideEntrShapesTheGradient) {
  // ∂entr(p + ε)/∂z = −(ln(p + ε) + 1)·∂p/∂z with ∂p/∂z ∝ p, so the ε matters only where p is near
  // it: bits with P(bit = −1) = σ(−4z) between 1e−7 and 1e−9 (c = 1, T = 1). There, central
  // differences lose ~1e−3 of relative accuracy to rounding in entr(1 − p + ε) (a value next to 1),
  // more than the ε's ~1% effect can be told from, so this checks the closed form instead: per bit,
  //   ∂H_ps/∂z_ni = (1/N)·(ln(1 − p_ni + ε) − ln(p_ni + ε))·∂p_ni/∂z_ni,
  //   ∂H_cb/∂z_ni = (1/N)·(ln(1 − p̄_i + ε) − ln(p̄_i + ε))·∂p_ni/∂z_ni,   ∂p/∂z = −4p(1 − p).
  const std::int64_t n_tok = 3, l = 2;
  Tensor<double, 2> z({n_tok, l});
  const double values[3][2] = {{4.0, 4.3}, {4.6, 4.5}, {5.2, 4.7}};
  for (int n = 0; n < 3; ++n)
    for (int i = 0; i < 2; ++i) z(n, i) = values[n][i];
  const double e = kBsqEntropyEps, dloss = 0.75;
  auto p_of = [](double zi) { return 1.0 / (1.0 + std::exp(4.0 * zi)); };
  for (const BsqEntropyMode mode : {BsqEntropyMode::analytical, BsqEntropyMode::group})
    for (const bool per_sample : {true, false}) {
      SCOPED_TRACE(::testing::Message() << mode_name(mode) << (per_sample ? " H_ps alone" : " H_cb alone"));
      const BsqLossConfig cfg = config(mode, 1, 1.0, per_sample ? 1.0 : 0.0, per_sample ? 0.0 : 1.0, 0.0, false);
      Tensor<double, 2> dz({n_tok, l});
      reference::bsq_loss_backward<double>(z.view(), cfg, dloss, HostView<const double, 2>(), dz.view());
      for (std::int64_t i = 0; i < l; ++i) {
        double p_bar = 0.0;
        for (std::int64_t n = 0; n < n_tok; ++n) p_bar += p_of(z(n, i)) / static_cast<double>(n_tok);
        for (std::int64_t n = 0; n < n_tok; ++n) {
          const double p = p_of(z(n, i)), dp = -4.0 * p * (1.0 - p);
          const double q = per_sample ? p : p_bar;
          // loss = (γ0·H_ps − γ1·H_cb)/T: the codebook term enters with a minus sign.
          const double want = dloss * (per_sample ? 1.0 : -1.0) * (std::log(1.0 - q + e) - std::log(q + e)) * dp /
                              static_cast<double>(n_tok);
          EXPECT_TRUE(test::scalar_close(dz(n, i), want, {0.0, 1e-8})) << "z[" << n << ", " << i << "]";
        }
      }
    }
}

TEST(BsqLossGrad, ComponentsAddUpAsTheOfficialCode) {
  Tensor<double, 2> zd({6, 8});
  fill_normal(zd, 31, 0.5);
  const Tensor<float, 2> z = test::to_float(zd);
  const BsqLossConfig cfg = config(BsqEntropyMode::group, 4, 100.0, 0.7, 1.3, 0.25);
  const BsqLossResult r = reference::bsq_loss(z.view(), cfg);
  EXPECT_DOUBLE_EQ(r.entropy_penalty, 0.7 * r.per_sample_entropy - 1.3 * r.codebook_entropy);
  EXPECT_DOUBLE_EQ(r.loss, r.commitment + r.entropy_penalty / 100.0);
  // Commitment by hand: β·mean over tokens of Σ_i (±1/√L − z_i)².
  double commit = 0.0;
  for (std::int64_t n = 0; n < 6; ++n)
    for (std::int64_t i = 0; i < 8; ++i) {
      const double zi = z(n, i), d = (zi > 0 ? 1.0 : -1.0) / std::sqrt(8.0) - zi;
      commit += d * d;
    }
  EXPECT_TRUE(test::scalar_close(r.commitment, 0.25 * commit / 6.0, {0.0, 1e-12}));
  // The codebook entropy of G groups is at most G·ln 2^g; the per-sample one is non-negative.
  EXPECT_LE(r.codebook_entropy, 2 * std::log(16.0) + 1e-6);
  EXPECT_GE(r.per_sample_entropy, 0.0);
}

TEST(BsqLossGrad, AnalyticalModeIsTheGroupModeWithOneBitGroups) {
  // MODEL.md §3.2: P(bit = −1) = σ(−4Tc·z) is the g = 1 softmax over the codes (−1, +1) with logits
  // ∓2Tc·z. The two modes must agree on values and gradients, whatever group_size analytical gets.
  Tensor<double, 2> z({9, 6});
  fill_normal(z, 41, 0.3);
  const BsqLossConfig an = config(BsqEntropyMode::analytical, 3, 7.0), gr = config(BsqEntropyMode::group, 1, 7.0);
  const BsqLossResult a = reference::bsq_loss<double>(z.view(), an), b = reference::bsq_loss<double>(z.view(), gr);
  EXPECT_TRUE(test::scalar_close(a.per_sample_entropy, b.per_sample_entropy, {0.0, 1e-12}));
  EXPECT_TRUE(test::scalar_close(a.codebook_entropy, b.codebook_entropy, {0.0, 1e-12}));
  EXPECT_TRUE(test::scalar_close(a.loss, b.loss, {1e-15, 1e-12}));
  Tensor<double, 2> da(z.shape()), db(z.shape());
  reference::bsq_loss_backward<double>(z.view(), an, 1.0, HostView<const double, 2>(), da.view());
  reference::bsq_loss_backward<double>(z.view(), gr, 1.0, HostView<const double, 2>(), db.view());
  EXPECT_TRUE(test::all_close(test::as_const_view(da), test::as_const_view(db), {1e-15, 1e-12}));
}

TEST(BsqLossGrad, StraightThroughAtTheKink) {
  // z == 0 (either sign of zero) quantises to −q_scale (MODEL.md §2.6); the gradient is q_scale·dz_q
  // everywhere, at the kink included, for the reference and the CPU op alike.
  const float values[] = {0.0f, -0.0f, 1e-30f, -1e-30f, 2.0f, -3.0f};
  const float expected_sign[] = {-1, -1, 1, -1, 1, -1};
  const float q = 1.0f / std::sqrt(28.0f);
  Tensor<float, 2> z({1, 6}), dzq({1, 6}), zq_ref({1, 6}), zq({1, 6}), dz_ref({1, 6}), dz({1, 6});
  for (int j = 0; j < 6; ++j) {
    z(0, j) = values[j];
    dzq(0, j) = 0.5f + static_cast<float>(j);
  }
  reference::bsq_straight_through<float>(z.view(), q, zq_ref.view());
  ops::bsq_straight_through(cpu_backend{}, z.view(), q, zq.view());
  reference::bsq_straight_through_backward<float>(dzq.view(), q, dz_ref.view());
  ops::bsq_straight_through_backward(cpu_backend{}, dzq.view(), q, dz.view());
  for (int j = 0; j < 6; ++j) {
    EXPECT_EQ(zq_ref(0, j), expected_sign[j] * q) << "z = " << values[j];
    EXPECT_EQ(zq(0, j), expected_sign[j] * q) << "z = " << values[j];
    EXPECT_EQ(dz_ref(0, j), static_cast<float>(static_cast<double>(q) * dzq(0, j)));
    EXPECT_EQ(dz(0, j), dz_ref(0, j));
  }
}

TEST(BsqLossGrad, BackwardAddsTheStraightThroughPath) {
  // dz with dz_q given = dz without + c·dz_q (the quantiser output is z_q·c, c = 1/√L).
  Tensor<double, 2> z({4, 8}), dzq({4, 8}), with({4, 8}), without({4, 8});
  fill_normal(z, 51, 0.5);
  fill_normal(dzq, 52);
  const BsqLossConfig cfg = config(BsqEntropyMode::group, 2, 3.0);
  reference::bsq_loss_backward<double>(z.view(), cfg, 0.6, dzq.view(), with.view());
  reference::bsq_loss_backward<double>(z.view(), cfg, 0.6, HostView<const double, 2>(), without.view());
  for (std::int64_t n = 0; n < 4; ++n)
    for (std::int64_t i = 0; i < 8; ++i)
      EXPECT_TRUE(test::scalar_close(with(n, i), without(n, i) + dzq(n, i) / std::sqrt(8.0), {1e-15, 1e-12}));
}

struct CpuCase {
  std::int64_t tokens, bits;
  BsqEntropyMode mode;
  int g;
  double inv_t;
};

TEST(BsqLossGrad, CpuMatchesReference) {
  const CpuCase cases[] = {{1, 4, BsqEntropyMode::group, 2, 1.0},        {7, 28, BsqEntropyMode::analytical, 28, 100.0},
                           {65, 28, BsqEntropyMode::group, 1, 100.0},    {65, 28, BsqEntropyMode::group, 4, 100.0},
                           {33, 28, BsqEntropyMode::group, 7, 100.0},    {5, 28, BsqEntropyMode::group, 14, 100.0},
                           {300, 18, BsqEntropyMode::group, 9, 100.0},   {3, 16, BsqEntropyMode::group, 16, 10.0}};
  std::uint64_t seed = 1000;
  for (const CpuCase& c : cases) {
    SCOPED_TRACE(::testing::Message() << mode_name(c.mode) << " N " << c.tokens << " L " << c.bits << " g " << c.g
                                      << " T " << c.inv_t);
    Tensor<double, 2> zd({c.tokens, c.bits}), dzqd({c.tokens, c.bits});
    fill_normal(zd, ++seed);
    normalize_rows(zd);
    fill_normal(dzqd, ++seed);
    const Tensor<float, 2> z_c = test::to_float(zd), dzq = test::to_float(dzqd);
    Tensor<float, 2> z_store, dz_store;
    const HostView<float, 2> z = test::padded_view(z_store, c.tokens, c.bits, 3);  // strided input
    test::copy_into(z_c, z);
    const BsqLossConfig cfg = config(c.mode, c.g, c.inv_t, 1.0, 1.0, 0.25);
    Arena ws(bsq_loss_workspace_bytes(c.bits, cfg));
    const BsqLossResult ref = reference::bsq_loss(z_c.view(), cfg);
    const BsqLossResult cpu = ops::bsq_loss(cpu_backend{}, ws, z, cfg);
    EXPECT_TRUE(test::scalar_close(cpu.loss, ref.loss, test::kF32Op));
    EXPECT_TRUE(test::scalar_close(cpu.commitment, ref.commitment, test::kF32Op));
    EXPECT_TRUE(test::scalar_close(cpu.per_sample_entropy, ref.per_sample_entropy, test::kF32Op));
    EXPECT_TRUE(test::scalar_close(cpu.codebook_entropy, ref.codebook_entropy, test::kF32Op));
    EXPECT_TRUE(test::scalar_close(cpu.entropy_penalty, ref.entropy_penalty, test::kF32Op));
    Tensor<float, 2> dz_ref({c.tokens, c.bits});
    const HostView<float, 2> dz = test::padded_view(dz_store, c.tokens, c.bits, 2);
    for (std::int64_t i = 0; i < dz_store.numel(); ++i) dz_store.data()[i] = 99.0f;
    reference::bsq_loss_backward<float>(z_c.view(), cfg, 0.7, dzq.view(), dz_ref.view());
    ops::bsq_loss_backward(cpu_backend{}, ws, z, cfg, 0.7, dzq.view(), dz);
    EXPECT_TRUE(test::all_close(HostView<const float, 2>(dz), test::as_const_view(dz_ref), test::kF32Op));
    for (std::int64_t i = 0; i < c.tokens; ++i)
      for (std::int64_t j = c.bits; j < c.bits + 2; ++j) ASSERT_EQ(dz_store(i, j), 99.0f) << "padding written";
    EXPECT_LE(ws.peak(), bsq_loss_workspace_bytes(c.bits, cfg));
    EXPECT_EQ(ws.used(), 0u);
  }
}

TEST(BsqLossGrad, CpuDoesNotDependOnTheThreadCount) {
  Tensor<double, 2> zd({2000, 28});
  fill_normal(zd, 61);
  normalize_rows(zd);
  const Tensor<float, 2> z = test::to_float(zd);
  const BsqLossConfig cfg = config(BsqEntropyMode::group, 4, 100.0, 1.0, 1.0, 0.25);
  Arena ws(bsq_loss_workspace_bytes(28, cfg));
  const int saved = num_threads();
  set_num_threads(1);
  const BsqLossResult one = ops::bsq_loss(cpu_backend{}, ws, z.view(), cfg);
  set_num_threads(3);
  const BsqLossResult three = ops::bsq_loss(cpu_backend{}, ws, z.view(), cfg);
  set_num_threads(saved);
  EXPECT_EQ(one.loss, three.loss);
  EXPECT_EQ(one.codebook_entropy, three.codebook_entropy);
  EXPECT_EQ(one.per_sample_entropy, three.per_sample_entropy);
}

TEST(BsqLossGrad, ArgumentErrorsNameTheArgument) {
  Tensor<float, 2> z({4, 40}), dz({4, 40}), bad({4, 39}), empty({0, 40});
  Arena ws(1 << 20);
  const cpu_backend cpu{};
  test::expect_error_naming([&] { ops::bsq_loss(cpu, ws, z.view(), config(BsqEntropyMode::group, 20, 1.0)); },
                            "bsq_loss: group_size 20 > 16 in \"group\" mode");
  test::expect_error_naming([&] { ops::bsq_loss(cpu, ws, z.view(), config(BsqEntropyMode::group, 3, 1.0)); },
                            "bsq_loss: group_size 3 does not divide L = 40");
  test::expect_error_naming([&] { ops::bsq_loss(cpu, ws, z.view(), config(BsqEntropyMode::group, 4, 0.0)); },
                            "bsq_loss: inv_temperature");
  test::expect_error_naming([&] { ops::bsq_loss(cpu, ws, empty.view(), config(BsqEntropyMode::group, 4, 1.0)); },
                            "bsq_loss: z must be");
  test::expect_error_naming(
      [&] {
        ops::bsq_loss_backward(cpu, ws, z.view(), config(BsqEntropyMode::group, 4, 1.0), 1.0, HostView<const float, 2>(),
                               bad.view());
      },
      "bsq_loss_backward: dz");
  test::expect_error_naming(
      [&] { ops::bsq_loss_backward(cpu, ws, z.view(), config(BsqEntropyMode::group, 4, 1.0), 1.0, bad.view(), dz.view()); },
      "bsq_loss_backward: dz_q");
  test::expect_error_naming([&] { ops::bsq_straight_through(cpu, z.view(), 1.0f, bad.view()); },
                            "bsq_straight_through: zq");
  // g = 20 is fine in analytical mode, where the entropies use one-bit groups.
  Arena big(bsq_loss_workspace_bytes(40, config(BsqEntropyMode::analytical, 20, 1.0)));
  EXPECT_NO_THROW(ops::bsq_loss(cpu, big, z.view(), config(BsqEntropyMode::analytical, 20, 1.0)));
}

}  // namespace
}  // namespace qlip
