/// @file io_test_util.hpp
/// @brief Helpers shared by the tests/io suites: scratch directories, raw file writing, and an
///        EXPECT-style check that a callable throws qlip::Error whose message contains given text.
#pragma once

#include <gtest/gtest.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "qlip/core/error.hpp"
#include "qlip/core/philox.hpp"
#include "qlip/io/image.hpp"

namespace qlip::test {

/// A w×h image with c channels of uniform random bytes from a fixed Philox stream.
inline Image random_image(int w, int h, int c, std::uint64_t seed) {
  Image im = Image::zeros(w, h, c);
  const Philox rng(seed);
  for (std::size_t i = 0; i < im.pixels.size(); ++i) im.pixels[i] = static_cast<std::uint8_t>(rng.uniform(i) * 256.0f);
  return im;
}

/// A fresh directory under $TMPDIR (or /tmp), removed with its files at scope exit.
class ScratchDir {
 public:
  ScratchDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/qlip_io_XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (!::mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed");
    path_ = buf.data();
  }
  ~ScratchDir() {
    for (const auto& f : list()) ::unlink((path_ + "/" + f).c_str());
    ::rmdir(path_.c_str());
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  /// Names of the entries in the directory (not . and ..).
  std::vector<std::string> list() const {
    std::vector<std::string> names;
    if (DIR* d = ::opendir(path_.c_str())) {
      while (dirent* e = ::readdir(d)) {
        std::string n = e->d_name;
        if (n != "." && n != "..") names.push_back(n);
      }
      ::closedir(d);
    }
    return names;
  }

 private:
  std::string path_;
};

inline void write_bytes(const std::string& path, const std::string& bytes) {
  // Unlink first: ext4 flushes a file on close when it was truncated and rewritten (auto_da_alloc),
  // which made the fuzz loop I/O bound.
  ::unlink(path.c_str());
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

/// Checks that fn() throws qlip::Error whose what() contains every one of `needles`.
template <class F>
::testing::AssertionResult throws_error(F&& fn, std::initializer_list<std::string> needles) {
  try {
    fn();
  } catch (const qlip::Error& e) {
    std::string msg = e.what();
    for (const auto& n : needles) {
      if (msg.find(n) == std::string::npos) {
        return ::testing::AssertionFailure() << "message lacks \"" << n << "\": " << msg;
      }
    }
    return ::testing::AssertionSuccess() << msg;
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw a non-qlip exception: " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw";
}

}  // namespace qlip::test
