/// @file unicode.hpp
/// @brief UTF-8 ⇄ UTF-32, Python-compatible character classes (str.isspace, regex \s, \p{L},
///        \p{N}), Python str.lower() and NFC normalisation.
///
/// The tokenizer must reproduce what open_clip does in Python, so every predicate here is named
/// after, and documented against, the Python behaviour it stands in for. \p{L}, \p{N} and the
/// whitespace set come from tables generated out of Python and its `regex` module
/// (unicode_tables.hpp), because utf8proc (Debian 12: 2.6, Unicode 13) lags behind the `regex`
/// module by several Unicode versions (~9,600 newer letters). Lower-casing and NFC use utf8proc;
/// lower() was checked against Python 3.11 on every code point (identical).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <iterator>
#include <string>
#include <string_view>

#include <utf8proc.h>

#include "qlip/core/error.hpp"
#include "qlip/text/detail/unicode_tables.hpp"

namespace qlip::text::detail {

inline constexpr char32_t kReplacementChar = 0xFFFD;

/// Appends the UTF-8 encoding of `c` (which must be a Unicode scalar value or a lone surrogate
/// never produced here) to `out`.
inline void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

inline std::string encode_utf8(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) append_utf8(out, c);
  return out;
}

/// Decodes UTF-8; every maximal invalid subsequence becomes one U+FFFD. This is Python's
/// bytes.decode('utf-8', errors='replace') (open_clip's decode uses it), and it is also how qlip
/// treats invalid UTF-8 handed to encode() (a Python str cannot hold invalid UTF-8 at all).
inline std::u32string decode_utf8(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    unsigned char b = p[i];
    if (b < 0x80) {
      out += static_cast<char32_t>(b);
      ++i;
      continue;
    }
    int need = 0;
    char32_t c = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte (rejects overlongs, surrogates)
    if (b >= 0xC2 && b <= 0xDF) {
      need = 1, c = b & 0x1F;
    } else if (b >= 0xE0 && b <= 0xEF) {
      need = 2, c = b & 0x0F;
      if (b == 0xE0) lo = 0xA0;
      if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
      need = 3, c = b & 0x07;
      if (b == 0xF0) lo = 0x90;
      if (b == 0xF4) hi = 0x8F;
    } else {
      out += kReplacementChar;
      ++i;
      continue;
    }
    std::size_t j = i + 1;
    bool ok = true;
    for (int k = 0; k < need; ++k, ++j) {
      unsigned char lo_k = k == 0 ? lo : 0x80, hi_k = k == 0 ? hi : 0xBF;
      if (j >= n || p[j] < lo_k || p[j] > hi_k) {
        ok = false;
        break;
      }
      c = (c << 6) | (p[j] & 0x3F);
    }
    out += ok ? c : kReplacementChar;
    i = j;  // on failure j is the first byte that did not fit: decoding resumes there
  }
  return out;
}

/// Python str.isspace() (and so str.split() / str.strip() with no argument).
inline bool is_python_space(char32_t c) {
  if (c == U' ') return true;
  if (c < 0x09) return false;
  return std::binary_search(std::begin(kPythonSpaces), std::end(kPythonSpaces), c);
}

/// `\s` of the `regex` module in a str pattern: Unicode White_Space, which is str.isspace()
/// without U+001C..U+001F.
inline bool is_regex_space(char32_t c) { return is_python_space(c) && !(c >= 0x1C && c <= 0x1F); }

inline utf8proc_category_t category(char32_t c) {
  return utf8proc_category(static_cast<utf8proc_int32_t>(c));
}

/// True when `c` lies in one of the sorted, disjoint ranges.
template <std::size_t N>
bool in_ranges(const CodepointRange (&ranges)[N], char32_t c) {
  auto it = std::upper_bound(std::begin(ranges), std::end(ranges), c,
                             [](char32_t v, const CodepointRange& r) { return v < r.first; });
  return it != std::begin(ranges) && c <= std::prev(it)->last;
}

/// `\p{L}` as the `regex` module defines it (letters: Lu, Ll, Lt, Lm, Lo).
inline bool is_letter(char32_t c) {
  if (c < 0x80) return (c | 0x20) >= U'a' && (c | 0x20) <= U'z';
  return in_ranges(kRegexLetterRanges, c);
}

/// `\p{N}` as the `regex` module defines it (numbers: Nd, Nl, No).
inline bool is_number(char32_t c) {
  if (c < 0x80) return c >= U'0' && c <= U'9';
  return in_ranges(kRegexNumberRanges, c);
}

/// Python's `\d` in a str pattern: general category Nd.
inline bool is_decimal(char32_t c) {
  if (c < 0x80) return c >= U'0' && c <= U'9';
  return category(c) == UTF8PROC_CATEGORY_ND;
}

/// Unicode "Case_Ignorable" as CPython's lower() uses it (generated table).
inline bool is_case_ignorable(char32_t c) { return in_ranges(kCaseIgnorableRanges, c); }

/// Unicode "Cased" (Lu, Ll, Lt, Other_Lowercase such as 'ª', Other_Uppercase), for characters that
/// are not case-ignorable — the only ones the Final_Sigma rule asks about (generated table).
inline bool is_cased(char32_t c) { return in_ranges(kCasedRanges, c); }

/// Python str.lower(): the full lower-case mapping. Beyond utf8proc's simple mapping that means
/// 'İ' (U+0130) → "i̇" (i + U+0307, SpecialCasing) and the Final_Sigma rule, which CPython applies:
/// 'Σ' becomes 'ς' when a cased letter precedes it and none follows (case-ignorables skipped).
inline std::u32string python_lower(std::u32string_view s) {
  std::u32string out;
  out.reserve(s.size() + 2);
  const std::size_t n = s.size();
  for (std::size_t i = 0; i < n; ++i) {
    char32_t c = s[i];
    if (c < 0x80) {
      out += (c >= U'A' && c <= U'Z') ? c + 32 : c;
    } else if (c == 0x0130) {
      out += U'i';
      out += static_cast<char32_t>(0x0307);
    } else if (c == 0x03A3) {
      std::size_t j = i;
      while (j > 0 && is_case_ignorable(s[j - 1])) --j;
      bool final_sigma = j > 0 && is_cased(s[j - 1]);
      if (final_sigma) {
        std::size_t k = i + 1;
        while (k < n && is_case_ignorable(s[k])) ++k;
        final_sigma = k == n || !is_cased(s[k]);
      }
      out += final_sigma ? static_cast<char32_t>(0x03C2) : static_cast<char32_t>(0x03C3);
    } else {
      out += static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c)));
    }
  }
  return out;
}

/// Unicode NFC (what ftfy.fix_text's final unicodedata.normalize('NFC') does).
inline std::u32string nfc(std::u32string_view s) {
  bool ascii = std::all_of(s.begin(), s.end(), [](char32_t c) { return c < 0x80; });
  if (ascii) return std::u32string(s);  // ASCII is always in NFC
  std::string utf8 = encode_utf8(s);
  utf8proc_uint8_t* mapped = nullptr;
  utf8proc_ssize_t len = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(utf8.data()),
                                      static_cast<utf8proc_ssize_t>(utf8.size()), &mapped,
                                      static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (len < 0) {
    // Only invalid code points make utf8proc fail, and decode_utf8 never produces them.
    QLIP_THROW("utf8proc NFC normalisation failed: ", utf8proc_errmsg(len));
  }
  std::u32string out = decode_utf8(std::string_view(reinterpret_cast<const char*>(mapped), static_cast<std::size_t>(len)));
  std::free(mapped);
  return out;
}

}  // namespace qlip::text::detail
