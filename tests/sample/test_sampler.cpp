/// @file test_sampler.cpp
/// @brief The token sampler (qlip/sample/sampler.hpp): its draws against the distribution its config
///        defines (Pearson chi-square), that distribution against an independent computation,
///        reproducibility from (seed, row, step), greedy, and the input checks.
///
/// The expected distributions here are written from the definition (a stable sort by probability,
/// a prefix for top-k, a running mass for top-p, a softmax in double) without calling the header's
/// sampling_probabilities. Seeds are fixed, so every statistical test is deterministic: each was run,
/// and with α = 1e-3 per test the chance that a correct sampler drew a failing stream was 1e-3.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "qlip/sample/sampler.hpp"

namespace qlip::sample {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

/// Significance of every goodness-of-fit test below: the probability that a correct sampler fails.
constexpr double kAlpha = 1e-3;
/// Draws per statistical test (rows × steps). Large enough that a 1% relative error in the
/// probability of a token with p ≈ 0.1 shows up (its chi-square term would be ≈ 20).
constexpr int kRows = 4;
constexpr int kSteps = 50'000;
constexpr int kDraws = kRows * kSteps;

// ---------------------------------------------------------------------------------------------
// Chi-square distribution: regularised upper incomplete gamma Q(a, x) (Numerical Recipes §6.2:
// the series for P when x < a + 1, the Lentz continued fraction for Q otherwise), and its inverse by
// bisection. Both are accurate to ~1e-14 relative, far below the 1e-3 the critical value needs.

double gamma_p_series(double a, double x) {
  double term = 1.0 / a, sum = term;
  for (int n = 1; n < 10'000; ++n) {
    term *= x / (a + n);
    sum += term;
    if (std::fabs(term) < std::fabs(sum) * 1e-17) break;
  }
  return sum * std::exp(-x + a * std::log(x) - std::lgamma(a));
}

double gamma_q_continued_fraction(double a, double x) {
  constexpr double kTiny = 1e-300;
  double b = x + 1.0 - a, c = 1.0 / kTiny, d = 1.0 / b, h = d;
  for (int i = 1; i < 10'000; ++i) {
    const double an = -i * (i - a);
    b += 2.0;
    d = an * d + b;
    if (std::fabs(d) < kTiny) d = kTiny;
    c = b + an / c;
    if (std::fabs(c) < kTiny) c = kTiny;
    d = 1.0 / d;
    const double delta = d * c;
    h *= delta;
    if (std::fabs(delta - 1.0) < 1e-16) break;
  }
  return std::exp(-x + a * std::log(x) - std::lgamma(a)) * h;
}

/// Q(a, x) = Γ(a, x) / Γ(a).
double gamma_q(double a, double x) {
  if (x <= 0.0) return 1.0;
  return x < a + 1.0 ? 1.0 - gamma_p_series(a, x) : gamma_q_continued_fraction(a, x);
}

/// P(X > x) for X ~ χ²(df).
double chi2_survival(double x, int df) {
  return gamma_q(0.5 * df, 0.5 * x);
}

/// The x with P(X > x) = alpha: bisection on the (decreasing) survival function.
double chi2_critical(int df, double alpha) {
  double lo = 0.0, hi = df + 10.0;
  while (chi2_survival(hi, df) > alpha) hi *= 2.0;
  for (int it = 0; it < 200 && hi - lo > 1e-12 * hi; ++it) {
    const double mid = 0.5 * (lo + hi);
    (chi2_survival(mid, df) > alpha ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

TEST(ChiSquare, SurvivalMatchesClosedForms) {
  // df = 1: P(X > x) = erfc(√(x/2)); df = 2: exp(−x/2). Both branches of gamma_q are reached.
  for (double x : {0.01, 0.3, 1.0, 1.4, 2.5, 7.0, 10.828, 25.0}) {
    EXPECT_NEAR(chi2_survival(x, 1), std::erfc(std::sqrt(0.5 * x)), 1e-13) << x;
    EXPECT_NEAR(chi2_survival(x, 2), std::exp(-0.5 * x), 1e-13) << x;
  }
}

TEST(ChiSquare, CriticalValuesMatchTables) {
  // Upper 0.001 points of χ² (NIST/SEMATECH e-Handbook, table 1.3.6.7.4), printed to 3 decimals.
  const struct {
    int df;
    double value;
  } table[] = {{1, 10.828}, {2, 13.816}, {5, 20.515}, {10, 29.588}, {20, 45.315}, {30, 59.703}};
  for (const auto& t : table) {
    const double c = chi2_critical(t.df, kAlpha);
    std::printf("[chi2 table] df = %2d  critical(alpha = 1e-3) = %.4f  table = %.3f\n", t.df, c, t.value);
    EXPECT_NEAR(c, t.value, 1e-3) << "df = " << t.df;
  }
}

// ---------------------------------------------------------------------------------------------
// The definition, computed independently of the header.

struct Expected {
  std::vector<double> p;
  double top_p_margin = std::numeric_limits<double>::infinity();  // min |mass before j − top_p|
};

Expected expected_distribution(const std::vector<double>& logits, const SamplerConfig& c) {
  const std::size_t V = logits.size();
  Expected e;
  e.p.assign(V, 0.0);
  if (c.temperature == 0.0f) {
    std::size_t best = 0;
    for (std::size_t i = 1; i < V; ++i)
      if (logits[i] > logits[best]) best = i;
    e.p[best] = 1.0;
    return e;
  }
  std::vector<double> z(V);
  std::vector<std::size_t> rank;  // finite tokens, most probable first, ties in id order
  for (std::size_t i = 0; i < V; ++i) {
    z[i] = logits[i] / static_cast<double>(c.temperature);
    if (std::isfinite(logits[i])) rank.push_back(i);
  }
  std::stable_sort(rank.begin(), rank.end(), [&](std::size_t a, std::size_t b) { return z[a] > z[b]; });
  if (c.top_k > 0 && static_cast<std::size_t>(c.top_k) < rank.size()) rank.resize(static_cast<std::size_t>(c.top_k));
  const double z_max = z[rank[0]];
  std::vector<double> w(rank.size());
  double sum = 0.0;
  for (std::size_t j = 0; j < rank.size(); ++j) sum += (w[j] = std::exp(z[rank[j]] - z_max));
  std::size_t keep = rank.size();
  if (c.top_p < 1.0f) {
    double mass_before = 0.0;
    keep = 0;
    for (std::size_t j = 0; j < rank.size(); ++j) {
      e.top_p_margin = std::min(e.top_p_margin, std::fabs(mass_before - c.top_p));
      if (!(mass_before < c.top_p)) break;
      keep = j + 1;
      mass_before += w[j] / sum;
    }
  }
  double kept_sum = 0.0;
  for (std::size_t j = 0; j < keep; ++j) kept_sum += w[j];
  for (std::size_t j = 0; j < keep; ++j) e.p[rank[j]] = w[j] / kept_sum;
  return e;
}

std::vector<double> to_double(const std::vector<float>& v) {
  return {v.begin(), v.end()};
}

/// 24 tokens: distinct values, ties (1.3 ×2, 0.7 ×3) and two −inf.
const std::vector<float> kLogits = {1.3f,  -0.4f, 2.1f,  0.0f,  kNegInf, 0.7f,  0.7f,    -1.2f,
                                    1.9f,  -2.0f, 0.25f, 1.3f,  -0.9f,   0.5f,  kNegInf, 1.05f,
                                    -1.6f, 0.9f,  0.7f,  -0.2f, 1.6f,    -2.3f, 0.35f,   -0.6f};

// ---------------------------------------------------------------------------------------------
// Goodness of fit.

struct Fit {
  double chi2;
  int df;
  double critical;
};

/// Pearson's chi-square of `counts` against `p` over the tokens with p > 0; tokens with p = 0 must
/// have count 0 exactly (checked here, they are not part of the statistic).
Fit pearson(const std::vector<std::int64_t>& counts, const std::vector<double>& p, const char* name) {
  double chi2 = 0.0;
  int support = 0;
  for (std::size_t i = 0; i < p.size(); ++i) {
    if (p[i] == 0.0) {
      EXPECT_EQ(counts[i], 0) << name << ": token " << i << " has probability 0 but was drawn";
      continue;
    }
    const double expected = kDraws * p[i];
    // The chi-square approximation needs every expected count ≥ 5: a check of the test's design.
    EXPECT_GE(expected, 5.0) << name << ": token " << i;
    chi2 += (counts[i] - expected) * (counts[i] - expected) / expected;
    ++support;
  }
  const Fit f{chi2, support - 1, chi2_critical(support - 1, kAlpha)};
  std::printf("[chi2] %-26s N = %d  chi2 = %8.3f  df = %2d  critical(alpha = 1e-3) = %7.3f\n", name, kDraws, f.chi2,
              f.df, f.critical);
  ::testing::Test::RecordProperty(std::string("chi2_") + name, std::to_string(f.chi2));
  return f;
}

/// Draws kDraws tokens from `logits` (repeated over kRows rows, kSteps steps) and tests the fit.
void expect_draws_follow(const char* name, const std::vector<float>& logits, const SamplerConfig& cfg,
                         std::uint64_t seed) {
  const Expected e = expected_distribution(to_double(logits), cfg);
  ASSERT_GT(e.top_p_margin, 1e-9) << name << ": top_p sits on a cumulative-mass boundary; pick another";
  const std::size_t V = logits.size();
  std::vector<float> batch;  // [kRows, V]
  for (int r = 0; r < kRows; ++r) batch.insert(batch.end(), logits.begin(), logits.end());
  HostView<const float, 2> view(batch.data(), {kRows, static_cast<std::int64_t>(V)});
  Sampler sampler(cfg);
  std::vector<std::int32_t> tokens(kRows);
  std::vector<std::int64_t> counts(V, 0);
  for (int step = 0; step < kSteps; ++step) {
    sampler.sample(view, seed, static_cast<std::uint64_t>(step), tokens);
    for (std::int32_t t : tokens) {
      ASSERT_TRUE(t >= 0 && static_cast<std::size_t>(t) < V) << t;
      ++counts[static_cast<std::size_t>(t)];
    }
  }
  const Fit f = pearson(counts, e.p, name);
  EXPECT_GT(f.df, 0) << name << ": a one-token distribution tests nothing here";
  EXPECT_LT(f.chi2, f.critical) << name;
}

TEST(SamplerDraws, TemperatureLow) {
  expect_draws_follow("temperature_0.7", kLogits, {.temperature = 0.7f}, 101);
}

TEST(SamplerDraws, TemperatureHigh) {
  expect_draws_follow("temperature_1.5", kLogits, {.temperature = 1.5f}, 102);
}

TEST(SamplerDraws, TopK) {
  // k = 9 ends inside the 0.7 tie (tokens 5, 6, 18): tokens 5 and 6 stay, 18 goes.
  expect_draws_follow("top_k_9", kLogits, {.temperature = 1.0f, .top_k = 9}, 103);
}

TEST(SamplerDraws, TopP) {
  expect_draws_follow("top_p_0.8", kLogits, {.temperature = 1.0f, .top_p = 0.8f}, 104);
}

TEST(SamplerDraws, TopKTopP) {
  expect_draws_follow("top_k_9_top_p_0.7_T_0.9", kLogits, {.temperature = 0.9f, .top_k = 9, .top_p = 0.7f}, 105);
}

/// Guided draws: cond and uncond rows through Sampler::sample_guided against the definition applied
/// to u + s·(c − u) computed in double.
void expect_guided_draws_follow(const char* name, const SamplerConfig& cfg, std::uint64_t seed) {
  // Token 4 is masked in both branches, token 14 only in uncond: both must stay at probability 0.
  std::vector<float> cond = kLogits, uncond(kLogits.size());
  cond[14] = 0.4f;
  // uncond follows cond at half strength plus a pattern, so guidance sharpens the distribution
  // without pushing any token below ~60 expected draws.
  for (std::size_t i = 0; i < uncond.size(); ++i)
    uncond[i] = 0.5f * cond[i] + 0.2f * static_cast<float>((i * 7) % 5) - 0.4f;
  uncond[4] = uncond[14] = kNegInf;
  std::vector<double> guided(cond.size());
  for (std::size_t i = 0; i < cond.size(); ++i)
    guided[i] = (cond[i] == kNegInf || uncond[i] == kNegInf)
                    ? -std::numeric_limits<double>::infinity()
                    : uncond[i] + static_cast<double>(cfg.cfg_scale) * (static_cast<double>(cond[i]) - uncond[i]);
  // Float rounding of the guided logits must not reorder the top-k boundary: keep it wide.
  std::vector<double> sorted;
  for (double g : guided)
    if (std::isfinite(g)) sorted.push_back(g);
  std::sort(sorted.rbegin(), sorted.rend());
  if (cfg.top_k > 0) {
    ASSERT_GT(sorted[cfg.top_k - 1] - sorted[cfg.top_k], 1e-3) << name;
  }
  const Expected e = expected_distribution(guided, cfg);
  ASSERT_GT(e.top_p_margin, 1e-4) << name;

  const std::size_t V = cond.size();
  std::vector<float> cond_batch, uncond_batch;  // [kRows, V] each
  for (int r = 0; r < kRows; ++r) {
    cond_batch.insert(cond_batch.end(), cond.begin(), cond.end());
    uncond_batch.insert(uncond_batch.end(), uncond.begin(), uncond.end());
  }
  const Extents<2> shape{kRows, static_cast<std::int64_t>(V)};
  HostView<const float, 2> cv(cond_batch.data(), shape), uv(uncond_batch.data(), shape);
  Sampler sampler(cfg);
  std::vector<std::int32_t> tokens(kRows);
  std::vector<std::int64_t> counts(V, 0);
  for (int step = 0; step < kSteps; ++step) {
    sampler.sample_guided(cv, uv, seed, static_cast<std::uint64_t>(step), tokens);
    for (std::int32_t t : tokens) ++counts[static_cast<std::size_t>(t)];
  }
  EXPECT_EQ(counts[4] + counts[14], 0);
  const Fit f = pearson(counts, e.p, name);
  EXPECT_GT(f.df, 0);
  EXPECT_LT(f.chi2, f.critical) << name;
}

TEST(SamplerDraws, ClassifierFreeGuidance) {
  expect_guided_draws_follow("cfg_2.0", {.temperature = 1.0f, .cfg_scale = 2.0f}, 106);
}

TEST(SamplerDraws, ClassifierFreeGuidanceTopK) {
  expect_guided_draws_follow("cfg_1.5_top_k_12_T_1.2", {.temperature = 1.2f, .top_k = 12, .cfg_scale = 1.5f}, 107);
}

// ---------------------------------------------------------------------------------------------
// The header's distribution against the independent one.

/// A vocabulary large enough for nth_element / sort to do real work: values on a 1/64 grid (many
/// ties), every 97th token −inf.
std::vector<float> large_logits(std::size_t V) {
  std::vector<float> l(V);
  std::uint64_t s = 0x9E3779B97F4A7C15ull;
  for (std::size_t i = 0; i < V; ++i) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    l[i] = static_cast<float>(static_cast<int>((s >> 33) % 1280) - 640) / 64.0f;  // [-10, 10)
    if (i % 97 == 5) l[i] = kNegInf;
  }
  return l;
}

void expect_probabilities_match(const std::vector<float>& logits, const SamplerConfig& cfg) {
  std::vector<double> probs(logits.size(), -1.0);
  sampling_probabilities(logits, cfg, probs);
  const Expected e = expected_distribution(to_double(logits), cfg);
  ASSERT_GT(e.top_p_margin, 1e-9);
  double sum = 0.0, max_err = 0.0;
  for (std::size_t i = 0; i < logits.size(); ++i) {
    max_err = std::max(max_err, std::fabs(probs[i] - e.p[i]));
    EXPECT_EQ(probs[i] == 0.0, e.p[i] == 0.0) << "token " << i;  // the same kept set
    sum += probs[i];
  }
  EXPECT_LE(max_err, 1e-12) << "T=" << cfg.temperature << " k=" << cfg.top_k << " p=" << cfg.top_p;
  EXPECT_NEAR(sum, 1.0, 1e-12);
}

TEST(SamplingProbabilities, MatchesDefinition) {
  const SamplerConfig configs[] = {
      {},
      {.temperature = 0.0f},
      {.temperature = 0.7f},
      {.temperature = 1.5f},
      {.temperature = 0.05f},  // sharp: most weights are tiny, none underflow
      {.top_k = 1},
      {.top_k = 4},  // ends inside the 1.3 tie: token 0 stays, token 11 goes
      {.top_k = 9},
      {.top_k = 22},  // = number of finite tokens: off
      {.top_k = 1000},
      {.top_p = 0.8f},
      {.top_p = 0.3f},
      {.top_p = 1e-6f},  // keeps the argmax only
      {.temperature = 0.9f, .top_k = 9, .top_p = 0.7f},
      {.temperature = 2.0f, .top_k = 15, .top_p = 0.95f},
  };
  for (const SamplerConfig& c : configs) expect_probabilities_match(kLogits, c);
  const std::vector<float> big = large_logits(5000);
  for (const SamplerConfig& c :
       {SamplerConfig{}, SamplerConfig{.temperature = 0.5f, .top_k = 50}, SamplerConfig{.top_p = 0.9f},
        SamplerConfig{.temperature = 0.8f, .top_k = 300, .top_p = 0.6f}})
    expect_probabilities_match(big, c);
  // A flat nucleus of thousands of tokens: the sorted prefix has to grow past its first 1024.
  const SamplerConfig flat{.temperature = 4.0f, .top_p = 0.95f};
  expect_probabilities_match(big, flat);
  const Expected e = expected_distribution(to_double(big), flat);
  EXPECT_GT(std::count_if(e.p.begin(), e.p.end(), [](double q) { return q > 0.0; }), 1024);
}

TEST(SamplingProbabilities, TopKTieGoesToLowerId) {
  std::vector<double> p(kLogits.size());
  sampling_probabilities(kLogits, {.top_k = 4}, p);
  // The four kept: 2.1 (id 2), 1.9 (id 8), 1.6 (id 20), then the 1.3 tie between ids 0 and 11.
  for (std::size_t i = 0; i < p.size(); ++i) EXPECT_EQ(p[i] > 0.0, i == 2 || i == 8 || i == 20 || i == 0) << i;
  sampling_probabilities(kLogits, {.top_k = 9}, p);
  EXPECT_GT(p[5], 0.0);
  EXPECT_GT(p[6], 0.0);
  EXPECT_EQ(p[18], 0.0);  // the third 0.7
  // Ties met after the boundary is full, and ties among the first tokens seen.
  const std::vector<float> late = {1.0f, 5.0f, 3.0f, 3.0f, 3.0f, 0.0f, 3.0f};
  const struct {
    std::vector<float> logits;
    int k;
    std::vector<int> kept;
  } cases[] = {{late, 2, {1, 2}},
               {late, 3, {1, 2, 3}},
               {late, 5, {1, 2, 3, 4, 6}},
               {{3.0f, 3.0f, 5.0f, 3.0f}, 2, {0, 2}},
               {{-0.0f, 0.0f, -1.0f}, 1, {0}},
               {{0.0f, -0.0f, -1.0f}, 1, {0}}};
  for (const auto& c : cases) {
    std::vector<double> q(c.logits.size());
    sampling_probabilities(c.logits, {.top_k = c.k}, q);
    std::vector<int> kept;
    for (std::size_t i = 0; i < q.size(); ++i)
      if (q[i] > 0.0) kept.push_back(static_cast<int>(i));
    EXPECT_EQ(kept, c.kept) << "k = " << c.k;
  }
}

TEST(SamplingProbabilities, MemberEqualsFreeFunctionAcrossCalls) {
  // The member reuses its scratch: a long row, then a short one, then the long one again.
  Sampler s({.temperature = 0.8f, .top_k = 40, .top_p = 0.9f});
  const std::vector<float> big = large_logits(3000);
  std::vector<double> a(big.size()), b(big.size()), small(kLogits.size()), small_ref(kLogits.size());
  s.probabilities(big, a);
  s.probabilities(kLogits, small);
  s.probabilities(big, b);
  EXPECT_EQ(a, b);
  sampling_probabilities(kLogits, s.config(), small_ref);
  EXPECT_EQ(small, small_ref);
}

// ---------------------------------------------------------------------------------------------
// Reproducibility.

TEST(SamplerSeeds, SameSeedRowStepSameToken) {
  const SamplerConfig cfg{.temperature = 1.3f, .top_p = 0.95f};
  Sampler a(cfg), b(cfg);
  int distinct = 0;
  std::int32_t first = a.sample(kLogits, 7, 0, 0);
  for (std::uint64_t row = 0; row < 8; ++row)
    for (std::uint64_t step = 0; step < 64; ++step) {
      const std::int32_t t = a.sample(kLogits, 7, row, step);
      EXPECT_EQ(t, b.sample(kLogits, 7, row, step));
      EXPECT_EQ(t, a.sample(kLogits, 7, row, step));  // a second time on the same object
      distinct += t != first;
    }
  EXPECT_GT(distinct, 0);  // not a constant
  EXPECT_EQ(sample_uniform(7, 3, 11), sample_uniform(7, 3, 11));
  EXPECT_NE(sample_uniform(7, 3, 11), sample_uniform(7, 4, 11));
  EXPECT_NE(sample_uniform(7, 3, 11), sample_uniform(7, 3, 12));
  EXPECT_NE(sample_uniform(7, 3, 11), sample_uniform(8, 3, 11));
}

TEST(SamplerSeeds, BatchEqualsRowByRowInAnyOrder) {
  constexpr int kB = 8;
  const std::size_t V = kLogits.size();
  std::vector<float> batch;  // [kB, V], each row a different permutation-ish of kLogits
  for (int r = 0; r < kB; ++r)
    for (std::size_t i = 0; i < V; ++i) batch.push_back(kLogits[(i + static_cast<std::size_t>(r) * 5) % V]);
  HostView<const float, 2> all(batch.data(), {kB, static_cast<std::int64_t>(V)});
  Sampler s({.temperature = 1.1f, .top_k = 12});
  std::vector<std::int32_t> whole(kB), lo(kB / 2), hi(kB / 2);
  for (std::uint64_t step = 0; step < 100; ++step) {
    s.sample(all, 42, step, whole);
    // Row by row, last row first.
    for (int r = kB - 1; r >= 0; --r) {
      std::span<const float> row(batch.data() + static_cast<std::size_t>(r) * V, V);
      EXPECT_EQ(s.sample(row, 42, static_cast<std::uint64_t>(r), step), whole[static_cast<std::size_t>(r)]);
    }
    // Two slices of the batch, the second one first, with their global first row.
    s.sample(all.slice(0, kB / 2, kB), 42, step, hi, kB / 2);
    s.sample(all.slice(0, 0, kB / 2), 42, step, lo, 0);
    for (int r = 0; r < kB / 2; ++r) {
      EXPECT_EQ(lo[static_cast<std::size_t>(r)], whole[static_cast<std::size_t>(r)]);
      EXPECT_EQ(hi[static_cast<std::size_t>(r)], whole[static_cast<std::size_t>(r + kB / 2)]);
    }
  }
}

TEST(SamplerSeeds, DifferentSeedsRowsStepsDiffer) {
  const SamplerConfig cfg{.temperature = 1.5f};
  Sampler s(cfg);
  const Expected e = expected_distribution(to_double(kLogits), cfg);
  double collision = 0.0;  // P(two independent draws agree) = Σ p²
  for (double p : e.p) collision += p * p;
  constexpr int kN = 1000;
  int seed_diff = 0, row_diff = 0;
  for (int step = 0; step < kN; ++step) {
    const auto st = static_cast<std::uint64_t>(step);
    const std::int32_t t = s.sample(kLogits, 1, 0, st);
    seed_diff += t != s.sample(kLogits, 2, 0, st);
    row_diff += t != s.sample(kLogits, 1, 1, st);
  }
  // Independent streams differ at a rate 1 − Σp² (≈ 0.89 here); half of that leaves a wide margin.
  const double floor = 0.5 * kN * (1.0 - collision);
  EXPECT_GT(seed_diff, floor);
  EXPECT_GT(row_diff, floor);
}

// ---------------------------------------------------------------------------------------------
// Greedy.

TEST(SamplerGreedy, ArgmaxWithLowestIdTie) {
  EXPECT_EQ(greedy(std::vector<float>{1.0f, 3.0f, 3.0f, kNegInf, 2.0f}), 1);
  EXPECT_EQ(greedy(std::vector<float>{kNegInf, -5.0f, -5.0f}), 1);
  EXPECT_EQ(greedy(std::vector<float>{0.0f, 0.0f, 0.5f}), 2);
  EXPECT_EQ(greedy(std::vector<float>{4.0f}), 0);
  EXPECT_EQ(greedy(kLogits), 2);
}

TEST(SamplerGreedy, TemperatureZeroAndTopKOneAreGreedy) {
  std::vector<float> big = large_logits(2000);
  const float top = *std::max_element(big.begin(), big.end());
  big[1900] = big[700] = top;  // at least two more tokens tie at the maximum
  std::int32_t arg = 0;
  while (big[static_cast<std::size_t>(arg)] != top) ++arg;  // the lowest id holding it
  ASSERT_LE(arg, 700);
  EXPECT_EQ(greedy(big), arg);
  const SamplerConfig greedy_like[] = {
      {.temperature = 0.0f},
      {.temperature = 0.0f, .top_k = 50, .top_p = 0.5f},  // filters are moot at T = 0
      {.temperature = 1.0f, .top_k = 1},
      {.temperature = 2.5f, .top_k = 1, .top_p = 0.9f},
      {.temperature = 1.0f, .top_p = 1e-7f},  // a nucleus of one
  };
  for (const SamplerConfig& c : greedy_like) {
    Sampler s(c);
    std::vector<double> p(big.size());
    s.probabilities(big, p);
    EXPECT_EQ(p[static_cast<std::size_t>(arg)], 1.0);
    for (std::uint64_t step = 0; step < 200; ++step) {
      EXPECT_EQ(s.sample(big, 9, step % 3, step), arg);
      EXPECT_EQ(s.sample(kLogits, 9, step % 3, step), 2);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Input checks.

/// Runs `f`, which must throw qlip::Error with every `needle` in its message.
void expect_error(const std::function<void()>& f, std::initializer_list<const char*> needles) {
  EXPECT_THROW(f(), Error);
  try {
    f();
  } catch (const Error& e) {
    const std::string m = e.what();
    for (const char* n : needles) EXPECT_NE(m.find(n), std::string::npos) << "missing '" << n << "' in: " << m;
  }
}

TEST(SamplerErrors, EachInvalidConfigFieldIsNamed) {
  const struct {
    SamplerConfig config;
    const char* field;
    const char* value;
  } bad[] = {
      {{.temperature = -1.0f}, "SamplerConfig.temperature", "-1"},
      {{.temperature = kNaN}, "SamplerConfig.temperature", "nan"},
      {{.temperature = kInf}, "SamplerConfig.temperature", "inf"},
      {{.top_k = -1}, "SamplerConfig.top_k", "-1"},
      {{.top_p = 0.0f}, "SamplerConfig.top_p", "0"},
      {{.top_p = -0.5f}, "SamplerConfig.top_p", "-0.5"},
      {{.top_p = 1.5f}, "SamplerConfig.top_p", "1.5"},
      {{.top_p = kNaN}, "SamplerConfig.top_p", "nan"},
      {{.cfg_scale = kNaN}, "SamplerConfig.cfg_scale", "nan"},
      {{.cfg_scale = -kInf}, "SamplerConfig.cfg_scale", "-inf"},
  };
  for (const auto& b : bad) {
    expect_error([&] { validate(b.config); }, {b.field, b.value});
    expect_error([&] { Sampler s(b.config); }, {b.field, b.value});
    std::vector<double> p(kLogits.size());
    expect_error([&] { sampling_probabilities(kLogits, b.config, p); }, {b.field});
  }
  EXPECT_NO_THROW(validate({}));
  EXPECT_NO_THROW(validate({.temperature = 0.0f, .top_k = 0, .top_p = 1.0f, .cfg_scale = -2.0f}));
}

TEST(SamplerErrors, BadLogitsAndSizes) {
  Sampler s;
  std::vector<double> p(3);
  expect_error([&] { s.probabilities(std::vector<float>{1, 2}, p); }, {"probs has 3 entries for 2 logits"});
  expect_error([&] { s.sample(std::span<const float>{}, 1, 0, 0); }, {"empty logits"});
  expect_error([&] { s.sample(std::vector<float>{1.0f, kNaN, 0.0f}, 1, 0, 0); }, {"token 1", "nan"});
  expect_error([&] { s.sample(std::vector<float>{1.0f, 0.0f, kInf}, 1, 0, 0); }, {"token 2", "inf"});
  expect_error([&] { s.sample(std::vector<float>{kNegInf, kNegInf}, 1, 0, 0); }, {"all 2 logits are -inf"});
  expect_error([&] { greedy(std::vector<float>{kNaN}); }, {"token 0"});

  std::vector<float> buf(2 * 5, 0.5f);
  HostView<const float, 2> two_rows(buf.data(), {2, 5});
  std::vector<std::int32_t> out3(3), out2(2);
  expect_error([&] { s.sample(two_rows, 1, 0, out3); }, {"has 2 rows but out has 3 entries"});
  HostView<const float, 2> strided(buf.data(), {2, 5}, {1, 2});  // vocabulary not contiguous
  expect_error([&] { s.sample(strided, 1, 0, out2); }, {"contiguous along the vocabulary"});
  HostView<const float, 2> narrower(buf.data(), {2, 4});
  expect_error([&] { s.sample_guided(two_rows, narrower, 1, 0, out2); }, {"cond has shape [2, 5], uncond [2, 4]"});
  expect_error([&] { s.sample_guided(two_rows, two_rows, 1, 0, out3); }, {"has 2 rows but out has 3 entries"});

  std::vector<float> c(4, 1.0f), u(3, 1.0f), o(4);
  expect_error([&] { apply_cfg(c, u, 2.0f, o); }, {"apply_cfg", "cond has 4", "uncond 3"});
  expect_error([&] { apply_cfg(c, c, 2.0f, std::span<float>(o).first(3)); }, {"out 3"});
  expect_error([&] { apply_cfg(c, c, kNaN, o); }, {"scale"});
}

TEST(ApplyCfg, FormulaMasksAndAliasing) {
  const std::vector<float> c = {1.0f, -2.0f, 0.5f, kNegInf, 3.0f, kNegInf};
  const std::vector<float> u = {0.0f, 1.0f, 0.5f, 2.0f, kNegInf, kNegInf};
  for (float s : {0.0f, 1.0f, 1.75f, 4.0f, -0.5f}) {
    std::vector<float> out(c.size());
    apply_cfg(c, u, s, out);
    for (std::size_t i = 0; i < 3; ++i) {
      const double want = u[i] + static_cast<double>(s) * (static_cast<double>(c[i]) - u[i]);
      EXPECT_NEAR(out[i], want, 1e-6 * (1.0 + std::fabs(want))) << "s=" << s << " i=" << i;
    }
    for (std::size_t i = 3; i < c.size(); ++i) EXPECT_EQ(out[i], kNegInf) << "s=" << s << " i=" << i;
    std::vector<float> in_place = c;  // out aliases cond
    apply_cfg(in_place, u, s, in_place);
    EXPECT_EQ(in_place, out);
  }
  std::vector<float> out(c.size());
  apply_cfg(c, u, 1.0f, out);  // s = 1 is the conditional logits
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -2.0f);
}

}  // namespace
}  // namespace qlip::sample
