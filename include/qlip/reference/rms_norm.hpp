/// @file rms_norm.hpp
/// @brief Reference RMSNorm over the last dimension (plain loops, double accumulation): the oracle
///        for every backend's rms_norm, its training forward and its backward.
///
/// y = x / sqrt(mean(x²) + eps) · w — eps inside the square root, as Llama's LlamaRMSNorm (which
/// computes in fp32; this oracle computes in double; MODEL.md §8.1). Deterministic.
///
/// Backward contract: dx is written (=); dweight is accumulated (+=); an empty (default-constructed)
/// gradient view is not wanted and is skipped. With x̂ = x·rstd and g = dy ⊙ w, per row:
///   dx       = rstd · (g − x̂ · mean_j(g ⊙ x̂))
///   dweight += Σ_rows dy ⊙ x̂
#pragma once

#include <cmath>
#include <cstdint>

#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/reference/view_overlap.hpp"

namespace qlip::detail {
/// Checks x[M, D], weight[D] → y[M, D] with D > 0. Shared by every backend's rms_norm.
template <class T, class M>
void check_rms_norm_args(const TensorView<const T, 2, M>& x, const TensorView<const T, 1, M>& weight,
                         const TensorView<T, 2, M>& y) {
  const std::int64_t m = x.size(0), d = x.size(1);
  check_shape(y, {m, d}, "rms_norm output y");
  check_shape(weight, {d}, "rms_norm weight");
  QLIP_CHECK(d > 0, "rms_norm needs a non-empty normalised dimension");
}

/// The checks of rms_norm plus rstd[M], and y not overlapping x (backward re-reads x).
template <class T, class M>
void check_rms_norm_train_args(const TensorView<const T, 2, M>& x, const TensorView<const T, 1, M>& weight,
                               const TensorView<T, 2, M>& y, const TensorView<T, 1, M>& rstd) {
  check_rms_norm_args(x, weight, y);
  check_shape(rstd, {x.size(0)}, "rms_norm_train rstd");
  QLIP_CHECK(!views_overlap(x, y), "rms_norm_train: output y overlaps input x (the backward needs x; ",
             "use the inference rms_norm for an in-place update)");
}

/// Checks the backward: x[M, D], weight[D], rstd[M], dy[M, D]; dx[M, D] and dweight[D] each
/// either empty (not wanted) or of that shape.
template <class T, class M>
void check_rms_norm_backward_args(const TensorView<const T, 2, M>& x, const TensorView<const T, 1, M>& weight,
                                  const TensorView<const T, 1, M>& rstd, const TensorView<const T, 2, M>& dy,
                                  const TensorView<T, 2, M>& dx, const TensorView<T, 1, M>& dweight) {
  const std::int64_t m = x.size(0), d = x.size(1);
  QLIP_CHECK(d > 0, "rms_norm_backward needs a non-empty normalised dimension");
  check_shape(weight, {d}, "rms_norm_backward: weight");
  check_shape(rstd, {m}, "rms_norm_backward: rstd");
  check_shape(dy, {m, d}, "rms_norm_backward: dy");
  if (!dx.empty()) check_shape(dx, {m, d}, "rms_norm_backward: dx");
  if (!dweight.empty()) check_shape(dweight, {d}, "rms_norm_backward: dweight");
}

/// The reference forward, saving rstd when that view is non-empty.
template <class T>
void rms_norm_reference(HostView<const T, 2> x, HostView<const T, 1> weight, float eps, HostView<T, 2> y,
                        HostView<T, 1> rstd_out) {
  const std::int64_t m = x.size(0), d = x.size(1);
  for (std::int64_t i = 0; i < m; ++i) {
    double sq = 0.0;
    for (std::int64_t j = 0; j < d; ++j) sq += static_cast<double>(x(i, j)) * static_cast<double>(x(i, j));
    const double rstd = 1.0 / std::sqrt(sq / static_cast<double>(d) + static_cast<double>(eps));
    if (!rstd_out.empty()) rstd_out(i) = static_cast<T>(rstd);
    for (std::int64_t j = 0; j < d; ++j)
      y(i, j) = static_cast<T>(static_cast<double>(x(i, j)) * rstd * static_cast<double>(weight(j)));
  }
}
}  // namespace qlip::detail

namespace qlip::reference {

/// RMSNorm of each row. y may alias x (same view); any strides.
/// T = float is the oracle of every backend; T = double is what finite differences differentiate.
/// @tparam T float or double
template <class T>
void rms_norm(HostView<const T, 2> x,       // [M, D]
              HostView<const T, 1> weight,  // [D]
              float eps,
              HostView<T, 2> y) {           // [M, D]
  detail::check_rms_norm_args(x, weight, y);
  detail::rms_norm_reference<T>(x, weight, eps, y, {});
}

/// The float oracle, callable with mutable views (template deduction does not convert them).
inline void rms_norm(HostView<const float, 2> x, HostView<const float, 1> weight, float eps, HostView<float, 2> y) {
  rms_norm<float>(x, weight, eps, y);
}

/// Training forward: y as rms_norm, plus the per-row rstd = 1/sqrt(mean(x²) + eps) that
/// rms_norm_backward consumes (rounded to T once). y must not overlap x (checked).
/// @tparam T float or double
template <class T>
void rms_norm_train(HostView<const T, 2> x,       // [M, D]
                    HostView<const T, 1> weight,  // [D]
                    float eps,
                    HostView<T, 2> y,             // [M, D]
                    HostView<T, 1> rstd) {        // [M]
  detail::check_rms_norm_train_args(x, weight, y, rstd);
  detail::rms_norm_reference<T>(x, weight, eps, y, rstd);
}

/// Backward of rms_norm (formulas and contract in the file comment), from rms_norm_train's rstd.
/// dweight is reduced first (column by column, in double, each += rounded once), then dx row by
/// row, so dx may alias dy or x (same view).
/// @tparam T float or double
template <class T>
void rms_norm_backward(HostView<const T, 2> x,       // [M, D] forward input
                       HostView<const T, 1> weight,  // [D]
                       HostView<const T, 1> rstd,    // [M] saved by rms_norm_train
                       HostView<const T, 2> dy,      // [M, D] upstream gradient
                       HostView<T, 2> dx,            // [M, D] written, or empty
                       HostView<T, 1> dweight) {     // [D] accumulated, or empty
  detail::check_rms_norm_backward_args(x, weight, rstd, dy, dx, dweight);
  const std::int64_t m = x.size(0), d = x.size(1);
  auto xhat = [&](std::int64_t i, std::int64_t j) {
    return static_cast<double>(x(i, j)) * static_cast<double>(rstd(i));
  };
  for (std::int64_t j = 0; j < d && !dweight.empty(); ++j) {
    double acc = static_cast<double>(dweight(j));
    for (std::int64_t i = 0; i < m; ++i) acc += static_cast<double>(dy(i, j)) * xhat(i, j);
    dweight(j) = static_cast<T>(acc);
  }
  if (dx.empty()) return;
  for (std::int64_t i = 0; i < m; ++i) {
    double sum_gx = 0.0;
    for (std::int64_t j = 0; j < d; ++j)
      sum_gx += static_cast<double>(dy(i, j)) * static_cast<double>(weight(j)) * xhat(i, j);
    const double mean_gx = sum_gx / static_cast<double>(d), r = static_cast<double>(rstd(i));
    for (std::int64_t j = 0; j < d; ++j) {
      const double g = static_cast<double>(dy(i, j)) * static_cast<double>(weight(j));
      dx(i, j) = static_cast<T>(r * (g - xhat(i, j) * mean_gx));
    }
  }
}

}  // namespace qlip::reference
