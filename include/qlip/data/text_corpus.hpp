/// @file text_corpus.hpp
/// @brief A plain-text corpus for the small Llama language model: the fortune databases of Debian's
///        `fortunes` package (and `fortunes-min`, which it pulls in), read into a deterministic list
///        of entries, and a deterministic train / held-out split by hash.
///
/// The files: /usr/share/games/fortunes/<name> (43 databases in Debian 12, 2.5 MB of UTF-8 text),
/// each beside <name>.dat (strfile's binary index) and <name>.u8 (a symlink to <name>). Entries are
/// separated by lines that hold only "%". read_fortunes() takes the regular files whose names neither
/// start with '.' nor end in ".dat" or ".u8", sorted by name; symlinks and folders are skipped. That
/// skips off/, where the separate `fortunes-off` package puts the offensive databases: the demo
/// corpus leaves them out on purpose.
///
/// Each entry is trimmed of ASCII whitespace at both ends (inner lines, tabs and indentation stay:
/// "\t\t-- Mark Twain" attributions, ASCII art); empty entries are dropped; bytes are kept as they are
/// (no re-encoding). The held-out set is every entry whose 64-bit FNV-1a hash is divisible by
/// `every` (20 → about 5%): the split depends on the text alone, not on file order or count, and
/// copies of an entry (some fortunes appear in two databases) always fall on the same side.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "qlip/core/error.hpp"
#include "qlip/io/detail/file.hpp"

namespace qlip::data {

/// Where Debian's fortunes / fortunes-min packages install the databases.
inline constexpr std::string_view kFortunesDebianDir = "/usr/share/games/fortunes";
/// Default held-out rate of split_held_out: one entry in 20 (by hash).
inline constexpr std::uint64_t kHeldOutEvery = 20;

/// 64-bit FNV-1a of the bytes of `s`.
constexpr std::uint64_t fnv1a64(std::string_view s) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ull;
  }
  return h;
}

/// The entries of one fortune file's text: split at lines that are exactly "%" (a trailing '\r' is
/// tolerated), each trimmed of ASCII whitespace, empty ones dropped. The last entry needs no "%".
inline std::vector<std::string> parse_fortune_entries(std::string_view text) {
  auto is_space = [](char c) { return c == ' ' || (c >= '\t' && c <= '\r'); };
  std::vector<std::string> entries;
  auto flush = [&](std::size_t begin, std::size_t end) {
    while (begin < end && is_space(text[begin])) ++begin;
    while (end > begin && is_space(text[end - 1])) --end;
    if (end > begin) entries.emplace_back(text.substr(begin, end - begin));
  };
  std::size_t entry_begin = 0, pos = 0;
  while (pos < text.size()) {
    std::size_t nl = text.find('\n', pos);
    const std::size_t line_end = nl == std::string_view::npos ? text.size() : nl;
    const std::string_view line = text.substr(pos, line_end - pos);
    const std::size_t next = nl == std::string_view::npos ? text.size() : nl + 1;
    if (line == "%" || line == "%\r") {
      flush(entry_begin, pos);
      entry_begin = next;
    }
    pos = next;
  }
  flush(entry_begin, text.size());
  return entries;
}

/// The database files read_fortunes() reads in `dir` (file comment), sorted by name. Throws when
/// `dir` is missing or holds none.
inline std::vector<std::filesystem::path> fortune_files(const std::string& dir = std::string(kFortunesDebianDir)) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    QLIP_THROW(dir, ": not found; install the Debian package fortunes (scripts/setup.sh does)");
  std::vector<fs::path> files;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    auto ends_with = [&](std::string_view suf) {
      return name.size() >= suf.size() && name.compare(name.size() - suf.size(), suf.size(), suf) == 0;
    };
    if (name.empty() || name[0] == '.' || ends_with(".dat") || ends_with(".u8")) continue;
    std::error_code sec;
    if (!it->is_regular_file(sec) || it->is_symlink(sec)) continue;  // off/, the .u8 links
    files.push_back(it->path());
  }
  if (ec) QLIP_THROW(dir, ": cannot list the folder: ", ec.message());
  if (files.empty())
    QLIP_THROW(dir, ": no fortune databases in the folder; install the Debian package fortunes (scripts/setup.sh does)");
  std::sort(files.begin(), files.end(), [](const fs::path& a, const fs::path& b) { return a.filename() < b.filename(); });
  return files;
}

/// Every entry of every database in `dir`, files in name order, entries in file order.
inline std::vector<std::string> read_fortunes(const std::string& dir = std::string(kFortunesDebianDir)) {
  std::vector<std::string> all;
  for (const auto& f : fortune_files(dir)) {
    const std::vector<std::uint8_t> bytes = qlip::detail::read_file_bytes(f.string());
    std::vector<std::string> entries =
        parse_fortune_entries(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
    all.insert(all.end(), std::make_move_iterator(entries.begin()), std::make_move_iterator(entries.end()));
  }
  return all;
}

/// A corpus split in two, each part in the order of the input.
struct TextSplit {
  std::vector<std::string> train;
  std::vector<std::string> held_out;
};

/// True when `entry` belongs to the held-out part (fnv1a64(entry) % every == 0).
inline bool is_held_out(std::string_view entry, std::uint64_t every = kHeldOutEvery) {
  QLIP_CHECK(every >= 1, "held-out rate: every must be at least 1, got ", every);
  return fnv1a64(entry) % every == 0;
}

/// Splits `entries` by is_held_out (file comment).
inline TextSplit split_held_out(const std::vector<std::string>& entries, std::uint64_t every = kHeldOutEvery) {
  TextSplit s;
  for (const std::string& e : entries) (is_held_out(e, every) ? s.held_out : s.train).push_back(e);
  return s;
}

}  // namespace qlip::data
