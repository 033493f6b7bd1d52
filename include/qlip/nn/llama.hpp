/// @file llama.hpp
/// @brief The Llama causal language model (HF LlamaForCausalLM, MODEL.md §8.3) from the layer of
///        nn/llama_block.hpp: token embedding, C.layers decoder layers, final RMSNorm, the LM head
///        (its own weight, or embed_tokens when tied). Written once for every backend.
///
/// Training: forward_train over whole sequences returns the token cross-entropy of the logits
/// against targets (negative target = no loss at that position: the task masks) and fills `saved`;
/// backward accumulates every bound parameter gradient (+=). A tied head accumulates both of its
/// uses into embed_tokens' gradient.
///
/// Inference: a KvCache preallocated for B sequences of up to S positions; decode() runs new tokens
/// of every sequence at positions [length, length + T), appends their keys and values in place and
/// returns the logits of each sequence's last token (or of every new token). Decoding one token at
/// a time gives the logits a full recomputation gives (tests/llama). set_decode_weights(bf16) makes
/// decoding multiply by bf16 copies of every projection and of the LM head (the embedding rows are
/// still read in fp32: one row per token).
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "qlip/core/allocator.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/nn/llama_block.hpp"
#include "qlip/reference/rope.hpp"

namespace qlip::nn {

/// Keys and values of every layer for B sequences of up to S positions, and how many positions
/// are filled. Host memory (the CPU and reference backends).
template <LlamaConfig C>
class KvCache {
 public:
  KvCache() = default;
  KvCache(std::int64_t batch, std::int64_t positions)
      : k_({C.layers, batch, positions, C.kv_heads, C.head_dim}), v_({C.layers, batch, positions, C.kv_heads, C.head_dim}) {
    QLIP_CHECK(batch >= 1 && positions >= 1, "KvCache: batch and positions must be positive, got ", batch, " and ",
               positions);
  }
  std::int64_t batch() const { return k_.size(1); }
  std::int64_t capacity() const { return k_.size(2); }
  std::int64_t length() const { return length_; }
  /// Forgets every sequence (the storage is kept).
  void clear() { length_ = 0; }
  KvLayer<float, host_memory> layer(int i) { return {k_.view().select(0, i), v_.view().select(0, i)}; }
  /// Positions now filled (decode() advances it after a successful step).
  void advance(std::int64_t tokens) { length_ += tokens; }

 private:
  Tensor<float, 5> k_, v_;
  std::int64_t length_ = 0;
};

template <LlamaConfig C, backend B>
  requires valid_llama<C>
class LlamaModel {
 public:
  using Block = LlamaBlock<C, B>;
  using T = typename Block::T;
  using Mem = typename Block::Mem;
  template <int R>
  using View = TensorView<T, R, Mem>;
  template <int R>
  using CView = TensorView<const T, R, Mem>;
  template <int R>
  using P = Param<T, R, Mem>;
  static constexpr std::int64_t kD = C.hidden;
  static constexpr std::int64_t kVocab = C.vocab_size;
  static constexpr int kLayers = C.layers;
  /// Arena bytes reserved beyond the model's own buffers for an op's internal scratch (the CPU
  /// attention's per-thread scores: query block × keys per thread).
  static constexpr std::size_t kOpScratchBytes = std::size_t{64} << 20;

  explicit LlamaModel(const LlamaRuntime& rt, B be = {}) : be_(be), rt_(rt) {
    QLIP_CHECK(rt.max_positions >= 1, "llama: max_position_embeddings must be positive, got ", rt.max_positions);
    for (auto& b : blocks_) b = Block(be);
    embed.shape = {kVocab, kD};
    head.shape = {kVocab, kD};
    norm.shape = {kD};
    rope_ = reference::rope1d_table(rt.max_positions, C.head_dim, rt.rope_theta, rt.scaling);
  }

  /// HF names in LlamaForCausalLM's state_dict order (lm_head only when untied).
  template <class V>
  void visit_parameters(V&& v) {
    v(std::string("model.embed_tokens.weight"), embed);
    for (int i = 0; i < kLayers; ++i) blocks_[i].visit_parameters(v, "model.layers." + std::to_string(i));
    v(std::string("model.norm.weight"), norm);
    if constexpr (!C.tied) v(std::string("lm_head.weight"), head);
  }

  const LlamaRuntime& runtime() const { return rt_; }
  Block& block(int i) { return blocks_[i]; }

  // ---- training ----

  static std::int64_t layer_elements(std::int64_t batch, std::int64_t tokens) {
    return batch * tokens * kD + Block::activation_elements(batch, tokens);
  }
  /// Saved activations of forward_train: every layer's input and saved values, the last hidden
  /// state, the final norm's output and rstd, the logits.
  static std::int64_t activation_elements(std::int64_t batch, std::int64_t tokens) {
    const std::int64_t n = batch * tokens;
    return kLayers * layer_elements(batch, tokens) + 2 * n * kD + n + n * kVocab;
  }
  /// Scratch of backward: a layer's scratch, two [N, D] gradients that alternate, dlogits.
  static std::int64_t workspace_elements(std::int64_t batch, std::int64_t tokens) {
    const std::int64_t n = batch * tokens;
    return Block::workspace_elements(batch, tokens) + 2 * n * kD + n * kVocab;
  }

  /// Loss of `batch` sequences of `tokens` ids (row-major [batch·tokens]) against targets of the
  /// same layout (negative = no loss), saving what backward needs.
  CrossEntropyResult forward_train(Arena& arena, HostView<const std::int32_t, 1> ids,
                                   HostView<const std::int32_t, 1> targets, T* saved, std::int64_t saved_size,
                                   std::int64_t batch, std::int64_t tokens) {
    const std::int64_t n = check_sequence(ids, targets, batch, tokens);
    QLIP_CHECK(saved_size >= activation_elements(batch, tokens), "llama: saved buffer has ", saved_size,
               " elements, needs ", activation_elements(batch, tokens));
    const LlamaRope<Mem> rope = rope_for(0, tokens);
    const std::int64_t per = layer_elements(batch, tokens);
    View<2> x(saved, {n, kD});  // layer 0's input
    embedding(be_, CView<2>(embed.value), ids, x);
    for (int i = 0; i < kLayers; ++i) {
      T* base = saved + i * per;
      const View<2> out(i + 1 < kLayers ? saved + (i + 1) * per : saved + kLayers * per, {n, kD});
      blocks_[i].forward_train(arena, CView<2>(View<2>(base, {n, kD})), out, base + n * kD, per - n * kD, batch, tokens,
                               rt_.rms_eps, rope);
    }
    const Final f = final_views(saved, batch, tokens);
    rms_norm_train(be_, CView<2>(f.hidden), norm.value, rt_.rms_eps, f.normed, f.rstd);
    linear(be_, CView<2>(f.normed), head_weight(), CView<1>(), f.logits);
    return cross_entropy(be_, CView<2>(f.logits), targets);
  }

  /// Backward of forward_train's loss scaled by dloss: every bound parameter gradient (+=).
  void backward(Arena& arena, HostView<const std::int32_t, 1> ids, HostView<const std::int32_t, 1> targets,
                double dloss, T* saved, std::int64_t saved_size, T* work, std::int64_t work_size, std::int64_t batch,
                std::int64_t tokens) {
    const std::int64_t n = check_sequence(ids, targets, batch, tokens);
    QLIP_CHECK(saved_size >= activation_elements(batch, tokens) && work_size >= workspace_elements(batch, tokens),
               "llama: saved or work buffer too small (size them with activation_elements / workspace_elements)");
    const LlamaRope<Mem> rope = rope_for(0, tokens);
    const Final f = final_views(saved, batch, tokens);
    const std::int64_t block_work = Block::workspace_elements(batch, tokens);
    const View<2> ping(work + block_work, {n, kD}), pong(work + block_work + n * kD, {n, kD});
    const View<2> dlogits(work + block_work + 2 * n * kD, {n, kVocab});
    cross_entropy_backward(be_, CView<2>(f.logits), targets, dloss, dlogits);
    linear_backward(be_, CView<2>(f.normed), head_weight(), CView<2>(dlogits), ping, head_grad(), View<1>());
    rms_norm_backward(be_, CView<2>(f.hidden), norm.value, CView<1>(f.rstd), CView<2>(ping), pong, norm.grad);
    const std::int64_t per = layer_elements(batch, tokens);
    View<2> upstream = pong, other = ping;
    for (int i = kLayers - 1; i >= 0; --i) {
      T* base = saved + i * per;
      blocks_[i].backward(arena, CView<2>(View<2>(base, {n, kD})), CView<2>(upstream), other, base + n * kD,
                          per - n * kD, work, block_work, batch, tokens, rope);
      std::swap(upstream, other);
    }
    embedding_backward(be_, ids, CView<2>(upstream), embed.grad);
  }

  // ---- inference ----

  /// Decodes with bf16 copies of the weights rounded from the bound values now, or with the fp32
  /// weights (f32, the default; frees the copies). Host float backends only. The copies are a
  /// snapshot: call it again after loading or training changes the weights.
  void set_decode_weights(DecodeWeights which)
    requires(Block::kHostFloat)
  {
    for (auto& b : blocks_) b.set_decode_weights(which);
    head_bf16_ = {};
    if (which == DecodeWeights::bf16) {
      const CView<2> w = head_weight();
      QLIP_CHECK(w.is_contiguous(), "llama: set_decode_weights needs bound, contiguous weights");
      head_bf16_ = Tensor<bf16, 2>(w.shape());
      round_to_bf16(w.data(), head_bf16_.data(), w.numel());
    }
  }
  DecodeWeights decode_weights() const { return blocks_[0].decode_weights(); }

  /// Arena bytes decode() needs for `batch` sequences of `tokens` new tokens (kOpScratchBytes
  /// included).
  static std::size_t decode_workspace_bytes(std::int64_t batch, std::int64_t tokens) {
    const std::int64_t n = batch * tokens;
    return arena_bytes<T>(n * kD) + 2 * arena_bytes<T>(n * kD) + arena_bytes<std::int64_t>(tokens) +
           Block::decode_workspace_bytes(batch, tokens) + kOpScratchBytes;
  }

  /// Runs `tokens` new ids per sequence (ids row-major [batch·tokens]) after the cache's filled
  /// positions, appends their keys/values and writes logits: [batch, V] for each sequence's last
  /// new token, or [batch·tokens, V] for every new token. On an error nothing is appended.
  void decode(Arena& arena, HostView<const std::int32_t, 1> ids, KvCache<C>& cache, std::int64_t batch,
              std::int64_t tokens, View<2> logits) const {
    QLIP_CHECK(batch >= 1 && tokens >= 1, "llama decode: batch and tokens must be positive, got ", batch, " and ",
               tokens);
    QLIP_CHECK(ids.size(0) == batch * tokens, "llama decode: ", ids.size(0), " ids for ", batch, " sequences of ",
               tokens, " tokens");
    QLIP_CHECK(batch <= cache.batch(), "llama decode: ", batch, " sequences, the KV cache holds ", cache.batch());
    const std::int64_t start = cache.length();
    QLIP_CHECK(start + tokens <= cache.capacity() && start + tokens <= rt_.max_positions, "llama decode: ",
               start + tokens, " positions exceed the context of ", std::min(cache.capacity(), rt_.max_positions),
               " (", start, " in the cache + ", tokens, " new)");
    check_ids(ids, "llama decode");
    const bool every = logits.size(0) == batch * tokens;
    QLIP_CHECK(logits.size(1) == kVocab && (every || logits.size(0) == batch), "llama decode: logits of shape ",
               shape_string<2>(logits.shape()), ", expected [", batch, ", ", kVocab, "] or [", batch * tokens, ", ",
               kVocab, "]");
    ArenaScope scope(arena);
    const std::int64_t n = batch * tokens;
    const View<2> x = arena.template tensor<T, 2>({n, kD});
    embedding(be_, CView<2>(embed.value), ids, x);
    std::int64_t* positions = arena.template allocate<std::int64_t>(tokens);
    std::iota(positions, positions + tokens, start);
    const LlamaRope<Mem> rope{rope_.cos.view(), rope_.sin.view(), positions};
    for (int i = 0; i < kLayers; ++i)
      blocks_[i].forward_cached(arena, x, cache.layer(i), start, batch, tokens, rt_.rms_eps, rope);
    const View<2> normed = arena.template tensor<T, 2>({n, kD});
    rms_norm(be_, CView<2>(x), norm.value, rt_.rms_eps, normed);
    if (every) {
      decode_head(CView<2>(normed), logits);
    } else {
      // Row b·T + T − 1 of each sequence: a strided view, no copy.
      const View<2> last(normed.base(), {batch, kD}, {tokens * normed.stride(0), normed.stride(1)},
                         normed.offset() + (tokens - 1) * normed.stride(0));
      decode_head(CView<2>(last), logits);
    }
    cache.advance(tokens);
  }

  P<2> embed, head;
  P<1> norm;

 private:
  struct Final {
    View<2> hidden, normed, logits;
    View<1> rstd;
  };
  Final final_views(T* saved, std::int64_t batch, std::int64_t tokens) const {
    const std::int64_t n = batch * tokens;
    T* p = saved + kLayers * layer_elements(batch, tokens);
    Final f;
    f.hidden = View<2>(p, {n, kD});
    f.normed = View<2>(p + n * kD, {n, kD});
    f.rstd = View<1>(p + 2 * n * kD, {n});
    f.logits = View<2>(p + 2 * n * kD + n, {n, kVocab});
    return f;
  }

  CView<2> head_weight() const {
    if constexpr (C.tied)
      return CView<2>(embed.value);
    else
      return CView<2>(head.value);
  }
  /// logits = x·headᵀ with the bf16 copy when there is one.
  void decode_head(CView<2> x, View<2> logits) const {
    if constexpr (Block::kHostFloat) {
      if (head_bf16_.numel() > 0) {
        linear(be_, x, head_bf16_.view(), CView<1>(), logits);
        return;
      }
    }
    linear(be_, x, head_weight(), CView<1>(), logits);
  }
  View<2> head_grad() const {
    if constexpr (C.tied)
      return embed.grad;
    else
      return head.grad;
  }

  /// Positions [first, first + tokens) of the table, for training (first = 0).
  LlamaRope<Mem> rope_for(std::int64_t first, std::int64_t tokens) {
    positions_.resize(static_cast<std::size_t>(tokens));
    std::iota(positions_.begin(), positions_.end(), first);
    return {rope_.cos.view(), rope_.sin.view(), positions_.data()};
  }

  void check_ids(HostView<const std::int32_t, 1> ids, const char* op) const {
    for (std::int64_t i = 0; i < ids.size(0); ++i)
      QLIP_CHECK(ids(i) >= 0 && ids(i) < kVocab, op, ": token id ", ids(i), " at ", i,
                 " is outside the vocabulary of ", kVocab);
  }
  std::int64_t check_sequence(HostView<const std::int32_t, 1> ids, HostView<const std::int32_t, 1> targets,
                              std::int64_t batch, std::int64_t tokens) const {
    QLIP_CHECK(batch >= 1 && tokens >= 1, "llama: batch and tokens must be positive, got ", batch, " and ", tokens);
    QLIP_CHECK(tokens <= rt_.max_positions, "llama: sequences of ", tokens,
               " tokens are longer than the context of ", rt_.max_positions);
    QLIP_CHECK(ids.size(0) == batch * tokens && targets.size(0) == batch * tokens, "llama: ", ids.size(0), " ids and ",
               targets.size(0), " targets for ", batch, " sequences of ", tokens, " tokens");
    check_ids(ids, "llama");
    return batch * tokens;
  }

  B be_;
  LlamaRuntime rt_;
  std::array<Block, kLayers> blocks_;
  RopeTable rope_;
  std::vector<std::int64_t> positions_;
  Tensor<bf16, 2> head_bf16_;  // empty: the head decodes in fp32
};

}  // namespace qlip::nn
