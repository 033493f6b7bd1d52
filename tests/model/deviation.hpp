/// @file deviation.hpp
/// @brief Largest absolute and relative deviation between two equally shaped views, for printing
///        next to the pass/fail of all_close (the numbers a report quotes).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>

#include "qlip/core/tensor.hpp"

namespace qlip::test {

struct Deviation {
  double max_abs = 0.0;
  double max_rel = 0.0;  // |got − ref| / max(|ref|, 1e-6)
};

template <class A, class B, int R>
Deviation deviation(const HostView<A, R>& got, const HostView<B, R>& ref) {
  Deviation d;
  if (got.shape() != ref.shape()) return {INFINITY, INFINITY};
  Extents<R> idx{};
  for (std::int64_t linear = 0; linear < got.numel(); ++linear) {
    std::int64_t rem = linear, og = got.offset(), orr = ref.offset();
    for (int k = R - 1; k >= 0; --k) {
      idx[k] = rem % got.size(k);
      rem /= got.size(k);
      og += idx[k] * got.stride(k);
      orr += idx[k] * ref.stride(k);
    }
    const double g = static_cast<double>(got.base()[og]), r = static_cast<double>(ref.base()[orr]);
    const double e = std::fabs(g - r);
    d.max_abs = std::max(d.max_abs, e);
    d.max_rel = std::max(d.max_rel, e / std::max(std::fabs(r), 1e-6));
  }
  return d;
}

/// Prints "[ dev ] <what>: max |Δ| = …, max rel = …".
template <class A, class B, int R>
void print_deviation(const std::string& what, const HostView<A, R>& got, const HostView<B, R>& ref) {
  const Deviation d = deviation(got, ref);
  std::printf("[ dev ] %-40s max |d| = %.3g  max rel = %.3g\n", what.c_str(), d.max_abs, d.max_rel);
}

}  // namespace qlip::test
