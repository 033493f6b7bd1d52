/// @file tensor.hpp
/// @brief TensorView: a non-owning strided view (shape, int64 strides in elements, int64 offset)
///        whose element type, rank and memory space are template parameters.
///
/// All index arithmetic is std::int64_t: ViT patch grids × batch and long KV caches exceed 2^31
/// elements (see CONVENTIONS.md §7). A view never owns memory; see Tensor / Arena for storage.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <type_traits>

#include "qlip/core/backend.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/platform.hpp"

namespace qlip {

/// Shape or strides of a rank-R tensor.
template <int R>
using Extents = std::array<std::int64_t, R>;

/// Row-major (C-order) strides for a shape.
template <int R>
constexpr Extents<R> contiguous_strides(const Extents<R>& shape) {
  Extents<R> strides{};
  std::int64_t s = 1;
  for (int d = R - 1; d >= 0; --d) {
    strides[d] = s;
    s *= shape[d];
  }
  return strides;
}

/// "[2, 3, 4]" — used in error messages.
template <int R>
std::string shape_string(const Extents<R>& shape) {
  std::string s = "[";
  for (int d = 0; d < R; ++d) s += (d ? ", " : "") + std::to_string(shape[d]);
  return s + "]";
}

/// A strided view of T elements in memory space M.
/// @tparam T element type (const-qualified for read-only views)
/// @tparam R rank (≥ 1)
/// @tparam M memory space (host_memory or device_memory)
template <class T, int R, memory_space M = host_memory>
class TensorView {
  static_assert(R >= 1, "rank must be at least 1");

 public:
  using value_type = std::remove_const_t<T>;
  using element_type = T;
  using memory = M;
  static constexpr int rank = R;
  struct identifier {};  // duck-typing tag for the tensor_view concept

  TensorView() = default;
  QLIP_HOST_DEVICE TensorView(T* base, const Extents<R>& shape, const Extents<R>& strides,
                              std::int64_t offset = 0)
      : base_(base), offset_(offset), shape_(shape), strides_(strides) {}
  /// Contiguous row-major view.
  TensorView(T* base, const Extents<R>& shape) : TensorView(base, shape, contiguous_strides<R>(shape)) {}

  /// Implicit conversion to a read-only view of the same element type. (The target type names U,
  /// not T, so that clang does not see a self-conversion in TensorView<const X> and warn,
  /// -Wclass-conversion; U is deduced from the target, so it must be checked to be T.)
  template <class U = T, class = std::enable_if_t<!std::is_const_v<U> && std::is_same_v<U, T>>>
  QLIP_HOST_DEVICE operator TensorView<const U, R, M>() const {
    return TensorView<const U, R, M>(base_, shape_, strides_, offset_);
  }

  QLIP_HOST_DEVICE T* data() const { return base_ + offset_; }
  QLIP_HOST_DEVICE T* base() const { return base_; }
  QLIP_HOST_DEVICE std::int64_t offset() const { return offset_; }
  QLIP_HOST_DEVICE const Extents<R>& shape() const { return shape_; }
  QLIP_HOST_DEVICE const Extents<R>& strides() const { return strides_; }
  QLIP_HOST_DEVICE std::int64_t size(int d) const { return shape_[d]; }
  QLIP_HOST_DEVICE std::int64_t stride(int d) const { return strides_[d]; }
  QLIP_HOST_DEVICE std::int64_t numel() const {
    std::int64_t n = 1;
    for (int d = 0; d < R; ++d) n *= shape_[d];
    return n;
  }
  QLIP_HOST_DEVICE bool empty() const { return numel() == 0; }

  /// True when the elements are laid out densely in row-major order.
  QLIP_HOST_DEVICE bool is_contiguous() const {
    std::int64_t s = 1;
    for (int d = R - 1; d >= 0; --d) {
      if (shape_[d] != 1 && strides_[d] != s) return false;
      s *= shape_[d];
    }
    return true;
  }

  /// Element offset of an index tuple (int64 arithmetic).
  template <class... I>
  QLIP_HOST_DEVICE std::int64_t index_of(I... idx) const {
    static_assert(sizeof...(I) == R, "index count must equal rank");
    const std::int64_t is[R] = {static_cast<std::int64_t>(idx)...};
    std::int64_t off = offset_;
    for (int d = 0; d < R; ++d) off += is[d] * strides_[d];
    return off;
  }

  /// Element access; host views only (device memory is not dereferenceable on the host).
  template <class... I>
  QLIP_HOST_DEVICE T& operator()(I... idx) const {
    return base_[index_of(idx...)];
  }

  /// Sub-range [begin, end) along dimension d (same rank).
  TensorView slice(int d, std::int64_t begin, std::int64_t end) const {
    QLIP_CHECK(d >= 0 && d < R, "slice dim ", d, " out of range for rank ", R);
    QLIP_CHECK(0 <= begin && begin <= end && end <= shape_[d], "slice [", begin, ", ", end,
               ") out of range for dim ", d, " of size ", shape_[d]);
    TensorView v = *this;
    v.offset_ += begin * strides_[d];
    v.shape_[d] = end - begin;
    return v;
  }

  /// Removes dimension d by fixing its index (rank R-1).
  TensorView<T, R - 1, M> select(int d, std::int64_t index) const requires(R > 1) {
    QLIP_CHECK(d >= 0 && d < R, "select dim ", d, " out of range for rank ", R);
    QLIP_CHECK(index >= 0 && index < shape_[d], "select index ", index, " out of range for dim ", d,
               " of size ", shape_[d]);
    Extents<R - 1> shape{}, strides{};
    for (int s = 0, o = 0; s < R; ++s) {
      if (s == d) continue;
      shape[o] = shape_[s];
      strides[o] = strides_[s];
      ++o;
    }
    return TensorView<T, R - 1, M>(base_, shape, strides, offset_ + index * strides_[d]);
  }

  /// Swaps two dimensions (no data movement).
  TensorView transpose(int d0, int d1) const {
    QLIP_CHECK(d0 >= 0 && d0 < R && d1 >= 0 && d1 < R, "transpose dims out of range");
    TensorView v = *this;
    std::swap(v.shape_[d0], v.shape_[d1]);
    std::swap(v.strides_[d0], v.strides_[d1]);
    return v;
  }

  /// New shape over the same contiguous data. (N is deduced from the std::array behind Extents,
  /// whose size parameter is a size_t, so `v.reshape(Extents<3>{...})` needs no template argument.)
  template <std::size_t N, int R2 = static_cast<int>(N)>
  TensorView<T, R2, M> reshape(const std::array<std::int64_t, N>& shape) const {
    QLIP_CHECK(is_contiguous(), "reshape needs a contiguous view, got shape ", shape_string<R>(shape_));
    std::int64_t n = 1;
    for (auto s : shape) n *= s;
    QLIP_CHECK(n == numel(), "reshape from ", shape_string<R>(shape_), " to ", shape_string<R2>(shape),
               " changes the element count");
    return TensorView<T, R2, M>(base_, shape, contiguous_strides<R2>(shape), offset_);
  }

 private:
  T* base_ = nullptr;
  std::int64_t offset_ = 0;
  Extents<R> shape_{};
  Extents<R> strides_{};
};

template <class T, int R>
using HostView = TensorView<T, R, host_memory>;
/// A host view whose element type another parameter fixes (the backend's scalar): not deduced, so a
/// mutable view converts to a read-only one at the call as it does for non-template functions.
template <class T, int R>
using HostArg = std::type_identity_t<TensorView<T, R, host_memory>>;
template <class T, int R>
using DeviceView = TensorView<T, R, device_memory>;

/// Any TensorView.
template <class V>
concept tensor_view = requires { typename std::remove_cvref_t<V>::identifier; } &&
                      requires(const std::remove_cvref_t<V>& v) {
                        { v.data() };
                        { v.numel() } -> std::same_as<std::int64_t>;
                        std::remove_cvref_t<V>::rank;
                      };

/// A view of rank R whose memory space is that of backend B.
template <class V, class B, int R>
concept view_for = tensor_view<V> && backend<B> && (std::remove_cvref_t<V>::rank == R) &&
                   std::same_as<typename std::remove_cvref_t<V>::memory, typename B::memory>;

/// Throws unless `v` has exactly the expected shape; `what` names the argument in the message.
/// (`expected` is a non-deduced context, so both a braced list and another view's .shape() work.)
template <class T, int R, class M>
void check_shape(const TensorView<T, R, M>& v, const std::type_identity_t<Extents<R>>& expected, const char* what) {
  QLIP_CHECK(v.shape() == expected, what, " has shape ", shape_string<R>(v.shape()), ", expected ",
             shape_string<R>(expected));
}

}  // namespace qlip
