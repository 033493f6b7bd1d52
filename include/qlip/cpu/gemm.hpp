/// @file gemm.hpp
/// @brief CPU backend GEMM and linear over Eigen 3.4 (multithreaded through OpenMP).
///
/// Strided views are handed to Eigen without copying whenever one of the two dimensions has unit
/// stride: stride(1) == 1 maps as a RowMajor matrix (leading dimension stride(0)), stride(0) == 1 as
/// ColMajor (leading dimension stride(1)). A transposed view is therefore free, and linear() reads a
/// PyTorch weight w[N,K] directly as the ColMajor matrix wᵀ[K,N]. Views with neither unit stride
/// (e.g. every other column) are copied to a contiguous temporary first: that is the only place
/// these ops allocate, and no model layout takes it.
///
/// Threading: linear() splits its output into one slab per OpenMP thread (rows, or columns when
/// there are too few rows) and runs one single-threaded Eigen GEMM per slab inside a single
/// parallel region. Eigen's own parallel GEMM shares packed blocks between threads and spin-waits
/// on them once per depth block; on a shared, oversubscribed 2-core machine a descheduled partner
/// stalls every one of those waits. Independent slabs meet once, at the end of the region.
/// linear_rows() is the serial slab kernel, for callers that fuse several row-local ops into one
/// parallel region (nn/encoder_layer.hpp); it can also accumulate into y (a fused residual add).
///
/// Preconditions (not checked): the output does not overlap the inputs.
#pragma once

#include "qlip/cpu/build_check.hpp"

#include <omp.h>

#include <Eigen/Core>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "qlip/core/allocator.hpp"
#include "qlip/core/backend.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/cpu/threading.hpp"
#include "qlip/reference/gemm.hpp"

namespace qlip {
namespace detail::cpu {

/// How a 2-D view can be given to Eigen.
enum class MatrixLayout { row_major, col_major, strided };

/// A layout and the leading dimension (elements between rows, or between columns) that goes with it.
struct MatrixMapping {
  MatrixLayout layout;
  std::int64_t ld;
};

/// Picks RowMajor when the column stride is 1, ColMajor when the row stride is 1 (size-1 dimensions
/// accept any stride), and `strided` otherwise or when rows would overlap (stride 0, negative).
template <class T>
MatrixMapping mapping_of(const HostView<T, 2>& v) {
  const std::int64_t rows = v.size(0), cols = v.size(1);
  if ((cols <= 1 || v.stride(1) == 1) && (rows <= 1 || v.stride(0) >= cols))
    return {MatrixLayout::row_major, rows <= 1 ? std::max<std::int64_t>(cols, 1) : v.stride(0)};
  if ((rows <= 1 || v.stride(0) == 1) && (cols <= 1 || v.stride(1) >= rows))
    return {MatrixLayout::col_major, cols <= 1 ? std::max<std::int64_t>(rows, 1) : v.stride(1)};
  return {MatrixLayout::strided, 0};
}

/// Calls f with an Eigen::Map of v in the given (non-strided) layout. T may be const.
template <class T, class F>
void visit_matrix(const HostView<T, 2>& v, const MatrixMapping& mapping, F&& f) {
  using S = std::remove_const_t<T>;
  using RowMat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using ColMat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
  using RowT = std::conditional_t<std::is_const_v<T>, const RowMat, RowMat>;
  using ColT = std::conditional_t<std::is_const_v<T>, const ColMat, ColMat>;
  const Eigen::OuterStride<> ld(static_cast<Eigen::Index>(mapping.ld));
  if (mapping.layout == MatrixLayout::row_major) {
    f(Eigen::Map<RowT, Eigen::Unaligned, Eigen::OuterStride<>>(v.data(), v.size(0), v.size(1), ld));
  } else {
    f(Eigen::Map<ColT, Eigen::Unaligned, Eigen::OuterStride<>>(v.data(), v.size(0), v.size(1), ld));
  }
}

/// Copies any 2-D view into `storage` (row-major, contiguous) and returns a view of the copy.
inline HostView<float, 2> contiguous_copy(const HostView<const float, 2>& v, AlignedBuffer<float>& storage) {
  storage = AlignedBuffer<float>(v.numel(), false);
  HostView<float, 2> out(storage.data(), v.shape());
  for (std::int64_t i = 0; i < v.size(0); ++i)
    for (std::int64_t j = 0; j < v.size(1); ++j) out(i, j) = v(i, j);
  return out;
}

/// The one Eigen call behind gemm and linear, on already-checked shapes with M, N, K ≥ 1:
///   bias given: c = a·b + bias (bias broadcast over rows; alpha = 1, beta = 0 assumed),
///               or c = c + bias + a·b when beta == 1 (the fused residual add of linear_rows)
///   otherwise:  c = alpha·a·b + beta·c (beta == 0 does not read c)
/// Strided operands are copied here; a strided c is computed in a temporary and copied back.
/// Eigen parallelises the product itself only when called outside an OpenMP parallel region.
inline void gemm_eigen(HostView<const float, 2> a, HostView<const float, 2> b, HostView<float, 2> c,
                       float alpha, float beta, const HostView<const float, 1>* bias) {
  AlignedBuffer<float> a_tmp, b_tmp, c_tmp;
  MatrixMapping ma = mapping_of(a), mb = mapping_of(b), mc = mapping_of(c);
  if (ma.layout == MatrixLayout::strided) {
    a = contiguous_copy(a, a_tmp);
    ma = mapping_of(a);
  }
  if (mb.layout == MatrixLayout::strided) {
    b = contiguous_copy(b, b_tmp);
    mb = mapping_of(b);
  }
  HostView<float, 2> c_work = c;
  const bool c_strided = mc.layout == MatrixLayout::strided;
  if (c_strided) {
    // beta == 0 must not read c: only copy it in when it contributes.
    if (beta != 0.0f) {
      c_work = contiguous_copy(c, c_tmp);
    } else {
      c_tmp = AlignedBuffer<float>(c.numel(), false);
      c_work = HostView<float, 2>(c_tmp.data(), c.shape());
    }
    mc = mapping_of(c_work);
  }

  visit_matrix(a, ma, [&](const auto& A) {
    visit_matrix(b, mb, [&](const auto& B) {
      visit_matrix(c_work, mc, [&](auto C) {
        if (bias != nullptr) {
          // Writing the bias rows replaces the zero-fill Eigen does before accumulating, so the
          // fused bias costs no extra pass over c.
          Eigen::Map<const Eigen::RowVectorXf, Eigen::Unaligned, Eigen::InnerStride<>> bias_row(
              bias->data(), bias->size(0), Eigen::InnerStride<>(bias->stride(0)));
          if (beta == 0.0f) {
            C.rowwise() = bias_row;
          } else {
            C.rowwise() += bias_row;
          }
          C.noalias() += A * B;
        } else if (beta == 0.0f) {
          C.noalias() = alpha * A * B;  // scalar factor folds into the GEMM's alpha
        } else {
          if (beta != 1.0f) C *= beta;
          C.noalias() += alpha * A * B;
        }
      });
    });
  });

  if (c_strided) {
    for (std::int64_t i = 0; i < c.size(0); ++i)
      for (std::int64_t j = 0; j < c.size(1); ++j) c(i, j) = c_work(i, j);
  }
}

/// Threads linear() gives a product of this size: one per ~1 MFLOP of work, at most num_threads(),
/// and 1 when already inside a parallel region.
inline int linear_threads(std::int64_t m, std::int64_t k, std::int64_t n) {
  if (omp_in_parallel()) return 1;
  const double work = static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  const auto by_work = static_cast<std::int64_t>(work / 5.0e5);
  return static_cast<int>(std::clamp<std::int64_t>(by_work, 1, std::max(omp_get_max_threads(), 1)));
}

/// [begin, end) of part `i` of `parts` equal parts of [0, n), boundaries rounded to `align`.
inline std::pair<std::int64_t, std::int64_t> split_range(std::int64_t n, int i, int parts, std::int64_t align = 1) {
  auto at = [&](int j) {
    if (j >= parts) return n;
    const std::int64_t b = n * j / parts;
    return std::min(n, (b + align / 2) / align * align);
  };
  return {at(i), at(i + 1)};
}

/// c = beta·c over any strides (the K == 0 / alpha == 0 case); beta == 0 writes zeros, reads nothing.
inline void scale_matrix(HostView<float, 2> c, float beta) {
  for (std::int64_t i = 0; i < c.size(0); ++i)
    for (std::int64_t j = 0; j < c.size(1); ++j) c(i, j) = beta == 0.0f ? 0.0f : beta * c(i, j);
}

}  // namespace detail::cpu

namespace ops {

/// c = alpha·a·b + beta·c (BLAS sgemm semantics). Any transpose is a transposed view:
/// gemm(cpu, a.transpose(0, 1), b, c) computes aᵀ·b with no copy.
/// beta == 0 does not read c (it may hold NaN garbage). c must not overlap a or b.
/// @param a [M, K]
/// @param b [K, N]
/// @param c [M, N] output (read too when beta ≠ 0)
/// @throws qlip::Error naming the argument whose shape does not fit
inline void gemm(cpu_backend, HostView<const float, 2> a, HostView<const float, 2> b, HostView<float, 2> c,
                 float alpha = 1.0f, float beta = 0.0f) {
  detail::check_gemm_shapes(a, b, c);
  if (c.numel() == 0) return;
  if (a.size(1) == 0 || alpha == 0.0f) {
    detail::cpu::scale_matrix(c, beta);
    return;
  }
  detail::cpu::gemm_eigen(a, b, c, alpha, beta, nullptr);
}

/// y = x·wᵀ + bias (torch.nn.functional.linear). w is read in place as the ColMajor matrix wᵀ,
/// and the bias is written as the GEMM's initial value (no second pass).
/// @param x    [M, K]
/// @param w    [N, K] PyTorch layout (out_features × in_features)
/// @param bias [N], or an empty (default-constructed) view for no bias
/// @param y    [M, N] output (never read)
/// @throws qlip::Error naming the argument whose shape does not fit
inline void linear(cpu_backend, HostView<const float, 2> x, HostView<const float, 2> w,
                   HostView<const float, 1> bias, HostView<float, 2> y) {
  detail::check_linear_shapes(x, w, bias, y);
  if (y.numel() == 0) return;
  const bool has_bias = !bias.empty();
  if (x.size(1) == 0) {
    for (std::int64_t i = 0; i < y.size(0); ++i)
      for (std::int64_t j = 0; j < y.size(1); ++j) y(i, j) = has_bias ? bias(j) : 0.0f;
    return;
  }
  const std::int64_t m = x.size(0), k = x.size(1), n = w.size(0);
  const int threads = detail::cpu::linear_threads(m, k, n);
  if (threads <= 1) {
    detail::cpu::gemm_eigen(x, w.transpose(0, 1), y, 1.0f, 0.0f, has_bias ? &bias : nullptr);
    return;
  }
  // One independent slab per thread: rows when each thread gets ≥ 32 of them, else columns
  // (whole 16-wide panels), so no thread waits on another before the region ends.
  const bool by_rows = m >= 32 * threads;
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    if (by_rows) {
      const auto [r0, r1] = detail::cpu::split_range(m, t, nt);
      if (r1 > r0)
        detail::cpu::gemm_eigen(x.slice(0, r0, r1), w.transpose(0, 1), y.slice(0, r0, r1), 1.0f, 0.0f,
                                has_bias ? &bias : nullptr);
    } else {
      const auto [c0, c1] = detail::cpu::split_range(n, t, nt, 16);
      if (c1 > c0) {
        const HostView<const float, 1> bias_part = has_bias ? bias.slice(0, c0, c1) : HostView<const float, 1>();
        detail::cpu::gemm_eigen(x, w.slice(0, c0, c1).transpose(0, 1), y.slice(1, c0, c1), 1.0f, 0.0f,
                                has_bias ? &bias_part : nullptr);
      }
    }
  }
}

/// Backward of linear (formulas and the empty-view rule as reference::linear_backward):
/// dx = dy·w (=), dw += dyᵀ·x, db += Σ_rows dy. Each product runs as independent per-thread slabs
/// of its output, each one single-threaded Eigen GEMM on views (no copies for the transposes):
/// Eigen's own threading splits a product with a long inner dimension and a small output (dw: the
/// inner dimension is the batch of rows) into many synchronised panels, which measured ~25× slower
/// than one thread for the demo model's shapes on 2 cores. Slabs make every thread's work
/// independent and the result deterministic for a given thread count.
/// @param x  [M, K] the forward input
/// @param w  [N, K] the forward weight
/// @param dy [M, N] upstream gradient
/// @param dx [M, K] written, or empty; must not overlap dy or w
/// @param dw [N, K] accumulated, or empty
/// @param db [N] accumulated, or empty
inline void linear_backward(cpu_backend, HostView<const float, 2> x, HostView<const float, 2> w,
                            HostView<const float, 2> dy, HostView<float, 2> dx, HostView<float, 2> dw,
                            HostView<float, 1> db) {
  detail::check_linear_backward_shapes(x, w, dy, dx, dw, db);
  const std::int64_t m = x.size(0), k = x.size(1), n = w.size(0);
  if (!dx.empty()) {
    if (n == 0) {
      detail::cpu::scale_matrix(dx, 0.0f);
    } else {
      const int threads = detail::cpu::linear_threads(m, n, k);
      const bool by_rows = m >= 32 * threads;
#pragma omp parallel num_threads(threads) if (threads > 1)
      {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        if (by_rows) {
          const auto [r0, r1] = detail::cpu::split_range(m, t, nt);
          if (r1 > r0) detail::cpu::gemm_eigen(dy.slice(0, r0, r1), w, dx.slice(0, r0, r1), 1.0f, 0.0f, nullptr);
        } else {
          const auto [c0, c1] = detail::cpu::split_range(k, t, nt, 16);
          if (c1 > c0) detail::cpu::gemm_eigen(dy, w.slice(1, c0, c1), dx.slice(1, c0, c1), 1.0f, 0.0f, nullptr);
        }
      }
    }
  }
  if (!dw.empty() && m > 0) {
    const int threads = detail::cpu::linear_threads(n, m, k);
    const bool by_rows = n >= 16 * threads;  // rows of dw = output features
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      if (by_rows) {
        const auto [r0, r1] = detail::cpu::split_range(n, t, nt, 8);
        if (r1 > r0)
          detail::cpu::gemm_eigen(dy.slice(1, r0, r1).transpose(0, 1), x, dw.slice(0, r0, r1), 1.0f, 1.0f, nullptr);
      } else {
        const auto [c0, c1] = detail::cpu::split_range(k, t, nt, 16);
        if (c1 > c0) detail::cpu::gemm_eigen(dy.transpose(0, 1), x.slice(1, c0, c1), dw.slice(1, c0, c1), 1.0f, 1.0f, nullptr);
      }
    }
  }
  if (!db.empty()) {
    // Rows outer, columns inner: contiguous dy rows vectorise; one pass over dy.
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t j = 0; j < n; ++j) db(j) += dy(i, j);
  }
}

/// Serial y (+)= x·wᵀ + bias on the calling thread, for row slabs inside a caller's parallel region
/// (Eigen runs single-threaded there). accumulate: y ← y + bias + x·wᵀ (bias added to y first, then
/// the product accumulated in the GEMM: a residual add with no extra pass over the product).
/// Shapes as linear(); no checks beyond those (the caller checked the whole tensors).
inline void linear_rows(cpu_backend, HostView<const float, 2> x, HostView<const float, 2> w,
                        HostView<const float, 1> bias, HostView<float, 2> y, bool accumulate) {
  if (y.numel() == 0) return;
  const bool has_bias = !bias.empty();
  if (x.size(1) == 0) {
    for (std::int64_t i = 0; i < y.size(0); ++i)
      for (std::int64_t j = 0; j < y.size(1); ++j)
        y(i, j) = (accumulate ? y(i, j) : 0.0f) + (has_bias ? bias(j) : 0.0f);
    return;
  }
  detail::cpu::gemm_eigen(x, w.transpose(0, 1), y, 1.0f, accumulate ? 1.0f : 0.0f, has_bias ? &bias : nullptr);
}

}  // namespace ops
}  // namespace qlip
