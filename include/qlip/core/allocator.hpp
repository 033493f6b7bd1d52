/// @file allocator.hpp
/// @brief Host storage: a 64-byte aligned buffer, an owning host Tensor, and the workspace Arena.
///
/// Forward passes take an Arena and never allocate: the caller sizes the arena once (modules report
/// their workspace needs) and every temporary is a bump allocation released by an ArenaScope.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <utility>

#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip {

/// Alignment of every host allocation: one AVX-512 register / cache line.
inline constexpr std::size_t kHostAlignment = 64;

namespace detail {
struct AlignedFree {
  void operator()(void* p) const noexcept { std::free(p); }
};
constexpr std::size_t round_up(std::size_t n, std::size_t a) { return (n + a - 1) / a * a; }
}  // namespace detail

/// Owning, 64-byte aligned, uninitialised (or zeroed) host memory of `n` elements of T.
template <class T>
class AlignedBuffer {
  static_assert(std::is_trivially_copyable_v<T>, "AlignedBuffer holds trivially copyable types");

 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(std::int64_t n, bool zero = true) : size_(n) {
    QLIP_CHECK(n >= 0, "negative buffer size ", n);
    if (n == 0) return;
    std::size_t bytes = detail::round_up(static_cast<std::size_t>(n) * sizeof(T), kHostAlignment);
    void* p = std::aligned_alloc(kHostAlignment, bytes);
    if (!p) QLIP_THROW("out of host memory allocating ", bytes, " bytes");
    if (zero) std::memset(p, 0, bytes);
    ptr_.reset(static_cast<T*>(p));
  }
  T* data() { return ptr_.get(); }
  const T* data() const { return ptr_.get(); }
  std::int64_t size() const { return size_; }

 private:
  std::unique_ptr<T, detail::AlignedFree> ptr_;
  std::int64_t size_ = 0;
};

/// An owning contiguous host tensor. view() hands out TensorViews of it.
/// @tparam T element type
/// @tparam R rank
template <class T, int R>
class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(const Extents<R>& shape) : shape_(shape), buffer_(count(shape)) {}

  HostView<T, R> view() { return HostView<T, R>(buffer_.data(), shape_); }
  HostView<const T, R> view() const { return HostView<const T, R>(buffer_.data(), shape_); }
  operator HostView<T, R>() { return view(); }
  operator HostView<const T, R>() const { return view(); }

  T* data() { return buffer_.data(); }
  const T* data() const { return buffer_.data(); }
  const Extents<R>& shape() const { return shape_; }
  std::int64_t size(int d) const { return shape_[d]; }
  std::int64_t numel() const { return buffer_.size(); }
  template <class... I>
  T& operator()(I... idx) {
    return view()(idx...);
  }
  template <class... I>
  const T& operator()(I... idx) const {
    return view()(idx...);
  }

 private:
  static std::int64_t count(const Extents<R>& shape) {
    std::int64_t n = 1;
    for (auto s : shape) {
      QLIP_CHECK(s >= 0, "negative extent in shape ", shape_string<R>(shape));
      n *= s;
    }
    return n;
  }
  Extents<R> shape_{};
  AlignedBuffer<T> buffer_;
};

/// Bytes an Arena needs for one allocation of n elements of T: Arena::allocate's rounding to 64 bytes.
template <class T>
constexpr std::size_t arena_bytes(std::int64_t n) {
  return detail::round_up(static_cast<std::size_t>(n) * sizeof(T), kHostAlignment);
}

/// A bump allocator over one preallocated host block. Allocation is O(1), nothing is freed
/// individually; ArenaScope rewinds to a mark. Exceeding the capacity throws (sizes are known
/// ahead: a module's workspace_bytes() says what its forward needs).
class Arena {
 public:
  Arena() = default;
  explicit Arena(std::size_t capacity_bytes) : block_(static_cast<std::int64_t>(capacity_bytes), false) {}

  /// Uninitialised storage for n elements of T, 64-byte aligned.
  template <class T>
  T* allocate(std::int64_t n) {
    QLIP_CHECK(n >= 0, "negative arena request ", n);
    std::size_t bytes = detail::round_up(static_cast<std::size_t>(n) * sizeof(T), kHostAlignment);
    if (used_ + bytes > capacity()) {
      QLIP_THROW("workspace arena exhausted: need ", used_ + bytes, " bytes, capacity ", capacity(),
                 " (size the arena from the module's workspace_bytes())");
    }
    T* p = reinterpret_cast<T*>(block_.data() + used_);
    used_ += bytes;
    peak_ = std::max(peak_, used_);
    return p;
  }

  /// A contiguous view of fresh (uninitialised) arena storage.
  template <class T, int R>
  HostView<T, R> tensor(const Extents<R>& shape) {
    std::int64_t n = 1;
    for (auto s : shape) n *= s;
    return HostView<T, R>(allocate<T>(n), shape);
  }

  std::size_t mark() const { return used_; }
  void rewind(std::size_t mark) {
    QLIP_CHECK(mark <= used_, "arena rewind past the current top");
    used_ = mark;
  }
  std::size_t capacity() const { return static_cast<std::size_t>(block_.size()); }
  std::size_t used() const { return used_; }
  /// High-water mark: what a forward really needed (use it to size the next arena).
  std::size_t peak() const { return peak_; }

 private:
  AlignedBuffer<std::byte> block_;
  std::size_t used_ = 0;
  std::size_t peak_ = 0;
};

/// Rewinds the arena to where it was when the scope began (RAII).
class ArenaScope {
 public:
  explicit ArenaScope(Arena& arena) : arena_(arena), mark_(arena.mark()) {}
  ~ArenaScope() { arena_.rewind(mark_); }
  ArenaScope(const ArenaScope&) = delete;
  ArenaScope& operator=(const ArenaScope&) = delete;

 private:
  Arena& arena_;
  std::size_t mark_;
};

}  // namespace qlip
