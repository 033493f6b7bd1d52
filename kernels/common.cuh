/// @file common.cuh
/// @brief CUDA plumbing shared by every kernel: QLIP_CUDA_CHECK, an owning DeviceBuffer, host↔device
///        copies of views, and launch helpers. Included only by nvcc-compiled files.
#pragma once

#ifndef __CUDACC__
#error "kernels/*.cuh are CUDA headers: include them only from .cu files compiled by nvcc"
#endif

#include <cuda_runtime.h>

#include <cstdint>
#include <utility>

#include "qlip/core/backend.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"

/// Throws qlip::Error with file:line, the failed expression and CUDA's error string.
#define QLIP_CUDA_CHECK(expr)                                                                 \
  do {                                                                                        \
    cudaError_t qlip_status_ = (expr);                                                        \
    if (qlip_status_ != cudaSuccess)                                                          \
      ::qlip::detail::throw_error(__FILE__, __LINE__,                                         \
                                  ::qlip::detail::concat("CUDA call failed: " #expr ": ",      \
                                                         cudaGetErrorString(qlip_status_)));  \
  } while (0)

/// Checks the launch that was just issued (configuration errors surface here, not at sync).
#define QLIP_CUDA_CHECK_LAUNCH() QLIP_CUDA_CHECK(cudaGetLastError())

namespace qlip::cuda {

/// True when at least one CUDA device is usable (tests skip otherwise).
inline bool device_available() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

/// Owning device memory of n elements of T. Allocated up front by the caller (model load,
/// workspace arena), never inside a forward. The destructor cannot throw, so it logs.
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::int64_t n) : size_(n) {
    QLIP_CHECK(n >= 0, "negative device buffer size ", n);
    if (n > 0) QLIP_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ptr_), sizeof(T) * static_cast<std::size_t>(n)));
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(size_, o.size_);
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (ptr_) QLIP_CHECK_NOTHROW(cudaFree(ptr_) == cudaSuccess, "cudaFree failed");
  }
  T* data() const { return ptr_; }
  std::int64_t size() const { return size_; }
  /// A contiguous device view of the first numel(shape) elements.
  template <int R>
  DeviceView<T, R> view(const Extents<R>& shape) const {
    std::int64_t n = 1;
    for (auto s : shape) n *= s;
    QLIP_CHECK(n <= size_, "device view of ", n, " elements over a buffer of ", size_);
    return DeviceView<T, R>(ptr_, shape, contiguous_strides<R>(shape));
  }

 private:
  T* ptr_ = nullptr;
  std::int64_t size_ = 0;
};

/// Copies n contiguous elements host → device.
template <class T>
void copy_to_device(T* dst, const T* src, std::int64_t n) {
  QLIP_CUDA_CHECK(cudaMemcpy(dst, src, sizeof(T) * static_cast<std::size_t>(n), cudaMemcpyHostToDevice));
}
/// Copies n contiguous elements device → host.
template <class T>
void copy_to_host(T* dst, const T* src, std::int64_t n) {
  QLIP_CUDA_CHECK(cudaMemcpy(dst, src, sizeof(T) * static_cast<std::size_t>(n), cudaMemcpyDeviceToHost));
}

/// A host view with v's shape and strides and no data, for the argument checks shared with the
/// other backends that read only sizes (never pass it to anything that reads elements).
template <class T, int R>
HostView<T, R> sizes_only(const DeviceView<T, R>& v) {
  return HostView<T, R>(nullptr, v.shape(), v.strides());
}

/// Blocks of `threads` covering n items (int64 count, clamped grid).
inline unsigned grid_for(std::int64_t n, int threads) {
  std::int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(blocks > 65535 * 512 ? 65535 * 512 : (blocks < 1 ? 1 : blocks));
}

}  // namespace qlip::cuda
