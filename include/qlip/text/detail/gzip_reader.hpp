/// @file gzip_reader.hpp
/// @brief Reads a whole gzip file into memory with zlib, failing loudly on anything but a complete,
///        valid gzip stream (a plain or truncated file must not pass for a vocabulary).
#pragma once

#include <string>

#include <zlib.h>

#include "qlip/core/error.hpp"

namespace qlip::text::detail {

/// Decompresses `path`. Throws qlip::Error naming the file when it is missing, not gzip, or
/// corrupt/truncated.
inline std::string read_gzip_file(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) QLIP_THROW("cannot open '", path, "' (missing or unreadable)");
  std::string out;
  char buf[1 << 16];
  int n = 0;
  while ((n = gzread(f, buf, sizeof buf)) > 0) out.append(buf, static_cast<std::size_t>(n));
  int err = Z_OK;
  const char* msg = gzerror(f, &err);
  // gzdirect() is only meaningful after a read: 1 means zlib passed a non-gzip file through as is.
  bool direct = gzdirect(f) == 1;
  std::string why = (n < 0 || (err != Z_OK && err != Z_STREAM_END)) ? std::string(msg ? msg : "read error") : "";
  gzclose(f);
  if (direct) QLIP_THROW("'", path, "' is not a gzip file");
  if (!why.empty()) QLIP_THROW("'", path, "' is a corrupt or truncated gzip file: ", why);
  return out;
}

}  // namespace qlip::text::detail
