/// @file carve.hpp
/// @brief Carving typed views out of one caller-owned buffer of any memory space, without touching
///        its memory (so the same code sizes and slices host and device buffers).
///        The sizing functions run the carving code on a counting carver, so size and layout cannot
///        drift apart.
///
/// Modules size a buffer once (`activation_elements(...)`, `workspace_elements(...)`) and carve the
/// same sequence of views from it in forward and backward; the carver checks the buffer is big enough.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip {

/// Hands out consecutive contiguous views of a flat buffer [base, base + size).
/// @tparam T element type
/// @tparam M memory space of the buffer
template <class T, memory_space M>
class Carver {
 public:
  Carver(T* base, std::int64_t size) : base_(base), size_(size) {}
  /// A carver that only counts: run the carving code against it, then read used().
  static Carver counting() { return Carver(nullptr, -1); }

  /// The next numel(shape) elements as a contiguous row-major view.
  /// (std::size_t N: Extents<R> is std::array<int64_t, R>, whose size parameter is a size_t.)
  template <std::size_t N, int R = static_cast<int>(N)>
  TensorView<T, R, M> take(const std::array<std::int64_t, N>& shape) {
    std::int64_t n = 1;
    for (auto s : shape) n *= s;
    if (size_ < 0) {  // counting
      used_ += n;
      return TensorView<T, R, M>(nullptr, shape, contiguous_strides<R>(shape));
    }
    QLIP_CHECK(used_ + n <= size_, "buffer too small: needs at least ", used_ + n, " elements, has ", size_,
               " (size it with the module's *_elements function)");
    TensorView<T, R, M> v(base_ + used_, shape, contiguous_strides<R>(shape));
    used_ += n;
    return v;
  }
  /// Elements handed out so far.
  std::int64_t used() const { return used_; }

 private:
  T* base_;
  std::int64_t size_;
  std::int64_t used_ = 0;
};

}  // namespace qlip
