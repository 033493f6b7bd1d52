/// @file test_encoder_layer.cpp
/// @brief nn::EncoderLayer (on cpu_backend, and on reference_backend<float>) against the same block
///        composed here from the plain-loop reference ops and the official (unfused, unscaled)
///        weights, on random weights from an in-memory WeightSource, with odd sizes: every branch
///        (SwiGLU + sub-LN + no k bias + RoPE skipping a CLS token; plain MLP quick-GELU + causal
///        mask), batch > 1, tokens not a multiple of anything. What this adds to the op's own test
///        (tests/cpu/test_encoder_layer_op.cpp) is the load-time layout: q|k|v and w1|w2 fusion and
///        the q scale folded into the weights or applied after the projection.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "common/compare.hpp"
#include "qlip/cpu/encoder_layer.hpp"
#include "qlip/nn/encoder_layer.hpp"
#include "qlip/reference/activation.hpp"
#include "qlip/reference/attention.hpp"
#include "qlip/reference/gemm.hpp"
#include "qlip/reference/layer_norm.hpp"
#include "qlip/reference/rope.hpp"

namespace {

using qlip::HostView;
using qlip::Tensor;

/// Named tensors in memory; reports missing names and wrong shapes like a checkpoint does.
class MapSource final : public qlip::nn::WeightSource {
 public:
  struct Item {
    std::vector<std::int64_t> shape;
    std::vector<float> data;
  };
  bool contains(const std::string& n) const override { return items_.count(n) != 0; }
  std::vector<std::string> names() const override {
    std::vector<std::string> v;
    for (const auto& [k, _] : items_) v.push_back(k);
    return v;
  }
  std::vector<std::int64_t> shape_of(const std::string& n) const override { return get(n).shape; }
  void read(const std::string& n, std::span<const std::int64_t> shape, float* dst) override {
    const Item& it = get(n);
    QLIP_CHECK(std::equal(it.shape.begin(), it.shape.end(), shape.begin(), shape.end()), "tensor '", n,
               "' has the wrong shape");
    std::copy(it.data.begin(), it.data.end(), dst);
  }
  /// Adds a random tensor: N(mean, std²).
  const Item& add(const std::string& n, std::vector<std::int64_t> shape, float std, float mean = 0.0f) {
    std::int64_t numel = 1;
    for (auto d : shape) numel *= d;
    std::normal_distribution<float> dist(mean, std);
    Item it{shape, std::vector<float>(static_cast<std::size_t>(numel))};
    for (auto& v : it.data) v = dist(rng_);
    return items_[n] = std::move(it);
  }
  HostView<const float, 2> mat(const std::string& n) const {
    const Item& it = get(n);
    return HostView<const float, 2>(it.data.data(), {it.shape[0], it.shape[1]});
  }
  HostView<const float, 1> vec(const std::string& n) const {
    if (!contains(n)) return {};
    const Item& it = get(n);
    return HostView<const float, 1>(it.data.data(), {it.shape[0]});
  }

 private:
  const Item& get(const std::string& n) const {
    auto it = items_.find(n);
    QLIP_CHECK(it != items_.end(), "missing tensor '", n, "'");
    return it->second;
  }
  std::map<std::string, Item> items_;
  std::mt19937 rng_{1234};
};

template <qlip::StackConfig S>
void fill_layer(MapSource& src, const std::string& p) {
  const std::int64_t d = S.hidden, i = S.intermediate;
  const float ws = 1.0f / std::sqrt(static_cast<float>(d)), wi = 1.0f / std::sqrt(static_cast<float>(i));
  const char* names[3] = {"q_proj", "k_proj", "v_proj"};
  const bool bias[3] = {S.q_bias, S.k_bias, S.v_bias};
  for (int j = 0; j < 3; ++j) {
    src.add(p + ".self_attn." + names[j] + ".weight", {d, d}, ws);
    if (bias[j]) src.add(p + ".self_attn." + names[j] + ".bias", {d}, 0.1f);
  }
  src.add(p + ".self_attn.out_proj.weight", {d, d}, ws);
  src.add(p + ".self_attn.out_proj.bias", {d}, 0.1f);
  for (const char* ln : {".layer_norm1", ".layer_norm2"}) {
    src.add(p + ln + ".weight", {d}, 0.1f, 1.0f);
    src.add(p + ln + ".bias", {d}, 0.1f);
  }
  if (S.subln) {
    src.add(p + ".self_attn.inner_attn_ln.weight", {d}, 0.1f, 1.0f);
    src.add(p + ".self_attn.inner_attn_ln.bias", {d}, 0.1f);
    src.add(p + ".mlp.ffn_ln.weight", {i}, 0.1f, 1.0f);
    src.add(p + ".mlp.ffn_ln.bias", {i}, 0.1f);
  }
  if (S.mlp == qlip::MlpKind::swiglu) {
    src.add(p + ".mlp.w1.weight", {i, d}, ws);
    src.add(p + ".mlp.w1.bias", {i}, 0.1f);
    src.add(p + ".mlp.w2.weight", {i, d}, ws);
    src.add(p + ".mlp.w2.bias", {i}, 0.1f);
    src.add(p + ".mlp.w3.weight", {d, i}, wi);
    src.add(p + ".mlp.w3.bias", {d}, 0.1f);
  } else {
    src.add(p + ".mlp.fc1.weight", {i, d}, ws);
    src.add(p + ".mlp.fc1.bias", {i}, 0.1f);
    src.add(p + ".mlp.fc2.weight", {d, i}, wi);
    src.add(p + ".mlp.fc2.bias", {d}, 0.1f);
  }
}

/// The block from reference ops (double accumulation inside each op), written out step by step.
template <qlip::StackConfig S>
Tensor<float, 3> reference_layer(const MapSource& w, const std::string& p, const Tensor<float, 3>& x_in, float eps,
                                 qlip::Activation act, const qlip::RopeTable* rope, std::int64_t first_token,
                                 qlip::AttentionMask mask) {
  namespace ref = qlip::reference;
  const std::int64_t b = x_in.size(0), t = x_in.size(1), d = S.hidden, m = b * t, i = S.intermediate;
  const std::int64_t h = S.heads, dh = S.head_dim();
  Tensor<float, 3> x({b, t, d});
  std::copy_n(x_in.data(), x_in.numel(), x.data());
  auto x2 = x.view().reshape<2>({m, d});
  Tensor<float, 2> ln({m, d}), q({m, d}), k({m, d}), v({m, d}), o({m, d}), y({m, d});
  ref::layer_norm(x2, w.vec(p + ".layer_norm1.weight"), w.vec(p + ".layer_norm1.bias"), eps, ln.view());
  ref::linear(ln.view(), w.mat(p + ".self_attn.q_proj.weight"), w.vec(p + ".self_attn.q_proj.bias"), q.view());
  ref::linear(ln.view(), w.mat(p + ".self_attn.k_proj.weight"), w.vec(p + ".self_attn.k_proj.bias"), k.view());
  ref::linear(ln.view(), w.mat(p + ".self_attn.v_proj.weight"), w.vec(p + ".self_attn.v_proj.bias"), v.view());
  const float scale = static_cast<float>(std::pow(static_cast<double>(dh), -0.5));
  for (std::int64_t j = 0; j < q.numel(); ++j) q.data()[j] *= scale;
  auto q4 = q.view().reshape<4>({b, t, h, dh}), k4 = k.view().reshape<4>({b, t, h, dh});
  if (rope) {
    ref::apply_rope_interleaved(q4, rope->cos.view(), rope->sin.view(), first_token);
    ref::apply_rope_interleaved(k4, rope->cos.view(), rope->sin.view(), first_token);
  }
  ref::attention(q4, k4, v.view().reshape<4>({b, t, h, dh}), o.view().reshape<4>({b, t, h, dh}), 1.0f, mask);
  if (S.subln)
    ref::layer_norm(o.view(), w.vec(p + ".self_attn.inner_attn_ln.weight"), w.vec(p + ".self_attn.inner_attn_ln.bias"),
                    eps, o.view());
  ref::linear(o.view(), w.mat(p + ".self_attn.out_proj.weight"), w.vec(p + ".self_attn.out_proj.bias"), y.view());
  for (std::int64_t j = 0; j < m * d; ++j) x2.data()[j] += y.data()[j];
  ref::layer_norm(x2, w.vec(p + ".layer_norm2.weight"), w.vec(p + ".layer_norm2.bias"), eps, ln.view());
  Tensor<float, 2> f({m, i}), g({m, i});
  if (S.mlp == qlip::MlpKind::swiglu) {
    ref::linear(ln.view(), w.mat(p + ".mlp.w1.weight"), w.vec(p + ".mlp.w1.bias"), f.view());
    ref::linear(ln.view(), w.mat(p + ".mlp.w2.weight"), w.vec(p + ".mlp.w2.bias"), g.view());
    ref::swiglu(f.view(), g.view(), f.view());
  } else {
    ref::linear(ln.view(), w.mat(p + ".mlp.fc1.weight"), w.vec(p + ".mlp.fc1.bias"), f.view());
    if (act == qlip::Activation::quick_gelu) ref::quick_gelu(f.view(), f.view());
    else ref::gelu(f.view(), f.view());
  }
  if (S.subln) ref::layer_norm(f.view(), w.vec(p + ".mlp.ffn_ln.weight"), w.vec(p + ".mlp.ffn_ln.bias"), eps, f.view());
  const std::string fc2 = S.mlp == qlip::MlpKind::swiglu ? ".mlp.w3" : ".mlp.fc2";
  ref::linear(f.view(), w.mat(p + fc2 + ".weight"), w.vec(p + fc2 + ".bias"), y.view());
  for (std::int64_t j = 0; j < m * d; ++j) x2.data()[j] += y.data()[j];
  return x;
}

template <qlip::StackConfig S, class B = qlip::cpu_backend>
void check_layer(std::int64_t batch, std::int64_t tokens, qlip::Activation act, bool use_rope, std::int64_t first_token,
                 qlip::AttentionMask mask) {
  MapSource src;
  fill_layer<S>(src, "l");
  qlip::nn::EncoderLayer<S, B> layer;
  const float eps = 1e-6f;
  layer.load(src, "l", eps);
  Tensor<float, 3> x({batch, tokens, S.hidden});
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (std::int64_t j = 0; j < x.numel(); ++j) x.data()[j] = nd(rng);

  qlip::RopeTable rope;
  const std::int64_t patches = tokens - first_token;
  int grid = 0;
  if (use_rope) {
    grid = static_cast<int>(std::lround(std::sqrt(static_cast<double>(patches))));
    ASSERT_EQ(grid * grid, patches) << "test setup: rope needs a square grid";
    rope = qlip::reference::rope2d_table(grid, S.head_dim());
  }
  const auto expected = reference_layer<S>(src, "l", x, eps, act, use_rope ? &rope : nullptr, first_token, mask);

  const qlip::RopeTableView<qlip::host_memory> spec{rope.cos.view(), rope.sin.view(), first_token};
  qlip::nn::LayerArgs args{eps, act, mask, use_rope ? &spec : nullptr};
  qlip::Arena ws(qlip::nn::EncoderLayer<S, B>::workspace_bytes(batch, tokens));
  layer.forward(ws, x.view(), args);
  EXPECT_EQ(ws.used(), 0u) << "forward must rewind its arena";
  EXPECT_LE(ws.peak(), ws.capacity());
  EXPECT_TRUE(qlip::test::all_close(HostView<const float, 3>(x.view()), expected.view(), qlip::test::kF32Reduction));
  // Parameter count: everything in the source.
  std::int64_t n = 0;
  for (const auto& name : src.names()) {
    std::int64_t e = 1;
    for (auto dd : src.shape_of(name)) e *= dd;
    n += e;
  }
  EXPECT_EQ(layer.parameter_count(), n);
}

constexpr qlip::StackConfig kEvaLike{24, 1, 2, 40, qlip::MlpKind::swiglu, true, true, false, true};  // Dh 12
constexpr qlip::StackConfig kClipLike{20, 1, 4, 37, qlip::MlpKind::plain, false, true, true, true};  // Dh 5
// Dh 16: Dh^-½ = 1/4 is a power of two, so load() folds it into the q rows.
constexpr qlip::StackConfig kFoldedScale{32, 1, 2, 24, qlip::MlpKind::swiglu, true, true, false, true};

TEST(EncoderLayer, SwiGluSubLnRopeWithClsMatchesReference) {
  check_layer<kEvaLike>(3, 10, qlip::Activation::gelu, true, 1, qlip::AttentionMask::none);  // 1 CLS + 3x3 grid
}

TEST(EncoderLayer, SwiGluRopeOnAllTokensMatchesReference) {
  check_layer<kEvaLike>(2, 16, qlip::Activation::gelu, true, 0, qlip::AttentionMask::none);
}

TEST(EncoderLayer, QueryScaleFoldedIntoWeightsMatchesReference) {
  check_layer<kFoldedScale>(2, 17, qlip::Activation::gelu, true, 1, qlip::AttentionMask::none);  // 1 CLS + 4x4
}

TEST(EncoderLayer, PlainQuickGeluCausalMatchesReference) {
  check_layer<kClipLike>(3, 11, qlip::Activation::quick_gelu, false, 0, qlip::AttentionMask::causal);
}

TEST(EncoderLayer, PlainGeluSingleTokenMatchesReference) {
  check_layer<kClipLike>(1, 1, qlip::Activation::gelu, false, 0, qlip::AttentionMask::none);
}

TEST(EncoderLayer, OnReferenceBackendMatchesReference) {
  check_layer<kEvaLike, qlip::reference_backend<float>>(3, 10, qlip::Activation::gelu, true, 1,
                                                        qlip::AttentionMask::none);
  check_layer<kClipLike, qlip::reference_backend<float>>(2, 6, qlip::Activation::quick_gelu, false, 0,
                                                         qlip::AttentionMask::causal);
}

TEST(EncoderLayer, MissingWeightIsReported) {
  MapSource src;
  fill_layer<kEvaLike>(src, "l");
  MapSource partial;
  partial.add("l.self_attn.q_proj.weight", {24, 24}, 1.0f);
  qlip::nn::EncoderLayer<kEvaLike, qlip::cpu_backend> layer;
  try {
    layer.load(partial, "l", 1e-6f);
    FAIL() << "expected an error";
  } catch (const qlip::Error& e) {
    EXPECT_NE(std::string(e.what()).find("l.self_attn.q_proj.bias"), std::string::npos) << e.what();
  }
}

}  // namespace
