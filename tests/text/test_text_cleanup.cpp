/// @file test_text_cleanup.cpp
/// @brief Unit tests of the tokenizer's building blocks: UTF-8 handling, Python-compatible
///        lower-casing, html.unescape / ftfy rules, the split pattern and the byte map. Expected
///        values are what Python 3.11 + ftfy 6.3 + open_clip print for the same input.

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "qlip/text/clip_tokenizer.hpp"

namespace qlip::text::detail {
namespace {

std::u32string u32(std::string_view s) { return decode_utf8(s); }
std::string u8(std::u32string_view s) { return encode_utf8(s); }

TEST(TextUnicode, Utf8RoundTripAndReplacement) {
  std::string s = "a\xC3\xA9\xE6\x9D\xB1\xF0\x9F\x91\x8D";  // a é 東 👍
  EXPECT_EQ(u32(s), (std::u32string{U'a', 0xE9, 0x6771, 0x1F44D}));
  EXPECT_EQ(u8(u32(s)), s);
  EXPECT_EQ(u32("\xC0\xAF"), (std::u32string{0xFFFD, 0xFFFD}));  // overlong: two maximal subparts
  EXPECT_EQ(u32("\xED\xA0\x80"), (std::u32string{0xFFFD, 0xFFFD, 0xFFFD}));  // surrogate
  EXPECT_EQ(u32("\xF0\x9F\x91"), (std::u32string{0xFFFD}));  // truncated: one
  EXPECT_EQ(u32("\xF0\x9F\x91x"), (std::u32string{0xFFFD, U'x'}));
}

TEST(TextUnicode, PythonLower) {
  EXPECT_EQ(u8(python_lower(u32("HELLO Wörld ÀÉ"))), "hello wörld àé");
  EXPECT_EQ(u8(python_lower(u32("İ"))), "i\xCC\x87");  // 'İ'.lower() == 'i̇'
  EXPECT_EQ(u8(python_lower(u32("ΟΔΟΣ"))), "οδος");    // final sigma
  EXPECT_EQ(u8(python_lower(u32("Σ"))), "σ");
  EXPECT_EQ(u8(python_lower(u32("ΑΣ.Β"))), "ασ.β");  // a cased letter follows (past the ignorable '.')
}

TEST(TextUnicode, Classes) {
  EXPECT_TRUE(is_letter(U'a'));
  EXPECT_TRUE(is_letter(0x6771));
  EXPECT_FALSE(is_letter(U'1'));
  EXPECT_TRUE(is_number(0x00BD));  // ½ (No)
  EXPECT_TRUE(is_number(0x216B));  // Ⅻ (Nl)
  EXPECT_FALSE(is_number(U'a'));
  EXPECT_TRUE(is_python_space(0x3000));
  EXPECT_TRUE(is_python_space(0x1C));
  EXPECT_FALSE(is_regex_space(0x1C));
  EXPECT_FALSE(is_python_space(0x200B));
}

TEST(TextCleanup, HtmlUnescapeLikePython) {
  auto un = [](std::string_view s) { return u8(html_unescape(u32(s))); };
  EXPECT_EQ(un("Tom &amp; Jerry"), "Tom & Jerry");
  EXPECT_EQ(un("&amp"), "&");
  EXPECT_EQ(un("&ampxyz"), "&xyz");
  EXPECT_EQ(un("&notit;"), "\xC2\xACit;");
  EXPECT_EQ(un("&#65;&#x42;&#0067"), "ABC");
  EXPECT_EQ(un("&#150;"), "\xE2\x80\x93");  // Windows-1252 fix-up: en dash
  EXPECT_EQ(un("&#xD800;"), "\xEF\xBF\xBD");
  EXPECT_EQ(un("&#1;x"), "x");              // invalid code point: dropped
  EXPECT_EQ(un("&#;&#x;&unknown;"), "&#;&#x;&unknown;");
  EXPECT_EQ(un("&NTILDE;"), "&NTILDE;");    // not HTML5 (ftfy knows it)
}

TEST(TextCleanup, FtfyFixes) {
  auto ftfy = [](std::string_view s) { return u8(ftfy_fix_text(u32(s))); };
  EXPECT_EQ(ftfy("&NTILDE; &amp;amp;lt;"), "\xC3\x91 <");         // ftfy unescapes to a fixed point
  EXPECT_EQ(ftfy("a < b &amp; c"), "a < b &amp; c");              // '<' turns HTML unescaping off
  EXPECT_EQ(ftfy("&amp;\n<b>\n&amp;"), "&\n<b>\n&amp;");          // ... from that segment on
  EXPECT_EQ(ftfy("\xEF\xAC\x81nal"), "final");                    // ﬁ ligature
  EXPECT_EQ(ftfy("\xEF\xBC\xAC\xEF\xBC\xAF\xE3\x80\x80X"), "LO X");  // fullwidth, U+3000
  EXPECT_EQ(ftfy("\xE2\x80\x9Chi\xE2\x80\x9D it\xE2\x80\x99s"), "\"hi\" it's");
  EXPECT_EQ(ftfy("\x1b[31mred\x1b[0m\x07"), "red");
  EXPECT_EQ(ftfy("a\r\nb\rc"), "a\nb\nc");
  EXPECT_EQ(ftfy("Cafe\xCC\x81"), "Caf\xC3\xA9");  // NFC
  EXPECT_EQ(ftfy("\xC2\x93q\xC2\x94"), "\"q\"");   // C1 controls as Windows-1252, then uncurled
}

TEST(TextCleanup, CleanText) {
  EXPECT_EQ(clean_text("  Hello \t\n  WORLD  "), "hello world");
  EXPECT_EQ(clean_text(""), "");
  EXPECT_EQ(clean_text(" \xC2\xA0 \xE3\x80\x80 "), "");
  EXPECT_EQ(clean_text("&amp;lt;b&amp;gt;"), "<b>");
  EXPECT_EQ(clean_text("DON\xE2\x80\x99T"), "don't");
}

std::vector<std::string> split(std::string_view s) {
  std::u32string t = u32(s);
  std::vector<std::string> out;
  for (const Piece& p : split_pieces(t)) {
    std::string piece = p.special ? "#" : "";
    piece += u8(std::u32string_view(t).substr(p.begin, p.end - p.begin));
    out.push_back(piece);
  }
  return out;
}

TEST(TextSplit, OpenClipPattern) {
  using V = std::vector<std::string>;
  EXPECT_EQ(split("don't stop"), (V{"don", "'t", "stop"}));
  EXPECT_EQ(split("''s"), (V{"''", "s"}));
  EXPECT_EQ(split("'dog"), (V{"'d", "og"}));
  EXPECT_EQ(split("abc123"), (V{"abc", "1", "2", "3"}));
  EXPECT_EQ(split("hi!!! ?"), (V{"hi", "!!!", "?"}));
  EXPECT_EQ(split("a<end_of_text>b"), (V{"a", "#<end_of_text>", "b"}));
  EXPECT_EQ(split("!<start_of_text>"), (V{"!<", "start", "_", "of", "_", "text", ">"}));
  EXPECT_EQ(split("<|endoftext|>"), (V{"<|", "endoftext", "|>"}));
  EXPECT_EQ(split("it'\xC5\xBF"), (V{"it", "'\xC5\xBF"}));  // 'ſ matches 's under IGNORECASE
  EXPECT_EQ(split("e\xCC\x81"), (V{"e", "\xCC\x81"}));       // a combining mark is not a letter
  EXPECT_EQ(split(""), V{});
}

TEST(TextByteMap, Gpt2Map) {
  const auto& m = byte_to_unicode();
  EXPECT_EQ(m['!'], U'!');
  EXPECT_EQ(m[0], 0x100u);
  EXPECT_EQ(m[' '], 0x120u);  // 'Ġ'
  EXPECT_EQ(m[0xAD], 0x143u);
  for (int b = 0; b < 256; ++b) EXPECT_EQ(unicode_to_byte(m[b]), b);
  EXPECT_EQ(unicode_to_byte(U' '), -1);
}

}  // namespace
}  // namespace qlip::text::detail
