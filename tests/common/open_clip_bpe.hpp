/// @file open_clip_bpe.hpp
/// @brief open_clip's bpe() loop as open_clip writes it, as an oracle for qlip's faster merge loop:
///        after every merge, rescan every adjacent pair for the lowest merge rank (quadratic per word).
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "qlip/text/detail/bpe_model.hpp"

namespace qlip::test {

/// Token ids of one pre-tokenised word (its bytes); the last byte carries the end-of-word marker
/// when `end_of_word`.
inline std::vector<std::int32_t> reference_bpe(const text::detail::BpeModel& m, std::string_view bytes,
                                               bool end_of_word = true) {
  std::vector<std::int32_t> word;
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    const auto b = static_cast<unsigned char>(bytes[i]);
    word.push_back(end_of_word && i + 1 == bytes.size() ? m.byte_eow_id[b] : m.byte_id[b]);
  }
  while (word.size() > 1) {
    std::int32_t best = -1, left = -1, right = -1, merged = -1;
    for (std::size_t i = 0; i + 1 < word.size(); ++i) {
      auto it = m.merge_table.find(text::detail::BpeModel::pair_key(word[i], word[i + 1]));
      if (it != m.merge_table.end() && (best < 0 || it->second.rank < best))
        best = it->second.rank, left = word[i], right = word[i + 1], merged = it->second.result;
    }
    if (best < 0) break;
    std::vector<std::int32_t> next;
    for (std::size_t i = 0; i < word.size();) {
      if (i + 1 < word.size() && word[i] == left && word[i + 1] == right) {
        next.push_back(merged);
        i += 2;
      } else {
        next.push_back(word[i++]);
      }
    }
    word.swap(next);
  }
  return word;
}

}  // namespace qlip::test
