/// @file dispatch.hpp
/// @brief The one runtime → compile-time dispatch helper. Errors name what was compiled.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <type_traits>

#include "qlip/core/error.hpp"

namespace qlip {

namespace detail {
inline std::string join(std::initializer_list<long long> values) {
  std::string s;
  for (auto v : values) s += (s.empty() ? "" : ", ") + std::to_string(v);
  return s;
}
inline std::string join_names(std::initializer_list<std::string_view> names) {
  std::string s;
  for (auto n : names) s += (s.empty() ? "" : ", ") + std::string(n);
  return s;
}
}  // namespace detail

/// Calls f(std::integral_constant<int, V>{}) for the V in Vs equal to `value`; throws naming the
/// compiled list otherwise. `what` names the quantity ("head_dim").
template <int... Vs, class F>
void dispatch_int(int value, const char* what, F&& f) {
  bool hit = ((value == Vs ? (f(std::integral_constant<int, Vs>{}), true) : false) || ...);
  if (!hit)
    QLIP_THROW("unsupported ", what, " ", value, " (compiled: ", detail::join({Vs...}), ")");
}

/// A compile-time list of types (configs, dtypes).
template <class... Ts>
struct TypeList {
  static constexpr std::size_t size = sizeof...(Ts);
};

/// Calls f(std::type_identity<T>{}) for the first T in the list with pred(type_identity<T>) true;
/// throws naming every T::name otherwise. Used to pick a compiled model config from a checkpoint.
template <class... Ts, class Pred, class F>
void dispatch_type(TypeList<Ts...>, const char* what, Pred&& pred, F&& f) {
  bool hit = ((pred(std::type_identity<Ts>{}) ? (f(std::type_identity<Ts>{}), true) : false) || ...);
  if (!hit) QLIP_THROW("no compiled ", what, " matches (compiled: ", detail::join_names({Ts::name...}), ")");
}

}  // namespace qlip
