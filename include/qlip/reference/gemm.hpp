/// @file gemm.hpp
/// @brief Reference (oracle) GEMM and linear: plain loops over named dimensions, double accumulation.
///
/// Every backend's gemm/linear is tested against these. No Eigen, no CUDA: this header is included
/// by both the CPU and the CUDA test binaries. Views may have any strides (transposed, sliced).
/// The shape checks shared by every backend live here too (qlip::detail), so all backends reject
/// the same bad arguments with the same messages.
#pragma once

#include <cstdint>

#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip {
namespace detail {

/// Checks a[M,K]·b[K,N] → c[M,N]; every error names the argument.
template <class M>
void check_gemm_shapes(const TensorView<const float, 2, M>& a, const TensorView<const float, 2, M>& b,
                       const TensorView<float, 2, M>& c) {
  const std::int64_t m = a.size(0), k = a.size(1), n = b.size(1);
  QLIP_CHECK(b.size(0) == k, "gemm: b has shape ", shape_string<2>(b.shape()), ", expected [", k,
             ", N] to match a ", shape_string<2>(a.shape()));
  check_shape(c, {m, n}, "gemm: c");
}

/// Checks x[M,K]·w[N,K]ᵀ + bias[N] → y[M,N]; an empty bias means "no bias".
template <class M>
void check_linear_shapes(const TensorView<const float, 2, M>& x, const TensorView<const float, 2, M>& w,
                         const TensorView<const float, 1, M>& bias, const TensorView<float, 2, M>& y) {
  const std::int64_t m = x.size(0), k = x.size(1), n = w.size(0);
  QLIP_CHECK(w.size(1) == k, "linear: w has shape ", shape_string<2>(w.shape()), ", expected [N, ", k,
             "] (PyTorch [out, in] layout) to match x ", shape_string<2>(x.shape()));
  if (!bias.empty()) check_shape(bias, {n}, "linear: bias");
  check_shape(y, {m, n}, "linear: y");
}

}  // namespace detail

namespace reference {

/// c = alpha·a·b + beta·c in double, rounded to float once per element.
/// beta == 0 does not read c (it may hold NaN garbage). c must not alias a or b.
/// @param a [M, K]
/// @param b [K, N]
/// @param c [M, N]
inline void gemm(HostView<const float, 2> a, HostView<const float, 2> b, HostView<float, 2> c,
                 float alpha = 1.0f, float beta = 0.0f) {
  detail::check_gemm_shapes(a, b, c);
  const std::int64_t m = a.size(0), k = a.size(1), n = b.size(1);
  for (std::int64_t i = 0; i < m; ++i) {
    for (std::int64_t j = 0; j < n; ++j) {
      double acc = 0.0;
      for (std::int64_t p = 0; p < k; ++p) acc += static_cast<double>(a(i, p)) * static_cast<double>(b(p, j));
      double out = static_cast<double>(alpha) * acc;
      if (beta != 0.0f) out += static_cast<double>(beta) * static_cast<double>(c(i, j));
      c(i, j) = static_cast<float>(out);
    }
  }
}

/// y = x·wᵀ + bias (torch.nn.functional.linear) in double.
/// @param x    [M, K]
/// @param w    [N, K] (PyTorch layout: out_features × in_features)
/// @param bias [N], or an empty (default-constructed) view for no bias
/// @param y    [M, N]
inline void linear(HostView<const float, 2> x, HostView<const float, 2> w, HostView<const float, 1> bias,
                   HostView<float, 2> y) {
  detail::check_linear_shapes(x, w, bias, y);
  const std::int64_t m = x.size(0), k = x.size(1), n = w.size(0);
  const bool has_bias = !bias.empty();
  for (std::int64_t i = 0; i < m; ++i) {
    for (std::int64_t j = 0; j < n; ++j) {
      double acc = has_bias ? static_cast<double>(bias(j)) : 0.0;
      for (std::int64_t p = 0; p < k; ++p) acc += static_cast<double>(x(i, p)) * static_cast<double>(w(j, p));
      y(i, j) = static_cast<float>(acc);
    }
  }
}

}  // namespace reference
}  // namespace qlip
