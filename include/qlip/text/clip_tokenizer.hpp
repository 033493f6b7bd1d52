/// @file clip_tokenizer.hpp
/// @brief qlip::text::ClipTokenizer: the byte-level BPE tokenizer of CLIP's text tower, matching
///        open_clip's SimpleTokenizer id for id (MODEL.md §6).
///
/// Pipeline of encode(): UTF-8 → UTF-32 (invalid bytes → U+FFFD) → open_clip's "lower" cleanup
/// (detail/cleanup.hpp: ftfy.fix_text without mojibake repair, html.unescape twice, whitespace
/// collapse, str.lower()) → open_clip's split pattern (detail/pretokenize.hpp) → each piece's UTF-8
/// bytes through the GPT-2 byte map with '</w>' on the last symbol → lowest-rank-first merges →
/// ids (open_clip's merge order, in O(n log n) per word instead of its O(n^2); see bpe_model.hpp).
/// tokenize() wraps that in [SOT] ... [EOT], cuts to the context length keeping EOT last, and
/// pads with pad_id() (0 by default, like open_clip; HF pads with EOT 49407 — the text tower gives
/// the same embedding either way because of the causal mask and first-EOT pooling).
///
/// Thread safety: all const members may be called concurrently. The only mutable state is the
/// piece → ids cache, guarded by a mutex and shared by copies of the tokenizer.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "qlip/core/allocator.hpp"
#include "qlip/core/error.hpp"
#include "qlip/text/detail/bpe_model.hpp"
#include "qlip/text/detail/cleanup.hpp"
#include "qlip/text/detail/pretokenize.hpp"

namespace qlip::text {

/// open_clip's text cleanup (`_clean_lower`) of UTF-8 text, returned as UTF-8. What encode()
/// tokenizes; exposed for tests and for logging what the model really saw.
inline std::string clean_text(std::string_view text) {
  return detail::encode_utf8(detail::clean_lower(detail::decode_utf8(text)));
}

class ClipTokenizer {
 public:
  static constexpr int kDefaultContextLength = 77;

  /// open_clip's `bpe_simple_vocab_16e6.txt.gz` (a header line, then merges; the first 48894 are
  /// used). Vocabulary: 256 byte symbols, the same with '</w>', 48894 merges, SOT, EOT = 49408.
  /// Throws qlip::Error naming the file when it is missing, not gzip, truncated or malformed.
  static ClipTokenizer from_bpe_gz(const std::string& path) {
    return ClipTokenizer(std::make_shared<const detail::BpeModel>(detail::load_bpe_gz(path)));
  }

  /// HF CLIPTokenizer files: vocab.json ({token: id}, ids 0..n-1) and merges.txt ("#version"
  /// header, "a b" per line, rank = order). Specials must be named <|startoftext|>, <|endoftext|>.
  static ClipTokenizer from_hf(const std::string& vocab_json, const std::string& merges_txt) {
    return ClipTokenizer(std::make_shared<const detail::BpeModel>(detail::load_hf(vocab_json, merges_txt)));
  }

  /// A checkpoint folder: vocab.json + merges.txt when both exist, else bpe_simple_vocab_16e6.txt.gz.
  static ClipTokenizer from_folder(const std::string& dir) {
    namespace fs = std::filesystem;
    fs::path vocab = fs::path(dir) / "vocab.json", merges = fs::path(dir) / "merges.txt";
    fs::path gz = fs::path(dir) / "bpe_simple_vocab_16e6.txt.gz";
    if (fs::exists(vocab) && fs::exists(merges)) return from_hf(vocab.string(), merges.string());
    if (fs::exists(gz)) return from_bpe_gz(gz.string());
    QLIP_THROW("no CLIP tokenizer files in '", dir, "': looked for ", vocab.string(), " + ", merges.string(),
               (fs::exists(vocab) ? " (vocab.json present, merges.txt missing)" : ""),
               (fs::exists(merges) ? " (merges.txt present, vocab.json missing)" : ""), ", then ", gz.string(),
               " (scripts/setup.sh fetches the gz)");
  }

  /// Writes `dir`/vocab.json and `dir`/merges.txt, byte-identical to OpenAI's HF files when loaded
  /// from the CLIP gz (so a checkpoint folder can be completed). Creates `dir`; each file is
  /// written to a temporary name and renamed into place.
  void save_hf(const std::string& dir) const { detail::save_hf_files(*model_, dir); }

  /// BPE ids of `text`, without SOT/EOT. The literal texts "<start_of_text>" / "<end_of_text>"
  /// (open_clip's spelling, after cleanup) become the SOT / EOT ids, as in open_clip.
  std::vector<std::int32_t> encode(std::string_view text) const {
    std::u32string clean = detail::clean_lower(detail::decode_utf8(text));
    std::vector<std::int32_t> ids;
    ids.reserve(clean.size() / 3 + 4);
    std::string piece;
    for (const detail::Piece& p : detail::split_pieces(clean)) {
      if (p.special) {
        ids.push_back(p.special == 1 ? model_->sot : model_->eot);
        continue;
      }
      piece = detail::encode_utf8(std::u32string_view(clean).substr(p.begin, p.end - p.begin));
      // Long pieces are not cached: the cache holds up to 2^17 entries, which must not be 2^17
      // megabyte-long keys (merging them again is O(n log n), bpe_model.hpp).
      const bool cacheable = piece.size() <= detail::kMaxCachedPieceBytes;
      if (cacheable && cache_->find(piece, ids)) continue;
      std::vector<std::int32_t> word = model_->bpe(piece);
      if (cacheable) cache_->insert(piece, word);
      ids.insert(ids.end(), word.begin(), word.end());
    }
    return ids;
  }

  /// [SOT] + encode(text) + [EOT]; longer than `context_length` → cut to it with EOT forced into
  /// the last slot (open_clip); shorter → padded with pad_id(). Always `context_length` ids.
  std::vector<std::int32_t> tokenize(std::string_view text, int context_length = kDefaultContextLength) const {
    std::vector<std::int32_t> row(static_cast<std::size_t>(check_context(context_length)), pad_id_);
    fill_row(text, row.data(), context_length);
    return row;
  }

  /// tokenize() of each text, as a [B, context_length] tensor.
  Tensor<std::int32_t, 2> tokenize_batch(const std::vector<std::string>& texts,
                                         int context_length = kDefaultContextLength) const {
    check_context(context_length);
    Tensor<std::int32_t, 2> out(Extents<2>{static_cast<std::int64_t>(texts.size()), context_length});  // [B, C]
    for (std::size_t b = 0; b < texts.size(); ++b) {
      std::int32_t* row = out.data() + static_cast<std::int64_t>(b) * context_length;
      std::fill(row, row + context_length, pad_id_);
      fill_row(texts[b], row, context_length);
    }
    return out;
  }

  /// Text of `ids`: SOT ids are skipped and decoding stops at the first EOT (what follows it in a
  /// tokenize() row is padding, and pad id 0 is the real token "!"). Token strings are mapped back
  /// to bytes, invalid UTF-8 becomes U+FFFD, and every "</w>" becomes a space — so the result is
  /// the cleaned text with a space after each word and each punctuation run ("a cat." → "a cat . "),
  /// exactly open_clip's decode(). Ids outside [0, vocab_size) throw qlip::Error.
  std::string decode(const std::vector<std::int32_t>& ids) const {
    std::string bytes;
    for (std::int32_t id : ids) {
      QLIP_CHECK(id >= 0 && id < vocab_size(), "token id ", id, " outside the vocabulary [0, ", vocab_size(), ")");
      if (id == model_->sot) continue;
      if (id == model_->eot) break;
      for (char32_t c : detail::decode_utf8(model_->tokens[static_cast<std::size_t>(id)])) {
        int b = detail::unicode_to_byte(c);
        if (b >= 0) {
          bytes += static_cast<char>(b);
        } else {
          detail::append_utf8(bytes, c);  // a token outside the byte alphabet (an added token): as is
        }
      }
    }
    std::string text = detail::encode_utf8(detail::decode_utf8(bytes));
    std::string out;
    out.reserve(text.size());
    for (std::size_t i = 0; i < text.size();) {
      if (text.compare(i, 4, "</w>") == 0) {
        out += ' ';
        i += 4;
      } else {
        out += text[i++];
      }
    }
    return out;
  }

  std::int32_t sot_id() const { return model_->sot; }
  std::int32_t eot_id() const { return model_->eot; }
  std::int32_t vocab_size() const { return static_cast<std::int32_t>(model_->tokens.size()); }
  /// Id used to pad tokenize() rows: 0 by default (open_clip); set eot_id() for HF's padding.
  std::int32_t pad_id() const { return pad_id_; }
  void set_pad_id(std::int32_t id) {
    QLIP_CHECK(id >= 0 && id < vocab_size(), "pad id ", id, " outside the vocabulary [0, ", vocab_size(), ")");
    pad_id_ = id;
  }
  /// The vocabulary string of `id` (byte-map characters, e.g. "photo</w>").
  const std::string& token(std::int32_t id) const {
    QLIP_CHECK(id >= 0 && id < vocab_size(), "token id ", id, " outside the vocabulary [0, ", vocab_size(), ")");
    return model_->tokens[static_cast<std::size_t>(id)];
  }
  std::size_t num_merges() const { return model_->merges.size(); }

 private:
  explicit ClipTokenizer(std::shared_ptr<const detail::BpeModel> model)
      : model_(std::move(model)), cache_(std::make_shared<detail::BpeCache>()) {}

  static int check_context(int context_length) {
    QLIP_CHECK(context_length >= 2, "context_length must hold at least SOT and EOT, got ", context_length);
    return context_length;
  }

  /// Writes the SOT/ids/EOT part of a row (the caller pre-filled it with pad_id_).
  void fill_row(std::string_view text, std::int32_t* row, int context_length) const {
    std::vector<std::int32_t> ids = encode(text);
    const std::size_t cap = static_cast<std::size_t>(context_length);
    row[0] = model_->sot;
    std::size_t n = std::min(ids.size(), cap - 2);  // room for SOT and EOT
    std::copy(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(n), row + 1);
    // Fits: EOT right after the ids. Too long: open_clip keeps the first C-1 tokens of
    // [SOT]+ids and overwrites the last slot with EOT — the same as cutting ids to C-2.
    row[n + 1] = model_->eot;
  }

  std::shared_ptr<const detail::BpeModel> model_;
  std::shared_ptr<detail::BpeCache> cache_;
  std::int32_t pad_id_ = 0;
};

}  // namespace qlip::text
