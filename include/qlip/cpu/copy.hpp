/// @file copy.hpp
/// @brief CPU data movement (semantics as reference/copy.hpp): copy, fill, gather_rows and its
///        adjoint. Contiguous rows are moved with memcpy; everything else element by element.
#pragma once

#include "qlip/cpu/build_check.hpp"

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "qlip/core/backend.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/reference/copy.hpp"

namespace qlip::ops {

/// y = x (any rank, any strides; y must not overlap x).
template <class U, int R>
  requires std::is_same_v<std::remove_const_t<U>, float>
void copy(cpu_backend, HostView<U, R> x, HostView<float, R> y) {
  detail::check_copy_args(HostView<const float, R>(x), y);
  if (x.is_contiguous() && y.is_contiguous()) {
    if (x.numel() > 0) std::memcpy(y.data(), x.data(), static_cast<std::size_t>(x.numel()) * sizeof(float));
    return;
  }
  detail::for_each_index<R>(x.shape(), x.strides(), y.strides(), x.offset(), y.offset(),
                            [&](std::int64_t a, std::int64_t b) { y.base()[b] = x.base()[a]; });
}

/// Every element of y = value.
template <int R>
void fill(cpu_backend, HostView<float, R> y, float value) {
  detail::for_each_index<R>(y.shape(), y.strides(), y.strides(), y.offset(), y.offset(),
                            [&](std::int64_t, std::int64_t b) { y.base()[b] = value; });
}

/// y[i, :] = x[rows[i], :].
inline void gather_rows(cpu_backend, HostView<const float, 2> x, HostView<const std::int64_t, 1> rows,
                        HostView<float, 2> y) {
  reference::gather_rows<float>(x, rows, y);  // B rows of D: no work worth threading
}

/// dx[rows[i], :] += dy[i, :], in order of i (deterministic).
inline void gather_rows_backward(cpu_backend, HostView<const std::int64_t, 1> rows, HostView<const float, 2> dy,
                                 HostView<float, 2> dx) {
  reference::gather_rows_backward<float>(rows, dy, dx);
}

}  // namespace qlip::ops
