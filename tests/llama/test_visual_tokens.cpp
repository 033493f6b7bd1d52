/// @file test_visual_tokens.cpp
/// @brief UM³'s visual token layout: codes ⇄ sub-tokens round trip for every group size, the bit
///        order (group 0 = most significant bits, MODEL.md §3.4), the vocabulary map (per-group and
///        shared blocks after <boi>/<eoi>), and the errors for codes and tokens that do not fit.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "common/compare.hpp"
#include "qlip/core/philox.hpp"
#include "qlip/um3/token_layout.hpp"

namespace qlip {
namespace {

using um3::VisualTokenLayout;

TEST(VisualTokens, RoundTripForEveryGroupSize) {
  Philox rng(3);
  std::vector<std::uint32_t> codes(64);
  for (std::size_t i = 0; i < codes.size(); ++i) codes[i] = rng.draw(i, 0)[0] & ((1u << 28) - 1);
  codes[0] = 0;
  codes[1] = (1u << 28) - 1;
  for (int g : {1, 2, 4, 7, 14, 28})
    for (bool shared : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "g = " << g << (shared ? " shared" : " per group"));
      const VisualTokenLayout layout{.text_vocab = 1000, .code_bits = 28, .group_bits = g, .shared_groups = shared};
      layout.validate();
      std::vector<std::int32_t> tokens(codes.size() * static_cast<std::size_t>(layout.groups()));
      layout.tokens_from_codes(codes, tokens);
      for (std::size_t i = 0; i < tokens.size(); ++i) {
        EXPECT_TRUE(layout.is_visual(tokens[i]));
        const int j = static_cast<int>(i % static_cast<std::size_t>(layout.groups()));
        EXPECT_GE(tokens[i], layout.group_first(j));
        EXPECT_LT(tokens[i], layout.group_first(j) + layout.group_values());
      }
      std::vector<std::uint32_t> back(codes.size());
      layout.codes_from_tokens(tokens, back);
      EXPECT_EQ(back, codes);
    }
}

TEST(VisualTokens, GroupZeroHoldsTheMostSignificantBits) {
  const VisualTokenLayout layout{.text_vocab = 10, .code_bits = 28, .group_bits = 14};
  const std::uint32_t code = (5u << 14) | 9u;  // group 0 value 5, group 1 value 9
  std::vector<std::int32_t> t(2);
  layout.tokens_from_codes(std::vector<std::uint32_t>{code}, t);
  EXPECT_EQ(layout.boi(), 10);
  EXPECT_EQ(layout.eoi(), 11);
  EXPECT_EQ(t[0], 12 + 5);
  EXPECT_EQ(t[1], 12 + 16384 + 9);
  EXPECT_EQ(layout.vocab_size(), 12 + 2 * 16384);
  const VisualTokenLayout shared{.text_vocab = 10, .code_bits = 28, .group_bits = 14, .shared_groups = true};
  shared.tokens_from_codes(std::vector<std::uint32_t>{code}, t);
  EXPECT_EQ(t[1], 12 + 9);
  EXPECT_EQ(shared.vocab_size(), 12 + 16384);
  EXPECT_EQ(layout.image_tokens(64), 128);
}

TEST(VisualTokens, BadInputIsNamed) {
  const VisualTokenLayout layout{.text_vocab = 10, .code_bits = 28, .group_bits = 14};
  std::vector<std::int32_t> t(2);
  test::expect_error_naming([&] { layout.tokens_from_codes(std::vector<std::uint32_t>{1u << 28}, t); },
                            "does not fit 28 bits");
  std::vector<std::uint32_t> codes(1);
  test::expect_error_naming([&] { layout.codes_from_tokens(std::vector<std::int32_t>{12 + 16384, 12}, codes); },
                            "token 16396 at 0 is not a value of group 0");
  test::expect_error_naming([&] { layout.codes_from_tokens(std::vector<std::int32_t>{3, 12}, codes); },
                            "token 3 at 0");
  test::expect_error_naming([] { VisualTokenLayout{.text_vocab = 1, .code_bits = 28, .group_bits = 5}.validate(); },
                            "group_bits 5 must divide code_bits 28");
  test::expect_error_naming([&] { um3::check_codes_layout(layout, 24, 64, 64, "codes.safetensors"); },
                            "codes.safetensors: codes of 24 bits");
  test::expect_error_naming([&] { um3::check_codes_layout(layout, 28, 16, 64, "codes.safetensors"); },
                            "16 codes per image, the model was trained on 64");
}

}  // namespace
}  // namespace qlip
