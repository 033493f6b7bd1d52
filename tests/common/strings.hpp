/// @file strings.hpp
/// @brief String helpers for test failure messages.
#pragma once

#include <cstdio>
#include <string>

namespace qlip::test {

/// Printable form of a test string for failure messages: quoted, control characters as \xNN.
inline std::string show(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

}  // namespace qlip::test
