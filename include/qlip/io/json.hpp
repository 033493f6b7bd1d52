/// @file json.hpp
/// @brief The one JSON parser of qlip (parse_json / parse_ordered_json: nesting depth capped,
///        duplicate keys rejected, errors that name the source and the position), reading JSON files
///        (config.json, preprocessor_config.json), bounded excerpts of values for error messages, and
///        typed getters that name the dotted key path on failure.
///
/// Why a wrapper around nlohmann::json::parse:
///  - Depth. nlohmann parses iteratively, but copying, comparing and dumping a value recurse once per
///    nesting level, so a 200 kB file of '[' overflows the stack wherever a value is copied or
///    printed. parse_json rejects nesting deeper than kJsonMaxDepth with a byte-level scan *before*
///    nlohmann sees the text (nothing recursive runs on an over-deep input).
///  - Duplicate keys. nlohmann keeps the last of `{"a": 1, "a": 2}`; so does Python's json. A
///    duplicated key in a config or a safetensors header is a corrupt or hand-edited file, and
///    last-wins would hide it (and defeat the duplicate-tensor check of the safetensors reader).
///  - Messages. A value is printed in an error through json_excerpt() (at most kJsonExcerptBytes),
///    never through a full dump(), and nlohmann's own messages are cut to kJsonMessageBytes.
///
/// Getters are strict on purpose: nlohmann's get<int>() silently truncates 3.7 to 3 and converts
/// booleans; a config value of the wrong kind is far more likely a wrong file than an intent.
#pragma once

#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_set>
#include <vector>

#include <nlohmann/json.hpp>

#include "qlip/core/error.hpp"
#include "qlip/io/detail/file.hpp"

namespace qlip {

/// Deepest accepted nesting of arrays/objects (the top-level value is depth 1). Real configs and
/// safetensors headers nest 3 levels; 64 leaves room for any sane format and keeps every recursive
/// operation on a parsed value (copy, compare, dump) far from the stack limit.
inline constexpr int kJsonMaxDepth = 64;
/// Longest excerpt of a JSON value that error messages print.
inline constexpr std::size_t kJsonExcerptBytes = 80;
/// Longest part of nlohmann's own parse-error text that error messages keep (its "last read" token
/// can be a whole multi-megabyte string).
inline constexpr std::size_t kJsonMessageBytes = 200;

namespace detail {

/// `s` cut to at most `max` bytes at a UTF-8 character boundary, with "..." appended when cut.
inline std::string utf8_prefix(std::string_view s, std::size_t max) {
  if (s.size() <= max) return std::string(s);
  std::size_t n = max;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;  // not inside a sequence
  return std::string(s.substr(0, n)) + "...";
}

/// Throws when arrays/objects nest deeper than `max_depth`. Brackets inside strings do not count;
/// the scan does not validate anything else (nlohmann does that next), so on malformed text it may
/// report depth where nlohmann would report a syntax error further on: both are errors.
inline void json_check_depth(std::string_view text, const std::string& source, int max_depth) {
  int depth = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // the escaped character, whatever it is, cannot end the string
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) {
        QLIP_THROW(source, ": invalid JSON: nesting deeper than ", max_depth, " levels at byte ", i,
                   " (not a file qlip reads; corrupt or hostile input?)");
      }
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
}

/// Quotes a string for an excerpt (invalid UTF-8 replaced, at most `max` bytes of it).
inline void json_excerpt_string(std::string& out, std::string_view s, std::size_t max) {
  const std::string cut = utf8_prefix(s, max);
  out += nlohmann::json(cut).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

/// Appends a compact serialisation of `v`, stopping once `out` holds `budget` bytes. Recursion is
/// bounded by the budget (every level appends at least one byte), whatever the nesting of `v`.
template <class Json>
void json_excerpt_into(const Json& v, std::string& out, std::size_t budget) {
  if (out.size() >= budget) return;
  const std::size_t room = budget - out.size();
  if (v.is_object()) {
    out += '{';
    bool first = true;
    for (auto it = v.begin(); it != v.end() && out.size() < budget; ++it) {
      if (!first) out += ',';
      first = false;
      json_excerpt_string(out, it.key(), budget > out.size() ? budget - out.size() : 0);
      out += ':';
      json_excerpt_into(it.value(), out, budget);
    }
    out += '}';
  } else if (v.is_array()) {
    out += '[';
    bool first = true;
    for (auto it = v.begin(); it != v.end() && out.size() < budget; ++it) {
      if (!first) out += ',';
      first = false;
      json_excerpt_into(*it, out, budget);
    }
    out += ']';
  } else if (v.is_string()) {
    json_excerpt_string(out, v.template get_ref<const std::string&>(), room);
  } else {
    out += v.dump();  // a number, boolean or null: short
  }
}

}  // namespace detail

/// At most `max` bytes of `v`, serialised compactly ("..." marks a cut). For error messages: never
/// dump() a value from a file into a message, it may be megabytes long.
/// @tparam Json nlohmann::json or nlohmann::ordered_json
template <class Json>
std::string json_excerpt(const Json& v, std::size_t max = kJsonExcerptBytes) {
  std::string out;
  detail::json_excerpt_into(v, out, max + 1);
  return detail::utf8_prefix(out, max);
}

/// A float as the shortest decimal that reads back as the same float (1e-6f → 1e-06, not
/// 9.99999997e-07), so a config.json states the value the code uses.
inline double shortest_double(float v) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof(buf), v);
  *r.ptr = '\0';
  return std::strtod(buf, nullptr);
}

namespace detail {

/// The SAX handler behind parse_json: builds the value like nlohmann's own DOM parser, and rejects
/// a duplicate key (per object, an unordered_set of the keys seen) and nesting deeper than the cap.
///
/// Why not nlohmann's parser callback: on every object_end it scans the parent object for a
/// discarded element, which makes parsing quadratic in the number of keys (a 4 MB safetensors header
/// of 50k tensors took over a minute). Why elements are appended directly: ordered_json's
/// operator[] is a linear search, quadratic again; uniqueness is already known here.
/// @tparam Json nlohmann::json or nlohmann::ordered_json
template <class Json>
class JsonDomBuilder {
 public:
  using number_integer_t = typename Json::number_integer_t;
  using number_unsigned_t = typename Json::number_unsigned_t;
  using number_float_t = typename Json::number_float_t;
  using string_t = typename Json::string_t;
  using binary_t = typename Json::binary_t;

  explicit JsonDomBuilder(const std::string& source) : source_(source) {}
  Json& result() { return root_; }

  bool null() { return put(nullptr); }
  bool boolean(bool v) { return put(v); }
  bool number_integer(number_integer_t v) { return put(v); }
  bool number_unsigned(number_unsigned_t v) { return put(v); }
  bool number_float(number_float_t v, const string_t& /*text*/) { return put(v); }
  bool string(string_t& v) { return put(std::move(v)); }
  bool binary(binary_t& v) { return put(Json::binary(std::move(v))); }
  bool start_object(std::size_t /*elements*/) { return open(Json::object()); }
  bool start_array(std::size_t /*elements*/) { return open(Json::array()); }
  bool end_object() { return close(); }
  bool end_array() { return close(); }

  bool key(string_t& k) {
    Frame& f = frames_.back();
    if (!f.keys.insert(k).second) {
      std::string key;
      json_excerpt_string(key, k, kJsonExcerptBytes);
      const std::string where = path();
      QLIP_THROW(source_, ": invalid JSON: duplicate key ", key,
                 where.empty() ? std::string(" in the top-level object") : " in object '" + where + "'",
                 " (which one is meant is ambiguous)");
    }
    auto& obj = f.node->template get_ref<typename Json::object_t&>();
    if constexpr (std::is_same_v<Json, nlohmann::ordered_json>) {
      obj.emplace_back(k, Json());  // ordered_map is a vector of pairs
      f.pending = &obj.back().second;
    } else {
      f.pending = &obj.emplace_hint(obj.end(), k, Json())->second;
    }
    f.last_key = std::move(k);
    return true;
  }

  bool parse_error(std::size_t /*position*/, const std::string& /*last_token*/, const nlohmann::detail::exception& ex) {
    const auto* pe = dynamic_cast<const nlohmann::json::parse_error*>(&ex);
    if (pe) QLIP_THROW(source_, ": invalid JSON at byte ", pe->byte, ": ", utf8_prefix(ex.what(), kJsonMessageBytes));
    QLIP_THROW(source_, ": invalid JSON: ", utf8_prefix(ex.what(), kJsonMessageBytes));
  }

 private:
  struct Frame {
    Json* node = nullptr;     // the open array or object
    Json* pending = nullptr;  // objects: the element of the key just read
    std::string last_key;
    std::unordered_set<std::string> keys;
  };

  /// Where a new value goes: the root, the end of the open array, or the open object's pending key.
  Json* slot() {
    if (frames_.empty()) return &root_;
    Frame& f = frames_.back();
    if (f.node->is_array()) {
      auto& arr = f.node->template get_ref<typename Json::array_t&>();
      arr.emplace_back();
      return &arr.back();
    }
    return f.pending;
  }
  template <class V>
  bool put(V&& v) {
    *slot() = Json(std::forward<V>(v));
    return true;
  }
  bool open(Json empty) {
    // Unreachable after json_check_depth; kept so the builder is safe on its own.
    if (static_cast<int>(frames_.size()) >= kJsonMaxDepth)
      QLIP_THROW(source_, ": invalid JSON: nesting deeper than ", kJsonMaxDepth, " levels");
    Json* node = slot();
    *node = std::move(empty);
    frames_.push_back(Frame{node, nullptr, {}, {}});
    return true;
  }
  bool close() {
    frames_.pop_back();
    return true;
  }
  /// Dotted path of the open objects ("vision_config.quantizer_cfg"; "[]" for an array level).
  std::string path() const {
    std::string p;
    for (std::size_t i = 0; i + 1 < frames_.size(); ++i) {
      if (frames_[i].node->is_object()) {
        p += (p.empty() ? "" : ".") + utf8_prefix(frames_[i].last_key, kJsonExcerptBytes);
      } else {
        p += "[]";
      }
    }
    return p;
  }

  const std::string& source_;
  Json root_;
  std::vector<Frame> frames_;
};

/// parse_json / parse_ordered_json: the depth scan, then nlohmann's (iterative) SAX parser driving
/// JsonDomBuilder.
template <class Json>
Json parse_json_impl(std::string_view text, const std::string& source) {
  json_check_depth(text, source, kJsonMaxDepth);
  JsonDomBuilder<Json> builder(source);
  try {
    Json::sax_parse(text.data(), text.data() + text.size(), &builder, nlohmann::json::input_format_t::json,
                    /*strict=*/true, /*ignore_comments=*/false);
  } catch (const nlohmann::json::exception& e) {  // not expected: the parser reports through parse_error
    QLIP_THROW(source, ": invalid JSON: ", utf8_prefix(e.what(), kJsonMessageBytes));
  }
  return std::move(builder.result());
}

}  // namespace detail

/// Parses JSON text: nesting deeper than kJsonMaxDepth and duplicate object keys are errors, like
/// syntax errors. Every message starts with `source_name` (a path, or e.g. "'x.safetensors' header")
/// and names the byte position, the key or the depth. Use this for every JSON parse in qlip.
inline nlohmann::json parse_json(std::string_view text, const std::string& source_name) {
  return detail::parse_json_impl<nlohmann::json>(text, source_name);
}

/// parse_json keeping the order of object keys (the safetensors header lists tensors in file order).
inline nlohmann::ordered_json parse_ordered_json(std::string_view text, const std::string& source_name) {
  return detail::parse_json_impl<nlohmann::ordered_json>(text, source_name);
}

/// Parses a JSON file with parse_json. Errors name the file and, for syntax errors, the byte position
/// and the line/column nlohmann reports.
inline nlohmann::json read_json(const std::string& path) {
  std::vector<std::uint8_t> bytes = detail::read_file_bytes(path);
  return parse_json(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), path);
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
    QLIP_THROW("JSON key '", std::string(key), "' is ", json_excerpt(v), " (", v.type_name(), "), expected ",
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
      QLIP_THROW("JSON key '", std::string(key), "': ", utf8_prefix(e.what(), kJsonMessageBytes));
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
