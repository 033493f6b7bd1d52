/// @file json.hpp
/// @brief Reading JSON files (config.json, preprocessor_config.json) with errors that name the file
///        and the parse position, and typed getters that name the dotted key path on failure.
///
/// Getters are strict on purpose: nlohmann's get<int>() silently truncates 3.7 to 3 and converts
/// booleans; a config value of the wrong kind is far more likely a wrong file than an intent.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "qlip/core/error.hpp"
#include "qlip/io/detail/file.hpp"

namespace qlip {

/// Parses a JSON file. Errors name the file and, for syntax errors, the byte position and the
/// line/column nlohmann reports.
inline nlohmann::json read_json(const std::string& path) {
  std::vector<std::uint8_t> bytes = detail::read_file_bytes(path);
  try {
    return nlohmann::json::parse(bytes.begin(), bytes.end());
  } catch (const nlohmann::json::parse_error& e) {
    QLIP_THROW(path, ": invalid JSON at byte ", e.byte, ": ", e.what());
  } catch (const nlohmann::json::exception& e) {
    QLIP_THROW(path, ": invalid JSON: ", e.what());
  }
}

namespace detail {

/// Walks a dotted key path ("vision_config.hidden_size"). Returns nullptr when a component is
/// missing; throws when an intermediate value is not an object.
inline const nlohmann::json* json_find(const nlohmann::json& j, std::string_view key) {
  const nlohmann::json* cur = &j;
  std::size_t start = 0;
  while (true) {
    std::size_t dot = key.find('.', start);
    std::string part(key.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start));
    if (!cur->is_object()) {
      QLIP_THROW("JSON key '", std::string(key.substr(0, start == 0 ? 0 : start - 1)), "' is a ", cur->type_name(),
                 ", not an object (looking up '", std::string(key), "')");
    }
    auto it = cur->find(part);
    if (it == cur->end()) return nullptr;
    cur = &*it;
    if (dot == std::string_view::npos) return cur;
    start = dot + 1;
  }
}

template <class T>
constexpr const char* json_type_label() {
  if constexpr (std::is_same_v<T, bool>) return "a boolean";
  else if constexpr (std::is_integral_v<T>) return "an integer";
  else if constexpr (std::is_floating_point_v<T>) return "a number";
  else if constexpr (std::is_same_v<T, std::string>) return "a string";
  else return "a value of the requested type";
}

/// Converts with the strict rules described in the file comment.
template <class T>
T json_convert(const nlohmann::json& v, std::string_view key) {
  auto bad = [&]() {
    QLIP_THROW("JSON key '", std::string(key), "' is ", v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), " (", v.type_name(), "), expected ",
               json_type_label<T>());
  };
  if constexpr (std::is_same_v<T, bool>) {
    if (!v.is_boolean()) bad();
    return v.get<bool>();
  } else if constexpr (std::is_integral_v<T>) {
    if (!v.is_number_integer()) bad();
    // Range check: the value must fit T exactly.
    if (v.is_number_unsigned()) {
      auto u = v.get<std::uint64_t>();
      if (u > static_cast<std::uint64_t>(std::numeric_limits<T>::max())) bad();
      return static_cast<T>(u);
    }
    auto s = v.get<std::int64_t>();
    if constexpr (std::is_unsigned_v<T>) {
      if (s < 0) bad();
    } else {
      if (s < static_cast<std::int64_t>(std::numeric_limits<T>::min()) ||
          s > static_cast<std::int64_t>(std::numeric_limits<T>::max()))
        bad();
    }
    return static_cast<T>(s);
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!v.is_number()) bad();
    return v.get<T>();
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!v.is_string()) bad();
    return v.get<std::string>();
  } else {
    try {
      return v.get<T>();
    } catch (const nlohmann::json::exception& e) {
      QLIP_THROW("JSON key '", std::string(key), "': ", e.what());
    }
  }
}

}  // namespace detail

/// True when the dotted key path exists (intermediate values must be objects to be followed).
inline bool json_has(const nlohmann::json& j, std::string_view key) {
  const nlohmann::json* cur = &j;
  std::size_t start = 0;
  while (true) {
    if (!cur->is_object()) return false;
    std::size_t dot = key.find('.', start);
    std::string part(key.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start));
    auto it = cur->find(part);
    if (it == cur->end()) return false;
    cur = &*it;
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

/// The value at a dotted key path, converted strictly to T (bool, integers with range check,
/// float/double, std::string, or anything nlohmann can convert, e.g. std::vector<float>).
/// Throws naming the key path when it is missing or of the wrong kind.
/// @tparam T the requested C++ type
template <class T>
T json_get(const nlohmann::json& j, std::string_view key) {
  const nlohmann::json* v = detail::json_find(j, key);
  if (!v) QLIP_THROW("missing JSON key '", std::string(key), "'");
  return detail::json_convert<T>(*v, key);
}

/// Like json_get, but returns `fallback` when the key is missing (or null). A present value of the
/// wrong kind still throws: a typo'd type is not a default.
/// @tparam T the requested C++ type
template <class T>
T json_get_or(const nlohmann::json& j, std::string_view key, const T& fallback) {
  const nlohmann::json* v = detail::json_find(j, key);
  if (!v || v->is_null()) return fallback;
  return detail::json_convert<T>(*v, key);
}

}  // namespace qlip
