/// @file mse_loss.hpp
/// @brief Reference mean-squared-error loss, the pixel reconstruction term of both training stages
///        (MODEL.md §3.3 α_r, §4.2, §4.3): L = (1/N)·Σ (x̂ − x)² over all N elements.
///
/// Backward contract: the gradient of the prediction x̂ is written (=), scaled by the upstream
/// scalar dloss (the loss weight α_r, or 1); the target x is data and gets no gradient. An empty
/// dx_hat view means "not wanted" and is skipped. Images and patch grids are passed as 2-D views
/// ([B, C·H·W] is a reshape of a contiguous [B, C, H, W]); any strides.
#pragma once

#include <cstdint>

#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip::detail {

/// Checks x_hat[M, D] against x[M, D]; `op` names the calling op in every message. The mean of no
/// elements is not a number, so an empty input is an error.
template <class T, class M>
void check_mse_loss_args(const TensorView<const T, 2, M>& x_hat, const TensorView<const T, 2, M>& x,
                         const char* op) {
  QLIP_CHECK(x.shape() == x_hat.shape(), op, ": target x has shape ", shape_string<2>(x.shape()),
             ", expected the shape of x_hat ", shape_string<2>(x_hat.shape()));
  QLIP_CHECK(x_hat.numel() > 0, op, ": x_hat is empty (", shape_string<2>(x_hat.shape()),
             "): the mean of no elements is undefined");
}

/// Checks the backward's arguments: as the forward, and dx_hat empty or of x_hat's shape.
template <class T, class M>
void check_mse_loss_backward_args(const TensorView<const T, 2, M>& x_hat, const TensorView<const T, 2, M>& x,
                                  const TensorView<T, 2, M>& dx_hat) {
  check_mse_loss_args(x_hat, x, "mse_loss_backward");
  if (!dx_hat.empty()) check_shape(dx_hat, x_hat.shape(), "mse_loss_backward: dx_hat");
}

}  // namespace qlip::detail

namespace qlip::reference {

/// L = (1/N)·Σ_{m,d} (x̂[m,d] − x[m,d])², N = M·D, summed in double in row-major order.
/// @tparam T float (the oracle of every backend) or double (what finite differences differentiate)
/// @param x_hat [M, D] prediction
/// @param x     [M, D] target
template <class T>
double mse_loss(HostView<const T, 2> x_hat, HostView<const T, 2> x) {
  detail::check_mse_loss_args(x_hat, x, "mse_loss");
  double sum = 0.0;
  for (std::int64_t i = 0; i < x_hat.size(0); ++i)
    for (std::int64_t j = 0; j < x_hat.size(1); ++j) {
      const double d = static_cast<double>(x_hat(i, j)) - static_cast<double>(x(i, j));
      sum += d * d;
    }
  return sum / static_cast<double>(x_hat.numel());
}

/// The float oracle, callable with mutable views (template deduction does not convert them).
inline double mse_loss(HostView<const float, 2> x_hat, HostView<const float, 2> x) {
  return mse_loss<float>(x_hat, x);
}

/// dx̂ = dloss·2(x̂ − x)/N (=), computed in double and rounded once per element.
/// @param x_hat  [M, D] the forward prediction
/// @param x      [M, D] the forward target
/// @param dloss  upstream gradient of the scalar loss (its weight in the total loss)
/// @param dx_hat [M, D] written, or empty (skipped); may alias neither input
template <class T>
void mse_loss_backward(HostView<const T, 2> x_hat, HostView<const T, 2> x, double dloss, HostView<T, 2> dx_hat) {
  detail::check_mse_loss_backward_args(x_hat, x, dx_hat);
  if (dx_hat.empty()) return;
  const double k = 2.0 * dloss / static_cast<double>(x_hat.numel());
  for (std::int64_t i = 0; i < x_hat.size(0); ++i)
    for (std::int64_t j = 0; j < x_hat.size(1); ++j)
      dx_hat(i, j) = static_cast<T>(k * (static_cast<double>(x_hat(i, j)) - static_cast<double>(x(i, j))));
}

}  // namespace qlip::reference
