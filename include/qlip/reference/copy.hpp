/// @file copy.hpp
/// @brief Reference data movement that modules compose: copy between (strided) views, fill, and
///        gathering rows by index with its adjoint (scatter-add), e.g. the text tower's EOS pooling.
#pragma once

#include <cstdint>
#include <type_traits>

#include "qlip/core/backend.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip::detail {
template <class T, int R, class M>
void check_copy_args(const TensorView<const T, R, M>& x, const TensorView<T, R, M>& y) {
  check_shape(y, x.shape(), "copy: y");
}
/// rows[i] must index a row of x (n rows); names the bad entry.
inline void check_row_index(std::int64_t row, std::int64_t n, std::int64_t i, const char* what) {
  QLIP_CHECK(row >= 0 && row < n, what, ": row index ", row, " at position ", i, " is outside [0, ", n, ")");
}
template <class T, class M>
void check_gather_rows_args(const TensorView<const T, 2, M>& x, const TensorView<const std::int64_t, 1, host_memory>& rows,
                            const TensorView<T, 2, M>& y, const char* what) {
  check_shape(y, {rows.size(0), x.size(1)}, what);
  for (std::int64_t i = 0; i < rows.size(0); ++i) check_row_index(rows(i), x.size(0), i, what);
}
template <class T, class M>
void check_gather_rows_backward_args(const TensorView<const std::int64_t, 1, host_memory>& rows,
                                     const TensorView<const T, 2, M>& dy, const TensorView<const T, 2, M>& dx) {
  check_shape(dy, {rows.size(0), dx.size(1)}, "gather_rows_backward dy");
  for (std::int64_t i = 0; i < rows.size(0); ++i) check_row_index(rows(i), dx.size(0), i, "gather_rows_backward");
}

/// Calls f(offset_x, offset_y) for every element of two equally shaped rank-R views, last index fastest.
template <int R, class F>
void for_each_index(const Extents<R>& shape, const Extents<R>& sx, const Extents<R>& sy, std::int64_t ox,
                    std::int64_t oy, F&& f) {
  std::int64_t n = 1;
  for (auto s : shape) n *= s;
  if (n == 0) return;
  Extents<R> idx{};
  for (std::int64_t linear = 0; linear < n; ++linear) {
    std::int64_t a = ox, b = oy;
    for (int d = 0; d < R; ++d) {
      a += idx[d] * sx[d];
      b += idx[d] * sy[d];
    }
    f(a, b);
    for (int d = R - 1; d >= 0; --d) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
}
}  // namespace qlip::detail

namespace qlip::reference {

/// y = x for equally shaped views of any strides (y must not overlap x).
template <class T, int R>
void copy(HostView<const T, R> x, HostView<T, R> y) {
  detail::check_copy_args(x, y);
  detail::for_each_index<R>(x.shape(), x.strides(), y.strides(), x.offset(), y.offset(),
                            [&](std::int64_t a, std::int64_t b) { y.base()[b] = x.base()[a]; });
}

/// Every element of y = value.
template <class T, int R>
void fill(HostView<T, R> y, T value) {
  detail::for_each_index<R>(y.shape(), y.strides(), y.strides(), y.offset(), y.offset(),
                            [&](std::int64_t, std::int64_t b) { y.base()[b] = value; });
}

/// y[i, :] = x[rows[i], :].
template <class T>
void gather_rows(HostView<const T, 2> x, HostView<const std::int64_t, 1> rows, HostView<T, 2> y) {
  detail::check_gather_rows_args(x, rows, y, "gather_rows y");
  for (std::int64_t i = 0; i < rows.size(0); ++i)
    for (std::int64_t j = 0; j < x.size(1); ++j) y(i, j) = x(rows(i), j);
}

/// Adjoint of gather_rows: dx[rows[i], :] += dy[i, :] (repeated rows add up, in order of i).
template <class T>
void gather_rows_backward(HostView<const std::int64_t, 1> rows, HostView<const T, 2> dy, HostView<T, 2> dx) {
  detail::check_gather_rows_backward_args(rows, dy, HostView<const T, 2>(dx));
  for (std::int64_t i = 0; i < rows.size(0); ++i)
    for (std::int64_t j = 0; j < dx.size(1); ++j) dx(rows(i), j) = static_cast<T>(dx(rows(i), j) + dy(i, j));
}

}  // namespace qlip::reference
