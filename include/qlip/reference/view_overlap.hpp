/// @file view_overlap.hpp
/// @brief Whether two views may share memory: the check behind "y must not alias x" in training
///        forwards whose backward re-reads x. Address arithmetic only (works for device views too).
#pragma once

#include <cstdint>
#include <functional>
#include <utility>

#include "qlip/core/tensor.hpp"

namespace qlip::detail {

/// True when the address ranges [lowest element, highest element] of a and b intersect. Conservative:
/// two interleaved views that touch disjoint elements of one buffer also count as overlapping.
/// Empty views overlap nothing.
/// @tparam A, B element types (either may be const)
/// @tparam R, S ranks
/// @tparam M memory space
template <class A, int R, class B, int S, class M>
bool views_overlap(const TensorView<A, R, M>& a, const TensorView<B, S, M>& b) {
  if (a.empty() || b.empty()) return false;
  auto range = [](const auto& v, int rank, std::size_t elem) {
    std::int64_t lo = 0, hi = 0;
    for (int d = 0; d < rank; ++d) {
      const std::int64_t span = (v.size(d) - 1) * v.stride(d);
      (span < 0 ? lo : hi) += span;
    }
    const auto* p = reinterpret_cast<const unsigned char*>(v.data());
    return std::pair<const unsigned char*, const unsigned char*>{p + lo * static_cast<std::int64_t>(elem),
                                                                 p + (hi + 1) * static_cast<std::int64_t>(elem)};
  };
  const auto [a0, a1] = range(a, R, sizeof(A));
  const auto [b0, b1] = range(b, S, sizeof(B));
  const std::less<const unsigned char*> lt;  // total order even across unrelated buffers
  return lt(a0, b1) && lt(b0, a1);
}

}  // namespace qlip::detail
