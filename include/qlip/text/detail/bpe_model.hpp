/// @file bpe_model.hpp
/// @brief The immutable CLIP BPE model (id ⇄ token, ranked merges), its loaders (open_clip's gz,
///        HF vocab.json + merges.txt), its HF writer, and the merge loop with a thread-safe cache.
///
/// Long words: the merge loop is O(n log n) in the word length with open_clip's results (see
/// BpeModel::bpe), so no word is cut or chunked; a 100k-letter word is merged in milliseconds.
/// Pieces longer than kMaxCachedPieceBytes are not memoised (BpeCache would otherwise hold up to
/// 2^17 arbitrarily long keys).
#pragma once

#include <algorithm>
#include <array>
#include <climits>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <queue>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "qlip/core/error.hpp"
#include "qlip/io/json.hpp"
#include "qlip/text/detail/byte_map.hpp"
#include "qlip/text/detail/gzip_reader.hpp"

namespace qlip::text::detail {

/// HF / OpenAI names of the two special tokens (open_clip calls them <start_of_text> and
/// <end_of_text>; the ids are the same).
inline constexpr std::string_view kSotName = "<|startoftext|>";
inline constexpr std::string_view kEotName = "<|endoftext|>";
/// open_clip uses the first 49152 - 256 - 2 = 48894 merges of its 262k-line file.
inline constexpr std::size_t kClipMerges = 49152 - 256 - 2;
/// Longest piece the BPE cache memoises (real words are far shorter; longer pieces are merged again
/// each time, which is cheap, rather than stored).
inline constexpr std::size_t kMaxCachedPieceBytes = 1024;
/// Longest token or line that error messages print.
inline constexpr std::size_t kShownBytes = 80;

/// A token or line from a vocabulary file as messages print it (bounded).
inline std::string shown(std::string_view s) { return qlip::detail::utf8_prefix(s, kShownBytes); }

/// Everything a tokenizer needs, immutable once built.
struct BpeModel {
  std::vector<std::string> tokens;                       // id → token (UTF-8 of byte-map characters)
  std::unordered_map<std::string, std::int32_t> ids;     // token → id (last id wins, like a Python dict)
  std::vector<std::pair<std::string, std::string>> merges;  // rank order
  struct Merge {
    std::int32_t rank;
    std::int32_t result;
  };
  std::unordered_map<std::uint64_t, Merge> merge_table;  // (left id, right id) → rank, merged id
  std::array<std::int32_t, 256> byte_id{};               // byte → id of its symbol
  std::array<std::int32_t, 256> byte_eow_id{};           // byte → id of its symbol + "</w>"
  std::int32_t sot = -1;
  std::int32_t eot = -1;

  static std::uint64_t pair_key(std::int32_t a, std::int32_t b) {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) | static_cast<std::uint32_t>(b);
  }

  std::int32_t lookup(const std::string& token, const std::string& source, const std::string& what) const {
    auto it = ids.find(token);
    if (it == ids.end()) QLIP_THROW("'", source, "': ", what, " '", shown(token), "' is not in the vocabulary");
    return it->second;
  }

  /// Indexes `tokens` and `merges` (already filled). `source` names the file(s) in errors.
  void index(const std::string& source) {
    ids.clear();
    ids.reserve(tokens.size());
    for (std::size_t i = 0; i < tokens.size(); ++i) ids[tokens[i]] = static_cast<std::int32_t>(i);
    for (int b = 0; b < 256; ++b) {
      std::string sym = byte_symbol(static_cast<unsigned char>(b));
      byte_id[b] = lookup(sym, source, "byte symbol");
      byte_eow_id[b] = lookup(sym + "</w>", source, "byte symbol");
    }
    merge_table.clear();
    merge_table.reserve(merges.size() * 2);
    for (std::size_t r = 0; r < merges.size(); ++r) {
      const auto& [a, b] = merges[r];
      const std::string merge = shown(a) + " " + shown(b);
      std::int32_t ia = lookup(a, source, "merge " + merge + " uses");
      std::int32_t ib = lookup(b, source, "merge " + merge + " uses");
      std::int32_t ir = lookup(a + b, source, "the result of merge " + merge + ",");
      merge_table[pair_key(ia, ib)] = {static_cast<std::int32_t>(r), ir};  // later duplicates win, as in Python
    }
    sot = lookup(std::string(kSotName), source, "special token");
    eot = lookup(std::string(kEotName), source, "special token");
  }

  /// Byte-level BPE of one piece's UTF-8 bytes: '</w>' on the last byte, then repeatedly merge
  /// every left-to-right occurrence of the lowest-ranked adjacent pair (open_clip's bpe()).
  ///
  /// open_clip rescans the whole word after every merge, which is quadratic in its length (a
  /// 100k-letter word took 5.6 s). Here the adjacent pairs sit in a min-heap keyed by (rank,
  /// position) over a linked list of symbols, so a word of n bytes costs O(n log n) and gives the
  /// same ids for every length: all heap entries of the lowest rank r come out together, in
  /// left-to-right order, and each is merged unless an earlier merge of this pass consumed one of its
  /// symbols (open_clip's scan, which skips past a merged pair). A rank names one pair, and a merge
  /// result never equals its left symbol, so a merge can create no new pair of rank r. Entries made
  /// stale by a merge are recognised on the way out (the pair there now has another rank).
  std::vector<std::int32_t> bpe(std::string_view bytes) const {
    constexpr std::int32_t kNone = INT32_MAX;
    constexpr std::size_t kEnd = SIZE_MAX;
    const std::size_t n = bytes.size();
    std::vector<std::int32_t> sym(n);
    std::vector<std::size_t> prev(n), next(n);
    std::vector<char> alive(n, 1);
    for (std::size_t i = 0; i < n; ++i) {
      const auto b = static_cast<unsigned char>(bytes[i]);
      sym[i] = i + 1 == n ? byte_eow_id[b] : byte_id[b];
      prev[i] = i == 0 ? kEnd : i - 1;
      next[i] = i + 1 == n ? kEnd : i + 1;
    }
    auto pair_rank = [&](std::size_t i) {
      if (next[i] == kEnd) return kNone;
      auto it = merge_table.find(pair_key(sym[i], sym[next[i]]));
      return it == merge_table.end() ? kNone : it->second.rank;
    };
    using Entry = std::pair<std::int32_t, std::size_t>;  // (rank, position of the pair's left symbol)
    std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap;
    auto push = [&](std::size_t i) {
      if (const std::int32_t r = pair_rank(i); r != kNone) heap.push({r, i});
    };
    for (std::size_t i = 0; i + 1 < n; ++i) push(i);
    std::vector<std::size_t> pass;
    while (!heap.empty()) {
      const std::int32_t r = heap.top().first;
      pass.clear();
      while (!heap.empty() && heap.top().first == r) {
        pass.push_back(heap.top().second);  // ascending positions: left to right
        heap.pop();
      }
      std::int32_t left = -1, right = -1, merged = -1;
      for (std::size_t i : pass) {
        if (!alive[i] || next[i] == kEnd) continue;
        if (left < 0) {
          if (pair_rank(i) != r) continue;  // stale: the pair at i changed since it was pushed
          const Merge& m = merge_table.find(pair_key(sym[i], sym[next[i]]))->second;
          left = sym[i], right = sym[next[i]], merged = m.result;
        } else if (sym[i] != left || sym[next[i]] != right) {
          continue;  // stale, or consumed by the merge just left of it
        }
        const std::size_t j = next[i];
        sym[i] = merged;
        alive[j] = 0;
        next[i] = next[j];
        if (next[j] != kEnd) prev[next[j]] = i;
        if (prev[i] != kEnd) push(prev[i]);
        push(i);
      }
    }
    std::vector<std::int32_t> word;
    for (std::size_t i = n == 0 ? kEnd : 0; i != kEnd; i = next[i]) word.push_back(sym[i]);  // symbol 0 never dies
    return word;
  }
};

/// Splits on '\n' (a trailing '\r' is dropped so CRLF files load too).
inline std::vector<std::string_view> split_lines(std::string_view data) {
  std::vector<std::string_view> lines;
  std::size_t pos = 0;
  while (pos <= data.size()) {
    std::size_t nl = data.find('\n', pos);
    if (nl == std::string_view::npos) nl = data.size();
    std::string_view line = data.substr(pos, nl - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    lines.push_back(line);
    pos = nl + 1;
  }
  return lines;
}

/// "a b" → {"a", "b"}; anything else (one part, three parts) is an error naming file and line.
inline std::pair<std::string, std::string> parse_merge(std::string_view line, const std::string& path, std::size_t lineno) {
  std::istringstream in{std::string(line)};
  std::string a, b, extra;
  if (!(in >> a >> b) || (in >> extra)) {
    QLIP_THROW("'", path, "' line ", lineno, ": expected a merge \"a b\", got \"", std::string(line.substr(0, 80)), "\"");
  }
  return {a, b};
}

/// open_clip's SimpleTokenizer vocabulary from bpe_simple_vocab_16e6.txt.gz: a header line, then
/// merges. Ids: the 256 byte symbols (in bytes_to_unicode() order, i.e. by mapped code point),
/// the same with '</w>', the 48894 merge results, then SOT = 49406 and EOT = 49407.
inline BpeModel load_bpe_gz(const std::string& path) {
  std::string data = read_gzip_file(path);
  std::vector<std::string_view> lines = split_lines(data);
  if (lines.size() < kClipMerges + 1) {
    QLIP_THROW("'", path, "' holds ", lines.size(), " lines; a CLIP BPE vocabulary needs a header and at least ",
               kClipMerges, " merges (corrupt or wrong file?)");
  }
  BpeModel m;
  std::vector<char32_t> chars(byte_to_unicode().begin(), byte_to_unicode().end());
  std::sort(chars.begin(), chars.end());
  for (char32_t c : chars) m.tokens.push_back(encode_utf8(std::u32string(1, c)));
  for (std::size_t i = 0; i < 256; ++i) m.tokens.push_back(m.tokens[i] + "</w>");
  for (std::size_t r = 0; r < kClipMerges; ++r) {
    m.merges.push_back(parse_merge(lines[r + 1], path, r + 2));
    m.tokens.push_back(m.merges.back().first + m.merges.back().second);
  }
  m.tokens.emplace_back(kSotName);
  m.tokens.emplace_back(kEotName);
  m.index(path);
  return m;
}

inline std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) QLIP_THROW("cannot open '", path, "' (missing or unreadable)");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) QLIP_THROW("error reading '", path, "'");
  return ss.str();
}

/// HF CLIPTokenizer files. Every merge line after the "#version" header is used (the fast
/// tokenizer's behaviour; the slow one stops at 48894, which is all OpenAI's file has).
inline BpeModel load_hf(const std::string& vocab_json, const std::string& merges_txt) {
  // parse_json: depth-capped, and a token listed twice is an error rather than last-wins.
  const nlohmann::json vocab = parse_json(read_text_file(vocab_json), "'" + vocab_json + "'");
  if (!vocab.is_object() || vocab.empty()) QLIP_THROW("'", vocab_json, "' must be a JSON object {token: id}");
  BpeModel m;
  m.tokens.assign(vocab.size(), std::string());
  std::vector<bool> seen(vocab.size(), false);
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer())
      QLIP_THROW("'", vocab_json, "': id of '", shown(it.key()), "' is not an integer");
    if (it.value().is_number_unsigned() && it.value().get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX)) {
      QLIP_THROW("'", vocab_json, "': id of '", shown(it.key()), "' is out of range");
    }
    auto id = it.value().get<std::int64_t>();
    if (id < 0 || id >= static_cast<std::int64_t>(vocab.size()) || seen[static_cast<std::size_t>(id)]) {
      QLIP_THROW("'", vocab_json, "': ids must be 0..", vocab.size() - 1, " without gaps or repeats (bad id ", id,
                 " for '", shown(it.key()), "')");
    }
    seen[static_cast<std::size_t>(id)] = true;
    m.tokens[static_cast<std::size_t>(id)] = it.key();
  }
  std::string data = read_text_file(merges_txt);
  std::vector<std::string_view> lines = split_lines(data);
  std::size_t first = (!lines.empty() && lines[0].rfind("#", 0) == 0) ? 1 : 0;
  for (std::size_t i = first; i < lines.size(); ++i) {
    if (lines[i].empty()) continue;
    m.merges.push_back(parse_merge(lines[i], merges_txt, i + 1));
  }
  if (m.merges.empty()) QLIP_THROW("'", merges_txt, "' holds no merges");
  m.index(vocab_json + "' / '" + merges_txt);
  return m;
}

/// Writes `data` to `path` through a temporary file in the same folder and a rename, so readers
/// never see a half-written file.
inline void write_file_atomic(const std::filesystem::path& path, const std::string& data) {
  std::random_device rd;
  std::filesystem::path tmp = path;
  tmp += ".tmp-" + std::to_string(rd());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) QLIP_THROW("cannot create '", tmp.string(), "'");
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
    out.close();
    if (!out) {
      std::error_code ec;
      std::filesystem::remove(tmp, ec);
      QLIP_THROW("error writing '", tmp.string(), "'");
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::error_code ignore;
    std::filesystem::remove(tmp, ignore);
    QLIP_THROW("cannot rename '", tmp.string(), "' to '", path.string(), "': ", ec.message());
  }
}

/// vocab.json exactly as OpenAI's HF files spell it: compact JSON, keys in id order, non-ASCII
/// unescaped (json.dumps(ensure_ascii=False, separators=(',', ':'))); merges.txt with the
/// "#version: 0.2" header and one "a b" line per merge.
inline void save_hf_files(const BpeModel& m, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) QLIP_THROW("cannot create folder '", dir, "': ", ec.message());
  std::string vocab = "{";
  for (std::size_t i = 0; i < m.tokens.size(); ++i) {
    if (i) vocab += ',';
    vocab += nlohmann::json(m.tokens[i]).dump();
    vocab += ':';
    vocab += std::to_string(i);
  }
  vocab += '}';
  std::string merges = "#version: 0.2\n";
  for (const auto& [a, b] : m.merges) merges += a + " " + b + "\n";
  write_file_atomic(std::filesystem::path(dir) / "vocab.json", vocab);
  write_file_atomic(std::filesystem::path(dir) / "merges.txt", merges);
}

/// Piece → ids memo shared by copies of a tokenizer. Thread-safe: one mutex around the map; the
/// BPE itself runs outside the lock. Bounded: cleared when it reaches kMaxEntries (open_clip's
/// dict grows without bound; a long-running server should not).
class BpeCache {
 public:
  static constexpr std::size_t kMaxEntries = 1 << 17;

  bool find(const std::string& key, std::vector<std::int32_t>& out) const {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = map_.find(key);
    if (it == map_.end()) return false;
    out.insert(out.end(), it->second.begin(), it->second.end());
    return true;
  }
  void insert(const std::string& key, const std::vector<std::int32_t>& value) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (map_.size() >= kMaxEntries) map_.clear();
    map_.emplace(key, value);
  }
  std::size_t size() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return map_.size();
  }

 private:
  mutable std::mutex mutex_;
  std::unordered_map<std::string, std::vector<std::int32_t>> map_;
};

}  // namespace qlip::text::detail
