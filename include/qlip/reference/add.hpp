/// @file add.hpp
/// @brief Reference element-wise accumulation y += x (residual streams, gradients that meet at a
///        fork: a block's input feeds both the residual and the normalised branch).
#pragma once

#include <cstdint>

#include "qlip/core/backend.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip::detail {
template <class T, class M>
void check_add_args(const TensorView<const T, 2, M>& x, const TensorView<T, 2, M>& y) {
  check_shape(y, x.shape(), "add_inplace: y");
}
}  // namespace qlip::detail

namespace qlip::reference {

/// y += x element by element (one rounding per element). Any strides; y must not overlap x.
template <class T>
void add_inplace(HostView<const T, 2> x, HostView<T, 2> y) {  // [M, N] += [M, N]
  detail::check_add_args(x, y);
  for (std::int64_t i = 0; i < x.size(0); ++i)
    for (std::int64_t j = 0; j < x.size(1); ++j) y(i, j) = static_cast<T>(y(i, j) + x(i, j));
}

/// y += a·x element by element, the product and sum in double and rounded once (the equalised
/// learning rate's weight gains, QLIP_SPEC §4.3). Any strides; y must not overlap x.
template <class T>
void axpy(double a, HostView<const T, 2> x, HostView<T, 2> y) {  // [M, N] += a·[M, N]
  detail::check_add_args(x, y);
  for (std::int64_t i = 0; i < x.size(0); ++i)
    for (std::int64_t j = 0; j < x.size(1); ++j)
      y(i, j) = static_cast<T>(static_cast<double>(y(i, j)) + a * static_cast<double>(x(i, j)));
}

}  // namespace qlip::reference
