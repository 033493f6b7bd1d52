/// @file cleanup.hpp
/// @brief open_clip's text cleanup ("lower"): ftfy.fix_text, html.unescape twice, strip,
///        whitespace collapse, str.lower(), reimplemented on UTF-32.
///
/// What is reproduced, step by step (Python behaviour in brackets):
///  - ftfy.fix_text with its default config, per line segment [fix_text splits after each '\n';
///    the "auto" HTML mode turns itself off for good once a segment contains '<'], each segment
///    looped to a fixed point over: unescape_html, fix_c1_controls, fix_latin_ligatures,
///    fix_character_width, uncurl_quotes, fix_line_breaks, remove_terminal_escapes,
///    remove_control_chars, NFC. The tables are Python's own (generated).
///  - NOT reproduced: ftfy's fix_encoding (mojibake detection and repair: "cafÃ©" → "café"). Text
///    that needs it keeps its mojibake here; tests/data/tokenizer/excluded.json lists such strings.
///    fix_surrogates has nothing to do: valid UTF-8 holds no surrogates (invalid bytes → U+FFFD).
///  - html.unescape twice [all HTML5 named references, longest-prefix matching of the legacy
///    names without ';', numeric references with the HTML5 replacement rules].
///  - " ".join(text.split()), strip, lower() [Python whitespace, full lower-case mapping].
#pragma once

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <string>
#include <string_view>

#include "qlip/text/detail/ftfy_tables.hpp"
#include "qlip/text/detail/html_entity_table.hpp"
#include "qlip/text/detail/unicode.hpp"

namespace qlip::text::detail {

template <std::size_t N>
const HtmlEntity* find_entity(const HtmlEntity (&table)[N], std::string_view name) {
  auto it = std::lower_bound(std::begin(table), std::end(table), name,
                             [](const HtmlEntity& e, std::string_view v) { return e.name < v; });
  return (it != std::end(table) && it->name == name) ? it : nullptr;
}

template <std::size_t N>
const CodepointMap* find_codepoint(const CodepointMap (&table)[N], char32_t c) {
  auto it = std::lower_bound(std::begin(table), std::end(table), c,
                             [](const CodepointMap& e, char32_t v) { return e.from < v; });
  return (it != std::end(table) && it->from == c) ? it : nullptr;
}

inline void append_utf8_text(std::u32string& out, std::string_view utf8) { out += decode_utf8(utf8); }

inline bool is_ascii_digit(char32_t c) { return c >= U'0' && c <= U'9'; }
inline bool is_ascii_hex(char32_t c) {
  return is_ascii_digit(c) || ((c | 0x20) >= U'a' && (c | 0x20) <= U'f');
}
inline bool is_ascii_alnum(char32_t c) {
  return is_ascii_digit(c) || ((c | 0x20) >= U'a' && (c | 0x20) <= U'z');
}

/// The character a numeric reference stands for, by html.unescape's rules (HTML5 spec):
/// Windows-1252 fix-ups for 0x80..0x9F and a few others, U+FFFD for surrogates and values beyond
/// U+10FFFF, nothing for the "invalid code points" (controls, noncharacters).
inline void append_numeric_reference(std::u32string& out, std::uint64_t num) {
  if (const CodepointMap* m = find_codepoint(kHtmlInvalidCharrefs, static_cast<char32_t>(std::min<std::uint64_t>(num, 0x110000)))) {
    if (num <= 0x10FFFF) {
      append_utf8_text(out, m->to);
      return;
    }
  }
  if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) {
    out += kReplacementChar;
    return;
  }
  auto c = static_cast<char32_t>(num);
  if (std::binary_search(std::begin(kHtmlInvalidCodepoints), std::end(kHtmlInvalidCodepoints), c)) return;
  out += c;
}

/// Python html.unescape: replaces every match of
/// `&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)`.
inline std::u32string html_unescape(std::u32string_view s) {
  if (s.find(U'&') == std::u32string_view::npos) return std::u32string(s);
  std::u32string out;
  out.reserve(s.size());
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    if (s[i] != U'&') {
      out += s[i++];
      continue;
    }
    std::size_t j = i + 1;
    if (j < n && s[j] == U'#') {
      bool hex = j + 1 < n && (s[j + 1] == U'x' || s[j + 1] == U'X');
      std::size_t k = j + (hex ? 2 : 1);
      std::size_t start = k;
      std::uint64_t num = 0;
      while (k < n && (hex ? is_ascii_hex(s[k]) : is_ascii_digit(s[k]))) {
        std::uint64_t d = is_ascii_digit(s[k]) ? s[k] - U'0' : (s[k] | 0x20) - U'a' + 10;
        num = std::min<std::uint64_t>(num * (hex ? 16 : 10) + d, 0x7FFFFFFFull);  // saturate: > U+10FFFF anyway
        ++k;
      }
      if (k == start) {  // "&#" or "&#x" without digits: no match here ('#' ends the named form)
        out += s[i++];
        continue;
      }
      if (k < n && s[k] == U';') ++k;
      append_numeric_reference(out, num);
      i = k;
      continue;
    }
    // Named: up to 32 characters outside "\t\n\f <&#;", then an optional ';'.
    std::size_t k = j;
    while (k < n && k - j < 32) {
      char32_t c = s[k];
      if (c == U'\t' || c == U'\n' || c == U'\f' || c == U' ' || c == U'<' || c == U'&' || c == U'#' || c == U';') break;
      ++k;
    }
    if (k == j) {
      out += s[i++];
      continue;
    }
    if (k < n && s[k] == U';') ++k;
    std::string name = encode_utf8(s.substr(j, k - j));
    if (const HtmlEntity* e = find_entity(kHtml5Entities, name)) {
      append_utf8_text(out, e->text);
    } else {
      // Longest prefix (at least 2 characters) that is a legacy name without ';'.
      std::u32string_view body = s.substr(j, k - j);
      bool found = false;
      for (std::size_t x = body.size() - 1; x > 1 && !found; --x) {
        if (const HtmlEntity* p = find_entity(kHtml5Entities, encode_utf8(body.substr(0, x)))) {
          append_utf8_text(out, p->text);
          out += body.substr(x);
          found = true;
        }
      }
      if (!found) {
        out += U'&';
        out += body;
      }
    }
    i = k;
  }
  return out;
}

/// ftfy.fixes.unescape_html: only complete references `&#?[0-9A-Za-z]{1,24};`, with html5 names
/// plus ftfy's all-caps variants ("&NTILDE;"), and numeric ones only if fully consumed.
inline std::u32string ftfy_unescape_html(std::u32string_view s) {
  std::u32string out;
  out.reserve(s.size());
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    if (s[i] == U'&') {
      std::size_t j = i + 1;
      if (j < n && s[j] == U'#') ++j;
      std::size_t k = j;
      while (k < n && k - j < 24 && is_ascii_alnum(s[k])) ++k;
      if (k > j && k < n && s[k] == U';') {
        std::u32string_view match = s.substr(i, k + 1 - i);
        std::string name = encode_utf8(match.substr(1));
        const HtmlEntity* e = find_entity(kHtml5Entities, name);
        if (!e) e = find_entity(kFtfyExtraEntities, name);
        if (e) {
          append_utf8_text(out, e->text);
          i = k + 1;
          continue;
        }
        if (j == i + 2) {  // "&#...;": keep html.unescape's result only if it used the ';'
          std::u32string u = html_unescape(match);
          out += (u.find(U';') == std::u32string::npos) ? u : std::u32string(match);
          i = k + 1;
          continue;
        }
      }
    }
    out += s[i++];
  }
  return out;
}

/// ftfy's character-level fixers after unescape_html, in its order (one pass).
inline std::u32string ftfy_fix_characters(std::u32string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (char32_t c : s) {
    // fix_c1_controls: U+0080..U+009F read as (sloppy) Windows-1252.
    if (c >= 0x80 && c <= 0x9F) {
      if (const CodepointMap* m = find_codepoint(kFtfyC1Controls, c)) {
        append_utf8_text(out, m->to);
        continue;
      }
    }
    out += c;
  }
  std::u32string t;
  t.reserve(out.size());
  for (char32_t c : out) {  // fix_latin_ligatures, then fix_character_width (maps are disjoint)
    if (const CodepointMap* m = find_codepoint(kFtfyLigatures, c)) {
      append_utf8_text(t, m->to);
    } else if (const CodepointMap* w = (c == 0x3000 || (c >= 0xFF01 && c < 0xFFF0)) ? find_codepoint(kFtfyWidthMap, c) : nullptr) {
      append_utf8_text(t, w->to);
    } else {
      t += c;
    }
  }
  // uncurl_quotes and fix_line_breaks (\r\n, \r, U+2028, U+2029, U+0085 → \n).
  out.clear();
  for (std::size_t i = 0; i < t.size(); ++i) {
    char32_t c = t[i];
    if (c == 0x02BC || (c >= 0x2018 && c <= 0x201B)) {
      out += U'\'';
    } else if (c >= 0x201C && c <= 0x201F) {
      out += U'"';
    } else if (c == U'\r') {
      out += U'\n';
      if (i + 1 < t.size() && t[i + 1] == U'\n') ++i;
    } else if (c == 0x2028 || c == 0x2029 || c == 0x85) {
      out += U'\n';
    } else {
      out += c;
    }
  }
  // remove_terminal_escapes: ESC '[' (\d|;)* [a-zA-Z]   (\d is any Unicode decimal digit in Python).
  t.clear();
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (out[i] == 0x1B && i + 1 < out.size() && out[i + 1] == U'[') {
      std::size_t k = i + 2;
      while (k < out.size() && (out[k] == U';' || is_decimal(out[k]))) ++k;
      if (k < out.size() && out[k] < 0x80 && ((out[k] | 0x20) >= U'a' && (out[k] | 0x20) <= U'z')) {
        i = k;
        continue;
      }
    }
    t += out[i];
  }
  // remove_control_chars.
  out.clear();
  for (char32_t c : t) {
    if (!std::binary_search(std::begin(kFtfyControlChars), std::end(kFtfyControlChars), c)) out += c;
  }
  return out;
}

/// ftfy.fix_text with the default config minus fix_encoding (see the file comment).
inline std::u32string ftfy_fix_text(std::u32string_view text) {
  constexpr std::size_t kMaxDecodeLength = 1000000;  // ftfy's max_decode_length
  std::u32string result;
  result.reserve(text.size());
  bool unescape = true;  // "auto": off from the first segment holding '<' on (ftfy keeps it off)
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t brk = text.find(U'\n', pos);
    brk = (brk == std::u32string_view::npos) ? text.size() : brk + 1;
    brk = std::min(brk, pos + kMaxDecodeLength);
    std::u32string seg(text.substr(pos, brk - pos));
    if (seg.find(U'<') != std::u32string::npos) unescape = false;
    // fix_and_explain: repeat the whole chain until nothing changes.
    for (int round = 0; round < 64; ++round) {  // a bound for safety; real text settles in 1-3 rounds
      std::u32string before = seg;
      if (unescape) seg = ftfy_unescape_html(seg);
      seg = nfc(ftfy_fix_characters(seg));
      if (seg == before) break;
    }
    result += seg;
    pos = brk;
  }
  return result;
}

/// open_clip's `_clean_lower`: whitespace_clean(basic_clean(text)).lower() on UTF-32.
inline std::u32string clean_lower(std::u32string_view text) {
  std::u32string t = html_unescape(html_unescape(ftfy_fix_text(text)));
  // strip + " ".join(split()) + strip: runs of Python whitespace become one space, ends trimmed.
  std::u32string collapsed;
  collapsed.reserve(t.size());
  bool pending_space = false;
  for (char32_t c : t) {
    if (is_python_space(c)) {
      pending_space = !collapsed.empty();
      continue;
    }
    if (pending_space) collapsed += U' ';
    pending_space = false;
    collapsed += c;
  }
  return python_lower(collapsed);
}

}  // namespace qlip::text::detail
