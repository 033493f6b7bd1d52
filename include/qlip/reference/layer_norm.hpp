/// @file layer_norm.hpp
/// @brief Reference LayerNorm over the last dimension (plain loops, double accumulation): the oracle
///        for every backend's layer_norm, its training forward and its backward.
///
/// y = (x − mean) / sqrt(var + eps) · gamma + beta, var biased (÷D), eps inside the square root, as
/// torch.nn.LayerNorm (the affine LayerNorms of MODEL.md §2.3, §2.7). Deterministic: sequential
/// double-precision passes per row (and per column for the parameter gradients).
///
/// Backward contract: dx is written (=); dgamma and dbeta are accumulated (+=); an empty
/// (default-constructed) gradient view is not wanted and is skipped. With x̂ = (x − mean)·rstd and
/// g = dy ⊙ gamma, per row:
///   dx      = rstd · (g − mean_j(g) − x̂ · mean_j(g ⊙ x̂))
///   dgamma += Σ_rows dy ⊙ x̂
///   dbeta  += Σ_rows dy
#pragma once

#include <cmath>
#include <cstdint>

#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/reference/view_overlap.hpp"

namespace qlip::detail {
/// Checks x[M, D], gamma[D], beta[D] → y[M, D] with D > 0. Shared by every backend's layer_norm.
template <class T, class M>
void check_layer_norm_args(const TensorView<const T, 2, M>& x, const TensorView<const T, 1, M>& gamma,
                           const TensorView<const T, 1, M>& beta, const TensorView<T, 2, M>& y) {
  const std::int64_t m = x.size(0), d = x.size(1);
  check_shape(y, {m, d}, "layer_norm output y");
  check_shape(gamma, {d}, "layer_norm gamma");
  check_shape(beta, {d}, "layer_norm beta");
  QLIP_CHECK(d > 0, "layer_norm needs a non-empty normalised dimension");
}

/// The checks of layer_norm plus mean[M], rstd[M], and y not overlapping x (backward re-reads x).
template <class T, class M>
void check_layer_norm_train_args(const TensorView<const T, 2, M>& x, const TensorView<const T, 1, M>& gamma,
                                 const TensorView<const T, 1, M>& beta, const TensorView<T, 2, M>& y,
                                 const TensorView<T, 1, M>& mean, const TensorView<T, 1, M>& rstd) {
  check_layer_norm_args(x, gamma, beta, y);
  check_shape(mean, {x.size(0)}, "layer_norm_train mean");
  check_shape(rstd, {x.size(0)}, "layer_norm_train rstd");
  QLIP_CHECK(!views_overlap(x, y), "layer_norm_train: output y overlaps input x (the backward needs x; ",
             "use the inference layer_norm for an in-place update)");
}

/// Checks the backward: x[M, D], gamma[D], mean[M], rstd[M], dy[M, D]; dx[M, D], dgamma[D],
/// dbeta[D] each either empty (not wanted) or of that shape.
template <class T, class M>
void check_layer_norm_backward_args(const TensorView<const T, 2, M>& x, const TensorView<const T, 1, M>& gamma,
                                    const TensorView<const T, 1, M>& mean, const TensorView<const T, 1, M>& rstd,
                                    const TensorView<const T, 2, M>& dy, const TensorView<T, 2, M>& dx,
                                    const TensorView<T, 1, M>& dgamma, const TensorView<T, 1, M>& dbeta) {
  const std::int64_t m = x.size(0), d = x.size(1);
  QLIP_CHECK(d > 0, "layer_norm_backward needs a non-empty normalised dimension");
  check_shape(gamma, {d}, "layer_norm_backward: gamma");
  check_shape(mean, {m}, "layer_norm_backward: mean");
  check_shape(rstd, {m}, "layer_norm_backward: rstd");
  check_shape(dy, {m, d}, "layer_norm_backward: dy");
  if (!dx.empty()) check_shape(dx, {m, d}, "layer_norm_backward: dx");
  if (!dgamma.empty()) check_shape(dgamma, {d}, "layer_norm_backward: dgamma");
  if (!dbeta.empty()) check_shape(dbeta, {d}, "layer_norm_backward: dbeta");
}

/// The reference forward, saving mean and rstd when those views are non-empty.
template <class T>
void layer_norm_reference(HostView<const T, 2> x, HostView<const T, 1> gamma, HostView<const T, 1> beta, float eps,
                          HostView<T, 2> y, HostView<T, 1> mean_out, HostView<T, 1> rstd_out) {
  const std::int64_t m = x.size(0), d = x.size(1);
  for (std::int64_t i = 0; i < m; ++i) {
    double sum = 0.0;
    for (std::int64_t j = 0; j < d; ++j) sum += static_cast<double>(x(i, j));
    const double mean = sum / static_cast<double>(d);
    double sq = 0.0;  // two-pass variance: no cancellation for rows with a large mean
    for (std::int64_t j = 0; j < d; ++j) {
      const double c = static_cast<double>(x(i, j)) - mean;
      sq += c * c;
    }
    const double rstd = 1.0 / std::sqrt(sq / static_cast<double>(d) + static_cast<double>(eps));
    if (!mean_out.empty()) mean_out(i) = static_cast<T>(mean);
    if (!rstd_out.empty()) rstd_out(i) = static_cast<T>(rstd);
    for (std::int64_t j = 0; j < d; ++j) {
      const double v =
          (static_cast<double>(x(i, j)) - mean) * rstd * static_cast<double>(gamma(j)) + static_cast<double>(beta(j));
      y(i, j) = static_cast<T>(v);
    }
  }
}
}  // namespace qlip::detail

namespace qlip::reference {

/// LayerNorm of each row. y may alias x (same view); any strides.
/// T = float is the oracle of every backend; T = double is what finite differences differentiate.
/// @tparam T float or double
template <class T>
void layer_norm(HostView<const T, 2> x,      // [M, D]
                HostView<const T, 1> gamma,  // [D]
                HostView<const T, 1> beta,   // [D]
                float eps,
                HostView<T, 2> y) {          // [M, D]
  detail::check_layer_norm_args(x, gamma, beta, y);
  detail::layer_norm_reference<T>(x, gamma, beta, eps, y, {}, {});
}

/// The float oracle, callable with mutable views (template deduction does not convert them).
inline void layer_norm(HostView<const float, 2> x, HostView<const float, 1> gamma, HostView<const float, 1> beta,
                       float eps, HostView<float, 2> y) {
  layer_norm<float>(x, gamma, beta, eps, y);
}

/// Training forward: y as layer_norm, plus the per-row mean and rstd = 1/sqrt(var + eps) that
/// layer_norm_backward consumes (rounded to T once). y must not overlap x (checked).
/// @tparam T float or double
template <class T>
void layer_norm_train(HostView<const T, 2> x,      // [M, D]
                      HostView<const T, 1> gamma,  // [D]
                      HostView<const T, 1> beta,   // [D]
                      float eps,
                      HostView<T, 2> y,            // [M, D]
                      HostView<T, 1> mean,         // [M]
                      HostView<T, 1> rstd) {       // [M]
  detail::check_layer_norm_train_args(x, gamma, beta, y, mean, rstd);
  detail::layer_norm_reference<T>(x, gamma, beta, eps, y, mean, rstd);
}

/// Backward of layer_norm (formulas and contract in the file comment), from the saved mean and rstd
/// of layer_norm_train. The parameter gradients are reduced first (column by column, in double,
/// each += rounded once), then dx row by row, so dx may alias dy or x (same view).
/// @tparam T float or double
template <class T>
void layer_norm_backward(HostView<const T, 2> x,      // [M, D] forward input
                         HostView<const T, 1> gamma,  // [D]
                         HostView<const T, 1> mean,   // [M] saved by layer_norm_train
                         HostView<const T, 1> rstd,   // [M] saved by layer_norm_train
                         HostView<const T, 2> dy,     // [M, D] upstream gradient
                         HostView<T, 2> dx,           // [M, D] written, or empty
                         HostView<T, 1> dgamma,       // [D] accumulated, or empty
                         HostView<T, 1> dbeta) {      // [D] accumulated, or empty
  detail::check_layer_norm_backward_args(x, gamma, mean, rstd, dy, dx, dgamma, dbeta);
  const std::int64_t m = x.size(0), d = x.size(1);
  auto xhat = [&](std::int64_t i, std::int64_t j) {
    return (static_cast<double>(x(i, j)) - static_cast<double>(mean(i))) * static_cast<double>(rstd(i));
  };
  for (std::int64_t j = 0; j < d && (!dgamma.empty() || !dbeta.empty()); ++j) {
    double g = dgamma.empty() ? 0.0 : static_cast<double>(dgamma(j));
    double b = dbeta.empty() ? 0.0 : static_cast<double>(dbeta(j));
    for (std::int64_t i = 0; i < m; ++i) {
      g += static_cast<double>(dy(i, j)) * xhat(i, j);
      b += static_cast<double>(dy(i, j));
    }
    if (!dgamma.empty()) dgamma(j) = static_cast<T>(g);
    if (!dbeta.empty()) dbeta(j) = static_cast<T>(b);
  }
  if (dx.empty()) return;
  for (std::int64_t i = 0; i < m; ++i) {
    double sum_g = 0.0, sum_gx = 0.0;
    for (std::int64_t j = 0; j < d; ++j) {
      const double g = static_cast<double>(dy(i, j)) * static_cast<double>(gamma(j));
      sum_g += g;
      sum_gx += g * xhat(i, j);
    }
    const double mean_g = sum_g / static_cast<double>(d), mean_gx = sum_gx / static_cast<double>(d);
    const double r = static_cast<double>(rstd(i));
    for (std::int64_t j = 0; j < d; ++j) {
      const double g = static_cast<double>(dy(i, j)) * static_cast<double>(gamma(j));
      dx(i, j) = static_cast<T>(r * (g - mean_g - xhat(i, j) * mean_gx));
    }
  }
}

}  // namespace qlip::reference
