/// @file loss_test_util.hpp
/// @brief Small helpers of the loss tests (tests/grad/test_*_loss_grad.cpp, test_loss_fixtures.cpp):
///        a scalar compared under the tolerance policy of compare.hpp, and strided test layouts.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>

#include "common/compare.hpp"
#include "qlip/core/allocator.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip::test {

/// |got − ref| ≤ atol + rtol·|ref| and both finite: the element rule of all_close, for one scalar.
inline ::testing::AssertionResult scalar_close(double got, double ref, Tolerance tol) {
  const double err = std::fabs(got - ref), allowed = tol.atol + tol.rtol * std::fabs(ref);
  if (std::isfinite(got) && std::isfinite(ref) && err <= allowed) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "got " << got << ", ref " << ref << " (|diff| " << err << " > "
                                       << allowed << ")";
}

/// A [rows, cols] view with a row stride of cols + pad, inside `storage` (which it resizes): a
/// non-contiguous layout whose padding the op must neither read into results nor write.
template <class T>
HostView<T, 2> padded_view(Tensor<T, 2>& storage, std::int64_t rows, std::int64_t cols, std::int64_t pad) {
  storage = Tensor<T, 2>({rows, cols + pad});
  return storage.view().slice(1, 0, cols);
}

/// A [rows, cols] view stored column-major (the transpose of a [cols, rows] tensor).
template <class T>
HostView<T, 2> transposed_view(Tensor<T, 2>& storage, std::int64_t rows, std::int64_t cols) {
  storage = Tensor<T, 2>({cols, rows});
  return storage.view().transpose(0, 1);
}

/// Copies src into a view of the same shape (any strides).
template <class T>
void copy_into(const Tensor<T, 2>& src, HostView<T, 2> dst) {
  for (std::int64_t i = 0; i < src.size(0); ++i)
    for (std::int64_t j = 0; j < src.size(1); ++j) dst(i, j) = src(i, j);
}

}  // namespace qlip::test
