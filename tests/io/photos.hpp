/// @file photos.hpp
/// @brief Where the tests find the real photos of Debian's python3-skimage package, and a check that
///        a photo is the very file a fixture was generated from (sha256). A missing photo is a test
///        FAILURE telling the reader to run scripts/setup.sh, never a silent skip.
#pragma once

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <string>

#include "io/sha256.hpp"
#include "qlip/io/detail/file.hpp"

namespace qlip::test {

/// $QLIP_PHOTO_DIR, or the python3-skimage data folder.
inline std::string photo_dir() {
  const char* env = std::getenv("QLIP_PHOTO_DIR");
  return env && *env ? std::string(env) : std::string("/usr/lib/python3/dist-packages/skimage/data");
}

/// Full path of a photo after checking that it exists and (when `sha256` is non-empty) that its
/// content hash matches. Adds a fatal-style failure message and returns "" otherwise.
inline ::testing::AssertionResult locate_photo(const std::string& name, const std::string& sha256, std::string& path) {
  path = photo_dir() + "/" + name;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return ::testing::AssertionFailure() << "test photo " << path
                                         << " is missing: run scripts/setup.sh (installs python3-skimage), "
                                            "or set QLIP_PHOTO_DIR to a folder holding the skimage photos";
  }
  if (!sha256.empty()) {
    const std::string got = sha256_hex(detail::read_file_bytes(path));
    if (got != sha256) {
      return ::testing::AssertionFailure() << "test photo " << path << " differs from the one the fixture was made from "
                                           << "(sha256 " << got << ", fixture expects " << sha256
                                           << "); regenerate with tools/make_preprocess_fixtures.py";
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace qlip::test
