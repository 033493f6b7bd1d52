/// @file norms_grad_util.hpp
/// @brief Small helpers shared by the normalisation and activation gradient tests: float copies of
///        double test data in guarded (strided) layouts, strided 1-D parameter views, bitwise equality.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>

#include "cpu/guarded.hpp"
#include "qlip/core/allocator.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip::test {

/// Writes src (rounded to float) into every element of g, whatever its layout.
inline void fill_from(Guarded<float, 2>& g, const Tensor<double, 2>& src) {
  g.fill([&](std::int64_t i) { return static_cast<float>(src.data()[i]); });
}

/// A float copy of src where every element sits two apart (stride 2), to exercise 1-D strides.
struct StridedVector {
  explicit StridedVector(const Tensor<double, 1>& src) : buf({2 * src.size(0) + 1}) {
    for (std::int64_t j = 0; j < buf.size(0); ++j) buf(j) = -999.0f;  // the gaps: never read or written
    for (std::int64_t j = 0; j < src.size(0); ++j) buf(1 + 2 * j) = static_cast<float>(src(j));
  }
  HostView<float, 1> view() { return HostView<float, 1>(buf.data(), {(buf.size(0) - 1) / 2}, {2}, 1); }
  HostView<const float, 1> cview() const {
    return HostView<const float, 1>(buf.data(), {(buf.size(0) - 1) / 2}, {2}, 1);
  }
  /// Success when every gap element still holds its fill value.
  ::testing::AssertionResult gaps_intact() const {
    for (std::int64_t j = 0; j < buf.size(0); j += 2)
      if (buf(j) != -999.0f) return ::testing::AssertionFailure() << "gap element " << j << " was written";
    return ::testing::AssertionSuccess();
  }
  Tensor<float, 1> buf;
};

/// Success when both views hold bitwise-identical elements (same shape required).
template <class A, class B, int R>
::testing::AssertionResult bitwise_equal(const HostView<A, R>& got, const HostView<B, R>& want) {
  if (got.shape() != want.shape()) return ::testing::AssertionFailure() << "shapes differ";
  const std::int64_t n = got.numel();
  for (std::int64_t linear = 0; linear < n; ++linear) {
    std::int64_t rem = linear, og = got.offset(), ow = want.offset();
    for (int d = R - 1; d >= 0; --d) {
      const std::int64_t k = rem % got.size(d);
      rem /= got.size(d);
      og += k * got.stride(d);
      ow += k * want.stride(d);
    }
    if (std::memcmp(&got.base()[og], &want.base()[ow], sizeof(A)) != 0)
      return ::testing::AssertionFailure() << "element " << linear << ": " << got.base()[og] << " vs "
                                           << want.base()[ow];
  }
  return ::testing::AssertionSuccess();
}

}  // namespace qlip::test
