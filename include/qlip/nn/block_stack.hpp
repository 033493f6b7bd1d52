/// @file block_stack.hpp
/// @brief A stack of trainable transformer blocks (`<prefix>.layers.{i}`): forward saves every
///        layer's input and each block's activations; backward runs the blocks in reverse.
///
/// Contract as nn/transformer_block.hpp: dx (=), parameter gradients (+=). The saved buffer holds,
/// per layer, that layer's input [N, D] followed by the block's own saved activations.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "qlip/nn/transformer_block.hpp"

namespace qlip::nn {

/// S.layers blocks of one structural config.
template <StackConfig S, backend B>
  requires valid_stack<S>
class BlockStack {
 public:
  using Block = TransformerBlock<S, B>;
  using T = typename Block::T;
  using Mem = typename Block::Mem;
  template <int R>
  using View = TensorView<T, R, Mem>;
  template <int R>
  using CView = TensorView<const T, R, Mem>;
  static constexpr std::int64_t kD = S.hidden;
  static constexpr int kLayers = S.layers;

  explicit BlockStack(B be = {}) : be_(be) {
    for (auto& b : blocks_) b = Block(be);
  }

  /// Every block's parameters as `<prefix>.layers.{i}.*`.
  template <class V>
  void visit_parameters(V&& v, const std::string& prefix) {
    for (int i = 0; i < kLayers; ++i) blocks_[i].visit_parameters(v, join_name(prefix, "layers") + "." + std::to_string(i));
  }

  static std::int64_t layer_elements(std::int64_t batch, std::int64_t tokens) {
    return batch * tokens * kD + Block::activation_elements(batch, tokens);
  }
  static std::int64_t activation_elements(std::int64_t batch, std::int64_t tokens) {
    return kLayers * layer_elements(batch, tokens);
  }
  /// Scratch for backward: a block's scratch plus two [N, D] gradient buffers that alternate.
  static std::int64_t workspace_elements(std::int64_t batch, std::int64_t tokens) {
    return Block::workspace_elements(batch, tokens) + 2 * batch * tokens * kD;
  }

  /// y = blocks(x); x, y [batch·tokens, D] (y must not overlap x).
  void forward_train(Arena& arena, CView<2> x, View<2> y, T* saved, std::int64_t saved_size, std::int64_t batch,
                     std::int64_t tokens, const BlockArgs<T, Mem>& args) const {
    QLIP_CHECK(saved_size >= activation_elements(batch, tokens), "block stack: saved buffer has ", saved_size,
               " elements, needs ", activation_elements(batch, tokens));
    const std::int64_t n = batch * tokens, per = layer_elements(batch, tokens);
    for (int i = 0; i < kLayers; ++i) {
      T* base = saved + i * per;
      const View<2> input(base, {n, kD});
      if (i == 0)
        copy(be_, x, input);
      else
        copy(be_, CView<2>(y), input);
      blocks_[i].forward_train(arena, CView<2>(input), y, base + n * kD, per - n * kD, batch, tokens, args);
    }
  }

  /// dx = ∂/∂x of Σ dy ⊙ y (=); every block's parameter gradients (+=).
  void backward(Arena& arena, CView<2> dy, View<2> dx, T* saved, std::int64_t saved_size, T* work,
                std::int64_t work_size, std::int64_t batch, std::int64_t tokens, const BlockArgs<T, Mem>& args) {
    QLIP_CHECK(saved_size >= activation_elements(batch, tokens) && work_size >= workspace_elements(batch, tokens),
               "block stack: saved or work buffer too small (size them with activation_elements / workspace_elements)");
    const std::int64_t n = batch * tokens, per = layer_elements(batch, tokens);
    const std::int64_t block_work = Block::workspace_elements(batch, tokens);
    View<2> ping(work + block_work, {n, kD}), pong(work + block_work + n * kD, {n, kD});
    CView<2> upstream = dy;
    for (int i = kLayers - 1; i >= 0; --i) {
      T* base = saved + i * per;
      const CView<2> input(base, {n, kD});
      const View<2> out = i == 0 ? dx : ((kLayers - 1 - i) % 2 == 0 ? ping : pong);
      blocks_[i].backward(arena, input, upstream, out, base + n * kD, per - n * kD, work, block_work, batch, tokens,
                          args);
      upstream = out;
    }
  }

  Block& block(int i) { return blocks_[i]; }

 private:
  B be_;
  std::array<Block, kLayers> blocks_;
};

}  // namespace qlip::nn
