/// @file test_block_grad.cpp
/// @brief The trainable transformer block: the whole block's backward (every parameter and the input)
///        against finite differences of its own forward run on the double reference backend, for the
///        plain-MLP text layout (causal) and the EVA-02 layout (SwiGLU, sub-LN, missing k bias, 2-D RoPE);
///        the CPU backend against the float reference backend; frozen parameters; buffer sizing.
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "common/compare.hpp"
#include "common/gradcheck.hpp"
#include "qlip/cpu/activation.hpp"
#include "qlip/cpu/add.hpp"
#include "qlip/cpu/attention.hpp"
#include "qlip/cpu/gemm.hpp"
#include "qlip/cpu/layer_norm.hpp"
#include "qlip/cpu/rope.hpp"
#include "qlip/nn/transformer_block.hpp"

namespace qlip {
namespace {

// Text-tower layout: plain GELU MLP, all q/k/v biases, no sub-LN.
constexpr StackConfig kPlain{8, 1, 2, 12, MlpKind::plain, false, true, true, true};
// EVA-02 layout: SwiGLU, sub-LN, no k bias; head_dim 4 allows 2-D RoPE.
constexpr StackConfig kEva{8, 1, 2, 6, MlpKind::swiglu, true, true, false, true};

/// Flat value and gradient storage for every parameter of a module, bound through visit_parameters
/// (what the trainer's parameter store does, in any element type).
template <class T>
struct FlatParams {
  std::vector<T> values, grads;
  std::vector<std::string> names;
  std::vector<std::int64_t> offsets;

  template <class Module>
  void bind(Module& m, std::uint64_t seed, bool with_grads = true) {
    std::int64_t total = 0;
    m.visit_parameters([&](const std::string& name, auto& p) {
      names.push_back(name);
      offsets.push_back(total);
      total += p.numel();
    }, "layer");
    values.assign(static_cast<std::size_t>(total), T(0));
    grads.assign(static_cast<std::size_t>(total), T(0));
    std::size_t i = 0;
    Philox rng(seed);
    m.visit_parameters([&](const std::string& name, auto& p) {
      using V = std::remove_cvref_t<decltype(p.value)>;
      const std::int64_t off = offsets[i++];
      p.value = V(values.data() + off, p.shape);
      p.grad = with_grads ? V(grads.data() + off, p.shape) : V();
      const bool is_gain = name.find("norm") != std::string::npos || name.find("_ln") != std::string::npos;
      for (std::int64_t j = 0; j < p.numel(); ++j) {
        const double r = static_cast<double>(rng.normal(static_cast<std::uint64_t>(off + j)));
        // LayerNorm gains near 1, everything else small: a realistic, well-conditioned block.
        values[static_cast<std::size_t>(off + j)] =
            static_cast<T>(is_gain && name.ends_with("weight") ? 1.0 + 0.2 * r : 0.3 * r);
      }
    }, "layer");
  }
  std::span<T> value_span(std::size_t k, std::int64_t n) { return {values.data() + offsets[k], static_cast<std::size_t>(n)}; }
};

/// The real 2-D RoPE table of a 2×2 grid (tokens 1..4; token 0 is the CLS).
struct RopeFixture {
  RopeTable table;
  RopeTableView<host_memory> view;
  explicit RopeFixture(int grid, int head_dim) : table(reference::rope2d_table(grid, head_dim)) {
    view = {table.cos.view(), table.sin.view(), 1};
  }
};

template <StackConfig S>
void check_block_gradients(std::int64_t batch, std::int64_t tokens, AttentionMask mask, bool rope) {
  using B = reference_backend<double>;
  nn::TransformerBlock<S, B> block;
  FlatParams<double> params;
  params.bind(block, 11);
  RopeFixture table(2, static_cast<int>(S.head_dim()));  // 2×2 grid + CLS = 5 tokens
  nn::BlockArgs<double, host_memory> args{1e-5f, Activation::gelu, mask, rope ? &table.view : nullptr};

  const std::int64_t n = batch * tokens;
  Tensor<double, 2> x({n, S.hidden}), y({n, S.hidden}), dy({n, S.hidden}), dx({n, S.hidden});
  test::fill_normal(x, 21);
  test::fill_normal(dy, 22);
  std::vector<double> saved(static_cast<std::size_t>(decltype(block)::activation_elements(batch, tokens)));
  std::vector<double> work(static_cast<std::size_t>(decltype(block)::workspace_elements(batch, tokens)));
  Arena arena(1 << 20);
  block.forward_train(arena, x.view(), y.view(), saved.data(), static_cast<std::int64_t>(saved.size()), batch, tokens,
                      args);
  block.backward(arena, x.view(), dy.view(), dx.view(), saved.data(), static_cast<std::int64_t>(saved.size()),
                 work.data(), static_cast<std::int64_t>(work.size()), batch, tokens, args);

  auto loss = [&] {
    block.forward_train(arena, x.view(), y.view(), saved.data(), static_cast<std::int64_t>(saved.size()), batch,
                        tokens, args);
    return test::weighted_sum(dy, y);
  };
  std::vector<test::GradInput> inputs = {{"x", test::span_of(x), test::span_of(dx)}};
  for (std::size_t k = 0; k < params.names.size(); ++k) {
    const std::int64_t end = k + 1 < params.offsets.size() ? params.offsets[k + 1]
                                                           : static_cast<std::int64_t>(params.values.size());
    const std::int64_t len = end - params.offsets[k];
    inputs.push_back({params.names[k], params.value_span(k, len),
                      std::span<const double>(params.grads.data() + params.offsets[k], static_cast<std::size_t>(len))});
  }
  EXPECT_TRUE(test::check_gradients(loss, inputs));
}

TEST(BlockGrad, PlainCausalMatchesFiniteDifferences) {
  check_block_gradients<kPlain>(2, 3, AttentionMask::causal, false);
}

TEST(BlockGrad, Eva02WithRopeMatchesFiniteDifferences) {
  check_block_gradients<kEva>(2, 5, AttentionMask::none, true);
}

/// The CPU backend and the float reference backend run the same module code on the same float data.
template <StackConfig S>
void check_cpu_against_reference(std::int64_t batch, std::int64_t tokens, AttentionMask mask, bool rope) {
  nn::TransformerBlock<S, reference_backend<float>> ref_block;
  nn::TransformerBlock<S, cpu_backend> cpu_block;
  FlatParams<float> ref_params, cpu_params;
  ref_params.bind(ref_block, 31);
  cpu_params.bind(cpu_block, 31);
  for (float& g : ref_params.grads) g = 0.5f;  // parameter gradients accumulate onto what is there
  for (float& g : cpu_params.grads) g = 0.5f;
  RopeFixture table(2, static_cast<int>(S.head_dim()));
  nn::BlockArgs<float, host_memory> args{1e-5f, Activation::quick_gelu, mask, rope ? &table.view : nullptr};

  const std::int64_t n = batch * tokens;
  Tensor<double, 2> xd({n, S.hidden}), dyd({n, S.hidden});
  test::fill_normal(xd, 41);
  test::fill_normal(dyd, 42);
  const Tensor<float, 2> x = test::to_float(xd), dy = test::to_float(dyd);
  Tensor<float, 2> y_ref({n, S.hidden}), y_cpu({n, S.hidden}), dx_ref({n, S.hidden}), dx_cpu({n, S.hidden});
  using CpuBlock = nn::TransformerBlock<S, cpu_backend>;
  std::vector<float> saved_ref(static_cast<std::size_t>(CpuBlock::activation_elements(batch, tokens)));
  std::vector<float> saved_cpu(saved_ref.size());
  std::vector<float> work_ref(static_cast<std::size_t>(CpuBlock::workspace_elements(batch, tokens)));
  std::vector<float> work_cpu(work_ref.size());
  Arena arena(8 << 20);
  const auto ns = static_cast<std::int64_t>(saved_ref.size()), nw = static_cast<std::int64_t>(work_ref.size());
  ref_block.forward_train(arena, x.view(), y_ref.view(), saved_ref.data(), ns, batch, tokens, args);
  cpu_block.forward_train(arena, x.view(), y_cpu.view(), saved_cpu.data(), ns, batch, tokens, args);
  ref_block.backward(arena, x.view(), dy.view(), dx_ref.view(), saved_ref.data(), ns, work_ref.data(), nw, batch,
                     tokens, args);
  cpu_block.backward(arena, x.view(), dy.view(), dx_cpu.view(), saved_cpu.data(), ns, work_cpu.data(), nw, batch,
                     tokens, args);
  EXPECT_TRUE(test::all_close(test::as_const_view(y_cpu), test::as_const_view(y_ref), test::kF32Reduction));
  EXPECT_TRUE(test::all_close(test::as_const_view(dx_cpu), test::as_const_view(dx_ref), test::kF32Reduction));
  const auto total = static_cast<std::int64_t>(ref_params.grads.size());
  const HostView<const float, 1> g_cpu(cpu_params.grads.data(), {total}), g_ref(ref_params.grads.data(), {total});
  EXPECT_TRUE(test::all_close(g_cpu, g_ref, test::kF32Reduction));
}

TEST(BlockGrad, CpuMatchesReferencePlain) {
  check_cpu_against_reference<kPlain>(3, 7, AttentionMask::causal, false);
}

TEST(BlockGrad, CpuMatchesReferenceEva02) {
  check_cpu_against_reference<kEva>(3, 5, AttentionMask::none, true);
}

TEST(BlockGrad, FrozenParametersAreSkippedAndInputGradientIsUnchanged) {
  using B = reference_backend<double>;
  nn::TransformerBlock<kPlain, B> trained, frozen;
  FlatParams<double> p_trained, p_frozen;
  p_trained.bind(trained, 5);
  p_frozen.bind(frozen, 5, /*with_grads=*/false);
  nn::BlockArgs<double, host_memory> args{};
  const std::int64_t batch = 2, tokens = 3, n = batch * tokens;
  Tensor<double, 2> x({n, 8}), y({n, 8}), dy({n, 8}), dx_a({n, 8}), dx_b({n, 8});
  test::fill_normal(x, 1);
  test::fill_normal(dy, 2);
  using Block = nn::TransformerBlock<kPlain, B>;
  std::vector<double> saved(static_cast<std::size_t>(Block::activation_elements(batch, tokens)));
  std::vector<double> work(static_cast<std::size_t>(Block::workspace_elements(batch, tokens)));
  Arena arena(1 << 20);
  const auto ns = static_cast<std::int64_t>(saved.size()), nw = static_cast<std::int64_t>(work.size());
  trained.forward_train(arena, x.view(), y.view(), saved.data(), ns, batch, tokens, args);
  trained.backward(arena, x.view(), dy.view(), dx_a.view(), saved.data(), ns, work.data(), nw, batch, tokens, args);
  frozen.forward_train(arena, x.view(), y.view(), saved.data(), ns, batch, tokens, args);
  frozen.backward(arena, x.view(), dy.view(), dx_b.view(), saved.data(), ns, work.data(), nw, batch, tokens, args);
  EXPECT_TRUE(test::all_close(test::as_const_view(dx_b), test::as_const_view(dx_a), test::kExact));
  for (double g : p_frozen.grads) ASSERT_EQ(g, 0.0);
  double sum = 0;
  for (double g : p_trained.grads) sum += std::fabs(g);
  EXPECT_GT(sum, 0.0);
}

TEST(BlockGrad, TooSmallBuffersAreRefusedWithTheirSize) {
  nn::TransformerBlock<kPlain, reference_backend<double>> block;
  FlatParams<double> params;
  params.bind(block, 1);
  Tensor<double, 2> x({6, 8}), y({6, 8});
  std::vector<double> saved(10);
  Arena arena(1 << 16);
  test::expect_error_naming([&] { block.forward_train(arena, x.view(), y.view(), saved.data(), 10, 2, 3, {}); },
                            "buffer too small");
  test::expect_error_naming([&] { block.forward_train(arena, x.view(), y.view(), saved.data(), 10, 3, 3, {}); },
                            "forward_train x");
}

TEST(BlockGrad, ParametersUseTheOfficialNamesInModuleOrder) {
  nn::TransformerBlock<kEva, cpu_backend> block;
  std::vector<std::string> names;
  block.visit_parameters([&](const std::string& name, auto&) { names.push_back(name); }, "vision_model.encoder.layers.0");
  const std::vector<std::string> want = {
      "vision_model.encoder.layers.0.self_attn.k_proj.weight",
      "vision_model.encoder.layers.0.self_attn.v_proj.weight",
      "vision_model.encoder.layers.0.self_attn.v_proj.bias",
      "vision_model.encoder.layers.0.self_attn.q_proj.weight",
      "vision_model.encoder.layers.0.self_attn.q_proj.bias",
      "vision_model.encoder.layers.0.self_attn.inner_attn_ln.weight",
      "vision_model.encoder.layers.0.self_attn.inner_attn_ln.bias",
      "vision_model.encoder.layers.0.self_attn.out_proj.weight",
      "vision_model.encoder.layers.0.self_attn.out_proj.bias",
      "vision_model.encoder.layers.0.layer_norm1.weight",
      "vision_model.encoder.layers.0.layer_norm1.bias",
      "vision_model.encoder.layers.0.mlp.w1.weight",
      "vision_model.encoder.layers.0.mlp.w1.bias",
      "vision_model.encoder.layers.0.mlp.w2.weight",
      "vision_model.encoder.layers.0.mlp.w2.bias",
      "vision_model.encoder.layers.0.mlp.ffn_ln.weight",
      "vision_model.encoder.layers.0.mlp.ffn_ln.bias",
      "vision_model.encoder.layers.0.mlp.w3.weight",
      "vision_model.encoder.layers.0.mlp.w3.bias",
      "vision_model.encoder.layers.0.layer_norm2.weight",
      "vision_model.encoder.layers.0.layer_norm2.bias",
  };
  EXPECT_EQ(names, want);
}

}  // namespace
}  // namespace qlip
