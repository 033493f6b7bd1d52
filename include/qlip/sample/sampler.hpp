/// @file sampler.hpp
/// @brief The token sampler of the autoregressive (Llama/UM3) model: classifier-free guidance,
///        temperature, top-k, top-p, and a draw that depends only on (seed, row, step).
///
/// The distribution a SamplerConfig defines, over the V logits of one row (`sampling_probabilities`
/// computes it; the draw samples from exactly this):
///   1. z_i = logit_i / temperature, in double.                 (HF TemperatureLogitsWarper;
///      temperature 0 means greedy: all mass on the argmax,       LlamaGen `logits / temperature`)
///      ties to the lowest token id.
///   2. top-k (k > 0): keep the k largest z. Ties at the k-th     (HF TopKLogitsWarper, LlamaGen
///      value go to the lower token id, so exactly min(k, number   top_k_top_p_filtering; their
///      of finite logits) survive.                                  torch.topk ties are unspecified)
///   3. top-p (p < 1): sort the survivors by probability           (HF TopPLogitsWarper, LlamaGen
///      descending (ties: lower id first) and keep token i iff      top_k_top_p_filtering: the same
///      the cumulative probability of the tokens before it is      set up to ties and to the `<`
///      < p, so the most probable token always stays.              versus `<=` at the boundary)
///   4. p_i = exp(z_i − z_max) / Σ_kept exp(z_j − z_max) over the kept tokens, in double; every other
///      token, and every −inf logit, has probability 0.
/// NaN or +inf logits, or a row that is all −inf, are errors: there is no distribution to draw from.
///
/// The draw is an inverse CDF: u ∈ [0, 1) with 53 random bits from Philox4x32-10 keyed by the seed at
/// counter (offset = step, stream = row), then the first kept token, in a fixed order, whose running
/// weight sum exceeds u · Σ weights. Counter-based, so the token of (seed, row, step) is the same
/// whatever the batch size, the order rows are visited in, or the thread that draws it.
///
/// Memory: a Sampler owns its scratch (indices, weights, a guided-logits row) and reuses it, so after
/// the first call for a vocabulary size no draw allocates. A Sampler is not thread-safe; use one per
/// thread (the tokens do not depend on which one draws them).
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include "qlip/core/error.hpp"
#include "qlip/core/philox.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip::sample {

/// How logits become a token. The defaults are plain sampling from softmax(logits) without guidance.
struct SamplerConfig {
  float temperature = 1.0f;  ///< > 0 divides the logits; 0 = greedy (argmax, ties to the lowest id)
  int top_k = 0;             ///< keep the k most probable tokens; 0 = off
  float top_p = 1.0f;        ///< nucleus mass in (0, 1]; 1 = off
  float cfg_scale = 1.0f;    ///< guidance scale s of the guided draws (1 = the conditional logits)
};

/// Throws qlip::Error naming the first invalid field and its value. Every entry point that takes a
/// config calls it, so a bad config fails before any logit is read.
inline void validate(const SamplerConfig& c) {
  QLIP_CHECK(std::isfinite(c.temperature) && c.temperature >= 0.0f, "SamplerConfig.temperature = ", c.temperature,
             ": must be finite and >= 0 (0 = greedy)");
  QLIP_CHECK(c.top_k >= 0, "SamplerConfig.top_k = ", c.top_k, ": must be >= 0 (0 = off)");
  QLIP_CHECK(c.top_p > 0.0f && c.top_p <= 1.0f, "SamplerConfig.top_p = ", c.top_p, ": must be in (0, 1] (1 = off)");
  QLIP_CHECK(std::isfinite(c.cfg_scale), "SamplerConfig.cfg_scale = ", c.cfg_scale, ": must be finite");
}

/// Classifier-free guidance, out = u + s·(c − u) (Ho & Salimans 2022; LlamaGen autoregressive/models/
/// generate.py: `uncond_logits + (cond_logits - uncond_logits) * cfg_scale`), in float like the
/// PyTorch original. A token that is −inf in either branch stays −inf: that is how a vocabulary mask
/// shared by both branches survives guidance, where the formula itself would give NaN (−inf + inf).
/// `out` may alias `cond` or `uncond` (the operation is elementwise).
inline void apply_cfg(std::span<const float> cond, std::span<const float> uncond, float scale, std::span<float> out) {
  QLIP_CHECK(cond.size() == uncond.size() && cond.size() == out.size(), "apply_cfg: cond has ", cond.size(),
             " logits, uncond ", uncond.size(), ", out ", out.size(), "; all three must match");
  QLIP_CHECK(std::isfinite(scale), "apply_cfg: scale = ", scale, ": must be finite");
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  for (std::size_t i = 0; i < out.size(); ++i) {
    const float c = cond[i], u = uncond[i];
    out[i] = (c == kNegInf || u == kNegInf) ? kNegInf : u + scale * (c - u);
  }
}

namespace detail {

/// What one pass over a row finds: the argmax (lowest id among equal maxima, like torch.argmax) and
/// how many logits are finite (the rest are −inf and have probability 0).
struct RowScan {
  std::int32_t argmax;
  std::int64_t finite;
};

/// Rejects empty rows, NaN / +inf logits (naming the first offending token) and all −inf rows.
/// The hot loop only accumulates (no branch that can throw), so it stays cheap at V = 160k; the
/// culprit is looked for only once a row is known to be bad.
inline RowScan scan_row(std::span<const float> logits) {
  QLIP_CHECK(!logits.empty(), "sampler: empty logits row (vocabulary size 0)");
  QLIP_CHECK(logits.size() <= static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()),
             "sampler: vocabulary of ", logits.size(), " tokens does not fit int32 token ids");
  constexpr float kInf = std::numeric_limits<float>::infinity();
  float best_v = -kInf;
  std::int64_t finite = 0;
  bool bad = false;
  for (const float v : logits) {
    bad |= std::isnan(v) || v == kInf;
    finite += v != -kInf;
    best_v = v > best_v ? v : best_v;
  }
  if (bad)
    for (std::size_t i = 0; i < logits.size(); ++i)
      QLIP_CHECK(!std::isnan(logits[i]) && logits[i] != kInf, "sampler: logit of token ", i, " is ", logits[i],
                 " (logits must be finite or -inf)");
  QLIP_CHECK(finite > 0, "sampler: all ", logits.size(), " logits are -inf: nothing to sample");
  std::size_t best = 0;
  while (logits[best] != best_v) ++best;  // the first maximum
  return {static_cast<std::int32_t>(best), finite};
}

/// Sort key of a finite token: ascending keys = logit descending, then id ascending (the tie rule of
/// top-k and top-p). The float is mapped to an order-preserving unsigned integer, so nth_element and
/// sort compare one integer instead of chasing two indices into the logits. −0 and +0 are one value
/// (they tie, so the lower id must win).
inline std::uint64_t rank_key(float v, std::int32_t id) {
  const std::uint32_t bits = v == 0.0f ? 0u : std::bit_cast<std::uint32_t>(v);
  const std::uint32_t ordered = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);  // ascending in v
  return (static_cast<std::uint64_t>(~ordered) << 32) | static_cast<std::uint32_t>(id);
}

inline std::int32_t key_id(std::uint64_t key) {
  return static_cast<std::int32_t>(key & 0xFFFFFFFFu);
}

/// 53 uniform bits → double in [0, 1). 24 bits (Philox::uniform) would give tokens of probability
/// below 2^-24 ≈ 6e-8 the wrong mass, and a 160k vocabulary has many such tokens.
inline double uniform53(const Philox::Block& b) {
  const std::uint64_t bits = ((static_cast<std::uint64_t>(b[0]) << 32) | b[1]) >> 11;
  return static_cast<double>(bits) * 0x1.0p-53;
}

}  // namespace detail

/// The uniform in [0, 1) behind the token of (seed, row, step): Philox key = seed, counter offset =
/// step, stream = row. Public so that another backend (a CUDA sampling kernel) can draw the same.
inline double sample_uniform(std::uint64_t seed, std::uint64_t row, std::uint64_t step) {
  return detail::uniform53(Philox(seed).draw(step, row));
}

/// Argmax with ties to the lowest token id (torch.argmax returns the first maximum too). Same input
/// checks as the sampler: NaN / +inf / all −inf logits throw.
inline std::int32_t greedy(std::span<const float> logits) {
  return detail::scan_row(logits).argmax;
}

/// Draws tokens from the distribution of a SamplerConfig (see the file comment), one per logits row.
class Sampler {
 public:
  explicit Sampler(const SamplerConfig& config = {}) : config_(config) { validate(config_); }

  const SamplerConfig& config() const { return config_; }

  /// The probabilities the draw uses for this row (`probs` has one entry per logit; entries outside
  /// the kept set are 0). The definition the statistical tests check the draws against.
  void probabilities(std::span<const float> logits, std::span<double> probs) {
    QLIP_CHECK(probs.size() == logits.size(), "Sampler::probabilities: probs has ", probs.size(), " entries for ",
               logits.size(), " logits");
    select(logits);
    std::fill(probs.begin(), probs.end(), 0.0);
    for (std::size_t j = 0; j < n_kept_; ++j) probs[static_cast<std::size_t>(kept_[j])] = weight_[j] / total_;
  }

  /// The token of one row at one step. `row` is the row's global index in the batch (it selects the
  /// Philox stream), `step` the decoding position (the counter offset).
  std::int32_t sample(std::span<const float> logits, std::uint64_t seed, std::uint64_t row, std::uint64_t step) {
    select(logits);
    if (n_kept_ == 1) return kept_[0];  // greedy, top-k = 1, or a small top-p: no draw needed
    const double target = sample_uniform(seed, row, step) * total_;
    // Running sum in the order select() summed total_, so the last partial sum is total_ exactly.
    // A token of weight 0 (exp underflow) never passes `target < acc`: acc did not grow at it.
    double acc = 0.0;
    for (std::size_t j = 0; j < n_kept_; ++j) {
      acc += weight_[j];
      if (target < acc) return kept_[j];
    }
    // u·total rounded up to total (u within 2^-53 of 1): the last token with weight > 0.
    std::size_t j = n_kept_ - 1;
    while (j > 0 && weight_[j] == 0.0) --j;
    return kept_[j];
  }

  /// One token per row of a [rows, vocab] buffer; row r draws as global row `first_row + r`, so a
  /// batch split into slices (or visited in any order) gives the same tokens as the whole.
  void sample(HostView<const float, 2> logits, std::uint64_t seed, std::uint64_t step, std::span<std::int32_t> out,
              std::uint64_t first_row = 0) {
    check_batch(logits, out, "logits");
    for (std::int64_t r = 0; r < logits.size(0); ++r)
      out[static_cast<std::size_t>(r)] =
          sample(row_span(logits, r), seed, first_row + static_cast<std::uint64_t>(r), step);
  }

  /// Guided draw: row r samples apply_cfg(cond[r], uncond[r], config().cfg_scale). LlamaGen runs the
  /// conditional and unconditional prompts as one batch [2B, V] (cond first); pass its two halves.
  void sample_guided(HostView<const float, 2> cond, HostView<const float, 2> uncond, std::uint64_t seed,
                     std::uint64_t step, std::span<std::int32_t> out, std::uint64_t first_row = 0) {
    QLIP_CHECK(cond.shape() == uncond.shape(), "Sampler::sample_guided: cond has shape ", shape_string<2>(cond.shape()),
               ", uncond ", shape_string<2>(uncond.shape()), "; they must match");
    check_batch(cond, out, "cond");
    check_batch(uncond, out, "uncond");
    guided_.resize(static_cast<std::size_t>(cond.size(1)));
    for (std::int64_t r = 0; r < cond.size(0); ++r) {
      apply_cfg(row_span(cond, r), row_span(uncond, r), config_.cfg_scale, guided_);
      out[static_cast<std::size_t>(r)] = sample(guided_, seed, first_row + static_cast<std::uint64_t>(r), step);
    }
  }

 private:
  static std::span<const float> row_span(const HostView<const float, 2>& v, std::int64_t r) {
    return {v.data() + r * v.stride(0), static_cast<std::size_t>(v.size(1))};
  }

  static void check_batch(const HostView<const float, 2>& v, std::span<std::int32_t> out, const char* what) {
    QLIP_CHECK(v.size(1) == 1 || v.stride(1) == 1, "Sampler: ", what,
               " must be contiguous along the vocabulary (stride ", v.stride(1), ")");
    QLIP_CHECK(static_cast<std::int64_t>(out.size()) == v.size(0), "Sampler: ", what, " has ", v.size(0),
               " rows but out has ", out.size(), " entries");
  }

  /// Fills kept_[0, n_kept_) (token ids, in the draw's fixed order: id order without top-k/top-p,
  /// else most probable first) and weight_ (exp(z − z_max) of each), and sets total_ = their sum in
  /// that order. Cost for V logits: O(V) plain (V exps); with top-k one pass of V compares plus
  /// O(k log k · log(V/k)) heap work on a typical row, then k exps; with top-p alone V exps for the
  /// softmax denominator and a sorted prefix grown by nth_element until it holds the nucleus
  /// (O(V log V) only when the nucleus is most of the vocabulary).
  /// The buffers only grow, so a vocabulary size seen before costs no allocation.
  void select(std::span<const float> logits) {
    const detail::RowScan scan = detail::scan_row(logits);
    const std::size_t V = logits.size();
    if (kept_.size() < V) {
      kept_.resize(V);
      weight_.resize(V);
    }
    n_kept_ = 0;
    total_ = 0.0;
    const auto keep = [&](std::int32_t id, double w) {
      kept_[n_kept_] = id;
      weight_[n_kept_++] = w;
      total_ += w;  // summed in the draw's order, so the inverse CDF's running sum ends at total_
    };
    if (config_.temperature == 0.0f) return keep(scan.argmax, 1.0);
    constexpr float kNegInf = -std::numeric_limits<float>::infinity();
    const double temperature = config_.temperature;
    const double z_max = static_cast<double>(logits[static_cast<std::size_t>(scan.argmax)]) / temperature;
    // z = logit / T in double; z − z_max ≤ 0, so no exp overflows (the stable softmax).
    const auto weight_of = [&](std::int32_t id) {
      return std::exp(static_cast<double>(logits[static_cast<std::size_t>(id)]) / temperature - z_max);
    };
    const bool top_k = config_.top_k > 0 && config_.top_k < scan.finite;
    const bool top_p = config_.top_p < 1.0f;
    if (!top_k && !top_p) {  // every finite token, in id order
      for (std::size_t i = 0; i < V; ++i)
        if (logits[i] != kNegInf) keep(static_cast<std::int32_t>(i), weight_of(static_cast<std::int32_t>(i)));
      return;
    }
    if (keys_.size() < V) keys_.resize(V);
    const auto key_at = [&](std::size_t j) { return keys_.begin() + static_cast<std::ptrdiff_t>(j); };
    std::size_t n_keys = 0, sorted = 0;  // keys_[0, sorted) holds the most probable tokens, in order
    if (top_k) {
      // One pass with a max-heap of the k best keys seen so far (its front is the worst of them).
      // Ids arrive in ascending order, so a token that ties the worst loses the tie: only a strictly
      // larger logit enters, about k·ln(V/k) times on a typical row, and the pass costs about one
      // float compare per token.
      const auto k = static_cast<std::size_t>(config_.top_k);
      std::size_t i = 0;
      for (; n_keys < k; ++i)  // k < number of finite logits, so this fills the heap
        if (logits[i] != kNegInf) keys_[n_keys++] = detail::rank_key(logits[i], static_cast<std::int32_t>(i));
      std::make_heap(key_at(0), key_at(k));
      float worst = logits[static_cast<std::size_t>(detail::key_id(keys_[0]))];
      for (; i < V; ++i) {
        if (!(logits[i] > worst)) continue;  // also skips −inf
        std::pop_heap(key_at(0), key_at(k));
        keys_[k - 1] = detail::rank_key(logits[i], static_cast<std::int32_t>(i));
        std::push_heap(key_at(0), key_at(k));
        worst = logits[static_cast<std::size_t>(detail::key_id(keys_[0]))];
      }
      std::sort_heap(key_at(0), key_at(k));  // ascending keys: most probable first
      sorted = n_keys;
    } else {
      for (std::size_t i = 0; i < V; ++i)
        if (logits[i] != kNegInf) keys_[n_keys++] = detail::rank_key(logits[i], static_cast<std::int32_t>(i));
    }
    // Top-p alone: extends the sorted prefix to `want` tokens (nth_element on the rest, then a sort).
    const auto grow = [&](std::size_t want) {
      want = std::min(want, n_keys);
      if (want < n_keys) std::nth_element(key_at(sorted), key_at(want), key_at(n_keys));
      std::sort(key_at(sorted), key_at(want));
      sorted = want;
    };
    if (!top_p) {
      for (std::size_t j = 0; j < n_keys; ++j) keep(detail::key_id(keys_[j]), weight_of(detail::key_id(keys_[j])));
      return;
    }
    double norm = 0.0;  // softmax denominator before the nucleus: Σ exp(z − z_max) over the survivors
    for (std::size_t j = 0; j < n_keys; ++j) norm += weight_of(detail::key_id(keys_[j]));
    // Nucleus: keep token j while the probability mass before it is < top_p. The order is sorted, so
    // the first token that fails ends it (the running mass only grows); the argmax always stays.
    const double p = config_.top_p;
    double mass_before = 0.0;
    for (std::size_t j = 0; j < n_keys && mass_before < p; ++j) {
      if (j == sorted) grow(std::max<std::size_t>(1024, 4 * sorted));
      const std::int32_t id = detail::key_id(keys_[j]);
      const double w = weight_of(id);
      keep(id, w);  // total_ renormalises over the nucleus
      mass_before += w / norm;
    }
  }

  SamplerConfig config_;
  std::vector<std::uint64_t> keys_;  // [≥ V] rank_key of the finite tokens (top-k / top-p only)
  std::vector<std::int32_t> kept_;   // [≥ V] kept token ids in [0, n_kept_), in the draw's order
  std::vector<double> weight_;       // [≥ V] exp(z − z_max) of kept_[j]
  std::size_t n_kept_ = 0;
  std::vector<float> guided_;  // [V] one row of guided logits
  double total_ = 0.0;         // Σ weight_
};

/// The distribution `config` defines over one row of logits (file comment, steps 1–4). Allocates its
/// scratch; a loop should hold a Sampler and call Sampler::probabilities instead.
inline void sampling_probabilities(std::span<const float> logits, const SamplerConfig& config,
                                   std::span<double> probs) {
  Sampler(config).probabilities(logits, probs);
}

}  // namespace qlip::sample
