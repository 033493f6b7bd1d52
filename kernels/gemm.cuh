/// @file gemm.cuh
/// @brief GEMM and linear (forward and backward) on the CUDA backend through cuBLASLt: fp32, TF32
///        or bf16 inputs with fp32 accumulation and fp32 output, the bias added in cuBLASLt's
///        epilogue. Link CUDA::cublasLt.
///
/// Views are row-major with any leading stride, or transposed views (unit stride along dim 0): a
/// row-major [R, C] matrix is the column-major [C, R] matrix cuBLASLt expects, so c = a·b is issued
/// as cᵀ = bᵀ·aᵀ with each operand transposed or not by where its unit stride is. Every product
/// needs c (and y, dx, dw) with unit stride along dim 1. The handle and its workspace live in a
/// cuda::BlasLt the caller creates once (no allocation per call). db is a column sum in a fixed
/// order (one thread per column), so it is deterministic; cuBLASLt's own results are deterministic
/// for a fixed algorithm, shape and device.
#pragma once

#include <cublasLt.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "common.cuh"
#include "qlip/core/dtype.hpp"
#include "qlip/reference/gemm.hpp"

/// Throws qlip::Error with the failed cuBLAS call and its status.
#define QLIP_CUBLAS_CHECK(expr)                                                                                     \
  do {                                                                                                              \
    cublasStatus_t qlip_cublas_status_ = (expr);                                                                    \
    if (qlip_cublas_status_ != CUBLAS_STATUS_SUCCESS)                                                               \
      ::qlip::detail::throw_error(                                                                                  \
          __FILE__, __LINE__,                                                                                       \
          ::qlip::detail::concat("cuBLAS call failed: " #expr ": status ", static_cast<int>(qlip_cublas_status_))); \
  } while (0)

namespace qlip {
namespace cuda {

/// The arithmetic of a float GEMM: exact fp32 products, or TF32 tensor cores (inputs rounded to
/// 10-bit mantissas, fp32 accumulation).
enum class FloatMath { fp32, tf32 };

/// A cuBLASLt handle and the device workspace its algorithms may use, created once.
class BlasLt {
 public:
  /// 32 MiB: what NVIDIA recommends for Hopper's cuBLASLt algorithms.
  static constexpr std::size_t kDefaultWorkspaceBytes = std::size_t{32} << 20;
  explicit BlasLt(std::size_t workspace_bytes = kDefaultWorkspaceBytes)
      : workspace_(static_cast<std::int64_t>(workspace_bytes)) {
    QLIP_CUBLAS_CHECK(cublasLtCreate(&handle_));
  }
  BlasLt(const BlasLt&) = delete;
  BlasLt& operator=(const BlasLt&) = delete;
  ~BlasLt() {
    if (handle_) QLIP_CHECK_NOTHROW(cublasLtDestroy(handle_) == CUBLAS_STATUS_SUCCESS, "cublasLtDestroy failed");
  }
  cublasLtHandle_t handle() const { return handle_; }
  void* workspace() const { return workspace_.data(); }
  std::size_t workspace_bytes() const { return static_cast<std::size_t>(workspace_.size()); }

 private:
  cublasLtHandle_t handle_ = nullptr;
  DeviceBuffer<std::uint8_t> workspace_;
};

namespace detail {

template <class T>
constexpr cudaDataType_t cuda_type() {
  if constexpr (std::is_same_v<T, float>)
    return CUDA_R_32F;
  else
    return CUDA_R_16BF;
}

/// One operand as cuBLASLt sees it: the column-major matrix in memory, its leading dimension and
/// whether the product takes its transpose.
struct LtOperand {
  std::uint64_t rows = 0, cols = 0;
  std::int64_t ld = 0;
  cublasOperation_t op = CUBLAS_OP_N;
};

/// The column-major operand that yields vᵀ (v row-major [R, C], the role of every operand in
/// cᵀ = bᵀ·aᵀ): memory with unit stride along dim 1 is vᵀ itself ([C, R], ld = stride 0); unit
/// stride along dim 0 is v column-major ([R, C], ld = stride 1), transposed by the op.
template <class T>
LtOperand transposed_operand(const DeviceView<const T, 2>& v, const char* what) {
  const std::int64_t r = v.size(0), c = v.size(1);
  if (v.stride(1) == 1 || c == 1)
    return {static_cast<std::uint64_t>(c), static_cast<std::uint64_t>(r), std::max<std::int64_t>(v.stride(0), c),
            CUBLAS_OP_N};
  QLIP_CHECK(v.stride(0) == 1 || r == 1, "cuda gemm: ", what, " needs unit stride along one dimension, got strides [",
             v.stride(0), ", ", v.stride(1), "]");
  return {static_cast<std::uint64_t>(r), static_cast<std::uint64_t>(c), std::max<std::int64_t>(v.stride(1), r),
          CUBLAS_OP_T};
}

/// RAII for the cuBLASLt descriptors of one call.
struct LtCall {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  LtCall() = default;
  LtCall(const LtCall&) = delete;
  LtCall& operator=(const LtCall&) = delete;
  ~LtCall() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

/// c = alpha·a·b + beta·c (+ bias[n] per column of c) with a [M, K], b [K, N], c [M, N] float
/// (unit stride along dim 1), shapes checked by the caller. Inputs T = float (fp32 or TF32 math) or
/// bf16 (fp32 accumulation).
template <class T>
void lt_matmul(const BlasLt& lt, const DeviceView<const T, 2>& a, const DeviceView<const T, 2>& b,
               const DeviceView<float, 2>& c, float alpha, float beta, const float* bias, FloatMath math,
               cudaStream_t stream) {
  QLIP_CHECK(c.stride(1) == 1 || c.size(1) <= 1, "cuda gemm: the output needs unit stride along dim 1, got strides [",
             c.stride(0), ", ", c.stride(1), "]");
  const std::int64_t m = c.size(0), n = c.size(1), k = a.size(1);
  // cᵀ [N, M] = bᵀ [N, K] · aᵀ [K, M]: cuBLASLt's A is the operand for bᵀ, its B the one for aᵀ.
  const LtOperand lb = transposed_operand(b, "b"), la = transposed_operand(a, "a");
  const cublasComputeType_t compute =
      std::is_same_v<T, float> && math == FloatMath::tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  LtCall call;
  QLIP_CUBLAS_CHECK(cublasLtMatmulDescCreate(&call.desc, compute, CUDA_R_32F));
  QLIP_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(call.desc, CUBLASLT_MATMUL_DESC_TRANSA, &lb.op, sizeof(lb.op)));
  QLIP_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(call.desc, CUBLASLT_MATMUL_DESC_TRANSB, &la.op, sizeof(la.op)));
  if (bias != nullptr) {
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    QLIP_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(call.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
    QLIP_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(call.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  }
  QLIP_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&call.a, cuda_type<T>(), lb.rows, lb.cols, lb.ld));
  QLIP_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&call.b, cuda_type<T>(), la.rows, la.cols, la.ld));
  QLIP_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&call.c, CUDA_R_32F, static_cast<std::uint64_t>(n),
                                               static_cast<std::uint64_t>(m), std::max<std::int64_t>(c.stride(0), n)));
  QLIP_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&call.pref));
  const std::size_t ws_bytes = lt.workspace_bytes();
  QLIP_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(call.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes,
                                                         sizeof(ws_bytes)));
  cublasLtMatmulHeuristicResult_t heuristic{};
  int found = 0;
  QLIP_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(lt.handle(), call.desc, call.a, call.b, call.c, call.c, call.pref, 1,
                                                   &heuristic, &found));
  QLIP_CHECK(found > 0, "cuda gemm: cuBLASLt has no algorithm for [", m, ", ", k, "]·[", k, ", ", n, "]");
  QLIP_CUBLAS_CHECK(cublasLtMatmul(lt.handle(), call.desc, &alpha, b.data(), call.a, a.data(), call.b, &beta, c.data(),
                                   call.c, c.data(), call.c, &heuristic.algo, lt.workspace(), ws_bytes, stream));
}

/// db[j] += Σ_i dy[i, j], one thread per column, rows in order.
QLIP_KERNEL void column_sum_kernel(DeviceView<const float, 2> dy, DeviceView<float, 1> db) {
  const std::int64_t j = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (j >= dy.size(1)) return;
  float acc = 0.0f;
  for (std::int64_t i = 0; i < dy.size(0); ++i) acc += dy(i, j);
  db(j) += acc;
}

}  // namespace detail
}  // namespace cuda

namespace ops {

/// c = alpha·a·b + beta·c (BLAS semantics, as the other backends' gemm) on the device; any
/// transpose is a transposed view. beta == 0 does not read c.
inline void gemm(cuda_backend, const cuda::BlasLt& lt, DeviceView<const float, 2> a, DeviceView<const float, 2> b,
                 DeviceView<float, 2> c, float alpha = 1.0f, float beta = 0.0f,
                 cuda::FloatMath math = cuda::FloatMath::fp32, cudaStream_t stream = 0) {
  detail::check_gemm_shapes(cuda::sizes_only(a), cuda::sizes_only(b), cuda::sizes_only(c));
  if (c.numel() == 0) return;
  if (a.size(1) == 0) {  // cuBLASLt refuses K = 0; the product is empty, only beta·c remains
    QLIP_CHECK(beta == 0.0f, "cuda gemm: K = 0 with beta ≠ 0 is not supported");
    QLIP_CUDA_CHECK(
        cudaMemset2DAsync(c.data(), sizeof(float) * c.stride(0), 0, sizeof(float) * c.size(1), c.size(0), stream));
    return;
  }
  cuda::detail::lt_matmul<float>(lt, a, b, c, alpha, beta, nullptr, math, stream);
}

/// c = a·b + (bias) with bf16 inputs, fp32 accumulation and fp32 output (the mixed-precision
/// forward: bf16 weights and activations, fp32 results).
inline void gemm(cuda_backend, const cuda::BlasLt& lt, DeviceView<const bf16, 2> a, DeviceView<const bf16, 2> b,
                 DeviceView<float, 2> c, float alpha = 1.0f, float beta = 0.0f, cudaStream_t stream = 0) {
  QLIP_CHECK(b.size(0) == a.size(1), "gemm: b has shape ", shape_string<2>(b.shape()), ", expected [", a.size(1),
             ", N] to match a ", shape_string<2>(a.shape()));
  check_shape(cuda::sizes_only(c), {a.size(0), b.size(1)}, "gemm: c");
  if (c.numel() == 0 || a.size(1) == 0) return;
  cuda::detail::lt_matmul<bf16>(lt, a, b, c, alpha, beta, nullptr, cuda::FloatMath::fp32, stream);
}

/// y = x·wᵀ + bias (torch.nn.functional.linear) on the device; the bias is cuBLASLt's epilogue.
inline void linear(cuda_backend, const cuda::BlasLt& lt, DeviceView<const float, 2> x, DeviceView<const float, 2> w,
                   DeviceView<const float, 1> bias, DeviceView<float, 2> y,
                   cuda::FloatMath math = cuda::FloatMath::fp32, cudaStream_t stream = 0) {
  detail::check_linear_shapes(cuda::sizes_only(x), cuda::sizes_only(w), cuda::sizes_only(bias), cuda::sizes_only(y));
  QLIP_CHECK(bias.empty() || bias.stride(0) == 1 || bias.size(0) <= 1, "cuda linear: bias must be contiguous");
  if (y.numel() == 0) return;
  QLIP_CHECK(x.size(1) > 0, "cuda linear: K = 0 is not supported");
  cuda::detail::lt_matmul<float>(lt, x, w.transpose(0, 1), y, 1.0f, 0.0f, bias.empty() ? nullptr : bias.data(), math,
                                 stream);
}

/// Backward of linear (formulas and the empty-view rule as reference::linear_backward):
/// dx = dy·w (=), dw += dyᵀ·x, db += Σ_rows dy.
inline void linear_backward(cuda_backend, const cuda::BlasLt& lt, DeviceView<const float, 2> x,
                            DeviceView<const float, 2> w, DeviceView<const float, 2> dy, DeviceView<float, 2> dx,
                            DeviceView<float, 2> dw, DeviceView<float, 1> db,
                            cuda::FloatMath math = cuda::FloatMath::fp32, cudaStream_t stream = 0) {
  detail::check_linear_backward_shapes(cuda::sizes_only(x), cuda::sizes_only(w), cuda::sizes_only(dy),
                                       cuda::sizes_only(dx), cuda::sizes_only(dw), cuda::sizes_only(db));
  const std::int64_t m = x.size(0), n = w.size(0);
  if (!dx.empty() && dx.numel() > 0) {
    QLIP_CHECK(n > 0, "cuda linear_backward: N = 0 is not supported");
    cuda::detail::lt_matmul<float>(lt, dy, w, dx, 1.0f, 0.0f, nullptr, math, stream);
  }
  if (!dw.empty() && dw.numel() > 0 && m > 0)
    cuda::detail::lt_matmul<float>(lt, dy.transpose(0, 1), x, dw, 1.0f, 1.0f, nullptr, math, stream);
  if (!db.empty() && n > 0) {
    constexpr int kThreads = 128;
    cuda::detail::column_sum_kernel<<<cuda::grid_for(n, kThreads), kThreads, 0, stream>>>(dy, db);
    QLIP_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace ops
}  // namespace qlip
