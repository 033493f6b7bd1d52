/// @file test_optimizer.cpp
/// @brief Training state and optimisers: ParameterStore (layout, alignment, views, errors), the
///        warm-up + cosine schedule, global-norm clipping against a direct computation, the CPU
///        AdamW/LAMB steps against the double reference over several steps (and across thread counts),
///        the argument checks, and parity with PyTorch (tests/data/optim/optimizer_steps.json, written
///        by tools/make_optimizer_fixtures.py).
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "common/compare.hpp"
#include "qlip/core/allocator.hpp"
#include "qlip/core/philox.hpp"
#include "qlip/cpu/optimizer.hpp"
#include "qlip/io/json.hpp"
#include "qlip/reference/optimizer.hpp"
#include "qlip/train/clip_grad.hpp"
#include "qlip/train/optimizer.hpp"
#include "qlip/train/parameter_store.hpp"
#include "qlip/train/recipe.hpp"
#include "qlip/train/schedule.hpp"

namespace qlip {
namespace {

using train::ParameterStore;

/// Standard normal values times scale into a float range (Philox(seed), index i).
void fill_normal(float* data, std::int64_t n, std::uint64_t seed, float scale = 1.0f) {
  Philox rng(seed);
  for (std::int64_t i = 0; i < n; ++i) data[i] = scale * rng.normal(static_cast<std::uint64_t>(i));
}

/// Restores the OpenMP thread count when a test changes it.
struct ThreadCountGuard {
  int saved = omp_get_max_threads();
  ~ThreadCountGuard() { omp_set_num_threads(saved); }
};

// ---------------------------------------------------------------------------------------------
// ParameterStore

ParameterStore small_store() {
  ParameterStore store;
  store.add("text_model.embeddings.token_embedding.weight", {7, 3});   // 21 elements: no decay (embedding)
  store.add("text_model.encoder.layers.0.mlp.fc1.weight", {5, 4}, 1);  // 20: decay
  store.add("text_model.encoder.layers.0.mlp.fc1.bias", {5}, 1);       // 5: no decay (rank 1)
  store.add("logit_scale", {}, 2);                                     // 1: scalar, no decay
  store.add("decoder.conv.weight", {2, 3, 1, 16}, 0, false);           // 96: explicit flag wins
  store.freeze();
  return store;
}

TEST(ParameterStore, LaysOutTensorsInOrderOnAlignedOffsets) {
  ParameterStore store = small_store();
  ASSERT_EQ(store.size(), 5);
  const std::int64_t expected_offsets[] = {0, 32, 64, 80, 96};
  const std::int64_t expected_numel[] = {21, 20, 5, 1, 96};
  for (int i = 0; i < store.size(); ++i) {
    EXPECT_EQ(store.info(i).offset, expected_offsets[i]) << store.info(i).name;
    EXPECT_EQ(store.info(i).numel, expected_numel[i]) << store.info(i).name;
    EXPECT_EQ(store.info(i).offset % train::kParameterAlignment, 0);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(store.flat_view(i).data()) % kHostAlignment, 0u);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(store.flat_grad_view(i).data()) % kHostAlignment, 0u);
  }
  EXPECT_EQ(store.buffer_size(), 192);
  EXPECT_EQ(store.parameter_count(), 21 + 20 + 5 + 1 + 96);
  EXPECT_EQ(store.values().size(0), 192);
  EXPECT_EQ(store.grads().size(0), 192);
  // Decay flags: the default rule, except where given explicitly.
  EXPECT_FALSE(store.info(0).decay);
  EXPECT_TRUE(store.info(1).decay);
  EXPECT_FALSE(store.info(2).decay);
  EXPECT_FALSE(store.info(3).decay);
  EXPECT_FALSE(store.info(4).decay);
  EXPECT_EQ(store.info(1).group, 1);
  EXPECT_EQ(store.info(3).group, 2);
  // Both buffers start zeroed.
  for (std::int64_t i = 0; i < store.buffer_size(); ++i) {
    ASSERT_EQ(store.values()(i), 0.0f);
    ASSERT_EQ(store.grads()(i), 0.0f);
  }
}

TEST(ParameterStore, ViewsShareTheFlatBuffers) {
  ParameterStore store = small_store();
  HostView<float, 2> w = store.view<2>("text_model.encoder.layers.0.mlp.fc1.weight");
  EXPECT_EQ(w.shape(), (Extents<2>{5, 4}));
  w(2, 3) = 7.0f;
  EXPECT_EQ(store.values()(32 + 2 * 4 + 3), 7.0f);
  EXPECT_EQ(store.grads()(32 + 2 * 4 + 3), 0.0f);  // the gradient buffer is separate
  HostView<float, 4> gw = store.grad_view<4>(4);
  EXPECT_EQ(gw.shape(), (Extents<4>{2, 3, 1, 16}));
  gw(1, 2, 0, 15) = -3.0f;
  EXPECT_EQ(store.grads()(96 + 95), -3.0f);
  // A scalar is viewed as [1].
  HostView<float, 1> scale = store.view<1>("logit_scale");
  EXPECT_EQ(scale.shape(), (Extents<1>{1}));
  scale(0) = 2.5f;
  EXPECT_EQ(store.values()(80), 2.5f);
  const ParameterStore& const_store = store;
  EXPECT_EQ(const_store.view<1>(3)(0), 2.5f);
  EXPECT_EQ(const_store.grad_view<4>(4)(1, 2, 0, 15), -3.0f);

  // visit: checkpoint order, names, shapes, flat views of the right place.
  std::vector<std::string> names;
  store.visit([&](const std::string& name, std::span<const std::int64_t> shape, HostView<float, 1> value,
                  HostView<float, 1> grad) {
    const int i = static_cast<int>(names.size());
    names.push_back(name);
    EXPECT_EQ(std::vector<std::int64_t>(shape.begin(), shape.end()), store.info(i).shape);
    EXPECT_EQ(value.data(), store.values().data() + store.info(i).offset);
    EXPECT_EQ(grad.data(), store.grads().data() + store.info(i).offset);
    EXPECT_EQ(value.size(0), store.info(i).numel);
  });
  ASSERT_EQ(names.size(), 5u);
  EXPECT_EQ(names[0], "text_model.embeddings.token_embedding.weight");
  EXPECT_EQ(names[3], "logit_scale");
  EXPECT_EQ(store.index_of("decoder.conv.weight"), 4);
  EXPECT_TRUE(store.contains("logit_scale"));
  EXPECT_FALSE(store.contains("logit_bias"));

  // zero_grad clears every gradient and the padding.
  for (std::int64_t i = 0; i < store.buffer_size(); ++i) store.grads()(i) = 1.0f;
  store.zero_grad();
  for (std::int64_t i = 0; i < store.buffer_size(); ++i) ASSERT_EQ(store.grads()(i), 0.0f) << i;
  EXPECT_EQ(store.values()(32 + 2 * 4 + 3), 7.0f);  // values untouched
}

TEST(ParameterStore, ErrorsNameTheTensor) {
  ParameterStore store;
  store.add("a.weight", {2, 3});
  test::expect_error_naming([&] { store.add("a.weight", {4}); }, "duplicate parameter name 'a.weight'");
  test::expect_error_naming([&] { store.add("b.weight", {3, 0}); }, "'b.weight' has shape [3, 0]");
  test::expect_error_naming([&] { store.add("c.weight", {-1}); }, "'c.weight' has shape [-1]");
  test::expect_error_naming([&] { store.add("", {1}); }, "empty name");
  test::expect_error_naming([&] { store.add("d.weight", {1}, -1); }, "'d.weight' has group -1");
  test::expect_error_naming([&] { store.view<2>(0); }, "view of 'a.weight' before freeze()");
  test::expect_error_naming([&] { store.grads(); }, "grads() before freeze()");
  store.freeze();
  test::expect_error_naming([&] { store.add("e.weight", {1}); }, "cannot add 'e.weight': the store is frozen");
  test::expect_error_naming([&] { store.freeze(); }, "freeze() called twice");
  test::expect_error_naming([&] { store.index_of("a.bias"); }, "no parameter named 'a.bias'");
  test::expect_error_naming([&] { store.view<2>("a.bias"); }, "no parameter named 'a.bias'");
  test::expect_error_naming([&] { store.grad_view<1>(0); }, "grad_view<1> of 'a.weight', which has rank 2");
  test::expect_error_naming([&] { store.info(1); }, "parameter index 1 out of range");
  ParameterStore empty;
  test::expect_error_naming([&] { empty.freeze(); }, "no parameters registered");
}

TEST(ParameterStore, ValuesOnlyStoreHasEmptyGradients) {
  // Gradients::none (inference): values as usual, every gradient view empty, zero_grad a no-op.
  ParameterStore store;
  store.add("a.weight", {2, 3});
  store.add("b.bias", {5});
  store.freeze(train::Gradients::none);
  EXPECT_FALSE(store.has_gradients());
  EXPECT_TRUE(store.values_only());
  EXPECT_EQ(store.values().size(0), store.buffer_size());
  store.view<2>(0)(1, 2) = 4.0f;
  EXPECT_EQ(store.flat_view(0)(5), 4.0f);
  EXPECT_TRUE(store.grad_view<2>(0).empty());
  EXPECT_TRUE(store.flat_grad_view(1).empty());
  EXPECT_TRUE(store.grads().empty());
  store.zero_grad();
  ParameterStore training;
  training.add("a.weight", {2, 3});
  training.freeze();
  EXPECT_TRUE(training.has_gradients());
  EXPECT_FALSE(training.values_only());
  EXPECT_EQ(training.grad_view<2>(0).numel(), 6);
}

TEST(ParameterStore, DefaultNoDecayRule) {
  EXPECT_TRUE(train::default_no_decay("vision_model.encoder.layers.3.layer_norm1.weight", 1));
  EXPECT_TRUE(train::default_no_decay("vision_model.encoder.layers.3.mlp.fc2.bias", 1));
  EXPECT_TRUE(train::default_no_decay("vision_model.embeddings.position_embedding.weight", 2));
  EXPECT_TRUE(train::default_no_decay("vision_model.embeddings.class_embedding", 1));
  EXPECT_TRUE(train::default_no_decay("model.embed_tokens.weight", 2));
  EXPECT_TRUE(train::default_no_decay("logit_scale", 0));
  EXPECT_TRUE(train::default_no_decay("logit_scale", 1));
  EXPECT_FALSE(train::default_no_decay("vision_model.encoder.layers.3.self_attn.qkv.weight", 2));
  EXPECT_FALSE(train::default_no_decay("quantizer.quant_embed.c_fc.weight", 2));  // "embed", not "embedding"
  EXPECT_FALSE(train::default_no_decay("visual_projection.weight", 2));
}

// ---------------------------------------------------------------------------------------------
// Schedule

TEST(Schedule, WarmupThenCosine) {
  const train::CosineSchedule s{4, 10, 0.0};  // W = 4, T = 10: the cosine spans t = 4..10
  EXPECT_DOUBLE_EQ(s.factor(0), 0.25);        // (t + 1)/W: the first step already moves
  EXPECT_DOUBLE_EQ(s.factor(1), 0.5);
  EXPECT_DOUBLE_EQ(s.factor(3), 1.0);  // last warm-up step at the peak
  EXPECT_DOUBLE_EQ(s.factor(4), 1.0);  // cosine starts at the peak: continuous
  EXPECT_NEAR(s.factor(5), 0.5 * (1.0 + std::cos(M_PI / 6.0)), 1e-15);
  EXPECT_NEAR(s.factor(7), 0.5, 1e-15);  // half-way through the cosine
  EXPECT_NEAR(s.factor(9), 0.5 * (1.0 + std::cos(5.0 * M_PI / 6.0)), 1e-15);
  EXPECT_EQ(s.factor(10), 0.0);
  EXPECT_EQ(s.factor(1000), 0.0);
  // A floor ρ: min + ½(peak − min)(1 + cos), per-group peaks scale together.
  const train::CosineSchedule f{4, 10, 0.1};
  EXPECT_NEAR(f.factor(7), 0.1 + 0.45, 1e-15);
  EXPECT_NEAR(f.lr(2e-3, 7), 2e-3 * 0.55, 1e-18);
  EXPECT_NEAR(f.lr(2e-4, 7) / f.lr(2e-3, 7), 0.1, 1e-15);
  EXPECT_DOUBLE_EQ(f.factor(3), 1.0);
  EXPECT_DOUBLE_EQ(f.factor(12), 0.1);
  // No warm-up: the cosine starts at t = 0.
  const train::CosineSchedule c{0, 4, 0.0};
  EXPECT_DOUBLE_EQ(c.factor(0), 1.0);
  EXPECT_NEAR(c.factor(2), 0.5, 1e-15);
  // The spec's stage-1 numbers (QLIP_SPEC.md §4.2): 2,000 warm-up of 120,000.
  const train::CosineSchedule spec{2000, 120000, 0.0};
  EXPECT_DOUBLE_EQ(spec.factor(0), 1.0 / 2000.0);
  EXPECT_DOUBLE_EQ(spec.factor(1999), 1.0);
  EXPECT_NEAR(spec.factor(61000), 0.5, 1e-12);

  test::expect_error_naming([] { train::CosineSchedule{5, 4, 0.0}.check(); }, "total_steps");
  test::expect_error_naming([] { train::CosineSchedule{0, 4, 1.5}.check(); }, "min_ratio");
  test::expect_error_naming([] { train::CosineSchedule{-1, 4, 0.0}.check(); }, "warmup_steps");
  test::expect_error_naming([&] { s.factor(-1); }, "step index -1");
}

// ---------------------------------------------------------------------------------------------
// Gradient clipping

/// sqrt(Σ g²) in double, tensor by tensor over the store's infos (not over the flat buffer).
double direct_norm(const ParameterStore& store) {
  double s = 0.0;
  for (int i = 0; i < store.size(); ++i) {
    const HostView<const float, 1> g =
        store.grads().slice(0, store.info(i).offset, store.info(i).offset + store.info(i).numel);
    for (std::int64_t j = 0; j < g.size(0); ++j) s += static_cast<double>(g(j)) * static_cast<double>(g(j));
  }
  return std::sqrt(s);
}

ParameterStore clip_store() {
  ParameterStore store;
  store.add("big.weight", {300, 200});  // several of sum_of_squares' parts
  store.add("small.bias", {7});
  store.add("scalar", {});
  store.freeze();
  return store;
}

TEST(ClipGrad, NormAndClippingMatchADirectComputation) {
  ParameterStore store = clip_store();
  std::uint64_t seed = 300;
  for (int i = 0; i < store.size(); ++i) fill_normal(store.flat_grad_view(i).data(), store.info(i).numel, ++seed);
  const double norm = direct_norm(store);
  EXPECT_NEAR(train::grad_norm(store), norm, 1e-12 * norm);

  // Above max_norm: every gradient scaled by max_norm/(norm + 1e-6), in float.
  std::vector<float> before(store.grads().data(), store.grads().data() + store.buffer_size());
  const double max_norm = 0.25 * norm;
  const train::ClipResult r = train::clip_grad_norm(store, max_norm);
  EXPECT_TRUE(r.finite);
  EXPECT_TRUE(r.clipped());
  EXPECT_NEAR(r.norm, norm, 1e-12 * norm);
  // torch's formula on the returned norm, exactly; near the direct computation (summation order).
  const double coef = max_norm / (r.norm + 1e-6);
  EXPECT_EQ(r.coef, coef);
  EXPECT_NEAR(r.coef, max_norm / (norm + 1e-6), 1e-12);
  const float coef_f = static_cast<float>(coef);
  for (std::int64_t i = 0; i < store.buffer_size(); ++i) ASSERT_EQ(store.grads()(i), before[i] * coef_f) << i;
  EXPECT_NEAR(train::grad_norm(store), max_norm, 1e-6 * max_norm);

  // At or below max_norm: untouched, coefficient 1.
  before.assign(store.grads().data(), store.grads().data() + store.buffer_size());
  const train::ClipResult same = train::clip_grad_norm(store, 10.0 * norm);
  EXPECT_FALSE(same.clipped());
  EXPECT_EQ(same.coef, 1.0);
  EXPECT_EQ(std::memcmp(before.data(), store.grads().data(), before.size() * sizeof(float)), 0);

  // The same norm on any thread count (fixed summation order).
  ThreadCountGuard guard;
  omp_set_num_threads(1);
  const double one = train::grad_norm(store);
  omp_set_num_threads(3);
  EXPECT_EQ(train::grad_norm(store), one);
}

TEST(ClipGrad, NonFiniteNormIsReportedAndNothingIsScaled) {
  for (const float bad : {std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()}) {
    ParameterStore store = clip_store();
    fill_normal(store.flat_grad_view(0).data(), store.info(0).numel, 7);
    store.grad_view<1>("small.bias")(3) = bad;
    std::vector<float> before(store.grads().data(), store.grads().data() + store.buffer_size());
    const train::ClipResult r = train::clip_grad_norm(store, 1.0);
    EXPECT_FALSE(r.finite);
    EXPECT_FALSE(std::isfinite(r.norm));
    EXPECT_FALSE(r.clipped());
    EXPECT_EQ(std::memcmp(before.data(), store.grads().data(), before.size() * sizeof(float)), 0);
    test::expect_error_naming([&] { train::clip_coefficient(r.norm, 1.0); }, "gradient norm is");
  }
  // Large finite gradients: their squares overflow float but not the double accumulator.
  ParameterStore store = clip_store();
  store.grad_view<1>("small.bias")(0) = 3e30f;
  store.grad_view<1>("small.bias")(1) = 4e30f;
  EXPECT_NEAR(train::grad_norm(store), 5e30, 1e-6 * 5e30);
  test::expect_error_naming([&] { train::clip_grad_norm(store, 0.0); }, "max_norm is 0");
}

// ---------------------------------------------------------------------------------------------
// CPU step vs the double reference

/// Flat buffers with segments at aligned offsets and sentinel-filled padding between them.
struct FlatCase {
  std::vector<OptimizerSegment> segments;
  std::int64_t size = 0;
};

FlatCase make_flat_case(std::initializer_list<std::int64_t> sizes) {
  FlatCase c;
  std::int64_t offset = 3;  // odd start: nothing assumes segment 0 is at 0
  int i = 0;
  for (std::int64_t n : sizes) {
    // Different lr and wd per tensor (one with no decay), as groups and decay flags give.
    c.segments.push_back({offset, n, 1e-2 * (1 + i % 3), (i % 2 == 0) ? 0.05 : 0.0});
    offset += n + 5;  // 5 padding elements that must stay untouched
    ++i;
  }
  c.size = offset;
  return c;
}

/// Runs `steps` CPU steps and the same reference steps in double; compares after every step.
/// Gradients like a token embedding's: in each segment only the 64-element rows whose index is
/// ≡ step (mod 3) modulo 7 keep their value, so some kIdleBlock blocks see a gradient this step,
/// some saw one earlier (moments non-zero, gradient zero) and some never do.
void keep_embedding_like_rows(std::vector<float>& g, const OptimizerSegment& s, int step) {
  for (std::int64_t i = 0; i < s.numel; ++i)
    if ((i / 64) % 7 != step % 3) g[s.offset + i] = 0.0f;
}

void expect_cpu_matches_reference(train::OptimizerKind kind, const FlatCase& c, int steps, double grad_scale,
                                  bool sparse_gradients = false) {
  const float kSentinel = 12345.0f;
  std::vector<float> p(c.size, kSentinel), m(c.size, kSentinel), v(c.size, kSentinel), g(c.size, kSentinel);
  std::uint64_t seed = 1000;
  for (const OptimizerSegment& s : c.segments) {
    fill_normal(p.data() + s.offset, s.numel, ++seed);
    std::fill(m.begin() + s.offset, m.begin() + s.offset + s.numel, 0.0f);
    std::fill(v.begin() + s.offset, v.begin() + s.offset + s.numel, 0.0f);
  }
  std::vector<double> pd(p.begin(), p.end()), md(m.begin(), m.end()), vd(v.begin(), v.end()), gd(c.size);
  std::vector<double> scratch(static_cast<std::size_t>(ops::lamb_scratch_size(c.segments)));
  auto view = [](auto& vec) {
    return HostView<std::remove_reference_t<decltype(vec[0])>, 1>(vec.data(), {static_cast<std::int64_t>(vec.size())});
  };
  for (int step = 1; step <= steps; ++step) {
    SCOPED_TRACE(::testing::Message() << "step " << step);
    for (const OptimizerSegment& s : c.segments) {
      fill_normal(g.data() + s.offset, s.numel, 5000 + seed++, 0.1f * step);
      if (sparse_gradients) keep_embedding_like_rows(g, s, step);
    }
    for (std::int64_t i = 0; i < c.size; ++i) gd[i] = g[i];
    AdamHyperParams hp{0.9, 0.95, 1e-6, step, grad_scale};
    const HostView<const float, 1> gv = view(g);
    const HostView<const double, 1> gdv = view(gd);
    if (kind == train::OptimizerKind::adamw) {
      ops::adamw_step(cpu_backend{}, view(p), gv, view(m), view(v), c.segments, hp);
      reference::adamw_step<double>(view(pd), gdv, view(md), view(vd), c.segments, hp);
    } else {
      ops::lamb_step(cpu_backend{}, view(p), gv, view(m), view(v), c.segments, hp, scratch);
      reference::lamb_step<double>(view(pd), gdv, view(md), view(vd), c.segments, hp);
    }
    for (const OptimizerSegment& s : c.segments) {
      SCOPED_TRACE(::testing::Message() << "segment at " << s.offset << " of " << s.numel);
      auto part = [&](auto& vec) {
        return HostView<const std::remove_reference_t<decltype(vec[0])>, 1>(view(vec)).slice(0, s.offset,
                                                                                             s.offset + s.numel);
      };
      EXPECT_TRUE(test::all_close(part(p), part(pd), test::kF32Op));
      EXPECT_TRUE(test::all_close(part(m), part(md), test::kF32Op));
      EXPECT_TRUE(test::all_close(part(v), part(vd), test::kF32Op));
    }
  }
  // Padding between segments never read into or written.
  std::int64_t next = 0;
  for (const OptimizerSegment& s : c.segments) {
    for (std::int64_t i = next; i < s.offset; ++i) {
      ASSERT_EQ(p[i], kSentinel) << i;
      ASSERT_EQ(m[i], kSentinel) << i;
      ASSERT_EQ(v[i], kSentinel) << i;
    }
    next = s.offset + s.numel;
  }
}

TEST(OptimizerStep, CpuAdamWMatchesDoubleReference) {
  // 40000 spans three chunks (kOptimizerChunk = 16384); sizes 1 and 7 are partial everything.
  expect_cpu_matches_reference(train::OptimizerKind::adamw, make_flat_case({1, 7, 65, 40000, 111}), 5, 1.0);
  expect_cpu_matches_reference(train::OptimizerKind::adamw, make_flat_case({33, 989}), 4, 0.37);
}

TEST(OptimizerStep, CpuLambMatchesDoubleReference) {
  expect_cpu_matches_reference(train::OptimizerKind::lamb, make_flat_case({1, 7, 65, 40000, 111}), 5, 1.0);
  expect_cpu_matches_reference(train::OptimizerKind::lamb, make_flat_case({33, 989}), 4, 0.37);
}

TEST(OptimizerStep, SparseGradientsMatchDoubleReference) {
  // The idle-block path (zero gradient and moments, no decay: skipped) against the plain formula;
  // every other segment has weight decay, where nothing may be skipped.
  for (const train::OptimizerKind kind : {train::OptimizerKind::adamw, train::OptimizerKind::lamb}) {
    SCOPED_TRACE(kind == train::OptimizerKind::adamw ? "adamw" : "lamb");
    expect_cpu_matches_reference(kind, make_flat_case({40000, 3000, 20000, 700}), 6, 1.0, true);
  }
}

TEST(OptimizerStep, RowsThatNeverSawAGradientKeepTheirValues) {
  // No weight decay: an element with zero gradient and zero moments has update direction 0.
  const std::int64_t n = 4096;
  const std::vector<OptimizerSegment> segs = {{0, n, 0.1, 0.0}};
  for (const train::OptimizerKind kind : {train::OptimizerKind::adamw, train::OptimizerKind::lamb}) {
    SCOPED_TRACE(kind == train::OptimizerKind::adamw ? "adamw" : "lamb");
    std::vector<float> p(n), m(n, 0.0f), v(n, 0.0f), g(n, 0.0f);
    fill_normal(p.data(), n, 7);
    const std::vector<float> initial = p;
    std::vector<double> scratch(static_cast<std::size_t>(ops::lamb_scratch_size(segs)));
    for (int step = 1; step <= 3; ++step) {
      fill_normal(g.data(), 64, 20 + step);  // only row 0 has a gradient
      const AdamHyperParams hp{0.9, 0.95, 1e-6, step, 1.0};
      const HostView<float, 1> pv(p.data(), {n}), mv(m.data(), {n}), vv(v.data(), {n});
      const HostView<const float, 1> gv(g.data(), {n});
      if (kind == train::OptimizerKind::adamw) {
        ops::adamw_step(cpu_backend{}, pv, gv, mv, vv, segs, hp);
      } else {
        ops::lamb_step(cpu_backend{}, pv, gv, mv, vv, segs, hp, scratch);
      }
    }
    EXPECT_NE(p[0], initial[0]);
    EXPECT_EQ(std::memcmp(p.data() + 64, initial.data() + 64, (n - 64) * sizeof(float)), 0);
    for (std::int64_t i = 64; i < n; ++i) ASSERT_TRUE(m[i] == 0.0f && v[i] == 0.0f) << i;
  }
}

TEST(OptimizerStep, LambTrustRatioIsOneForAZeroTensor) {
  // p = 0 (a zero-initialised bias): ‖p‖ = 0, so trust = 1 and the step is lr·r.
  std::vector<float> p(4, 0.0f), g = {1.0f, -2.0f, 0.5f, 0.0f}, m(4, 0.0f), v(4, 0.0f);
  const std::vector<OptimizerSegment> segs = {{0, 4, 0.1, 0.0}};
  std::vector<double> scratch(static_cast<std::size_t>(ops::lamb_scratch_size(segs)));
  ops::lamb_step(cpu_backend{}, HostView<float, 1>(p.data(), {4}), HostView<const float, 1>(g.data(), {4}),
                 HostView<float, 1>(m.data(), {4}), HostView<float, 1>(v.data(), {4}), segs,
                 AdamHyperParams{0.9, 0.95, 1e-6, 1, 1.0}, scratch);
  // Step 1: m̂ = g, v̂ = g², r = g/(|g| + eps) ≈ sign(g); p = −0.1·r.
  for (int i = 0; i < 4; ++i) {
    const double r = g[i] / (std::fabs(g[i]) + 1e-6);
    EXPECT_NEAR(p[i], -0.1 * r, 1e-7) << i;
  }
}

TEST(OptimizerStep, ResultsDoNotDependOnTheThreadCount) {
  const FlatCase c = make_flat_case({7, 40000, 20000, 3});
  for (const train::OptimizerKind kind : {train::OptimizerKind::adamw, train::OptimizerKind::lamb}) {
    std::vector<float> results[2];
    ThreadCountGuard guard;
    for (int run = 0; run < 2; ++run) {
      omp_set_num_threads(run == 0 ? 1 : 3);
      std::vector<float> p(c.size, 0.0f), m(c.size, 0.0f), v(c.size, 0.0f), g(c.size, 0.0f);
      fill_normal(p.data(), c.size, 1);
      std::vector<double> scratch(static_cast<std::size_t>(ops::lamb_scratch_size(c.segments)));
      for (int step = 1; step <= 3; ++step) {
        fill_normal(g.data(), c.size, 10 + step);
        const AdamHyperParams hp{0.9, 0.95, 1e-8, step, 1.0};
        const HostView<float, 1> pv(p.data(), {c.size}), mv(m.data(), {c.size}), vv(v.data(), {c.size});
        const HostView<const float, 1> gv(g.data(), {c.size});
        if (kind == train::OptimizerKind::adamw) {
          ops::adamw_step(cpu_backend{}, pv, gv, mv, vv, c.segments, hp);
        } else {
          ops::lamb_step(cpu_backend{}, pv, gv, mv, vv, c.segments, hp, scratch);
        }
      }
      results[run] = p;
    }
    EXPECT_EQ(std::memcmp(results[0].data(), results[1].data(), results[0].size() * sizeof(float)), 0)
        << (kind == train::OptimizerKind::adamw ? "adamw" : "lamb");
  }
}

TEST(OptimizerStep, ArgumentErrorsNameTheArgument) {
  std::vector<float> p(20, 0.0f), g(20, 0.0f), m(20, 0.0f), v(20, 0.0f), short_m(19, 0.0f);
  const HostView<float, 1> pv(p.data(), {20}), mv(m.data(), {20}), vv(v.data(), {20});
  const HostView<const float, 1> gv(g.data(), {20});
  const AdamHyperParams hp;
  auto adamw = [&](std::vector<OptimizerSegment> segs, AdamHyperParams h) {
    ops::adamw_step(cpu_backend{}, pv, gv, mv, vv, segs, h);
  };
  test::expect_error_naming(
      [&] {
        adamw({{0, 10, 0.1, 0.0}, {5, 10, 0.1, 0.0}}, hp);
      },
      "adamw_step: segments[1] starts at 5, before the end of segments[0]");
  test::expect_error_naming(
      [&] {
        adamw({{15, 10, 0.1, 0.0}}, hp);
      },
      "adamw_step: segments[0] = [offset 15, numel 10]");
  test::expect_error_naming([&] { adamw({{0, 0, 0.1, 0.0}}, hp); }, "adamw_step: segments[0]");
  test::expect_error_naming([&] { adamw({{0, 4, -1.0, 0.0}}, hp); }, "adamw_step: segments[0].lr");
  test::expect_error_naming([&] { adamw({{0, 4, 0.1, -0.5}}, hp); }, "adamw_step: segments[0].weight_decay");
  test::expect_error_naming([&] { adamw({{0, 4, 0.1, 0.0}}, AdamHyperParams{1.0, 0.95, 1e-8, 1, 1.0}); }, "beta1");
  test::expect_error_naming([&] { adamw({{0, 4, 0.1, 0.0}}, AdamHyperParams{0.9, -0.1, 1e-8, 1, 1.0}); }, "beta2");
  test::expect_error_naming([&] { adamw({{0, 4, 0.1, 0.0}}, AdamHyperParams{0.9, 0.95, 0.0, 1, 1.0}); }, "eps");
  test::expect_error_naming([&] { adamw({{0, 4, 0.1, 0.0}}, AdamHyperParams{0.9, 0.95, 1e-8, 0, 1.0}); }, "step is 0");
  test::expect_error_naming(
      [&] {
        adamw({{0, 4, 0.1, 0.0}}, AdamHyperParams{0.9, 0.95, 1e-8, 1, std::nan("")});
      },
      "grad_scale");
  test::expect_error_naming(
      [&] {
        ops::adamw_step(cpu_backend{}, pv, gv, HostView<float, 1>(short_m.data(), {19}), vv,
                        std::vector<OptimizerSegment>{{0, 4, 0.1, 0.0}}, hp);
      },
      "adamw_step: exp_avg has shape [19]");
  test::expect_error_naming(
      [&] {
        ops::adamw_step(cpu_backend{}, HostView<float, 1>(p.data(), {10}, {2}),
                        HostView<const float, 1>(g.data(), {10}), HostView<float, 1>(m.data(), {10}),
                        HostView<float, 1>(v.data(), {10}), std::vector<OptimizerSegment>{{0, 4, 0.1, 0.0}}, hp);
      },
      "adamw_step: param must be contiguous");
  std::vector<double> scratch(1);
  test::expect_error_naming(
      [&] {
        ops::lamb_step(cpu_backend{}, pv, gv, mv, vv, std::vector<OptimizerSegment>{{0, 4, 0.1, 0.0}}, hp, scratch);
      },
      "lamb_step: scratch holds 1 doubles, need 2");
  // The reference checks the same things with the same words.
  test::expect_error_naming(
      [&] {
        reference::lamb_step(pv, HostView<float, 1>(g.data(), {20}), mv, vv,
                             std::vector<OptimizerSegment>{{0, 10, 0.1, 0.0}, {5, 10, 0.1, 0.0}}, hp);
      },
      "lamb_step: segments[1] starts at 5");
}

TEST(Optimizer, ConstructionErrorsNameTheProblem) {
  ParameterStore unfrozen;
  unfrozen.add("w", {2});
  test::expect_error_naming([&] { (void)train::Optimizer(unfrozen, {{"g", 0.1, 0.0}}, {}); }, "must be frozen");
  ParameterStore store;
  store.add("w", {2}, 0);
  store.add("decoder.w", {2, 2}, 2);
  store.freeze();
  test::expect_error_naming(
      [&] {
        (void)train::Optimizer(store, {{"a", 0.1, 0.0}, {"b", 0.1, 0.0}}, {});
      },
      "parameter 'decoder.w' is in group 2, but only 2 groups were given");
  test::expect_error_naming(
      [&] {
        (void)train::Optimizer(store, {{"a", 0.1, 0.0}, {"b", -0.1, 0.0}, {"c", 0.1, 0.0}}, {});
      },
      "group 1 ('b') has peak_lr -0.1");
  train::OptimizerOptions bad;
  bad.beta2 = 1.0;
  test::expect_error_naming(
      [&] {
        (void)train::Optimizer(store, {{"a", 0.1, 0.0}, {"b", 0.1, 0.0}, {"c", 0.1, 0.0}}, bad);
      },
      "beta2");
  bad = {};
  bad.schedule = {10, 5, 0.0};
  test::expect_error_naming(
      [&] {
        (void)train::Optimizer(store, {{"a", 0.1, 0.0}, {"b", 0.1, 0.0}, {"c", 0.1, 0.0}}, bad);
      },
      "total_steps");
}

// ---------------------------------------------------------------------------------------------
// Parity with PyTorch (tools/make_optimizer_fixtures.py)

/// The fixture's store: tensors in its order with its groups and decay flags.
ParameterStore fixture_store(const nlohmann::json& fx) {
  ParameterStore store;
  for (const auto& t : fx.at("tensors")) {
    store.add(t.at("name").get<std::string>(), t.at("shape").get<std::vector<std::int64_t>>(), t.at("group").get<int>(),
              t.at("decay").get<bool>());
  }
  store.freeze();
  return store;
}

void copy_into(HostView<float, 1> dst, const nlohmann::json& values) {
  const auto v = values.get<std::vector<float>>();
  ASSERT_EQ(static_cast<std::int64_t>(v.size()), dst.size(0));
  for (std::int64_t i = 0; i < dst.size(0); ++i) dst(i) = v[static_cast<std::size_t>(i)];
}

/// How the replay applies clipping: torch's in-place rescale, or the coefficient fused into step().
enum class ClipMode { in_place, fused };

void replay_case(const nlohmann::json& fx, const nlohmann::json& cs, ClipMode mode) {
  ParameterStore store = fixture_store(fx);
  // The default decay rule agrees with the flags the fixture was made with.
  for (int i = 0; i < store.size(); ++i)
    EXPECT_EQ(store.info(i).decay, !train::default_no_decay(store.info(i).name, store.info(i).shape.size()));
  for (int i = 0; i < store.size(); ++i) copy_into(store.flat_view(i), cs.at("initial").at(i));

  std::vector<train::ParamGroup> groups;
  for (const auto& g : fx.at("groups"))
    groups.push_back(
        {g.at("name").get<std::string>(), g.at("peak_lr").get<double>(), g.at("weight_decay").get<double>()});
  train::OptimizerOptions options;
  options.kind = cs.at("kind").get<std::string>() == "adamw" ? train::OptimizerKind::adamw : train::OptimizerKind::lamb;
  options.beta1 = fx.at("betas").at(0).get<double>();
  options.beta2 = fx.at("betas").at(1).get<double>();
  options.eps = cs.at("eps").get<double>();
  options.schedule = {json_get<std::int64_t>(fx, "schedule.warmup_steps"),
                      json_get<std::int64_t>(fx, "schedule.total_steps"), json_get<double>(fx, "schedule.min_ratio")};
  train::Optimizer opt(store, groups, options);
  const double max_norm = json_get<double>(fx, "max_norm");

  const auto& steps = cs.at("steps");
  ASSERT_GE(steps.size(), 5u);
  for (std::size_t k = 0; k < steps.size(); ++k) {
    SCOPED_TRACE(::testing::Message() << cs.at("kind").get<std::string>() << " step " << k + 1
                                      << (mode == ClipMode::fused ? " (fused clip)" : " (in-place clip)"));
    const auto& st = steps[k];
    EXPECT_NEAR(opt.next_lr(0), groups[0].peak_lr * st.at("lr_factor").get<double>(), 1e-15);
    store.zero_grad();
    for (int i = 0; i < store.size(); ++i) copy_into(store.flat_grad_view(i), st.at("grads").at(i));
    const double torch_norm = st.at("grad_norm").get<double>();
    double scale = 1.0;
    if (mode == ClipMode::in_place) {
      const train::ClipResult clip = train::clip_grad_norm(store, max_norm);
      ASSERT_TRUE(clip.finite);
      EXPECT_NEAR(clip.norm, torch_norm, 1e-6 * torch_norm);  // torch sums in float32
    } else {
      const double norm = train::grad_norm(store);
      EXPECT_NEAR(norm, torch_norm, 1e-6 * torch_norm);
      scale = train::clip_coefficient(norm, max_norm);
    }
    const train::StepReport report = opt.step(scale);
    EXPECT_EQ(report.step, static_cast<std::int64_t>(k + 1));
    EXPECT_NEAR(report.lr_factor, st.at("lr_factor").get<double>(), 1e-15);
    for (int i = 0; i < store.size(); ++i) {
      SCOPED_TRACE(store.info(i).name);
      const auto want = st.at("params").at(i).get<std::vector<float>>();
      const HostView<const float, 1> ref(want.data(), {static_cast<std::int64_t>(want.size())});
      EXPECT_TRUE(test::all_close(HostView<const float, 1>(store.flat_view(i)), ref, test::kF32Op));
    }
  }
  EXPECT_EQ(opt.step_count(), static_cast<std::int64_t>(steps.size()));
  EXPECT_EQ(opt.state().step, opt.step_count());
}

TEST(OptimizerParity, MatchesPyTorchStepByStep) {
  const nlohmann::json fx = read_json(QLIP_TEST_DATA_DIR "/optim/optimizer_steps.json");
  std::vector<std::string> kinds;
  for (const auto& cs : fx.at("cases")) {
    kinds.push_back(cs.at("kind").get<std::string>());
    replay_case(fx, cs, ClipMode::in_place);
    replay_case(fx, cs, ClipMode::fused);
  }
  EXPECT_EQ(kinds, (std::vector<std::string>{"adamw", "lamb"}));
}

TEST(Optimizer, StateHasTheStoreLayoutAndRestores) {
  // Two optimisers: one runs 4 steps; the other runs 2, is saved (values + moments + t), restored
  // into a fresh store/optimiser, and runs 2 more. Both must end bit-identical.
  auto make = [](ParameterStore& store) {
    store.add("a.weight", {9, 5});
    store.add("a.bias", {9});
    store.freeze();
    fill_normal(store.values().data(), store.buffer_size(), 77);
  };
  train::OptimizerOptions options;
  options.kind = train::OptimizerKind::lamb;
  options.schedule = {2, 10, 0.0};
  const std::vector<train::ParamGroup> groups = {{"all", 0.01, 0.05}};
  auto set_grads = [](ParameterStore& store, int step) {
    store.zero_grad();
    for (int i = 0; i < store.size(); ++i)
      fill_normal(store.flat_grad_view(i).data(), store.info(i).numel, 900 + 10 * step + i);
  };

  ParameterStore s1;
  make(s1);
  train::Optimizer o1(s1, groups, options);
  EXPECT_EQ(o1.state().exp_avg.size(0), s1.buffer_size());
  for (int step = 1; step <= 4; ++step) {
    set_grads(s1, step);
    o1.step();
  }

  ParameterStore s2;
  make(s2);
  train::Optimizer o2(s2, groups, options);
  for (int step = 1; step <= 2; ++step) {
    set_grads(s2, step);
    o2.step();
  }
  const std::vector<float> saved_values(s2.values().data(), s2.values().data() + s2.buffer_size());
  const train::OptimizerState st = o2.state();
  const std::vector<float> saved_m(st.exp_avg.data(), st.exp_avg.data() + st.exp_avg.size(0));
  const std::vector<float> saved_v(st.exp_avg_sq.data(), st.exp_avg_sq.data() + st.exp_avg_sq.size(0));
  EXPECT_EQ(st.step, 2);

  ParameterStore s3;
  make(s3);
  train::Optimizer o3(s3, groups, options);
  std::copy(saved_values.begin(), saved_values.end(), s3.values().data());
  std::copy(saved_m.begin(), saved_m.end(), o3.state().exp_avg.data());
  std::copy(saved_v.begin(), saved_v.end(), o3.state().exp_avg_sq.data());
  o3.set_step_count(st.step);
  for (int step = 3; step <= 4; ++step) {
    set_grads(s3, step);
    o3.step();
  }
  EXPECT_EQ(std::memcmp(s1.values().data(), s3.values().data(), s1.buffer_size() * sizeof(float)), 0);
}

TEST(Optimizer, StageRecipesRunAndFrozenGroupsStayPut) {
  for (const bool stage2 : {false, true}) {
    SCOPED_TRACE(stage2 ? "stage 2" : "stage 1");
    const train::StageRecipe recipe = stage2 ? train::qlip_stage2_recipe() : train::qlip_stage1_recipe();
    EXPECT_EQ(recipe.options.kind, stage2 ? train::OptimizerKind::adamw : train::OptimizerKind::lamb);
    ParameterStore store;
    store.add("vision_model.encoder.layers.0.mlp.fc1.weight", {4, 3}, train::kVisionEncoderGroup);
    store.add("text_model.encoder.layers.0.mlp.fc1.weight", {4, 3}, train::kTextEncoderGroup);
    store.add("decoder.layers.0.mlp.fc1.weight", {4, 3}, train::kDecoderGroup);
    store.add("quantizer.quant_embed.c_fc.weight", {4, 3}, train::kBaseGroup);
    store.freeze();
    fill_normal(store.values().data(), store.buffer_size(), 5);
    fill_normal(store.grads().data(), store.buffer_size(), 6);
    const std::vector<float> before(store.values().data(), store.values().data() + store.buffer_size());
    train::Optimizer opt(store, recipe.groups, recipe.options);
    const train::ClipResult clip = train::clip_grad_norm(store, recipe.max_grad_norm);
    ASSERT_TRUE(clip.finite);
    opt.step();
    for (int i = 0; i < store.size(); ++i) {
      const std::int64_t o = store.info(i).offset;
      const bool frozen = recipe.groups[static_cast<std::size_t>(store.info(i).group)].peak_lr == 0.0;
      const bool same = std::memcmp(before.data() + o, store.values().data() + o, 12 * sizeof(float)) == 0;
      EXPECT_EQ(same, frozen) << store.info(i).name;
    }
  }
}

}  // namespace
}  // namespace qlip
