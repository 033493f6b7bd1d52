/// @file error.hpp
/// @brief qlip::Error and the QLIP_CHECK / QLIP_THROW macros: the library's one error channel.
///
/// Nothing under include/ calls exit() or abort(): a trainer or sampler built on qlip must be able to
/// recover, report and clean up. Destructors use QLIP_CHECK_NOTHROW, which logs instead of throwing.
#pragma once

#include <cstdio>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace qlip {

/// The exception every qlip failure throws. what() names the place (file:line) and the problem.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

namespace detail {

/// Streams any number of values into one string (the message parts of QLIP_CHECK).
template <class... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream out;
  (out << ... << std::forward<Parts>(parts));
  return out.str();
}

[[noreturn]] inline void throw_error(const char* file, int line, const std::string& message) {
  throw Error(std::string(file) + ":" + std::to_string(line) + ": " + message);
}

/// QLIP_CHECK's failure: the message when there is one, else the condition's source text.
[[noreturn]] inline void throw_check_failed(const char* file, int line, const char* cond, const std::string& message) {
  throw_error(file, line, message.empty() ? "check failed: " + std::string(cond) : message);
}

}  // namespace detail
}  // namespace qlip

/// Throws qlip::Error with file:line and the streamed message parts.
#define QLIP_THROW(...) ::qlip::detail::throw_error(__FILE__, __LINE__, ::qlip::detail::concat(__VA_ARGS__))

/// Throws qlip::Error when `cond` is false. With message parts, what() is "file:line: <message>":
/// the message is meant to be read by whoever ran the program (it names the file, tensor or
/// argument at fault), and the C++ condition text would only get in its way. Without message parts
/// (or when they stream to nothing), what() is "file:line: check failed: <cond>", the only clue left.
#define QLIP_CHECK(cond, ...)                                                                                        \
  do {                                                                                                               \
    if (!(cond)) ::qlip::detail::throw_check_failed(__FILE__, __LINE__, #cond, ::qlip::detail::concat(__VA_ARGS__)); \
  } while (0)

/// For destructors and other noexcept paths: logs to stderr instead of throwing.
#define QLIP_CHECK_NOTHROW(cond, ...)                                                        \
  do {                                                                                       \
    if (!(cond))                                                                             \
      std::fprintf(stderr, "qlip: %s:%d: check failed: %s: %s\n", __FILE__, __LINE__, #cond, \
                   ::qlip::detail::concat("", ##__VA_ARGS__).c_str());                       \
  } while (0)
