/// @file token_layout.hpp
/// @brief Where QLIP's visual tokens live in the Llama vocabulary of the unified model (UM³,
///        MODEL.md §8.3, docs/UM3.md): each patch's L-bit code is split into G = L/g sub-tokens of
///        g bits (group 0 = the most significant bits, MODEL.md §3.4), raster order, framed by
///        begin- and end-of-image tokens placed right after the text vocabulary.
///
///   ids [0, text_vocab)                       text tokens (the text tokenizer's, specials included)
///   text_vocab, text_vocab + 1                <boi>, <eoi>
///   visual_base + j·2^g + v  (per-group)      value v of group j (G blocks of 2^g)
///   visual_base + v          (shared)         value v of any group (one block of 2^g)
///
/// With L = 28 and g = 14 an image of N patches is 2N sub-tokens (the paper's "≈ 500 visual tokens"
/// per 256-patch image, MODEL.md §8.3). The layout is part of a trained model: a codes file or a
/// model folder made for another layout is refused (check_codes_layout).
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "qlip/core/error.hpp"

namespace qlip::um3 {

struct VisualTokenLayout {
  std::int32_t text_vocab = 0;  ///< text ids are [0, text_vocab)
  int code_bits = 28;           ///< L, bits per patch code
  int group_bits = 14;          ///< g, bits per sub-token (divides L)
  bool shared_groups = false;   ///< every group draws from one block of 2^g ids

  int groups() const { return code_bits / group_bits; }
  std::int64_t group_values() const { return std::int64_t{1} << group_bits; }
  std::int32_t boi() const { return text_vocab; }
  std::int32_t eoi() const { return text_vocab + 1; }
  std::int32_t visual_base() const { return text_vocab + 2; }
  /// Text, the two image delimiters and the visual blocks.
  std::int64_t vocab_size() const { return visual_base() + (shared_groups ? 1 : groups()) * group_values(); }
  /// Sub-tokens (without delimiters) of an image of `patches` codes.
  std::int64_t image_tokens(std::int64_t patches) const { return patches * groups(); }

  /// Throws unless 1 ≤ g ≤ L ≤ 32, g divides L and the vocabulary fits int32 (g = 28 is one id
  /// per code: a valid layout, 2^28 visual ids, too wide for a practical softmax).
  void validate() const {
    QLIP_CHECK(text_vocab >= 0, "visual token layout: text_vocab must be >= 0, got ", text_vocab);
    QLIP_CHECK(code_bits >= 1 && code_bits <= 32, "visual token layout: code_bits must be in [1, 32], got ", code_bits);
    QLIP_CHECK(group_bits >= 1 && code_bits % group_bits == 0, "visual token layout: group_bits ", group_bits,
               " must divide code_bits ", code_bits);
    QLIP_CHECK(vocab_size() <= INT32_MAX, "visual token layout: ", vocab_size(), " ids do not fit int32");
  }

  /// First id of group j's block: [first, first + 2^g) are its values.
  std::int32_t group_first(int j) const {
    return visual_base() + static_cast<std::int32_t>((shared_groups ? 0 : j) * group_values());
  }
  /// The id of value v of group j.
  std::int32_t sub_token(int j, std::uint32_t v) const { return group_first(j) + static_cast<std::int32_t>(v); }
  bool is_visual(std::int32_t id) const { return id >= visual_base() && id < vocab_size(); }

  /// The G sub-tokens of each of the N codes (each < 2^L), in raster order, group 0 first:
  /// out[n·G + j] = sub_token(j, (code_n >> g·(G−1−j)) & (2^g − 1)).
  void tokens_from_codes(std::span<const std::uint32_t> codes, std::span<std::int32_t> out) const {
    const int g = groups();
    QLIP_CHECK(out.size() == codes.size() * static_cast<std::size_t>(g), "visual tokens: ", out.size(),
               " slots for ", codes.size(), " codes of ", g, " sub-tokens");
    const std::uint64_t limit = std::uint64_t{1} << code_bits, mask = static_cast<std::uint64_t>(group_values() - 1);
    for (std::size_t n = 0; n < codes.size(); ++n) {
      QLIP_CHECK(codes[n] < limit, "visual tokens: code ", codes[n], " of patch ", n, " does not fit ", code_bits,
                 " bits");
      for (int j = 0; j < g; ++j) {
        const auto v = static_cast<std::uint32_t>((codes[n] >> (group_bits * (g - 1 - j))) & mask);
        out[n * static_cast<std::size_t>(g) + static_cast<std::size_t>(j)] = sub_token(j, v);
      }
    }
  }

  /// The inverse: N·G sub-tokens back to N codes. A token that is not a value of its position's
  /// group is an error naming it and its position.
  void codes_from_tokens(std::span<const std::int32_t> tokens, std::span<std::uint32_t> codes) const {
    const int g = groups();
    QLIP_CHECK(tokens.size() == codes.size() * static_cast<std::size_t>(g), "visual tokens: ", tokens.size(),
               " sub-tokens for ", codes.size(), " codes of ", g);
    for (std::size_t n = 0; n < codes.size(); ++n) {
      std::uint32_t code = 0;
      for (int j = 0; j < g; ++j) {
        const std::size_t at = n * static_cast<std::size_t>(g) + static_cast<std::size_t>(j);
        const std::int64_t v = static_cast<std::int64_t>(tokens[at]) - group_first(j);
        QLIP_CHECK(v >= 0 && v < group_values(), "visual tokens: token ", tokens[at], " at ", at,
                   " is not a value of group ", j, " (ids ", group_first(j), " to ", group_first(j) + group_values() - 1,
                   ")");
        code = (code << group_bits) | static_cast<std::uint32_t>(v);
      }
      codes[n] = code;
    }
  }

  bool operator==(const VisualTokenLayout&) const = default;
};

/// Throws unless a codes file's bits per code and tokens per image are what the layout and the
/// model expect (a codes file from another QLIP, or for another layout, is refused by name).
inline void check_codes_layout(const VisualTokenLayout& layout, int file_bits, std::int64_t file_patches,
                               std::int64_t model_patches, const std::string& path) {
  QLIP_CHECK(file_bits == layout.code_bits, path, ": codes of ", file_bits, " bits, the token layout splits ",
             layout.code_bits, "-bit codes into ", layout.groups(), " sub-tokens of ", layout.group_bits, " bits");
  QLIP_CHECK(file_patches == model_patches, path, ": ", file_patches, " codes per image, the model was trained on ",
             model_patches);
}

}  // namespace qlip::um3
