/// @file text_encoder.hpp
/// @brief QLIP's text tower (QLIPTextTransformer, MODEL.md §2.8): token + position embeddings, causal
///        pre-LN blocks, final LayerNorm on all tokens, first-EOT pooling and the text projection.
///
/// Pooling: the row of the first token equal to eos_token_id (argmax of the ids when
/// eos_token_id == 2, as the official code does). Because of the causal mask, whatever follows the
/// EOT (zero or EOT padding) cannot change the pooled row, so no padding mask is needed.
///
/// Accumulation contract: outputs written with `=`; the residual stream is updated in place (`+=`).
/// Ops are called unqualified on the backend the tower was built with; the only host loops read
/// the token ids (validation and the pooled positions), as the trainable tower's pool_rows does.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>

#include "qlip/core/allocator.hpp"
#include "qlip/core/backend.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/nn/encoder_layer.hpp"
#include "qlip/nn/parameters.hpp"
#include "qlip/nn/tower_config.hpp"
#include "qlip/reference/ops.hpp"

namespace qlip::nn {

/// @tparam T text config
/// @tparam B backend (host, float32)
template <TextConfig T, host_float_backend B>
  requires valid_text<T>
class TextEncoder {
 public:
  static constexpr std::int64_t kD = T.stack.hidden;
  using Stack = EncoderStack<T.stack, B>;

  explicit TextEncoder(B be = {}) : be_(be), stack_(be) {}

  /// Loads `<prefix>.embeddings.*`, `<prefix>.encoder.*`, `<prefix>.final_layer_norm` and the
  /// projection `<projection>` [proj_dim, D] (+ bias).
  void load(WeightSource& src, const std::string& prefix, const TowerRuntime& rt, int eos_token_id,
            const std::string& projection, std::int64_t proj_dim, Bias proj_bias) {
    rt_ = rt;
    eos_ = eos_token_id;
    token_embedding_ = load_tensor<2>(src, prefix + ".embeddings.token_embedding.weight", {T.vocab_size, kD});
    position_ = load_tensor<2>(src, prefix + ".embeddings.position_embedding.weight", {T.context_length, kD});
    stack_.load(src, prefix + ".encoder", rt.layer_norm_eps);
    final_ln_.load(src, prefix + ".final_layer_norm", kD, rt.layer_norm_eps);
    projection_.load(src, projection, proj_dim, kD, proj_bias);
  }

  std::int64_t parameter_count() const {
    return token_embedding_.numel() + position_.numel() + stack_.parameter_count() + final_ln_.parameter_count() +
           projection_.parameter_count();
  }
  std::int64_t projection_dim() const { return projection_.out_features(); }
  int eos_token_id() const { return eos_; }

  /// Arena bytes forward() needs beyond its outputs, for `batch` sequences of `tokens` ids.
  static std::size_t workspace_bytes(std::int64_t batch, std::int64_t tokens) {
    return 2 * arena_bytes<float>(batch * tokens * kD) + arena_bytes<float>(batch * kD) +
           arena_bytes<std::int64_t>(batch) + Stack::workspace_bytes(batch, tokens);
  }

  /// ids[B, T] (T ≤ context length) → embeds[B, P] (raw projection).
  /// Optional outputs (empty views are skipped): keep[k] = hidden state k ([B, T, D]; 0 =
  /// embeddings), final[B, T, D] = final LayerNorm of every token, pooled[B, D], eot[B].
  /// @throws qlip::Error on an id outside the vocabulary or a sequence without EOT
  InferenceContext forward(Arena& ws, HostView<const std::int32_t, 2> ids, HostView<float, 2> embeds,
                           std::span<const HostView<float, 3>> keep = {}, HostView<float, 3> final = {},
                           HostView<float, 2> pooled = {}, HostView<std::int64_t, 1> eot = {}) const {
    const std::int64_t batch = ids.size(0), tokens = ids.size(1);
    QLIP_CHECK(tokens >= 1 && tokens <= T.context_length, "text encoder: ", tokens,
               " tokens per sequence, expected 1..", T.context_length);
    check_shape(embeds, {batch, projection_.out_features()}, "text encoder: embeds");
    check_ids(ids);
    ArenaScope scope(ws);
    HostView<float, 3> x = ws.tensor<float, 3>({batch, tokens, kD});  // [B, T, D]
    // token + position embeddings, added element by element as PyTorch adds
    for (std::int64_t b = 0; b < batch; ++b) embedding(be_, token_embedding_.view(), ids.select(0, b), x.select(0, b));
    add_rows_broadcast(be_, x, position_.view().slice(0, 0, tokens));
    if (!keep.empty() && !keep[0].empty()) stack_.keep_hidden_state(x, keep[0]);
    const LayerArgs args{rt_.layer_norm_eps, rt_.act, AttentionMask::causal, nullptr};
    stack_.forward(ws, x, args, keep);
    HostView<float, 3> fin = final.empty() ? ws.tensor<float, 3>({batch, tokens, kD}) : final;  // [B, T, D]
    check_shape(fin, {batch, tokens, kD}, "text encoder: final");
    final_ln_.forward(be_, x.template reshape<2>({batch * tokens, kD}), fin.template reshape<2>({batch * tokens, kD}));
    HostView<float, 2> pool = pooled.empty() ? ws.tensor<float, 2>({batch, kD}) : pooled;  // [B, D]
    check_shape(pool, {batch, kD}, "text encoder: pooled");
    HostView<std::int64_t, 1> rows = ws.tensor<std::int64_t, 1>({batch});  // pooled row of [B·T, D]
    for (std::int64_t b = 0; b < batch; ++b) {
      const std::int64_t e = eot_position(ids.select(0, b));
      if (!eot.empty()) eot(b) = e;
      rows(b) = b * tokens + e;
    }
    gather_rows(be_, HostView<const float, 2>(fin.template reshape<2>({batch * tokens, kD})), rows, pool);
    projection_.forward(be_, pool, embeds);
    return {};
  }

  /// The pooled position of one sequence: first id == eos (argmax when eos == 2, MODEL.md §2.8).
  std::int64_t eot_position(HostView<const std::int32_t, 1> row) const {
    const std::int64_t n = row.size(0);
    if (eos_ == 2) {
      std::int64_t best = 0;
      for (std::int64_t t = 1; t < n; ++t)
        if (row(t) > row(best)) best = t;
      return best;
    }
    for (std::int64_t t = 0; t < n; ++t)
      if (row(t) == eos_) return t;
    QLIP_THROW("text encoder: a sequence has no end-of-text token (id ", eos_,
               "); tokenize with SOT/EOT (ClipTokenizer::tokenize)");
  }

 private:
  /// Every id in [0, vocab): checked here, before any op, so the message names the text encoder.
  static void check_ids(HostView<const std::int32_t, 2> ids) {
    for (std::int64_t b = 0; b < ids.size(0); ++b)
      for (std::int64_t t = 0; t < ids.size(1); ++t) {
        const std::int32_t id = ids(b, t);
        QLIP_CHECK(id >= 0 && id < T.vocab_size, "text encoder: token id ", id, " at [", b, ", ", t,
                   "] is outside the vocabulary of ", T.vocab_size);
      }
  }

  B be_;
  TowerRuntime rt_{};
  int eos_ = 49407;
  Tensor<float, 2> token_embedding_;  // [V, D]
  Tensor<float, 2> position_;         // [ctx, D]
  Stack stack_;
  LayerNorm final_ln_;
  Linear projection_;  // text_projection [P, D]
};

}  // namespace qlip::nn
