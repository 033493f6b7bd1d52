/// @file gemm.hpp
/// @brief CPU backend GEMM and linear (forward, backward, row slabs) over the packed SGEMM of
///        sgemm.hpp: register-tiled micro-kernels, B packed into column panels, threads over rows
///        or panels.
///
/// Every transpose is a view: linear() reads a PyTorch weight w[N,K] as wᵀ[K,N] and packs it into
/// panels directly, linear_backward's dyᵀ and the weight are views too. Packing copies B once per
/// call into a per-thread scratch buffer; a weight used by many calls can be packed once
/// (PackedWeight) and passed to linear() instead. linear() on at most kStreamingRows rows (decoding)
/// streams the weight instead (linear_streaming.hpp), fp32 or bf16.
///
/// Threading: ops started outside a parallel region use qlip::num_threads() threads (fewer for
/// small products); inside one (a caller's row region, conv2d's per-image loop)
/// they run on the calling thread (cpu/encoder_layer.hpp packs its weights itself and calls
/// linear_rows_packed). The sum over the depth runs in one fixed order, so a product
/// gives the same bits for any thread count.
///
/// Preconditions (not checked): the output does not overlap the inputs.
#pragma once

#include "qlip/cpu/build_check.hpp"

#include <algorithm>
#include <cstdint>

#include "qlip/core/allocator.hpp"
#include "qlip/core/backend.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/cpu/linear_streaming.hpp"
#include "qlip/cpu/sgemm.hpp"
#include "qlip/cpu/threading.hpp"
#include "qlip/reference/gemm.hpp"

namespace qlip {
namespace detail::cpu {

/// c = beta·c over any strides (the K == 0 / alpha == 0 case); beta == 0 writes zeros, reads nothing.
inline void scale_matrix(HostView<float, 2> c, float beta) {
  for (std::int64_t i = 0; i < c.size(0); ++i)
    for (std::int64_t j = 0; j < c.size(1); ++j) c(i, j) = beta == 0.0f ? 0.0f : beta * c(i, j);
}

/// y = bias (or 0), then y (+)= … : the K == 0 case of linear.
inline void fill_bias_rows(HostView<const float, 1> bias, HostView<float, 2> y, bool accumulate) {
  for (std::int64_t i = 0; i < y.size(0); ++i)
    for (std::int64_t j = 0; j < y.size(1); ++j)
      y(i, j) = (accumulate ? y(i, j) : 0.0f) + (bias.empty() ? 0.0f : bias(j));
}

/// c = alpha·a·b + beta·c with shapes as ops::gemm, unchecked, for ops that call it per item of their
/// own parallel loop: inside an active region it runs on the calling thread, outside on the team.
inline void gemm_unchecked(HostView<const float, 2> a, HostView<const float, 2> b, HostView<float, 2> c, float alpha,
                        float beta) {
  if (c.numel() == 0) return;
  if (a.size(1) == 0 || alpha == 0.0f) {
    scale_matrix(c, beta);
    return;
  }
  sgemm::gemm(a, b, nullptr, c, alpha, beta, {}, sgemm::threads_for(a.size(0), a.size(1), b.size(1)));
}

/// Serial y (+)= x·wᵀ + bias on the calling thread, w given as the view wᵀ (packed here) or already
/// packed (`packed`, then w_t is ignored); shapes as linear_rows, unchecked.
inline void linear_rows_serial(HostView<const float, 2> x, HostView<const float, 2> w_t,
                               const sgemm::PackedPanels* packed, HostView<const float, 1> bias, HostView<float, 2> y,
                               bool accumulate) {
  if (y.numel() == 0) return;
  if (x.size(1) == 0) {
    fill_bias_rows(bias, y, accumulate);
    return;
  }
  sgemm::gemm(x, w_t, packed, y, 1.0f, accumulate ? 1.0f : 0.0f, bias, 1);
}

/// linear_rows from w already packed as the panels of wᵀ: for a parallel region that packed w
/// together once.
inline void linear_rows_packed(HostView<const float, 2> x, const sgemm::PackedPanels& w, HostView<const float, 1> bias,
                               HostView<float, 2> y, bool accumulate) {
  linear_rows_serial(x, {}, &w, bias, y, accumulate);
}

}  // namespace detail::cpu

/// A linear layer's weight w[N, K] packed once as the panels of wᵀ, for inference: linear() with a
/// PackedWeight skips the per-call packing. It copies w; repack after changing w.
class PackedWeight {
 public:
  PackedWeight() = default;
  explicit PackedWeight(HostView<const float, 2> w)
      : n_(w.size(0)), k_(w.size(1)), data_(detail::cpu::sgemm::packed_size(w.size(1), w.size(0)), false) {
    detail::cpu::sgemm::pack_b_panels(w.transpose(0, 1), data_.data(), 0, detail::cpu::sgemm::panel_count(n_));
  }
  std::int64_t out_features() const { return n_; }
  std::int64_t in_features() const { return k_; }
  bool empty() const { return data_.size() == 0; }
  detail::cpu::sgemm::PackedPanels panels() const { return {data_.data(), k_, n_}; }

 private:
  std::int64_t n_ = 0, k_ = 0;
  AlignedBuffer<float> data_;
};

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
  detail::cpu::gemm_unchecked(a, b, c, alpha, beta);
}

/// y = x·wᵀ + bias (torch.nn.functional.linear). w is read in place as the matrix wᵀ and packed;
/// the bias is added in the GEMM's epilogue (no second pass).
/// @param x    [M, K]
/// @param w    [N, K] PyTorch layout (out_features × in_features)
/// @param bias [N], or an empty (default-constructed) view for no bias
/// @param y    [M, N] output (never read)
/// @throws qlip::Error naming the argument whose shape does not fit
inline void linear(cpu_backend, HostView<const float, 2> x, HostView<const float, 2> w,
                   HostView<const float, 1> bias, HostView<float, 2> y) {
  detail::check_linear_shapes(x, w, bias, y);
  if (y.numel() == 0) return;
  if (x.size(1) == 0) {
    detail::cpu::fill_bias_rows(bias, y, false);
    return;
  }
  if (x.size(0) <= detail::cpu::kStreamingRows && x.stride(1) == 1 && w.stride(1) == 1) {
    // Memory-bound: every thread helps once the weight is past a few hundred kB.
    const std::int64_t by_size = w.size(0) * w.size(1) / 65536;
    const int streaming = omp_in_parallel() ? 1 : static_cast<int>(std::clamp<std::int64_t>(by_size, 1, num_threads()));
    detail::cpu::linear_streaming(x, w, bias, y, streaming);
    return;
  }
  const int threads = detail::cpu::sgemm::threads_for(x.size(0), x.size(1), w.size(0));
  detail::cpu::sgemm::gemm(x, w.transpose(0, 1), nullptr, y, 1.0f, 0.0f, bias, threads);
}

/// y = x·wᵀ + bias with the weight stored in bfloat16 (the decoding option of nn/llama.hpp: half
/// the bytes per token of a memory-bound step). Each weight is widened exactly to float in
/// registers and the products are summed in float, so the only difference from linear() on the
/// fp32 weights is the weights' rounding to bf16. Up to kStreamingRows rows stream the weight once;
/// more rows (a prefill) widen blocks of weight rows into a float scratch and run the packed SGEMM.
/// @param x    [M, K]
/// @param w    [N, K] bf16, unit stride along K
/// @param bias [N] or empty
/// @param y    [M, N] output (never read)
/// @throws qlip::Error naming the argument whose shape does not fit
inline void linear(cpu_backend, HostView<const float, 2> x, HostView<const bf16, 2> w, HostView<const float, 1> bias,
                   HostView<float, 2> y) {
  detail::check_linear_shapes(x, w, bias, y);
  QLIP_CHECK(w.stride(1) == 1, "linear: bf16 weight needs unit stride along K, got strides [", w.stride(0), ", ",
             w.stride(1), "]");
  if (y.numel() == 0) return;
  if (x.size(1) == 0) {
    detail::cpu::fill_bias_rows(bias, y, false);
    return;
  }
  const std::int64_t m = x.size(0), k = x.size(1), n = w.size(0);
  if (m <= detail::cpu::kStreamingRows && x.stride(1) == 1) {
    const int threads = omp_in_parallel() ? 1 : static_cast<int>(std::clamp<std::int64_t>(n * k / 131072, 1, num_threads()));
    detail::cpu::linear_streaming(x, w, bias, y, threads);
    return;
  }
  // 256 weight rows per block: ≤ 8 MiB of float scratch for K up to 8192, and N-wide enough that
  // the SGEMM's panels stay efficient.
  constexpr std::int64_t kBlock = 256;
  AlignedBuffer<float> wide(std::min(kBlock, n) * k, false);
  for (std::int64_t n0 = 0; n0 < n; n0 += kBlock) {
    const std::int64_t rows = std::min(kBlock, n - n0);
    for (std::int64_t o = 0; o < rows; ++o) {
      const bf16* src = w.data() + (n0 + o) * w.stride(0);
      float* dst = wide.data() + o * k;
#pragma omp simd
      for (std::int64_t j = 0; j < k; ++j) dst[j] = detail::cpu::widen(src[j]);
    }
    const HostView<const float, 2> block(wide.data(), {rows, k});
    const HostView<const float, 1> block_bias = bias.empty() ? bias : bias.slice(0, n0, n0 + rows);
    const int threads = detail::cpu::sgemm::threads_for(m, k, rows);
    detail::cpu::sgemm::gemm(x, block.transpose(0, 1), nullptr, y.slice(1, n0, n0 + rows), 1.0f, 0.0f, block_bias,
                             threads);
  }
}

/// linear() with a weight packed once (PackedWeight): the same result, no per-call packing.
/// @throws qlip::Error when x, bias or y do not fit the packed weight's shape
inline void linear(cpu_backend, HostView<const float, 2> x, const PackedWeight& w, HostView<const float, 1> bias,
                   HostView<float, 2> y) {
  QLIP_CHECK(!w.empty(), "linear: the packed weight is empty");
  QLIP_CHECK(x.size(1) == w.in_features(), "linear: x has shape ", shape_string<2>(x.shape()),
             ", expected [M, ", w.in_features(), "] to match the packed weight [", w.out_features(), ", ",
             w.in_features(), "]");
  if (!bias.empty()) check_shape(bias, {w.out_features()}, "linear: bias");
  check_shape(y, {x.size(0), w.out_features()}, "linear: y");
  if (y.numel() == 0) return;
  const detail::cpu::sgemm::PackedPanels panels = w.panels();
  const int threads = detail::cpu::sgemm::threads_for(x.size(0), x.size(1), w.out_features());
  detail::cpu::sgemm::gemm(x, {}, &panels, y, 1.0f, 0.0f, bias, threads);
}

/// Backward of linear (formulas and the empty-view rule as reference::linear_backward):
/// dx = dy·w (=), dw += dyᵀ·x, db += Σ_rows dy. Both products are packed GEMMs on views (no copies
/// of the transposes); each is threaded over its own output, so the result is deterministic and the
/// same for any thread count.
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
  if (!dx.empty() && dx.numel() > 0) {
    if (n == 0) {
      detail::cpu::scale_matrix(dx, 0.0f);
    } else {
      detail::cpu::sgemm::gemm(dy, w, nullptr, dx, 1.0f, 0.0f, {}, detail::cpu::sgemm::threads_for(m, n, k));
    }
  }
  if (!dw.empty() && m > 0 && dw.numel() > 0) {
    detail::cpu::sgemm::gemm(dy.transpose(0, 1), x, nullptr, dw, 1.0f, 1.0f, {},
                             detail::cpu::sgemm::threads_for(n, m, k));
  }
  if (!db.empty()) {
    // Rows outer, columns inner: contiguous dy rows vectorise; one pass over dy.
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t j = 0; j < n; ++j) db(j) += dy(i, j);
  }
}

/// Serial y (+)= x·wᵀ + bias on the calling thread, for row slabs inside a caller's parallel region.
/// accumulate: y ← y + x·wᵀ + bias (a residual add fused into the GEMM's epilogue).
/// Shapes as linear(); no checks beyond those (the caller checked the whole tensors).
inline void linear_rows(cpu_backend, HostView<const float, 2> x, HostView<const float, 2> w,
                        HostView<const float, 1> bias, HostView<float, 2> y, bool accumulate) {
  detail::cpu::linear_rows_serial(x, w.transpose(0, 1), nullptr, bias, y, accumulate);
}

}  // namespace ops
}  // namespace qlip
