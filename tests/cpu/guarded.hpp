/// @file guarded.hpp
/// @brief Test helper: a tensor view placed inside a larger buffer whose
///        every other element holds a sentinel, in three layouts — contiguous, padded (rows of a
///        wider buffer, i.e. slices) and transposed (dimensions reversed in memory, so the innermost
///        view stride is not 1). guards_intact() checks that an op wrote nothing outside its view
///        (ggml sentinels / tiny-cuda-nn DEBUG_GUARD_SIZE, CONVENTIONS.md §10.4).
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "qlip/core/philox.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip::test {

enum class Layout { contiguous, padded, transposed };

inline const char* layout_name(Layout l) {
  switch (l) {
    case Layout::contiguous: return "contiguous";
    case Layout::padded: return "padded";
    case Layout::transposed: return "transposed";
  }
  return "?";
}

inline constexpr Layout kAllLayouts[] = {Layout::contiguous, Layout::padded, Layout::transposed};

/// A rank-R view of T inside a sentinel-filled buffer.
/// @tparam T element type
/// @tparam R rank
template <class T, int R>
class Guarded {
 public:
  static constexpr std::int64_t kHead = 8;   // sentinel elements before the view's first element
  static constexpr std::int64_t kTail = 16;  // and after the buffer's last row

  Guarded(const Extents<R>& shape, Layout layout, T sentinel) : sentinel_(sentinel) {
    Extents<R> strides{};
    std::int64_t offset = kHead, total = 1;
    if (layout == Layout::contiguous) {
      strides = contiguous_strides<R>(shape);
      for (auto s : shape) total *= s;
    } else if (layout == Layout::padded) {
      // Every dimension one wider (innermost three wider); the view starts at index 1 of each.
      Extents<R> padded{};
      for (int d = 0; d < R; ++d) padded[d] = shape[d] + (d == R - 1 ? 3 : 1);
      strides = contiguous_strides<R>(padded);
      for (int d = 0; d < R; ++d) {
        offset += strides[d];
        total *= padded[d];
      }
    } else {
      // Dimension 0 innermost in memory (two wider), dimension R−1 outermost. For R = 1: stride 2.
      std::int64_t s = R == 1 ? 2 : 1;
      for (int d = 0; d < R; ++d) {
        strides[d] = s;
        const std::int64_t extent = shape[d] + (d == 0 ? 2 : 0);
        s *= extent;
      }
      offset += 1;
      total = s;
    }
    storage_.assign(static_cast<std::size_t>(total + kHead + kTail + 2), sentinel);
    view_ = HostView<T, R>(storage_.data(), shape, strides, offset);
    inside_.assign(storage_.size(), 0);
    for_each_offset([&](std::int64_t, std::int64_t off) { inside_[static_cast<std::size_t>(off)] = 1; });
  }

  HostView<T, R> view() { return view_; }
  HostView<const T, R> cview() const { return view_; }

  /// Calls f(linear_index, storage_offset) for every element of the view in row-major order.
  template <class F>
  void for_each_offset(F f) const {
    const std::int64_t n = view_.numel();
    for (std::int64_t linear = 0; linear < n; ++linear) {
      std::int64_t rem = linear, off = view_.offset();
      for (int d = R - 1; d >= 0; --d) {
        off += (rem % view_.size(d)) * view_.stride(d);
        rem /= view_.size(d);
      }
      f(linear, off);
    }
  }

  /// Element at linear (row-major) index i gets g(i).
  template <class G>
  void fill(G g) {
    for_each_offset([&](std::int64_t i, std::int64_t off) { storage_[static_cast<std::size_t>(off)] = g(i); });
  }
  /// Standard normal values from Philox(seed), times scale plus shift; the same for every layout.
  void fill_normal(std::uint64_t seed, float scale = 1.0f, float shift = 0.0f) {
    Philox rng(seed);
    fill([&](std::int64_t i) { return static_cast<T>(shift + scale * rng.normal(static_cast<std::uint64_t>(i))); });
  }

  /// Success when every element outside the view still holds the sentinel (bitwise).
  ::testing::AssertionResult guards_intact() const {
    for (std::size_t k = 0; k < storage_.size(); ++k) {
      if (inside_[k]) continue;
      if (std::memcmp(&storage_[k], &sentinel_, sizeof(T)) != 0)
        return ::testing::AssertionFailure() << "guard element " << k << " of " << storage_.size()
                                             << " was overwritten";
    }
    return ::testing::AssertionSuccess();
  }

 private:
  T sentinel_;
  std::vector<T> storage_;
  std::vector<char> inside_;
  HostView<T, R> view_;
};

/// A contiguous owning copy of any view (for feeding the reference the same values).
template <class T, int R>
std::vector<T> to_vector(HostView<const T, R> v) {
  std::vector<T> out(static_cast<std::size_t>(v.numel()));
  const std::int64_t n = v.numel();
  for (std::int64_t linear = 0; linear < n; ++linear) {
    std::int64_t rem = linear, off = v.offset();
    for (int d = R - 1; d >= 0; --d) {
      off += (rem % v.size(d)) * v.stride(d);
      rem /= v.size(d);
    }
    out[static_cast<std::size_t>(linear)] = v.base()[off];
  }
  return out;
}

/// Sizes with odd extents and partial tiles on purpose (CONVENTIONS.md §10.5): {rows, cols}.
inline constexpr std::int64_t kOddShapes[][2] = {{1, 1},   {1, 989},  {7, 7},   {7, 111}, {65, 65},
                                                 {65, 989}, {111, 1}, {111, 111}, {989, 7}};

inline std::string case_name(std::int64_t m, std::int64_t n, Layout in, Layout out) {
  std::ostringstream s;
  s << "M=" << m << " N=" << n << " in=" << layout_name(in) << " out=" << layout_name(out);
  return s.str();
}

/// Expects `f` to throw qlip::Error whose message contains `needle`.
template <class F>
::testing::AssertionResult throws_with(F f, const std::string& needle) {
  try {
    f();
  } catch (const Error& e) {
    std::string m = e.what();
    if (m.find(needle) != std::string::npos) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "message \"" << m << "\" lacks \"" << needle << "\"";
  } catch (...) {
    return ::testing::AssertionFailure() << "threw something other than qlip::Error";
  }
  return ::testing::AssertionFailure() << "did not throw";
}

}  // namespace qlip::test
