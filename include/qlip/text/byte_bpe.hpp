/// @file byte_bpe.hpp
/// @brief qlip::text::ByteBpe: a byte-level BPE tokenizer with its own trainer, for language models
///        trained from scratch (the Llama demo). Lossless on any byte string.
///
/// Vocabulary: ids 0..255 are the 256 bytes; id 256 + k is merge k (in training order), the
/// concatenation of its two parts; then the named special tokens ("<|bos|>", ...), in the order the
/// caller gave them. Two merges may spell the same bytes ("ab"+"c" and "a"+"bc"); they are distinct
/// ids, and decode() does not care.
///
/// Pre-tokenisation (ByteBpe::pretokenize), GPT-2 style but on bytes, without Unicode tables. Byte
/// classes: letter = A-Z, a-z and EVERY byte >= 0x80 (so a UTF-8 sequence is never split, and
/// non-ASCII punctuation joins the letters around it); digit = 0-9; space = ' ', \t, \n, \v, \f, \r;
/// other = everything else (ASCII punctuation, control bytes, NUL). Pieces, left to right:
///   - an optional ' ' followed by a maximal run of letters, or of digits, or of other bytes;
///   - a maximal run of whitespace, except that when the run is longer than one byte, ends in ' ' and
///     is followed by a non-space, that last ' ' is left to start the next piece ("a  b" → "a", " ",
///     " b", as GPT-2's `\s+(?!\S)`). Unlike GPT-2, "\n\n" stays one piece and English contractions
///     are not split off ("it's" → "it", "'", "s").
/// The pieces concatenate to the input, so encode/decode round-trips every byte string.
///
/// Training (ByteBpe::train): distinct pieces are counted; each becomes a word of byte ids weighted by
/// its count. The most frequent adjacent pair (counted over words, weighted; ties → the smallest
/// (left id, right id)) is merged into a new id, every left-to-right non-overlapping occurrence in
/// every word, until the vocabulary (256 + merges + specials) reaches the requested size or no pair
/// occurs twice. The result does not depend on the order of the texts. Pair counts are kept
/// incrementally: an index pair → words lists the words a pair was ever added to, so a merge rewrites
/// only those words and adjusts the counts of the pairs around each occurrence; the best pair comes
/// from a max-heap with lazy deletion (an entry is used only while it holds the pair's current count).
/// A pair's count only grows in the step that creates its newer symbol, so pairs that fall below 2
/// never enter the heap again. No merge makes a token longer than kByteBpeMaxTokenBytes (such pairs
/// are passed over), which also bounds what load() accepts.
///
/// Encoding: the same pieces, each merged lowest rank first (every left-to-right occurrence of the
/// best-ranked pair, repeatedly), which reproduces the training segmentation of every training piece.
/// It reuses the O(n log n) merge loop of the CLIP BPE (detail::BpeModel::bpe, with identity byte ids
/// and no end-of-word marker) and its bounded, thread-safe piece cache (detail::BpeCache). Special
/// tokens are never produced from text: "<|eos|>" in the input is encoded as its bytes.
///
/// File (save/load): one JSON object {"format": "qlip-byte-bpe", "version": 1, "specials": [names],
/// "merges": [[left, right], ...]}, written atomically; load() rejects anything else with a one-line
/// error naming the file and the problem.
///
/// Thread safety: all const members may be called concurrently (the cache has its own mutex and is
/// shared by copies).
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <queue>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "qlip/core/error.hpp"
#include "qlip/io/detail/file.hpp"
#include "qlip/io/json.hpp"
#include "qlip/text/detail/bpe_model.hpp"
#include "qlip/text/detail/unicode.hpp"

namespace qlip::text {

/// The "format" tag of a saved ByteBpe and the version this code writes and reads.
inline constexpr std::string_view kByteBpeFormat = "qlip-byte-bpe";
inline constexpr int kByteBpeVersion = 1;
/// Longest token (in bytes) a merge may make. Real tokens are a few bytes; the cap keeps a hostile
/// file (merge a+a, then that with itself, ...) from doubling a token into gigabytes.
inline constexpr std::size_t kByteBpeMaxTokenBytes = 1024;
/// Most merges a vocabulary may hold (ids must stay far inside int32).
inline constexpr std::size_t kByteBpeMaxMerges = std::size_t{1} << 22;

namespace detail {

enum class ByteClass : unsigned char { letter, digit, space, other };

/// The pre-tokeniser's class of a byte (see the file comment: every byte >= 0x80 is a letter).
constexpr ByteClass byte_class(unsigned char b) {
  if (b >= 0x80 || (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z')) return ByteClass::letter;
  if (b >= '0' && b <= '9') return ByteClass::digit;
  if (b == ' ' || (b >= '\t' && b <= '\r')) return ByteClass::space;
  return ByteClass::other;
}

/// Calls f(std::string_view piece) for each piece of `text`, left to right (file comment).
template <class F>
void for_each_byte_piece(std::string_view text, F&& f) {
  const std::size_t n = text.size();
  auto cls = [&](std::size_t k) { return byte_class(static_cast<unsigned char>(text[k])); };
  std::size_t i = 0;
  while (i < n) {
    std::size_t j = i;
    if (text[i] == ' ' && i + 1 < n && cls(i + 1) != ByteClass::space) {
      const ByteClass c = cls(i + 1);
      j = i + 2;
      while (j < n && cls(j) == c) ++j;
    } else if (cls(i) == ByteClass::space) {
      j = i + 1;
      while (j < n && cls(j) == ByteClass::space) ++j;
      if (j < n && j - i >= 2 && text[j - 1] == ' ') --j;  // leave the last ' ' to the next word
    } else {
      const ByteClass c = cls(i);
      j = i + 1;
      while (j < n && cls(j) == c) ++j;
    }
    f(text.substr(i, j - i));
    i = j;
  }
}

/// True when `s` is valid UTF-8 (decode_utf8 replaces every invalid subsequence, so only valid
/// text survives the round trip unchanged).
inline bool is_valid_utf8(std::string_view s) { return encode_utf8(decode_utf8(s)) == s; }

}  // namespace detail

class ByteBpe {
 public:
  using Merge = std::pair<std::int32_t, std::int32_t>;

  /// The pieces encode() and train() work on (file comment); they concatenate to `text`.
  static std::vector<std::string_view> pretokenize(std::string_view text) {
    std::vector<std::string_view> pieces;
    detail::for_each_byte_piece(text, [&](std::string_view p) { pieces.push_back(p); });
    return pieces;
  }

  /// Learns merges from `texts` until 256 + merges + specials.size() == vocab_size, or until no
  /// adjacent pair occurs twice (then vocab_size() is smaller than asked). `specials` get the last
  /// ids, in the given order; names must be non-empty, valid UTF-8 and distinct.
  static ByteBpe train(const std::vector<std::string>& texts, int vocab_size, const std::vector<std::string>& specials) {
    check_specials(specials, "ByteBpe::train");
    const long long floor = 256 + static_cast<long long>(specials.size());
    QLIP_CHECK(vocab_size >= floor, "ByteBpe::train: vocab_size ", vocab_size, " is below 256 bytes + ",
               specials.size(), " specials = ", floor);
    const std::size_t target = std::min(static_cast<std::size_t>(vocab_size - floor), kByteBpeMaxMerges);
    return ByteBpe(learn_merges(texts, target), specials);
  }

  /// A tokenizer from explicit merges (merge k defines id 256 + k) and special names. Checks what
  /// load() checks; `source` starts every error message.
  static ByteBpe from_merges(std::vector<Merge> merges, std::vector<std::string> specials,
                             const std::string& source = "ByteBpe::from_merges") {
    check_merges(merges, source);
    check_specials(specials, source);
    return ByteBpe(std::move(merges), std::move(specials));
  }

  /// Reads a file written by save(). Every error is one line: "<path>: <problem>".
  static ByteBpe load(const std::string& path) {
    const nlohmann::json j = read_json(path);  // syntax, depth and duplicate keys: errors name the file
    if (!j.is_object()) QLIP_THROW(path, ": expected a JSON object (a qlip byte-BPE file), got ", j.type_name());
    for (auto it = j.begin(); it != j.end(); ++it) {
      const std::string& k = it.key();
      if (k != "format" && k != "version" && k != "merges" && k != "specials")
        QLIP_THROW(path, ": unknown key '", qlip::detail::utf8_prefix(k, kJsonExcerptBytes),
                   "' (a qlip byte-BPE file holds format, version, specials, merges)");
    }
    auto field = [&](const char* key) -> const nlohmann::json& {
      auto it = j.find(key);
      if (it == j.end()) QLIP_THROW(path, ": missing key '", key, "' (not a qlip byte-BPE file?)");
      return *it;
    };
    const nlohmann::json& format = field("format");
    if (!format.is_string() || format.get_ref<const std::string&>() != kByteBpeFormat)
      QLIP_THROW(path, ": format is ", json_excerpt(format), ", expected \"", kByteBpeFormat, "\"");
    const nlohmann::json& version = field("version");
    if (!version.is_number_integer()) QLIP_THROW(path, ": version is ", json_excerpt(version), ", expected an integer");
    if (version.is_number_unsigned() ? version.get<std::uint64_t>() != std::uint64_t{kByteBpeVersion}
                                     : version.get<std::int64_t>() != std::int64_t{kByteBpeVersion})
      QLIP_THROW(path, ": unsupported version ", json_excerpt(version), " (this build reads version ", kByteBpeVersion, ")");

    const nlohmann::json& jm = field("merges");
    if (!jm.is_array()) QLIP_THROW(path, ": 'merges' must be an array of [left, right] pairs, got ", jm.type_name());
    if (jm.size() > kByteBpeMaxMerges)
      QLIP_THROW(path, ": ", jm.size(), " merges, more than the ", kByteBpeMaxMerges, " this reader accepts");
    std::vector<Merge> merges;
    merges.reserve(jm.size());
    for (std::size_t k = 0; k < jm.size(); ++k) {
      const nlohmann::json& m = jm[k];
      if (!m.is_array() || m.size() != 2)
        QLIP_THROW(path, ": merge ", k, " is ", json_excerpt(m), ", expected a [left, right] pair of ids");
      std::int32_t ids[2];
      for (int s = 0; s < 2; ++s) {
        const nlohmann::json& v = m[static_cast<std::size_t>(s)];
        if (!v.is_number_integer())
          QLIP_THROW(path, ": merge ", k, " ", json_excerpt(m), ": ids must be integers, got ", json_excerpt(v));
        const std::int64_t lim = 256 + static_cast<std::int64_t>(k);  // ids defined before merge k
        const bool in_range = v.is_number_unsigned() ? v.get<std::uint64_t>() < static_cast<std::uint64_t>(lim)
                                                     : (v.get<std::int64_t>() >= 0 && v.get<std::int64_t>() < lim);
        if (!in_range)
          QLIP_THROW(path, ": merge ", k, " ", json_excerpt(m), " refers to id ", json_excerpt(v),
                     ", not yet defined (ids 0..", lim - 1, " exist before merge ", k, ")");
        ids[s] = static_cast<std::int32_t>(v.get<std::int64_t>());
      }
      merges.emplace_back(ids[0], ids[1]);
    }
    const nlohmann::json& js = field("specials");
    if (!js.is_array()) QLIP_THROW(path, ": 'specials' must be an array of names, got ", js.type_name());
    std::vector<std::string> specials;
    for (std::size_t k = 0; k < js.size(); ++k) {
      if (!js[k].is_string()) QLIP_THROW(path, ": special ", k, " is ", json_excerpt(js[k]), ", expected a string");
      specials.push_back(js[k].get<std::string>());
    }
    return from_merges(std::move(merges), std::move(specials), path);
  }

  /// Writes the file load() reads, atomically (temp file, fsync, rename): one merge per line.
  void save(const std::string& path) const {
    std::string out = "{\n  \"format\": \"" + std::string(kByteBpeFormat) + "\",\n  \"version\": " +
                      std::to_string(kByteBpeVersion) + ",\n  \"specials\": [";
    for (std::size_t k = 0; k < model_->specials.size(); ++k)
      out += (k ? ", " : "") + nlohmann::json(model_->specials[k]).dump();
    out += "],\n  \"merges\": [";
    for (std::size_t k = 0; k < model_->merges.size(); ++k) {
      out += k ? ",\n    [" : "\n    [";
      out += std::to_string(model_->merges[k].first) + ", " + std::to_string(model_->merges[k].second) + "]";
    }
    out += model_->merges.empty() ? "]\n}\n" : "\n  ]\n}\n";
    qlip::detail::write_file_atomic(path, out.data(), out.size());
  }

  /// Token ids of `text` (never a special id). Any bytes, including NUL and invalid UTF-8.
  std::vector<std::int32_t> encode(std::string_view text) const {
    std::vector<std::int32_t> ids;
    ids.reserve(text.size() / 3 + 1);
    std::string key;
    detail::for_each_byte_piece(text, [&](std::string_view piece) {
      if (piece.size() == 1) {
        ids.push_back(static_cast<unsigned char>(piece[0]));
        return;
      }
      // Long pieces are merged every time rather than cached (bounded keys; bpe() is O(n log n)).
      const bool cacheable = piece.size() <= detail::kMaxCachedPieceBytes;
      if (cacheable) {
        key.assign(piece);
        if (cache_->find(key, ids)) return;
      }
      std::vector<std::int32_t> word = model_->bpe.bpe(piece);
      if (cacheable) cache_->insert(key, word);
      ids.insert(ids.end(), word.begin(), word.end());
    });
    return ids;
  }

  /// The bytes of `ids` concatenated (a special id gives its name). decode(encode(x)) == x for every
  /// byte string x. An id outside [0, vocab_size()) throws qlip::Error naming it.
  std::string decode(std::span<const std::int32_t> ids) const {
    std::string out;
    for (std::int32_t id : ids) out += token_bytes(id);
    return out;
  }

  /// 256 + merges + specials.
  std::int32_t vocab_size() const { return static_cast<std::int32_t>(model_->tokens.size()); }
  /// Merge k defined id 256 + k as the concatenation of these two ids.
  const std::vector<Merge>& merges() const { return model_->merges; }
  const std::vector<std::string>& specials() const { return model_->specials; }
  /// The bytes token `id` stands for (a special: its name). For debugging and vocabulary dumps.
  const std::string& token_bytes(std::int32_t id) const {
    QLIP_CHECK(id >= 0 && id < vocab_size(), "token id ", id, " outside the vocabulary [0, ", vocab_size(), ")");
    return model_->tokens[static_cast<std::size_t>(id)];
  }
  bool is_special(std::int32_t id) const { return id >= first_special_id() && id < vocab_size(); }
  /// Id of the special token `name`; throws naming it and the specials there are.
  std::int32_t id_of_special(std::string_view name) const {
    for (std::size_t k = 0; k < model_->specials.size(); ++k)
      if (model_->specials[k] == name) return first_special_id() + static_cast<std::int32_t>(k);
    std::string known;
    for (const std::string& s : model_->specials) known += (known.empty() ? "" : ", ") + s;
    QLIP_THROW("no special token '", qlip::detail::utf8_prefix(name, kJsonExcerptBytes), "' in this vocabulary (specials: ",
               known.empty() ? std::string("none") : known, ")");
  }

  /// Same merges and specials (hence the same ids for every text).
  friend bool operator==(const ByteBpe& a, const ByteBpe& b) {
    return a.model_->merges == b.model_->merges && a.model_->specials == b.model_->specials;
  }

 private:
  struct Model {
    std::vector<Merge> merges;
    std::vector<std::string> specials;
    std::vector<std::string> tokens;  // id → bytes (special: name)
    detail::BpeModel bpe;             // only byte_id / byte_eow_id / merge_table: what bpe() reads
  };

  ByteBpe(std::vector<Merge> merges, std::vector<std::string> specials) : cache_(std::make_shared<detail::BpeCache>()) {
    auto m = std::make_shared<Model>();
    m->tokens.reserve(256 + merges.size() + specials.size());
    for (int b = 0; b < 256; ++b) {
      m->tokens.emplace_back(1, static_cast<char>(b));
      m->bpe.byte_id[static_cast<std::size_t>(b)] = b;
      m->bpe.byte_eow_id[static_cast<std::size_t>(b)] = b;  // no end-of-word marker
    }
    m->bpe.merge_table.reserve(merges.size() * 2);
    for (std::size_t k = 0; k < merges.size(); ++k) {
      const auto [l, r] = merges[k];
      const auto id = static_cast<std::int32_t>(256 + k);
      m->tokens.push_back(m->tokens[static_cast<std::size_t>(l)] + m->tokens[static_cast<std::size_t>(r)]);
      m->bpe.merge_table[detail::BpeModel::pair_key(l, r)] = {static_cast<std::int32_t>(k), id};
    }
    for (const std::string& s : specials) m->tokens.push_back(s);
    m->merges = std::move(merges);
    m->specials = std::move(specials);
    model_ = std::move(m);
  }

  std::int32_t first_special_id() const { return static_cast<std::int32_t>(256 + model_->merges.size()); }

  /// Merge k may use ids below 256 + k, no pair twice, no token over kByteBpeMaxTokenBytes.
  static void check_merges(const std::vector<Merge>& merges, const std::string& source) {
    QLIP_CHECK(merges.size() <= kByteBpeMaxMerges, source, ": ", merges.size(), " merges, more than the ",
               kByteBpeMaxMerges, " accepted");
    std::vector<std::size_t> len(256, 1);
    std::unordered_map<std::uint64_t, std::size_t> seen;
    seen.reserve(merges.size() * 2);
    for (std::size_t k = 0; k < merges.size(); ++k) {
      const auto [l, r] = merges[k];
      const auto lim = static_cast<std::int64_t>(256 + k);
      for (std::int32_t id : {l, r})
        if (id < 0 || id >= lim)
          QLIP_THROW(source, ": merge ", k, " [", l, ", ", r, "] refers to id ", id, ", not yet defined (ids 0..", lim - 1,
                     " exist before merge ", k, ")");
      auto [it, fresh] = seen.emplace(detail::BpeModel::pair_key(l, r), k);
      if (!fresh) QLIP_THROW(source, ": merge ", k, " [", l, ", ", r, "] duplicates merge ", it->second);
      len.push_back(len[static_cast<std::size_t>(l)] + len[static_cast<std::size_t>(r)]);
      if (len.back() > kByteBpeMaxTokenBytes)
        QLIP_THROW(source, ": merge ", k, " [", l, ", ", r, "] makes a token of ", len.back(), " bytes (at most ",
                   kByteBpeMaxTokenBytes, " accepted; corrupt file?)");
    }
  }

  static void check_specials(const std::vector<std::string>& specials, const std::string& source) {
    for (std::size_t k = 0; k < specials.size(); ++k) {
      const std::string shown = nlohmann::json(qlip::detail::utf8_prefix(specials[k], kJsonExcerptBytes))
                                    .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      QLIP_CHECK(!specials[k].empty(), source, ": special ", k, " is empty");
      QLIP_CHECK(detail::is_valid_utf8(specials[k]), source, ": special ", k, " ", shown, " is not valid UTF-8");
      for (std::size_t q = 0; q < k; ++q)
        QLIP_CHECK(specials[q] != specials[k], source, ": special ", k, " ", shown, " duplicates special ", q);
    }
  }

  /// The trainer (file comment). Returns at most `target` merges.
  static std::vector<Merge> learn_merges(const std::vector<std::string>& texts, std::size_t target) {
    // Distinct pieces with their counts; single bytes have no pairs and never change.
    std::unordered_map<std::string_view, std::int64_t> piece_count;
    for (const std::string& t : texts)
      detail::for_each_byte_piece(t, [&](std::string_view p) {
        if (p.size() >= 2) ++piece_count[p];
      });
    std::vector<std::vector<std::int32_t>> words;
    std::vector<std::int64_t> freq;
    words.reserve(piece_count.size());
    freq.reserve(piece_count.size());
    for (const auto& [p, c] : piece_count) {
      words.emplace_back(p.begin(), p.end());
      for (std::int32_t& s : words.back()) s = static_cast<unsigned char>(s);
      freq.push_back(c);
    }
    piece_count = {};

    std::unordered_map<std::uint64_t, std::int64_t> count;        // pair → weighted count (> 0)
    std::unordered_map<std::uint64_t, std::vector<std::int32_t>> where;  // pair → words it was added to
    for (std::size_t w = 0; w < words.size(); ++w) {
      const auto& s = words[w];
      for (std::size_t i = 0; i + 1 < s.size(); ++i) {
        const std::uint64_t key = detail::BpeModel::pair_key(s[i], s[i + 1]);
        count[key] += freq[w];
        auto& v = where[key];
        if (v.empty() || v.back() != static_cast<std::int32_t>(w)) v.push_back(static_cast<std::int32_t>(w));
      }
    }

    struct Entry {
      std::int64_t count;
      std::uint64_t key;  // (left << 32) | right: smaller key = smaller (left, right)
      bool operator<(const Entry& o) const { return count != o.count ? count < o.count : key > o.key; }
    };
    std::priority_queue<Entry> heap;
    for (const auto& [key, c] : count)
      if (c >= 2) heap.push({c, key});

    std::vector<std::size_t> len(256, 1);  // bytes of each id so far
    std::vector<Merge> merges;
    std::vector<std::uint32_t> stamp(words.size(), 0);
    std::unordered_map<std::uint64_t, std::int64_t> delta;
    while (merges.size() < target && !heap.empty()) {
      const Entry top = heap.top();
      heap.pop();
      auto cit = count.find(top.key);
      if (cit == count.end() || cit->second != top.count) continue;  // stale entry
      const auto a = static_cast<std::int32_t>(top.key >> 32), b = static_cast<std::int32_t>(top.key & 0xFFFFFFFFu);
      const std::size_t merged_len = len[static_cast<std::size_t>(a)] + len[static_cast<std::size_t>(b)];
      if (merged_len > kByteBpeMaxTokenBytes) continue;  // passed over (its later entries too)
      const auto c = static_cast<std::int32_t>(256 + merges.size());
      merges.emplace_back(a, b);
      len.push_back(merged_len);
      count.erase(cit);
      std::vector<std::int32_t> list = std::move(where[top.key]);
      where.erase(top.key);
      const auto step = static_cast<std::uint32_t>(merges.size());
      delta.clear();
      for (std::int32_t w : list) {
        if (stamp[static_cast<std::size_t>(w)] == step) continue;
        stamp[static_cast<std::size_t>(w)] = step;
        auto& s = words[static_cast<std::size_t>(w)];
        const std::int64_t f = freq[static_cast<std::size_t>(w)];
        auto add = [&](std::int32_t x, std::int32_t y, std::int64_t d) {
          const std::uint64_t key = detail::BpeModel::pair_key(x, y);
          delta[key] += d;
          if (d > 0) {  // a pair with c: its words are listed now, the only step its count grows
            auto& v = where[key];
            if (v.empty() || v.back() != w) v.push_back(w);
          }
        };
        const std::size_t n = s.size();
        std::size_t out = 0;
        for (std::size_t i = 0; i < n;) {
          if (i + 1 < n && s[i] == a && s[i + 1] == b) {
            if (out > 0) add(s[out - 1], a, -f), add(s[out - 1], c, f);  // s[out-1] may be c already
            if (i + 2 < n) add(b, s[i + 2], -f), add(c, s[i + 2], f);
            s[out++] = c;
            i += 2;
          } else {
            s[out++] = s[i++];
          }
        }
        s.resize(out);
      }
      for (const auto& [key, d] : delta) {
        if (d == 0) continue;
        std::int64_t& v = count[key];
        v += d;
        if (v <= 0) {
          count.erase(key);
        } else if (v >= 2) {
          heap.push({v, key});
        }
      }
    }
    return merges;
  }

  std::shared_ptr<const Model> model_;
  std::shared_ptr<detail::BpeCache> cache_;
};

}  // namespace qlip::text
