/// @file byte_map.hpp
/// @brief GPT-2's reversible byte → printable-character map (open_clip `bytes_to_unicode`).
///
/// BPE vocabularies store tokens as strings of these characters: a byte that is printable Latin-1
/// ('!'..'~', '¡'..'¬', '®'..'ÿ') maps to itself, the other 68 bytes to U+0100.. in byte order,
/// so no token contains whitespace or control characters.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "qlip/text/detail/unicode.hpp"

namespace qlip::text::detail {

/// byte → code point, as bytes_to_unicode() builds it.
inline const std::array<char32_t, 256>& byte_to_unicode() {
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> t{};
    auto printable = [](int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); };
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) t[b] = printable(b) ? static_cast<char32_t>(b) : next++;
    return t;
  }();
  return table;
}

/// Code point → byte for the 256 characters of the map, -1 for anything else.
inline int unicode_to_byte(char32_t c) {
  static const std::array<std::int16_t, 512> table = [] {
    std::array<std::int16_t, 512> t{};
    t.fill(-1);
    const auto& fwd = byte_to_unicode();
    for (int b = 0; b < 256; ++b) t[fwd[b]] = static_cast<std::int16_t>(b);
    return t;
  }();
  return c < 512 ? table[c] : -1;
}

/// The UTF-8 token string of one byte (what vocab.json / merges.txt spell).
inline std::string byte_symbol(unsigned char b) {
  std::string s;
  append_utf8(s, byte_to_unicode()[b]);
  return s;
}

}  // namespace qlip::text::detail
