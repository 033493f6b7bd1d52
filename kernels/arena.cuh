/// @file arena.cuh
/// @brief Device workspace arena: one cudaMalloc up front, then bump allocation of 256-byte aligned
///        device views with mark/rewind (the device counterpart of core/allocator.hpp's Arena), so a
///        forward or training step allocates no device memory.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "common.cuh"
#include "qlip/core/allocator.hpp"

namespace qlip::cuda {

/// Alignment of every arena allocation: cudaMalloc's, enough for vector loads and cuBLASLt.
inline constexpr std::size_t kDeviceAlignment = 256;

/// A bump allocator over one device block. Not thread-safe; one per stream.
class DeviceArena {
 public:
  DeviceArena() = default;
  explicit DeviceArena(std::size_t capacity_bytes) : block_(static_cast<std::int64_t>(capacity_bytes)) {}

  /// Uninitialised device storage for n elements of T.
  /// @throws qlip::Error when the arena cannot hold them (nothing is allocated then)
  template <class T>
  T* allocate(std::int64_t n) {
    QLIP_CHECK(n >= 0, "negative device arena request ", n);
    const std::size_t bytes = qlip::detail::round_up(static_cast<std::size_t>(n) * sizeof(T), kDeviceAlignment);
    QLIP_CHECK(used_ + bytes <= capacity(), "device arena exhausted: need ", used_ + bytes, " bytes, capacity ",
               capacity(), " (size it from the module's workspace bytes)");
    T* p = reinterpret_cast<T*>(block_.data() + used_);
    used_ += bytes;
    peak_ = std::max(peak_, used_);
    return p;
  }

  /// A contiguous device view of fresh (uninitialised) arena storage.
  template <class T, int R>
  DeviceView<T, R> tensor(const Extents<R>& shape) {
    std::int64_t n = 1;
    for (auto s : shape) n *= s;
    return DeviceView<T, R>(allocate<T>(n), shape, contiguous_strides<R>(shape));
  }

  std::size_t mark() const { return used_; }
  void rewind(std::size_t mark) {
    QLIP_CHECK(mark <= used_, "device arena rewind past the current top");
    used_ = mark;
  }
  std::size_t capacity() const { return static_cast<std::size_t>(block_.size()); }
  std::size_t used() const { return used_; }
  /// High-water mark: what the work really needed (size the next arena from it).
  std::size_t peak() const { return peak_; }

 private:
  DeviceBuffer<std::uint8_t> block_;
  std::size_t used_ = 0, peak_ = 0;
};

/// Rewinds a device arena to where it was when the scope began (RAII).
class DeviceArenaScope {
 public:
  explicit DeviceArenaScope(DeviceArena& arena) : arena_(arena), mark_(arena.mark()) {}
  ~DeviceArenaScope() { arena_.rewind(mark_); }
  DeviceArenaScope(const DeviceArenaScope&) = delete;
  DeviceArenaScope& operator=(const DeviceArenaScope&) = delete;

 private:
  DeviceArena& arena_;
  std::size_t mark_;
};

}  // namespace qlip::cuda
