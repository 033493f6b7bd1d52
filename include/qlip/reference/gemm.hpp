/// @file gemm.hpp
/// @brief Reference (oracle) GEMM and linear: plain loops over named dimensions, double accumulation.
///
/// Every backend's gemm/linear is tested against these. No Eigen, no CUDA: this header is included
/// by both the CPU and the CUDA test binaries. Views may have any strides (transposed, sliced).
/// The shape checks shared by every backend live here too (qlip::detail), so all backends reject
/// the same bad arguments with the same messages.
#pragma once

#include <cstdint>

#include "qlip/core/backend.hpp"
#include "qlip/core/dtype.hpp"
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

/// Checks x[M,K]·w[N,K]ᵀ + bias[N] → y[M,N]; an empty bias means "no bias". W is the weight's
/// storage type (T, or bf16 for decoding weights).
template <class T, class W, class M>
void check_linear_shapes(const TensorView<const T, 2, M>& x, const TensorView<const W, 2, M>& w,
                         const TensorView<const T, 1, M>& bias, const TensorView<T, 2, M>& y) {
  const std::int64_t m = x.size(0), k = x.size(1), n = w.size(0);
  QLIP_CHECK(w.size(1) == k, "linear: w has shape ", shape_string<2>(w.shape()), ", expected [N, ", k,
             "] (PyTorch [out, in] layout) to match x ", shape_string<2>(x.shape()));
  if (!bias.empty()) check_shape(bias, {n}, "linear: bias");
  check_shape(y, {m, n}, "linear: y");
}

/// Checks the backward of linear: dy[M,N] against x[M,K] and w[N,K]; dx[M,K], dw[N,K], db[N]
/// each either empty (gradient not wanted) or of that shape.
template <class T, class M>
void check_linear_backward_shapes(const TensorView<const T, 2, M>& x, const TensorView<const T, 2, M>& w,
                                  const TensorView<const T, 2, M>& dy, const TensorView<T, 2, M>& dx,
                                  const TensorView<T, 2, M>& dw, const TensorView<T, 1, M>& db) {
  const std::int64_t m = x.size(0), k = x.size(1), n = w.size(0);
  QLIP_CHECK(w.size(1) == k, "linear_backward: w has shape ", shape_string<2>(w.shape()), ", expected [N, ", k,
             "] to match x ", shape_string<2>(x.shape()));
  check_shape(dy, {m, n}, "linear_backward: dy");
  if (!dx.empty()) check_shape(dx, {m, k}, "linear_backward: dx");
  if (!dw.empty()) check_shape(dw, {n, k}, "linear_backward: dw");
  if (!db.empty()) check_shape(db, {n}, "linear_backward: db");
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

/// y = x·wᵀ + bias (torch.nn.functional.linear), accumulated in double.
/// T = float is the oracle of every backend's linear; T = double is what finite differences
/// differentiate (tests/common/gradcheck.hpp).
/// @param x    [M, K]
/// @param w    [N, K] (PyTorch layout: out_features × in_features)
/// @param bias [N], or an empty (default-constructed) view for no bias
/// @param y    [M, N]
template <class T>
void linear(HostView<const T, 2> x, HostView<const T, 2> w, HostView<const T, 1> bias, HostView<T, 2> y) {
  detail::check_linear_shapes(x, w, bias, y);
  const std::int64_t m = x.size(0), k = x.size(1), n = w.size(0);
  const bool has_bias = !bias.empty();
  for (std::int64_t i = 0; i < m; ++i) {
    for (std::int64_t j = 0; j < n; ++j) {
      double acc = has_bias ? static_cast<double>(bias(j)) : 0.0;
      for (std::int64_t p = 0; p < k; ++p) acc += static_cast<double>(x(i, p)) * static_cast<double>(w(j, p));
      y(i, j) = static_cast<T>(acc);
    }
  }
}

/// The float oracle, callable with mutable views (template deduction does not convert them).
inline void linear(HostView<const float, 2> x, HostView<const float, 2> w, HostView<const float, 1> bias,
                   HostView<float, 2> y) {
  linear<float>(x, w, bias, y);
}

/// y = x·wᵀ + bias with w stored in bfloat16 (each weight widened exactly to float, then the sum in
/// double): the oracle of every backend's bf16-weight linear (the decoding option of nn/llama.hpp).
/// Shapes as linear().
inline void linear(HostView<const float, 2> x, HostView<const bf16, 2> w, HostView<const float, 1> bias,
                   HostView<float, 2> y) {
  detail::check_linear_shapes(x, w, bias, y);
  const std::int64_t m = x.size(0), k = x.size(1), n = w.size(0);
  for (std::int64_t i = 0; i < m; ++i) {
    for (std::int64_t j = 0; j < n; ++j) {
      double acc = bias.empty() ? 0.0 : static_cast<double>(bias(j));
      for (std::int64_t p = 0; p < k; ++p)
        acc += static_cast<double>(x(i, p)) * static_cast<double>(static_cast<float>(w(j, p)));
      y(i, j) = static_cast<float>(acc);
    }
  }
}

/// Backward of y = x·wᵀ + bias for the upstream gradient dy [M, N]:
///   dx  = dy·w          [M, K]  written (=)
///   dw += dyᵀ·x         [N, K]  accumulated (+=)
///   db += Σ_rows dy     [N]     accumulated (+=)
/// An empty dx, dw or db view skips that gradient (a frozen input or parameter, or no bias).
/// Accumulates in double; for T = float each += is rounded once.
template <class T>
void linear_backward(HostView<const T, 2> x, HostView<const T, 2> w, HostView<const T, 2> dy, HostView<T, 2> dx,
                     HostView<T, 2> dw, HostView<T, 1> db) {
  detail::check_linear_backward_shapes(x, w, dy, dx, dw, db);
  const std::int64_t m = x.size(0), k = x.size(1), n = w.size(0);
  if (!dx.empty()) {
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t p = 0; p < k; ++p) {
        double acc = 0.0;
        for (std::int64_t j = 0; j < n; ++j) acc += static_cast<double>(dy(i, j)) * static_cast<double>(w(j, p));
        dx(i, p) = static_cast<T>(acc);
      }
  }
  if (!dw.empty()) {
    for (std::int64_t j = 0; j < n; ++j)
      for (std::int64_t p = 0; p < k; ++p) {
        double acc = static_cast<double>(dw(j, p));
        for (std::int64_t i = 0; i < m; ++i) acc += static_cast<double>(dy(i, j)) * static_cast<double>(x(i, p));
        dw(j, p) = static_cast<T>(acc);
      }
  }
  if (!db.empty()) {
    for (std::int64_t j = 0; j < n; ++j) {
      double acc = static_cast<double>(db(j));
      for (std::int64_t i = 0; i < m; ++i) acc += static_cast<double>(dy(i, j));
      db(j) = static_cast<T>(acc);
    }
  }
}

}  // namespace reference

}  // namespace qlip
