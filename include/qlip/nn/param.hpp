/// @file param.hpp
/// @brief A trainable parameter as a module sees it: its shape (fixed by the module), and views of
///        its value and gradient in storage someone else owns (a flat buffer of all parameters, in
///        checkpoint order).
///
/// Every module lists its parameters through one function, `visit_parameters(visitor, prefix)`,
/// calling `visitor(name, param)` for each with the official checkpoint name. The same walk serves
/// registration (the visitor reads `shape`), binding (it sets `value` and `grad` to views of the flat
/// buffers), loading and saving (it copies by name) and counting. Parameters keep the official layout:
/// nothing is concatenated or pre-scaled, so a trained model round-trips to the checkpoint bit for bit.
#pragma once

#include <string>

#include "qlip/core/backend.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip::nn {

/// One parameter tensor.
/// @tparam T element type (the backend's scalar)
/// @tparam R rank
/// @tparam M memory space of the storage
template <class T, int R, memory_space M = host_memory>
struct Param {
  Extents<R> shape{};
  TensorView<T, R, M> value{};  ///< bound by the owner of the storage
  TensorView<T, R, M> grad{};   ///< empty when the parameter is frozen (no gradient wanted)

  std::int64_t numel() const {
    std::int64_t n = 1;
    for (auto s : shape) n *= s;
    return n;
  }
};

/// Joins a prefix and a name with '.' (an empty prefix adds nothing).
inline std::string join_name(const std::string& prefix, const char* name) {
  return prefix.empty() ? std::string(name) : prefix + "." + name;
}

}  // namespace qlip::nn
