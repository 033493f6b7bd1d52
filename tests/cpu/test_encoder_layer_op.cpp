/// @file test_encoder_layer_op.cpp
/// @brief The CPU fused encoder layer (cpu/encoder_layer.hpp) against the reference backend's
///        overload (the same layer composed from the reference ops, double accumulation inside each
///        op), on random weights in the inference layout and odd sizes, for every layer variant the
///        configs use: plain MLP with GELU and quick-GELU, SwiGLU with sub-LN, with and without 2-D
///        RoPE (skipping a CLS token or on all tokens), causal mask, no k bias, q scaled after the
///        projection or folded into the weights. Also: the same bits for every thread count,
///        the arena sized by encoder_layer_workspace_bytes and rewound, and argument errors that
///        name the weight at fault.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "common/compare.hpp"
#include "qlip/core/allocator.hpp"
#include "qlip/core/philox.hpp"
#include "qlip/cpu/encoder_layer.hpp"
#include "qlip/cpu/threading.hpp"
#include "qlip/reference/ops.hpp"

namespace qlip {
namespace {

using test::all_close;
using test::kF32Reduction;

/// Structure of one test layer (what the configs vary) on top of its widths.
struct Variant {
  EncoderLayerDims dims;
  bool subln = false;
  bool k_bias = true;
  Activation act = Activation::gelu;
  AttentionMask mask = AttentionMask::none;
  bool rope = false;
  std::int64_t first_token = 0;  // RoPE skips tokens before it (the CLS token)
  bool fold_q_scale = false;     // q_scale = 1, as when Dh^-½ is a power of two and load() folds it
};

/// Owns one layer's random weights (scaled as an initialised model is) and hands out the views.
class LayerTensors {
 public:
  explicit LayerTensors(const Variant& v) {
    const std::int64_t d = v.dims.hidden, i = v.dims.intermediate, up = v.dims.up_width();
    ln1_g_ = gain(d);
    ln1_b_ = normal<1>({d}, 0.1f);
    qkv_w_ = normal<2>({3 * d, d}, 1.0f / std::sqrt(static_cast<float>(d)));
    qkv_b_ = normal<1>({3 * d}, 0.1f);
    if (!v.k_bias)
      for (std::int64_t j = d; j < 2 * d; ++j) qkv_b_(j) = 0.0f;  // absent k bias: zero rows of the fused bias
    out_w_ = normal<2>({d, d}, 1.0f / std::sqrt(static_cast<float>(d)));
    out_b_ = normal<1>({d}, 0.1f);
    ln2_g_ = gain(d);
    ln2_b_ = normal<1>({d}, 0.1f);
    up_w_ = normal<2>({up, d}, 1.0f / std::sqrt(static_cast<float>(d)));
    up_b_ = normal<1>({up}, 0.1f);
    down_w_ = normal<2>({d, i}, 1.0f / std::sqrt(static_cast<float>(i)));
    down_b_ = normal<1>({d}, 0.1f);
    if (v.subln) {
      attn_ln_g_ = gain(d);
      attn_ln_b_ = normal<1>({d}, 0.1f);
      ffn_ln_g_ = gain(i);
      ffn_ln_b_ = normal<1>({i}, 0.1f);
    }
  }

  EncoderLayerWeights<float> weights() const {
    EncoderLayerWeights<float> w;
    w.ln1_g = ln1_g_.view();
    w.ln1_b = ln1_b_.view();
    w.qkv_w = qkv_w_.view();
    w.qkv_b = qkv_b_.view();
    w.attn_ln_g = attn_ln_g_.view();
    w.attn_ln_b = attn_ln_b_.view();
    w.out_w = out_w_.view();
    w.out_b = out_b_.view();
    w.ln2_g = ln2_g_.view();
    w.ln2_b = ln2_b_.view();
    w.up_w = up_w_.view();
    w.up_b = up_b_.view();
    w.ffn_ln_g = ffn_ln_g_.view();
    w.ffn_ln_b = ffn_ln_b_.view();
    w.down_w = down_w_.view();
    w.down_b = down_b_.view();
    return w;
  }

 private:
  template <int R>
  Tensor<float, R> normal(const Extents<R>& shape, float std, float mean = 0.0f) {
    Tensor<float, R> t(shape);
    const Philox rng(++seed_);
    for (std::int64_t j = 0; j < t.numel(); ++j) t.data()[j] = mean + std * rng.normal(static_cast<std::uint64_t>(j));
    return t;
  }
  Tensor<float, 1> gain(std::int64_t n) { return normal<1>({n}, 0.1f, 1.0f); }

  std::uint64_t seed_ = 100;
  Tensor<float, 1> ln1_g_, ln1_b_, qkv_b_, out_b_, ln2_g_, ln2_b_, up_b_, down_b_;
  Tensor<float, 1> attn_ln_g_, attn_ln_b_, ffn_ln_g_, ffn_ln_b_;
  Tensor<float, 2> qkv_w_, out_w_, up_w_, down_w_;
};

/// x [B, T, D] of seeded normals.
Tensor<float, 3> random_input(std::int64_t batch, std::int64_t tokens, std::int64_t d) {
  Tensor<float, 3> x({batch, tokens, d});
  const Philox rng(7);
  for (std::int64_t j = 0; j < x.numel(); ++j) x.data()[j] = rng.normal(static_cast<std::uint64_t>(j));
  return x;
}

/// The RoPE table of a square patch grid covering tokens first_token..T−1.
RopeTable rope_for(std::int64_t tokens, const Variant& v) {
  const std::int64_t patches = tokens - v.first_token;
  const int grid = static_cast<int>(std::lround(std::sqrt(static_cast<double>(patches))));
  QLIP_CHECK(static_cast<std::int64_t>(grid) * grid == patches, "test setup: RoPE needs a square grid of tokens");
  return reference::rope2d_table(grid, static_cast<int>(v.dims.head_dim()));
}

EncoderLayerArgs<host_memory> args_for(const Variant& v, const RopeTableView<host_memory>* rope) {
  const float q_scale =
      v.fold_q_scale ? 1.0f : static_cast<float>(std::pow(static_cast<double>(v.dims.head_dim()), -0.5));
  return {v.dims, 1e-6f, v.act, v.mask, q_scale, rope};
}

/// x after one CPU layer (arena sized by the op, checked rewound).
Tensor<float, 3> run_cpu(const LayerTensors& w, const Tensor<float, 3>& x_in, const EncoderLayerArgs<host_memory>& a) {
  Tensor<float, 3> x(x_in.shape());
  std::memcpy(x.data(), x_in.data(), static_cast<std::size_t>(x.numel()) * sizeof(float));
  Arena ws(ops::encoder_layer_workspace_bytes(cpu_backend{}, x.size(0), x.size(1), a.dims));
  ops::encoder_layer_forward(cpu_backend{}, ws, w.weights(), x.view(), a);
  EXPECT_EQ(ws.used(), 0u) << "the layer must rewind its arena";
  EXPECT_LE(ws.peak(), ws.capacity());
  return x;
}

Tensor<float, 3> run_reference(const LayerTensors& w, const Tensor<float, 3>& x_in,
                               const EncoderLayerArgs<host_memory>& a) {
  Tensor<float, 3> x(x_in.shape());
  std::memcpy(x.data(), x_in.data(), static_cast<std::size_t>(x.numel()) * sizeof(float));
  Arena ws(ops::encoder_layer_workspace_bytes(reference_backend<float>{}, x.size(0), x.size(1), a.dims));
  ops::encoder_layer_forward(reference_backend<float>{}, ws, w.weights(), x.view(), a);
  return x;
}

/// CPU vs reference for one variant; the layer adds to x in place, so the comparison covers the
/// residual path as well as both branches.
void check_variant(const Variant& v, std::int64_t batch, std::int64_t tokens) {
  const LayerTensors w(v);
  const Tensor<float, 3> x = random_input(batch, tokens, v.dims.hidden);
  RopeTable table;
  RopeTableView<host_memory> rope{};
  if (v.rope) {
    table = rope_for(tokens, v);
    rope = {table.cos.view(), table.sin.view(), v.first_token};
  }
  const EncoderLayerArgs<host_memory> a = args_for(v, v.rope ? &rope : nullptr);
  const Tensor<float, 3> got = run_cpu(w, x, a), want = run_reference(w, x, a);
  EXPECT_TRUE(all_close(got.view(), want.view(), kF32Reduction));
}

// Widths as in the small test configs, with head_dim 5 (q scaled after the GEMM), 12 and 16.
constexpr EncoderLayerDims kPlain{20, 4, 37, MlpKind::plain};    // Dh 5
constexpr EncoderLayerDims kSwiglu{24, 2, 40, MlpKind::swiglu};  // Dh 12
constexpr EncoderLayerDims kSwiglu16{32, 2, 24, MlpKind::swiglu};  // Dh 16: Dh^-½ = 1/4, folded

TEST(EncoderLayerOp, PlainGeluMatchesReference) {
  check_variant({.dims = kPlain}, 2, 7);
}

TEST(EncoderLayerOp, PlainQuickGeluCausalNoKBiasMatchesReference) {
  check_variant({.dims = kPlain, .k_bias = false, .act = Activation::quick_gelu, .mask = AttentionMask::causal}, 3,
                11);
}

TEST(EncoderLayerOp, SwiGluSubLnRopeWithClsNoKBiasMatchesReference) {
  check_variant({.dims = kSwiglu, .subln = true, .k_bias = false, .rope = true, .first_token = 1}, 3, 10);  // 1 + 3²
}

TEST(EncoderLayerOp, SwiGluRopeOnAllTokensFoldedScaleMatchesReference) {
  check_variant({.dims = kSwiglu16, .rope = true, .first_token = 0, .fold_q_scale = true}, 2, 16);
}

TEST(EncoderLayerOp, SwiGluSubLnWithoutRopeMatchesReference) {
  check_variant({.dims = kSwiglu, .subln = true}, 1, 5);
}

TEST(EncoderLayerOp, SingleTokenMatchesReference) {
  check_variant({.dims = kPlain}, 1, 1);
}

TEST(EncoderLayerOp, RowSplitAcrossThreadsMatchesReference) {
  // 99 rows: the row regions split them between threads (one per 32 rows).
  check_variant({.dims = kSwiglu, .subln = true, .k_bias = false, .rope = true, .first_token = 1}, 1, 65);  // 1 + 8²
  check_variant({.dims = kPlain, .act = Activation::quick_gelu, .mask = AttentionMask::causal}, 3, 33);
}

TEST(EncoderLayerOp, SameBitsForAnyThreadCount) {
  // The row slabs follow from the thread count, but every GEMM sums each element in one fixed order
  // whatever its slab, and attention's tasks do not depend on it: every count matches the
  // reference and gives the same bits, run after run.
  const Variant v{.dims = kSwiglu, .subln = true, .k_bias = false, .rope = true, .first_token = 1};
  const LayerTensors w(v);
  const Tensor<float, 3> x = random_input(2, 50, v.dims.hidden);  // 100 rows, 1 CLS + 7² per sequence
  const RopeTable table = rope_for(50, v);
  const RopeTableView<host_memory> rope{table.cos.view(), table.sin.view(), 1};
  const Tensor<float, 3> want = run_reference(w, x, args_for(v, &rope));
  const int threads = num_threads();
  set_num_threads(1);
  const Tensor<float, 3> serial = run_cpu(w, x, args_for(v, &rope));
  EXPECT_TRUE(all_close(serial.view(), want.view(), kF32Reduction));
  for (int t : {2, 3}) {
    SCOPED_TRACE("threads " + std::to_string(t));
    set_num_threads(t);
    const Tensor<float, 3> first = run_cpu(w, x, args_for(v, &rope)), second = run_cpu(w, x, args_for(v, &rope));
    EXPECT_EQ(std::memcmp(first.data(), serial.data(), static_cast<std::size_t>(first.numel()) * sizeof(float)), 0);
    EXPECT_EQ(std::memcmp(first.data(), second.data(), static_cast<std::size_t>(first.numel()) * sizeof(float)), 0);
  }
  set_num_threads(threads);
}

TEST(EncoderLayerOp, EmptyBatchIsANoOp) {
  const Variant v{.dims = kPlain};
  const LayerTensors w(v);
  Tensor<float, 3> x({0, 4, v.dims.hidden});
  Arena ws(ops::encoder_layer_workspace_bytes(cpu_backend{}, 0, 4, v.dims));
  EXPECT_NO_THROW(ops::encoder_layer_forward(cpu_backend{}, ws, w.weights(), x.view(), args_for(v, nullptr)));
}

/// The message of the error `f` throws ("" when it throws none).
template <class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(EncoderLayerOp, ArgumentErrorsNameTheCulprit) {
  const Variant v{.dims = kSwiglu, .subln = true};
  const LayerTensors w(v);
  Tensor<float, 3> x = random_input(1, 5, v.dims.hidden);
  Arena ws(ops::encoder_layer_workspace_bytes(cpu_backend{}, 1, 5, v.dims));
  const auto a = args_for(v, nullptr);
  auto run = [&](const EncoderLayerWeights<float>& ww, const EncoderLayerArgs<host_memory>& aa) {
    return error_of([&] { ops::encoder_layer_forward(cpu_backend{}, ws, ww, x.view(), aa); });
  };

  EncoderLayerWeights<float> bad = w.weights();
  bad.down_w = bad.down_w.slice(1, 0, 7);
  EXPECT_NE(run(bad, a).find("MLP down weight"), std::string::npos) << run(bad, a);

  bad = w.weights();
  bad.ffn_ln_b = {};
  EXPECT_NE(run(bad, a).find("ffn_ln needs weight and bias"), std::string::npos) << run(bad, a);

  auto plain = a;
  plain.dims.mlp = MlpKind::plain;  // the [2I, D] up weight no longer fits
  EXPECT_NE(run(w.weights(), plain).find("MLP up weight"), std::string::npos) << run(w.weights(), plain);

  const RopeTable table = reference::rope2d_table(3, static_cast<int>(v.dims.head_dim()));  // 9 rows > 5 tokens
  const RopeTableView<host_memory> rope{table.cos.view(), table.sin.view(), 0};
  auto roped = a;
  roped.rope = &rope;
  EXPECT_NE(run(w.weights(), roped).find("do not fit in a sequence of 5"), std::string::npos)
      << run(w.weights(), roped);
}

}  // namespace
}  // namespace qlip
