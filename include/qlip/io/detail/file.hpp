/// @file file.hpp
/// @brief POSIX file helpers shared by the io headers: read a whole file, write a file atomically
///        (temp file + fsync + rename), and a move-only read-only memory mapping.
///
/// Why atomic writes: a checkpoint or image written by a crashed or interrupted process must never
/// replace a good file with a truncated one. We write "<path>.tmp.<pid>", fsync it, then rename(2) it
/// over the target, which POSIX guarantees to be atomic within one filesystem. On any error the temp
/// file is removed and an existing file at `path` is left untouched.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "qlip/core/error.hpp"

namespace qlip::detail {

/// strerror for the current errno, as a std::string.
inline std::string errno_string(int err) { return std::string(std::strerror(err)); }

/// Opens `path` read-only and stats it; returns the descriptor (the caller closes it). Throws naming
/// the file when either step fails.
inline int open_readonly(const std::string& path, struct stat& st) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) QLIP_THROW("cannot open ", path, ": ", errno_string(errno));
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    QLIP_THROW("cannot stat ", path, ": ", errno_string(err));
  }
  return fd;
}

/// Reads a whole file into memory. Throws naming the file when it cannot be opened or read.
inline std::vector<std::uint8_t> read_file_bytes(const std::string& path) {
  struct stat st {};
  int fd = open_readonly(path, st);
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    QLIP_THROW("cannot read ", path, ": is a directory");
  }
  std::vector<std::uint8_t> data;
  data.reserve(static_cast<std::size_t>(st.st_size));
  std::uint8_t chunk[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, chunk, sizeof(chunk));
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      QLIP_THROW("error reading ", path, ": ", errno_string(err));
    }
    if (n == 0) break;
    data.insert(data.end(), chunk, chunk + n);
  }
  ::close(fd);
  return data;
}

/// Writes the bytes produced by `produce` to `path` atomically. `produce(write)` calls
/// `write(ptr, n)` any number of times. Throws qlip::Error on failure (temp file removed).
inline void write_file_atomic(const std::string& path,
                              const std::function<void(const std::function<void(const void*, std::size_t)>&)>& produce) {
  const std::string tmp = path + ".tmp." + std::to_string(static_cast<long long>(::getpid()));
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) QLIP_THROW("cannot create ", tmp, " (writing ", path, "): ", errno_string(errno));
  auto fail = [&](const std::string& what, int err) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    QLIP_THROW(what, " ", path, ": ", errno_string(err));
  };
  auto write_all = [&](const void* data, std::size_t n) {
    const auto* p = static_cast<const std::uint8_t*>(data);
    while (n > 0) {
      ssize_t w = ::write(fd, p, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        // Cleanup (close + unlink) happens once, in the catch below.
        QLIP_THROW("error writing ", tmp, " (writing ", path, "): ", errno_string(errno));
      }
      p += w;
      n -= static_cast<std::size_t>(w);
    }
  };
  try {
    produce(write_all);
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::fsync(fd) != 0) fail("fsync failed for", errno);
  if (::close(fd) != 0) {
    fd = -1;
    fail("close failed for", errno);
  }
  fd = -1;
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("cannot rename temp file onto", errno);
}

/// Convenience: atomically writes one buffer.
inline void write_file_atomic(const std::string& path, const void* data, std::size_t n) {
  write_file_atomic(path, [&](const auto& write) { write(data, n); });
}

/// A read-only, private memory mapping of a whole file. Move-only; unmaps in the destructor.
class MappedFile {
 public:
  MappedFile() = default;
  static MappedFile open(const std::string& path) {
    MappedFile m;
    struct stat st {};
    int fd = open_readonly(path, st);
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      QLIP_THROW("cannot map ", path, ": not a regular file");
    }
    m.size_ = static_cast<std::size_t>(st.st_size);
    if (m.size_ > 0) {
      void* p = ::mmap(nullptr, m.size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        int err = errno;
        ::close(fd);
        QLIP_THROW("cannot mmap ", path, ": ", errno_string(err));
      }
      m.data_ = static_cast<const std::byte*>(p);
    }
    ::close(fd);  // the mapping keeps the file alive
    return m;
  }
  MappedFile(MappedFile&& o) noexcept : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  MappedFile& operator=(MappedFile&& o) noexcept {
    if (this != &o) {
      reset();
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() { reset(); }

  const std::byte* data() const { return data_; }
  std::size_t size() const { return size_; }

 private:
  void reset() noexcept {
    if (data_) {
      int rc = ::munmap(const_cast<std::byte*>(data_), size_);
      QLIP_CHECK_NOTHROW(rc == 0, "munmap failed: ", errno_string(errno));
    }
    data_ = nullptr;
    size_ = 0;
  }
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace qlip::detail
