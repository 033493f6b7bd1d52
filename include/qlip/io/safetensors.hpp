/// @file safetensors.hpp
/// @brief Reading (memory-mapped, zero-copy, validated up front) and writing (atomic) of the
///        safetensors format used by QLIP checkpoints (MODEL.md §5.1).
///
/// Format: 8-byte little-endian header length N, then N bytes of JSON
/// `{"__metadata__": {str: str}, "<name>": {"dtype": "F32", "shape": [...], "data_offsets": [b, e]}, ...}`,
/// then the data section; offsets are relative to the start of the data section. The reader does not
/// assume any order of the entries. Every structural problem is detected in open() and reported as a
/// qlip::Error naming the file (and the tensor), so later view()/to_float() calls cannot read out of
/// bounds. Gaps between tensors and trailing bytes are tolerated; overlaps are not.
///
/// Limits (beyond the format's own rules), so that no later arithmetic on a shape can overflow:
///  - the header is parsed by qlip::parse_ordered_json: nesting deeper than kJsonMaxDepth and
///    duplicate keys (so two tensors of one name) are errors;
///  - every dimension is at most kSafetensorsMaxDim (2^40), and at most kSafetensorsMaxRank of them;
///  - the product of the *non-zero* dimensions times the dtype size fits int64, even when another
///    dimension is 0. A zero-size tensor occupies no bytes, so nothing else would bound its other
///    dimensions; without this rule a shape [2^63-1, 0] is "valid", and any code that multiplies two
///    dimensions (a patch grid, a row stride) overflows. With it, every sub-product of a shape fits
///    int64 and every dimension fits in 41 bits.
/// As with any mmap, truncating the file on disk while it is open makes later reads fault (SIGBUS);
/// write checkpoints with write_safetensors(), which replaces files by rename and never truncates.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <span>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "qlip/core/allocator.hpp"
#include "qlip/core/dtype.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/io/detail/file.hpp"
#include "qlip/io/json.hpp"

namespace qlip {

/// Header sizes above this are rejected as corrupt (real checkpoints have headers of ~100 kB; the
/// Python library uses the same 100 MB limit).
inline constexpr std::uint64_t kSafetensorsMaxHeader = 100'000'000;
/// Largest accepted dimension (see the file comment): 2^40, far above any real tensor dimension.
inline constexpr std::int64_t kSafetensorsMaxDim = std::int64_t{1} << 40;
/// Most dimensions a tensor may have (PyTorch's own limit is 64 too).
inline constexpr std::size_t kSafetensorsMaxRank = 64;
/// Longest tensor or metadata name that error messages print in full.
inline constexpr std::size_t kSafetensorsNameInMessages = 200;

/// Parses a safetensors dtype string ("F32", "BF16", ...). Returns false for unknown names.
inline bool parse_dtype_name(const std::string& s, DType& out) {
  static const std::pair<const char*, DType> table[] = {{"F32", DType::f32}, {"F16", DType::f16},
                                                        {"BF16", DType::bf16}, {"I32", DType::i32},
                                                        {"I64", DType::i64}, {"U8", DType::u8},
                                                        {"U32", DType::u32}};
  for (const auto& [name, t] : table) {
    if (s == name) {
      out = t;
      return true;
    }
  }
  return false;
}

/// A read-only, memory-mapped safetensors file. Move-only; the mapping lives as long as the object,
/// so views handed out must not outlive it.
class SafetensorsFile {
 public:
  /// One tensor's header entry. begin/end are byte offsets into the data section.
  struct TensorInfo {
    std::string name;
    DType dtype = DType::f32;
    std::vector<std::int64_t> shape;
    std::uint64_t begin = 0, end = 0;
    std::int64_t numel() const {
      std::int64_t n = 1;
      for (auto d : shape) n *= d;  // validated in open(): the non-zero dims' product fits int64
      return n;
    }
  };

  /// Maps and validates the file. Throws qlip::Error naming the file on any problem.
  static SafetensorsFile open(const std::string& path) {
    SafetensorsFile f;
    f.path_ = path;
    f.map_ = detail::MappedFile::open(path);
    f.parse();
    return f;
  }

  SafetensorsFile(SafetensorsFile&&) noexcept = default;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept = default;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  /// All tensors, in the order of the JSON header.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  /// The entry for `name`; throws naming the missing tensor and the file.
  const TensorInfo& info(const std::string& name) const {
    auto it = index_.find(name);
    if (it == index_.end()) QLIP_THROW(path_, ": no tensor named '", name, "' (file has ", tensors_.size(), " tensors)");
    return tensors_[it->second];
  }
  /// The "__metadata__" string map (empty when absent).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return path_; }

  /// The raw little-endian bytes of a tensor (zero-copy).
  std::span<const std::byte> bytes(const std::string& name) const {
    const TensorInfo& t = info(name);
    return {data_begin() + t.begin, static_cast<std::size_t>(t.end - t.begin)};
  }

  /// Zero-copy contiguous view of a tensor.
  /// @tparam T element type; must match the stored dtype exactly (no conversion)
  /// @tparam R rank; must match the stored rank
  template <class T, int R>
  HostView<const T, R> view(const std::string& name) const {
    const TensorInfo& t = info(name);
    if (t.dtype != dtype_v<T>) {
      QLIP_THROW(path_, ": tensor '", name, "' has dtype ", dtype_name(t.dtype), ", requested ", dtype_name(dtype_v<T>));
    }
    Extents<R> shape = checked_shape<R>(t);
    const std::byte* p = data_begin() + t.begin;
    if (reinterpret_cast<std::uintptr_t>(p) % alignof(T) != 0) {
      QLIP_THROW(path_, ": tensor '", name, "' data at byte offset ", t.begin, " of the data section is not aligned to ",
                 alignof(T), " bytes for ", dtype_name(t.dtype), "; use to_float() or bytes() to read a copy");
    }
    return HostView<const T, R>(reinterpret_cast<const T*>(p), shape);
  }

  /// A float32 copy of a tensor of any supported dtype (F32/F16/BF16 and the integer types).
  /// @tparam R rank; must match the stored rank
  template <int R>
  Tensor<float, R> to_float(const std::string& name) const {
    const TensorInfo& t = info(name);
    Tensor<float, R> out(checked_shape<R>(t));
    convert_to_float(t, out.data());
    return out;
  }

  /// A flat float32 copy of a tensor of any rank (including rank 0, i.e. scalars).
  std::vector<float> to_float_vector(const std::string& name) const {
    const TensorInfo& t = info(name);
    std::vector<float> out(static_cast<std::size_t>(t.numel()));
    convert_to_float(t, out.data());
    return out;
  }

 private:
  SafetensorsFile() = default;

  void convert_to_float(const TensorInfo& t, float* dst) const {
    const std::byte* src = data_begin() + t.begin;
    const std::int64_t n = t.numel();
    // memcpy per element: the data need not be aligned for the source type.
    auto convert = [&](auto tag, auto fn) {
      using S = decltype(tag);
      for (std::int64_t i = 0; i < n; ++i) {
        S v;
        std::memcpy(&v, src + i * static_cast<std::int64_t>(sizeof(S)), sizeof(S));
        dst[i] = fn(v);
      }
    };
    switch (t.dtype) {
      case DType::f32: if (n > 0) std::memcpy(dst, src, static_cast<std::size_t>(n) * 4); break;
      case DType::f16: convert(std::uint16_t{}, [](std::uint16_t b) { return f16::to_float(b); }); break;
      case DType::bf16: convert(std::uint16_t{}, [](std::uint16_t b) { return bf16::to_float(b); }); break;
      case DType::i32: convert(std::int32_t{}, [](std::int32_t v) { return static_cast<float>(v); }); break;
      case DType::i64: convert(std::int64_t{}, [](std::int64_t v) { return static_cast<float>(v); }); break;
      case DType::u8: convert(std::uint8_t{}, [](std::uint8_t v) { return static_cast<float>(v); }); break;
      case DType::u32: convert(std::uint32_t{}, [](std::uint32_t v) { return static_cast<float>(v); }); break;
    }
  }

  const std::byte* data_begin() const { return map_.data() + data_offset_; }

  template <int R>
  Extents<R> checked_shape(const TensorInfo& t) const {
    if (static_cast<int>(t.shape.size()) != R) {
      std::string s = "[";
      for (std::size_t i = 0; i < t.shape.size(); ++i) s += (i ? ", " : "") + std::to_string(t.shape[i]);
      QLIP_THROW(path_, ": tensor '", t.name, "' has rank ", t.shape.size(), " (shape ", s, "]), requested rank ", R);
    }
    Extents<R> e{};
    for (int d = 0; d < R; ++d) e[d] = t.shape[static_cast<std::size_t>(d)];
    return e;
  }

  [[noreturn]] void fail(const std::string& what) const { QLIP_THROW(path_, ": invalid safetensors file: ", what); }
  /// A name from the file as error messages print it: bounded, since a key may be megabytes long.
  static std::string shown(const std::string& name) { return detail::utf8_prefix(name, kSafetensorsNameInMessages); }

  void parse() {
    const std::size_t size = map_.size();
    if (size < 8) fail("file is " + std::to_string(size) + " bytes, shorter than the 8-byte header length");
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<std::uint8_t>(map_.data()[i]);  // little-endian
    if (n > kSafetensorsMaxHeader) fail("header length " + std::to_string(n) + " exceeds the 100 MB limit");
    if (n > size - 8) {
      fail("header length " + std::to_string(n) + " runs past the end of the file (" + std::to_string(size) +
           " bytes)");
    }
    data_offset_ = 8 + static_cast<std::size_t>(n);
    const std::uint64_t data_size = size - data_offset_;

    const char* hb = reinterpret_cast<const char*>(map_.data() + 8);
    // Depth-capped, duplicate keys rejected (json.hpp): the message names this file's header.
    const nlohmann::ordered_json header = parse_ordered_json(std::string_view(hb, static_cast<std::size_t>(n)),
                                                             path_ + ": invalid safetensors file: header");
    if (!header.is_object()) fail(std::string("header is a JSON ") + header.type_name() + ", expected an object");

    for (auto it = header.begin(); it != header.end(); ++it) {
      const std::string& key = it.key();
      const auto& v = it.value();
      if (key == "__metadata__") {
        if (!v.is_object()) fail("__metadata__ is not an object");
        for (auto m = v.begin(); m != v.end(); ++m) {
          if (!m.value().is_string()) fail("__metadata__ value for '" + shown(m.key()) + "' is not a string");
          metadata_[m.key()] = m.value().get<std::string>();
        }
        continue;
      }
      tensors_.push_back(parse_entry(key, v, data_size));
    }

    for (std::size_t i = 0; i < tensors_.size(); ++i) {
      // parse_ordered_json already rejects duplicate keys; kept so the invariant does not depend on it.
      if (!index_.emplace(tensors_[i].name, i).second) fail("duplicate tensor name '" + shown(tensors_[i].name) + "'");
    }

    // Overlap check: sort non-empty tensors by begin; each must start at or after the previous end.
    std::vector<const TensorInfo*> order;
    for (const auto& t : tensors_)
      if (t.end > t.begin) order.push_back(&t);
    std::sort(order.begin(), order.end(), [](const TensorInfo* a, const TensorInfo* b) { return a->begin < b->begin; });
    for (std::size_t i = 1; i < order.size(); ++i) {
      if (order[i]->begin < order[i - 1]->end) {
        fail("tensors '" + shown(order[i - 1]->name) + "' [" + std::to_string(order[i - 1]->begin) + ", " +
             std::to_string(order[i - 1]->end) + ") and '" + shown(order[i]->name) + "' [" + std::to_string(order[i]->begin) +
             ", " + std::to_string(order[i]->end) + ") overlap");
      }
    }
  }

  TensorInfo parse_entry(const std::string& name, const nlohmann::ordered_json& v, std::uint64_t data_size) const {
    const std::string where = "tensor '" + shown(name) + "': ";
    if (!v.is_object()) fail(where + "entry is a JSON " + v.type_name() + ", expected an object");
    TensorInfo t;
    t.name = name;

    auto dt = v.find("dtype");
    if (dt == v.end()) fail(where + "missing 'dtype'");
    if (!dt->is_string()) fail(where + "'dtype' is not a string");
    if (!parse_dtype_name(dt->get<std::string>(), t.dtype)) {
      fail(where + "unknown or unsupported dtype '" + shown(dt->get<std::string>()) +
           "' (supported: F32, F16, BF16, I32, I64, U8, U32)");
    }

    auto sh = v.find("shape");
    if (sh == v.end()) fail(where + "missing 'shape'");
    if (!sh->is_array()) fail(where + "'shape' is not an array");
    if (sh->size() > kSafetensorsMaxRank) {
      fail(where + "shape has " + std::to_string(sh->size()) + " dimensions, more than the limit of " +
           std::to_string(kSafetensorsMaxRank));
    }
    // numel: the product of all dims; nonzero: the product of the non-zero ones, which must fit
    // int64 (times the dtype size) even when numel is 0 (see the file comment).
    std::int64_t numel = 1, nonzero = 1;
    for (const auto& d : *sh) {
      if (!d.is_number_integer()) fail(where + "shape entry " + json_excerpt(d) + " is not an integer");
      if (d.is_number_unsigned() && d.get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX)) {
        fail(where + "dimension " + json_excerpt(d) + " does not fit int64");
      }
      std::int64_t dim = d.get<std::int64_t>();
      if (dim < 0) fail(where + "negative dimension " + std::to_string(dim));
      if (dim != 0 && __builtin_mul_overflow(nonzero, dim, &nonzero)) {
        fail(where + "shape " + json_excerpt(*sh) + " overflows int64 element count");
      }
      numel = dim == 0 ? 0 : numel * dim;  // |numel| <= nonzero: cannot overflow
      t.shape.push_back(dim);
    }
    std::int64_t nbytes = 0, nonzero_bytes = 0;
    if (__builtin_mul_overflow(nonzero, static_cast<std::int64_t>(dtype_size(t.dtype)), &nonzero_bytes)) {
      fail(where + "shape " + json_excerpt(*sh) + " overflows the byte size");
    }
    nbytes = numel * static_cast<std::int64_t>(dtype_size(t.dtype));  // <= nonzero_bytes
    for (std::int64_t dim : t.shape) {
      if (dim > kSafetensorsMaxDim) {
        fail(where + "dimension " + std::to_string(dim) + " exceeds the limit of 2^40 = " +
             std::to_string(kSafetensorsMaxDim) + " (shape " + json_excerpt(*sh) + ")");
      }
    }

    auto off = v.find("data_offsets");
    if (off == v.end()) fail(where + "missing 'data_offsets'");
    if (!off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() || !(*off)[1].is_number_unsigned()) {
      fail(where + "'data_offsets' must be an array of two non-negative integers, got " + json_excerpt(*off));
    }
    t.begin = (*off)[0].get<std::uint64_t>();
    t.end = (*off)[1].get<std::uint64_t>();
    if (t.begin > t.end) fail(where + "data_offsets begin " + std::to_string(t.begin) + " > end " + std::to_string(t.end));
    if (t.end > data_size) {
      fail(where + "data_offsets end " + std::to_string(t.end) + " is beyond the data section (" +
           std::to_string(data_size) + " bytes)");
    }
    if (t.end - t.begin != static_cast<std::uint64_t>(nbytes)) {
      fail(where + "data_offsets span " + std::to_string(t.end - t.begin) + " bytes, but dtype " + dtype_name(t.dtype) +
           " and shape " + json_excerpt(*sh) + " need " + std::to_string(nbytes));
    }
    return t;
  }

  std::string path_;
  detail::MappedFile map_;
  std::size_t data_offset_ = 0;
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, std::size_t> index_;
  std::map<std::string, std::string> metadata_;
};

/// One tensor to write. `data` points at numel·dtype_size contiguous little-endian bytes.
struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::f32;
  std::vector<std::int64_t> shape;
  const void* data = nullptr;
};

/// Writes a safetensors file atomically (temp file + fsync + rename; on error the temp file is
/// removed and an existing file at `path` is untouched). Tensors are laid out in the given order;
/// the header is padded with spaces so the data section starts 8-byte aligned, as the Python
/// library does. Throws on duplicate/empty names, "__metadata__" as a name, or negative dims.
inline void write_safetensors(const std::string& path, const std::vector<SafetensorsEntry>& entries,
                              const std::map<std::string, std::string>& metadata = {}) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = m;
  }
  std::vector<std::uint64_t> sizes;
  std::uint64_t offset = 0;
  for (const auto& e : entries) {
    QLIP_CHECK(!e.name.empty(), "writing ", path, ": empty tensor name");
    QLIP_CHECK(e.name != "__metadata__", "writing ", path, ": '__metadata__' is reserved");
    QLIP_CHECK(!header.contains(e.name), "writing ", path, ": duplicate tensor name '", e.name, "'");
    // The reader's limits (file comment), so that every file written here can be read back.
    QLIP_CHECK(e.shape.size() <= kSafetensorsMaxRank, "writing ", path, ": tensor '", e.name, "' has ", e.shape.size(),
               " dimensions, more than ", kSafetensorsMaxRank);
    std::int64_t numel = 1, nonzero = 1, nonzero_bytes = 0;
    for (auto d : e.shape) {
      QLIP_CHECK(d >= 0, "writing ", path, ": tensor '", e.name, "' has negative dimension ", d);
      QLIP_CHECK(d <= kSafetensorsMaxDim, "writing ", path, ": tensor '", e.name, "' has dimension ", d,
                 ", above the limit of 2^40");
      QLIP_CHECK(d == 0 || !__builtin_mul_overflow(nonzero, d, &nonzero), "writing ", path, ": tensor '", e.name,
                 "' is too large");
      numel = d == 0 ? 0 : numel * d;
    }
    QLIP_CHECK(!__builtin_mul_overflow(nonzero, static_cast<std::int64_t>(dtype_size(e.dtype)), &nonzero_bytes),
               "writing ", path, ": tensor '", e.name, "' is too large");
    const std::uint64_t nbytes = static_cast<std::uint64_t>(numel) * dtype_size(e.dtype);  // <= nonzero_bytes
    QLIP_CHECK(offset + nbytes >= offset, "writing ", path, ": the tensors' total size overflows");
    QLIP_CHECK(nbytes == 0 || e.data != nullptr, "writing ", path, ": tensor '", e.name, "' has null data");
    nlohmann::ordered_json j;
    j["dtype"] = dtype_name(e.dtype);
    j["shape"] = e.shape;
    j["data_offsets"] = {offset, offset + nbytes};
    header[e.name] = j;
    sizes.push_back(nbytes);
    offset += nbytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {  // e.g. a name or metadata value that is not UTF-8
    QLIP_THROW("writing ", path, ": cannot encode the header: ", e.what());
  }
  text.append((8 - (text.size() % 8)) % 8, ' ');
  std::uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<std::uint8_t>(static_cast<std::uint64_t>(text.size()) >> (8 * i));
  detail::write_file_atomic(path, [&](const auto& write) {
    write(len, 8);
    write(text.data(), text.size());
    for (std::size_t i = 0; i < entries.size(); ++i)
      if (sizes[i]) write(entries[i].data, static_cast<std::size_t>(sizes[i]));
  });
}

/// Collects tensors (copied, so strided views are fine and the sources may go away) and writes them
/// with write_safetensors(). Example:
///   SafetensorsWriter w; w.add("weight", tensor.view()); w.add("codes", codes_view); w.write(path, {{"format", "pt"}});
class SafetensorsWriter {
 public:
  /// Adds a copy of a host view of any supported element type (any strides).
  /// @tparam T element type (const or not)
  /// @tparam R rank
  template <class T, int R>
  void add(const std::string& name, const HostView<T, R>& v) {
    using V = std::remove_const_t<T>;
    Item item;
    item.name = name;
    item.dtype = dtype_v<V>;
    item.shape.assign(v.shape().begin(), v.shape().end());
    const std::int64_t n = v.numel();
    item.bytes.resize(static_cast<std::size_t>(n) * sizeof(V));
    if (v.is_contiguous()) {
      if (n > 0) std::memcpy(item.bytes.data(), v.data(), item.bytes.size());
    } else {
      Extents<R> idx{};
      for (std::int64_t i = 0; i < n; ++i) {
        std::int64_t rem = i, off = v.offset();
        for (int d = R - 1; d >= 0; --d) {
          idx[d] = rem % v.size(d);
          rem /= v.size(d);
          off += idx[d] * v.stride(d);
        }
        std::memcpy(item.bytes.data() + i * static_cast<std::int64_t>(sizeof(V)), v.base() + off, sizeof(V));
      }
    }
    items_.push_back(std::move(item));
  }
  /// Adds a copy of raw bytes (numel·dtype_size of them) with the given dtype and shape.
  void add_raw(const std::string& name, DType dtype, const std::vector<std::int64_t>& shape, const void* data) {
    Item item{name, dtype, shape, {}};
    std::int64_t n = 1, bytes = 0;
    for (auto d : shape) {
      QLIP_CHECK(d >= 0, "tensor '", name, "' has negative dimension ", d);
      QLIP_CHECK(!__builtin_mul_overflow(n, d, &n), "tensor '", name, "' is too large");
    }
    QLIP_CHECK(!__builtin_mul_overflow(n, static_cast<std::int64_t>(dtype_size(dtype)), &bytes), "tensor '", name,
               "' is too large");
    item.bytes.resize(static_cast<std::size_t>(bytes));
    if (!item.bytes.empty()) std::memcpy(item.bytes.data(), data, item.bytes.size());
    items_.push_back(std::move(item));
  }
  /// Writes everything added so far (atomically).
  void write(const std::string& path, const std::map<std::string, std::string>& metadata = {}) const {
    std::vector<SafetensorsEntry> entries;
    entries.reserve(items_.size());
    for (const auto& it : items_) entries.push_back({it.name, it.dtype, it.shape, it.bytes.data()});
    write_safetensors(path, entries, metadata);
  }
  std::size_t size() const { return items_.size(); }

 private:
  struct Item {
    std::string name;
    DType dtype;
    std::vector<std::int64_t> shape;
    std::vector<std::byte> bytes;
  };
  std::vector<Item> items_;
};

/// An entry pointing at a contiguous host view (no copy; the view must outlive the write call).
/// @tparam T element type (const or not)
/// @tparam R rank
template <class T, int R>
SafetensorsEntry safetensors_entry(const std::string& name, const HostView<T, R>& v) {
  QLIP_CHECK(v.is_contiguous(), "safetensors_entry('", name, "'): view is not contiguous (shape ",
             shape_string<R>(v.shape()), "); use SafetensorsWriter::add, which copies strided views");
  return {name, dtype_v<std::remove_const_t<T>>, std::vector<std::int64_t>(v.shape().begin(), v.shape().end()),
          static_cast<const void*>(v.data())};
}

}  // namespace qlip
