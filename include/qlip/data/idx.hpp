/// @file idx.hpp
/// @brief Reader of the IDX format (LeCun's MNIST files, Fashion-MNIST), plain or gzip-compressed.
///
/// Layout: two zero bytes, an element-type byte (0x08 = unsigned byte; 0x09 int8, 0x0B int16,
/// 0x0C int32, 0x0D float32, 0x0E float64 exist but MNIST-style data never uses them and they are
/// refused), a rank byte, then `rank` big-endian uint32 dimensions, then the elements row-major.
/// A file that starts with the gzip magic (1f 8b) is decompressed first with zlib
/// (text/detail/gzip_reader.hpp, which refuses a truncated or corrupt stream).
///
/// Everything is checked before it is trusted: the magic, the type, the rank, each dimension
/// against the caller's expectation, and the data size against the file size (a truncated file and
/// trailing bytes are both errors). Every error is one line naming the file and the problem.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "qlip/core/error.hpp"
#include "qlip/io/detail/file.hpp"
#include "qlip/text/detail/gzip_reader.hpp"

namespace qlip::data {

/// A dimension of `expected_dims` that may take any value.
inline constexpr std::int64_t kAnyDim = -1;

/// An IDX array of unsigned bytes: `dims` (outermost first) and the row-major elements.
struct IdxArray {
  std::vector<std::int64_t> dims;
  std::vector<std::uint8_t> data;  // product(dims) bytes

  int rank() const { return static_cast<int>(dims.size()); }
  /// Elements per entry of the outermost dimension (28 · 28 for an MNIST image file, 1 for labels).
  std::int64_t item_size() const {
    std::int64_t n = 1;
    for (std::size_t d = 1; d < dims.size(); ++d) n *= dims[d];
    return n;
  }
};

namespace detail {

/// "[60000, 28, 28]", with "*" for kAnyDim.
inline std::string idx_dims_string(const std::vector<std::int64_t>& dims) {
  std::string s = "[";
  for (std::size_t d = 0; d < dims.size(); ++d) {
    s += d ? ", " : "";
    s += dims[d] == kAnyDim ? std::string("*") : std::to_string(dims[d]);
  }
  return s + "]";
}

inline const char* idx_type_name(std::uint8_t t) {
  switch (t) {
    case 0x08: return "uint8";
    case 0x09: return "int8";
    case 0x0B: return "int16";
    case 0x0C: return "int32";
    case 0x0D: return "float32";
    case 0x0E: return "float64";
    default: return "unknown";
  }
}

inline std::string idx_hex(std::uint32_t v, int bytes) {
  static const char* digits = "0123456789abcdef";
  std::string s = "0x";
  for (int i = bytes * 2 - 1; i >= 0; --i) s += digits[(v >> (4 * i)) & 0xF];
  return s;
}

}  // namespace detail

/// Parses an IDX file already in memory (decompressed). `name` is the file named in errors.
/// `expected_dims` (empty: anything) fixes the rank and each dimension; kAnyDim leaves one free.
inline IdxArray parse_idx(const std::uint8_t* bytes, std::size_t size, const std::string& name,
                          const std::vector<std::int64_t>& expected_dims = {}) {
  if (size < 4) QLIP_THROW(name, ": not an IDX file: ", size, " bytes, shorter than the 4-byte magic");
  const std::uint32_t magic = (std::uint32_t{bytes[0]} << 24) | (std::uint32_t{bytes[1]} << 16) |
                              (std::uint32_t{bytes[2]} << 8) | std::uint32_t{bytes[3]};
  if (bytes[0] != 0 || bytes[1] != 0) {
    QLIP_THROW(name, ": not an IDX file: magic ", detail::idx_hex(magic, 4), " does not start with two zero bytes");
  }
  const std::uint8_t type = bytes[2];
  const int rank = bytes[3];
  if (type != 0x08) {
    QLIP_THROW(name, ": IDX element type ", detail::idx_hex(type, 1), " (", detail::idx_type_name(type),
               ") is not supported, only 0x08 (uint8)");
  }
  if (rank < 1) QLIP_THROW(name, ": IDX rank 0 (magic ", detail::idx_hex(magic, 4), "): no dimensions");
  const std::size_t header = 4 + 4 * static_cast<std::size_t>(rank);
  if (size < header) {
    QLIP_THROW(name, ": truncated IDX header: rank ", rank, " needs ", header, " bytes, the file has ", size);
  }
  IdxArray a;
  a.dims.resize(static_cast<std::size_t>(rank));
  for (int d = 0; d < rank; ++d) {
    const std::uint8_t* p = bytes + 4 + 4 * d;
    a.dims[static_cast<std::size_t>(d)] = (std::int64_t{p[0]} << 24) | (std::int64_t{p[1]} << 16) |
                                          (std::int64_t{p[2]} << 8) | std::int64_t{p[3]};
  }
  if (!expected_dims.empty()) {
    bool ok = expected_dims.size() == a.dims.size();
    for (std::size_t d = 0; ok && d < a.dims.size(); ++d)
      ok = expected_dims[d] == kAnyDim || expected_dims[d] == a.dims[d];
    if (!ok) {
      QLIP_THROW(name, ": IDX dims ", detail::idx_dims_string(a.dims), ", expected ",
                 detail::idx_dims_string(expected_dims));
    }
  }
  // The element count; four dimensions of 2^32 - 1 would overflow 64 bits, so that is checked.
  const std::uint64_t available = size - header;
  std::uint64_t want = 1;
  for (std::int64_t dim : a.dims) {
    const auto du = static_cast<std::uint64_t>(dim);
    if (du != 0 && want > UINT64_MAX / du) {
      QLIP_THROW(name, ": truncated IDX file: dims ", detail::idx_dims_string(a.dims), " need more than 2^64 data bytes, it has ",
                 available);
    }
    want *= du;
  }
  if (want > available) {
    QLIP_THROW(name, ": truncated IDX file: dims ", detail::idx_dims_string(a.dims), " need ", want,
               " data bytes, it has ", available);
  }
  if (want < available) {
    QLIP_THROW(name, ": IDX file has ", available - want, " bytes after the ", want, " data bytes of dims ",
               detail::idx_dims_string(a.dims));
  }
  a.data.assign(bytes + header, bytes + header + want);
  return a;
}

/// Reads an IDX file, gzip-compressed (detected from its first two bytes, 1f 8b) or not.
/// Throws qlip::Error naming `path` when it is missing, a corrupt gzip stream, or not a valid IDX
/// array with `expected_dims` (see parse_idx).
inline IdxArray read_idx(const std::string& path, const std::vector<std::int64_t>& expected_dims = {}) {
  // Sniff the first two bytes only, so a 26 MB gzip file is not read twice.
  std::uint8_t head[2] = {0, 0};
  {
    struct stat st {};
    const int fd = qlip::detail::open_readonly(path, st);  // throws "cannot open <path>: <why>"
    const ssize_t got = S_ISDIR(st.st_mode) ? -1 : ::read(fd, head, sizeof head);
    ::close(fd);
    if (S_ISDIR(st.st_mode)) QLIP_THROW("cannot read ", path, ": is a directory");
    if (got < 2) head[0] = 0;
  }
  if (head[0] == 0x1F && head[1] == 0x8B) {
    const std::string unpacked = text::detail::read_gzip_file(path);
    return parse_idx(reinterpret_cast<const std::uint8_t*>(unpacked.data()), unpacked.size(), path, expected_dims);
  }
  const std::vector<std::uint8_t> raw = qlip::detail::read_file_bytes(path);
  return parse_idx(raw.data(), raw.size(), path, expected_dims);
}

}  // namespace qlip::data
