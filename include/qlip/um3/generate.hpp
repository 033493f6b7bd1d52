/// @file generate.hpp
/// @brief What a trained UM³ Llama does at inference (docs/UM3.md): text → image (N images per
///        caption, classifier-free guidance with the conditional and unconditional rows in one
///        batch of the KV cache), image → text (captions), text continuation, and the mean
///        negative log-likelihood of a held-out text stream (perplexity).
///
/// While an image is written, only the ids of the current sub-token's group can be drawn; while
/// text is written, only text ids other than <bos> and <pad> (so <eos> ends a row). Masked logits are
/// −∞ in both guidance branches, which apply_cfg keeps −∞. Draws use the sampler's (seed, row,
/// step) keys: the same seed and rows give the same tokens, alone or in a larger batch.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include "qlip/core/allocator.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/nn/llama.hpp"
#include "qlip/sample/sampler.hpp"
#include "qlip/um3/sequences.hpp"

namespace qlip::um3 {

/// Mean negative log-likelihood (nats per token) of a stream and how many tokens it scored.
struct TextNll {
  double nll = 0.0;
  std::int64_t tokens = 0;
  double perplexity() const { return std::exp(nll); }
};

template <LlamaConfig C, backend B>
class Generator {
 public:
  using Model = nn::LlamaModel<C, B>;

  /// @param max_rows most rows one call decodes at once (guided generation uses 2 per image)
  /// @param context  most positions of one row
  Generator(const Model& model, const Um3Vocab& vocab, std::int64_t max_rows, std::int64_t context)
      : model_(model), vocab_(vocab), cache_(max_rows, context),
        arena_(Model::decode_workspace_bytes(max_rows, context)) {
    vocab_.validate();
    QLIP_CHECK(vocab_.size() == C.vocab_size, "UM3 generator: the vocabulary has ", vocab_.size(),
               " ids, the model ", C.vocab_size);
  }

  const Um3Vocab& vocab() const { return vocab_; }

  /// `count` images of `patches` codes for one caption: codes [count·patches], image i's codes at
  /// [i·patches, (i+1)·patches). With config.cfg_scale ≠ 1 each image has an unconditional twin row
  /// (the null caption); its draws are keyed by rows first_row + i.
  std::vector<std::uint32_t> images(std::span<const std::int32_t> caption, std::int64_t count, std::int64_t patches,
                                    const sample::SamplerConfig& config, std::uint64_t seed,
                                    std::uint64_t first_row = 0) {
    const bool guided = config.cfg_scale != 1.0f;
    const std::int64_t rows = guided ? 2 * count : count;
    const std::int64_t sub = vocab_.layout.image_tokens(patches);
    const std::vector<std::int32_t> cond = generation_prompt(vocab_, caption, false);
    const std::vector<std::int32_t> uncond = generation_prompt(vocab_, caption, true);
    const auto prompt_len = static_cast<std::int64_t>(cond.size());
    check_rows(rows, prompt_len + sub, "text-to-image");
    std::vector<std::int32_t> ids;
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::vector<std::int32_t>& p = r < count ? cond : uncond;
      ids.insert(ids.end(), p.begin(), p.end());
    }
    sample::Sampler sampler(config);
    Tensor<float, 2> logits({rows, C.vocab_size});
    cache_.clear();
    run(ids, rows, prompt_len, logits);
    std::vector<std::int32_t> tokens(static_cast<std::size_t>(count * sub));
    std::vector<std::int32_t> drawn(static_cast<std::size_t>(count)), next(static_cast<std::size_t>(rows));
    const int groups = vocab_.layout.groups();
    for (std::int64_t k = 0; k < sub; ++k) {
      const std::int32_t lo = vocab_.layout.group_first(static_cast<int>(k % groups));
      mask_outside(logits.view(), lo, lo + static_cast<std::int32_t>(vocab_.layout.group_values()));
      if (guided) {
        sampler.sample_guided(HostView<const float, 2>(logits.view().slice(0, 0, count)),
                              HostView<const float, 2>(logits.view().slice(0, count, rows)), seed,
                              static_cast<std::uint64_t>(k), drawn, first_row);
      } else {
        sampler.sample(HostView<const float, 2>(logits.view()), seed, static_cast<std::uint64_t>(k), drawn, first_row);
      }
      for (std::int64_t i = 0; i < count; ++i) {
        tokens[static_cast<std::size_t>(i * sub + k)] = drawn[static_cast<std::size_t>(i)];
        for (std::int64_t copy = i; copy < rows; copy += count) next[static_cast<std::size_t>(copy)] = drawn[static_cast<std::size_t>(i)];
      }
      if (k + 1 < sub) run(next, rows, 1, logits);
    }
    std::vector<std::uint32_t> codes(static_cast<std::size_t>(count * patches));
    vocab_.layout.codes_from_tokens(tokens, codes);
    return codes;
  }

  /// A caption for each of `count` images (codes [count·patches]): at most max_tokens text ids
  /// each, without the final <eos>.
  std::vector<std::vector<std::int32_t>> captions(std::span<const std::uint32_t> codes, std::int64_t count,
                                                  std::int64_t patches, const sample::SamplerConfig& config,
                                                  std::uint64_t seed, std::int64_t max_tokens) {
    QLIP_CHECK(static_cast<std::int64_t>(codes.size()) == count * patches, "UM3 captions: ", codes.size(),
               " codes for ", count, " images of ", patches);
    const std::int64_t sub = vocab_.layout.image_tokens(patches);
    std::vector<std::int32_t> image(static_cast<std::size_t>(sub)), ids;
    for (std::int64_t i = 0; i < count; ++i) {
      vocab_.layout.tokens_from_codes(codes.subspan(static_cast<std::size_t>(i * patches), static_cast<std::size_t>(patches)),
                                      image);
      const std::vector<std::int32_t> p = caption_prompt(vocab_, image);
      ids.insert(ids.end(), p.begin(), p.end());
    }
    return continue_text(ids, count, sub + 3, config, seed, max_tokens);
  }

  /// Continues `rows` prompts of `prompt_len` ids each (row-major) with text ids until <eos> or
  /// max_tokens; returns each row's new ids without the <eos>.
  std::vector<std::vector<std::int32_t>> continue_text(std::span<const std::int32_t> prompts, std::int64_t rows,
                                                       std::int64_t prompt_len, const sample::SamplerConfig& config,
                                                       std::uint64_t seed, std::int64_t max_tokens) {
    QLIP_CHECK(static_cast<std::int64_t>(prompts.size()) == rows * prompt_len, "UM3 text: ", prompts.size(),
               " prompt ids for ", rows, " rows of ", prompt_len);
    QLIP_CHECK(max_tokens >= 1, "UM3 text: max_tokens must be positive, got ", max_tokens);
    check_rows(rows, prompt_len + max_tokens, "text");
    sample::Sampler sampler(config);
    Tensor<float, 2> logits({rows, C.vocab_size});
    cache_.clear();
    run(prompts, rows, prompt_len, logits);
    std::vector<std::vector<std::int32_t>> out(static_cast<std::size_t>(rows));
    std::vector<bool> done(static_cast<std::size_t>(rows), false);
    std::vector<std::int32_t> next(static_cast<std::size_t>(rows));
    for (std::int64_t k = 0; k < max_tokens; ++k) {
      mask_outside(logits.view(), 0, vocab_.text_vocab());
      for (std::int64_t r = 0; r < rows; ++r) {
        logits(r, vocab_.bos) = -std::numeric_limits<float>::infinity();
        logits(r, vocab_.pad) = -std::numeric_limits<float>::infinity();
      }
      sampler.sample(HostView<const float, 2>(logits.view()), seed, static_cast<std::uint64_t>(k), next);
      bool all = true;
      for (std::int64_t r = 0; r < rows; ++r) {
        const auto i = static_cast<std::size_t>(r);
        if (!done[i]) {
          if (next[i] == vocab_.eos) {
            done[i] = true;
          } else {
            out[i].push_back(next[i]);
          }
        }
        all = all && done[i];
      }
      if (all || k + 1 == max_tokens) break;
      run(next, rows, 1, logits);
    }
    return out;
  }

  /// Mean NLL of predicting stream[t + 1] from stream[0..t], over windows of `window` + 1 tokens
  /// (each window starts a fresh context; the last partial window is scored too).
  TextNll text_nll(std::span<const std::int32_t> stream, std::int64_t window) {
    QLIP_CHECK(window >= 1, "UM3 perplexity: window must be positive");
    const std::int64_t rows_max = cache_.batch();
    check_rows(1, window, "perplexity");
    Tensor<float, 2> logits({rows_max * window, C.vocab_size});
    double sum = 0;
    std::int64_t scored = 0;
    const auto n = static_cast<std::int64_t>(stream.size());
    std::vector<std::int64_t> starts;
    for (std::int64_t s = 0; s + 1 < n; s += window) starts.push_back(s);
    std::vector<std::int32_t> ids;
    for (std::size_t first = 0; first < starts.size();) {
      // Full windows batch together; a shorter last window runs alone.
      const std::int64_t len = std::min(window, n - 1 - starts[first]);
      std::size_t last = first;
      ids.clear();
      while (last < starts.size() && static_cast<std::int64_t>(last - first) < rows_max &&
             std::min(window, n - 1 - starts[last]) == len) {
        ids.insert(ids.end(), stream.begin() + starts[last], stream.begin() + starts[last] + len);
        ++last;
      }
      const auto rows = static_cast<std::int64_t>(last - first);
      cache_.clear();
      const HostView<float, 2> lv = logits.view().slice(0, 0, rows * len);
      run(ids, rows, len, lv);
      for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t t = 0; t < len; ++t) {
          const std::int32_t target = stream[static_cast<std::size_t>(starts[first + static_cast<std::size_t>(r)] + t + 1)];
          sum += nll_of(lv, r * len + t, target);
          ++scored;
        }
      first = last;
    }
    return {scored > 0 ? sum / static_cast<double>(scored) : 0.0, scored};
  }

 private:
  void check_rows(std::int64_t rows, std::int64_t positions, const char* what) const {
    QLIP_CHECK(rows <= cache_.batch(), "UM3 ", what, ": ", rows, " rows, the generator was made for ", cache_.batch());
    QLIP_CHECK(positions <= cache_.capacity(), "UM3 ", what, ": ", positions, " positions exceed the context of ",
               cache_.capacity());
  }

  /// Decodes `tokens` new ids per row; logits of each row's last token ([rows, V]) or of every
  /// token ([rows·tokens, V]), as decode() chooses by the shape.
  void run(std::span<const std::int32_t> ids, std::int64_t rows, std::int64_t tokens, HostView<float, 2> logits) {
    ArenaScope scope(arena_);
    const HostView<float, 2> out = logits.size(0) == rows * tokens ? logits : logits.slice(0, 0, rows);
    model_.decode(arena_, HostView<const std::int32_t, 1>(ids.data(), {static_cast<std::int64_t>(ids.size())}), cache_,
                  rows, tokens, out);
  }

  static void mask_outside(HostView<float, 2> logits, std::int32_t lo, std::int32_t hi) {
    constexpr float kNegInf = -std::numeric_limits<float>::infinity();
    for (std::int64_t r = 0; r < logits.size(0); ++r) {
      float* row = logits.data() + r * logits.stride(0);
      std::fill(row, row + lo, kNegInf);
      std::fill(row + hi, row + logits.size(1), kNegInf);
    }
  }

  static double nll_of(const HostView<float, 2>& logits, std::int64_t row, std::int32_t target) {
    const float* z = logits.data() + row * logits.stride(0);
    double m = z[0];
    for (std::int64_t j = 1; j < logits.size(1); ++j) m = std::max(m, static_cast<double>(z[j]));
    double s = 0;
    for (std::int64_t j = 0; j < logits.size(1); ++j) s += std::exp(static_cast<double>(z[j]) - m);
    return m + std::log(s) - static_cast<double>(z[target]);
  }

  const Model& model_;
  Um3Vocab vocab_;
  nn::KvCache<C> cache_;
  Arena arena_;
};

}  // namespace qlip::um3
