/// @file um3_test_util.hpp
/// @brief The small UM³ vocabulary the um3 tests share.
#pragma once

#include "qlip/um3/sequences.hpp"

namespace qlip::test {

/// Text ids [0, 10) with bos 7, eos 8, pad 9; <boi> 10, <eoi> 11, then two groups of 2 bits
/// (visual ids 12–19): 20 ids in all.
inline um3::Um3Vocab small_um3_vocab() {
  um3::Um3Vocab v;
  v.bos = 7;
  v.eos = 8;
  v.pad = 9;
  v.layout = {10, 4, 2, false};
  v.validate();
  return v;
}

}  // namespace qlip::test
