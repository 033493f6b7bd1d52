/// @file pretokenize.hpp
/// @brief open_clip's split pattern, hand-written:
///        `<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`
///        with re.IGNORECASE, applied like re.findall (positions where nothing matches are skipped).
///
/// open_clip 2.x/3.x spells its special tokens `<start_of_text>` / `<end_of_text>` (OpenAI's
/// original code and HF use `<|startoftext|>`, `<|endoftext|>`; in open_clip those split like any
/// other text). We follow open_clip, the reference for the fixtures.
#pragma once

#include <string_view>
#include <vector>

#include "qlip/text/detail/unicode.hpp"

namespace qlip::text::detail {

/// One piece of the split: [begin, end) in the UTF-32 text; `special` is 0 for ordinary pieces,
/// 1 for <start_of_text>, 2 for <end_of_text>.
struct Piece {
  std::size_t begin;
  std::size_t end;
  int special;
};

/// A character no alternative matches, so findall skips it like whitespace: U+0345 COMBINING
/// GREEK YPOGEGRAMMENI is a mark (not \p{L}), but under IGNORECASE the `regex` module lets the
/// negated class [^\s\p{L}\p{N}] test its case variants too, and it folds to 'ι', a letter.
/// (Checked over all code points with regex 2026.5: the only such character.)
inline bool matches_nothing(char32_t c) { return c == 0x0345 || is_regex_space(c); }

/// Simple case folding for the ASCII pattern letters: the `regex` module with IGNORECASE also
/// matches 'ſ' (U+017F, folds to 's') and the Kelvin sign (U+212A, folds to 'k').
inline char32_t fold_for_match(char32_t c) {
  if (c < 0x80) return (c >= U'A' && c <= U'Z') ? c + 32 : c;
  if (c == 0x017F) return U's';
  if (c == 0x212A) return U'k';
  return c;
}

/// Case-insensitive match of the ASCII literal `lit` at s[i].
inline bool match_literal(std::u32string_view s, std::size_t i, std::string_view lit) {
  if (s.size() - i < lit.size()) return false;
  for (std::size_t k = 0; k < lit.size(); ++k)
    if (fold_for_match(s[i + k]) != static_cast<char32_t>(lit[k])) return false;
  return true;
}

/// Splits cleaned (lower-cased) text into pieces, left to right, trying the alternatives in the
/// pattern's order at each position.
inline std::vector<Piece> split_pieces(std::u32string_view s) {
  static constexpr std::string_view kSpecials[] = {"<start_of_text>", "<end_of_text>"};
  static constexpr std::string_view kContractions[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
  std::vector<Piece> pieces;
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    char32_t c = s[i];
    if (c == U'<') {
      bool hit = false;
      for (int k = 0; k < 2 && !hit; ++k) {
        if (match_literal(s, i, kSpecials[k])) {
          // Only the exact spelling is special: open_clip maps a special piece to its id through
          // the BPE cache, keyed by the literal, so a case-folded match ("<ſtart_of_text>")
          // is split by the pattern as one piece but then BPE-encoded like any other text.
          bool exact = true;
          for (std::size_t q = 0; q < kSpecials[k].size(); ++q)
            exact = exact && s[i + q] == static_cast<char32_t>(kSpecials[k][q]);
          pieces.push_back({i, i + kSpecials[k].size(), exact ? k + 1 : 0});
          i += kSpecials[k].size();
          hit = true;
        }
      }
      if (hit) continue;
    }
    if (c == U'\'') {
      bool hit = false;
      for (std::string_view lit : kContractions) {
        if (match_literal(s, i, lit)) {
          pieces.push_back({i, i + lit.size(), 0});
          i += lit.size();
          hit = true;
          break;
        }
      }
      if (hit) continue;
    }
    if (is_letter(c)) {
      std::size_t j = i + 1;
      while (j < n && is_letter(s[j])) ++j;
      pieces.push_back({i, j, 0});
      i = j;
    } else if (is_number(c)) {
      pieces.push_back({i, i + 1, 0});  // [\p{N}]: one digit per piece
      ++i;
    } else if (matches_nothing(c)) {
      ++i;  // no alternative matches here
    } else {
      std::size_t j = i + 1;
      while (j < n && !matches_nothing(s[j]) && !is_letter(s[j]) && !is_number(s[j])) ++j;
      pieces.push_back({i, j, 0});
      i = j;
    }
  }
  return pieces;
}

}  // namespace qlip::text::detail
