/// @file util.hpp
/// @brief Small helpers of the `qlip` CLI: number formatting, list splitting, prompt templates,
///        the one-line error message, and the file-name helpers used by several subcommands.
///
/// Nothing here touches the model; everything is plain standard library so it can be unit-tested
/// through the binary (tests/cli) without weights.
#pragma once

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "qlip/core/error.hpp"
#include "qlip/io/json.hpp"

namespace qlip::cli {

/// The command line itself is wrong: an unknown or malformed option, a value out of range, options
/// that contradict each other, an empty label list. Such a command fails on any machine, whatever
/// its files hold; main() exits with 2 for it. Everything that depends on the file system (a
/// missing or corrupt input, a checkpoint folder that does not load, an output location that cannot
/// be written) is a plain qlip::Error and exits with 1.
class UsageError : public qlip::Error {
 public:
  explicit UsageError(const std::string& message) : qlip::Error(message) {}
};

/// "1234567" → "1,234,567" (negative numbers keep their sign).
inline std::string thousands(std::int64_t value) {
  std::string digits = std::to_string(value < 0 ? -value : value);
  std::string out;
  const int n = static_cast<int>(digits.size());
  for (int i = 0; i < n; ++i) {
    if (i > 0 && (n - i) % 3 == 0) out += ',';
    out += digits[static_cast<std::size_t>(i)];
  }
  return value < 0 ? "-" + out : out;
}

/// Fixed-point formatting with `digits` decimals ("%.*f" without the printf boilerplate).
inline std::string fixed(double value, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", digits, value);
  return buf;
}

/// A float as config.json would spell it (shortest round-trip-ish form: 1e-06, 1e-05, 0.5).
inline std::string short_float(double value) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%g", value);
  return buf;
}

/// Removes leading and trailing ASCII whitespace.
inline std::string trim(const std::string& s) {
  const char* ws = " \t\r\n\f\v";
  const auto b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(ws);
  return s.substr(b, e - b + 1);
}

/// Splits a comma-separated list given on the command line ("a dog, a cat") into trimmed items.
/// `what` names the option in messages ("--labels"). Throws "empty label list" when nothing is
/// given and names the position of an empty item ("a,,b" is almost always a typo).
/// Commas inside an item can be written as "\,".
inline std::vector<std::string> split_list(const std::string& text, const std::string& what,
                                           const std::string& item_name) {
  std::vector<std::string> items;
  std::string current;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\\' && i + 1 < text.size() && text[i + 1] == ',') {
      current += ',';
      ++i;
    } else if (text[i] == ',') {
      items.push_back(trim(current));
      current.clear();
    } else {
      current += text[i];
    }
  }
  items.push_back(trim(current));
  if (items.size() == 1 && items[0].empty()) throw UsageError(what + ": empty " + item_name + " list");
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (items[i].empty()) {
      throw UsageError(what + ": " + item_name + " " + std::to_string(i + 1) + " of " + std::to_string(items.size()) +
                       " is empty (write \"\\,\" for a literal comma)");
    }
  }
  return items;
}

/// Substitutes every "{}" in `pattern` with `value` ("a photo of a {}." + "cat").
/// Throws when the pattern has no "{}": the label would silently be ignored.
inline std::string apply_template(const std::string& pattern, const std::string& value) {
  if (pattern.find("{}") == std::string::npos) {
    throw UsageError("--template \"" + pattern + "\" has no \"{}\" placeholder for the label");
  }
  std::string out;
  for (std::size_t i = 0; i < pattern.size();) {
    if (pattern.compare(i, 2, "{}") == 0) {
      out += value;
      i += 2;
    } else {
      out += pattern[i++];
    }
  }
  return out;
}

/// Turns an exception message into the single line `qlip: error: <message>` prints.
/// qlip::Error messages begin with the library's "file.hpp:123: " source location; that is useful
/// to a developer, noise to a CLI user, so it is dropped (set QLIP_CLI_DEBUG=1 to keep it).
/// Newlines (nlohmann-json and CLI11 produce some) are folded into "; ".
inline std::string one_line_message(std::string message, bool keep_locations) {
  if (!keep_locations) {
    // Remove every "<path>.{hpp,cpp,cuh,h}:<digits>: " token.
    std::string out;
    std::size_t i = 0;
    while (i < message.size()) {
      bool removed = false;
      // A location token starts at the beginning or after a space.
      if (i == 0 || message[i - 1] == ' ') {
        std::size_t colon = message.find(':', i);
        std::size_t space = message.find(' ', i);
        if (colon != std::string::npos && (space == std::string::npos || colon < space)) {
          const std::string file = message.substr(i, colon - i);
          std::size_t j = colon + 1;
          while (j < message.size() && std::isdigit(static_cast<unsigned char>(message[j]))) ++j;
          const bool has_line = j > colon + 1;
          const bool is_source = file.ends_with(".hpp") || file.ends_with(".cpp") || file.ends_with(".cuh") ||
                                 file.ends_with(".h") || file.ends_with(".cu");
          if (is_source && has_line && j + 1 < message.size() && message[j] == ':' && message[j + 1] == ' ') {
            i = j + 2;
            removed = true;
          }
        }
      }
      if (!removed) out += message[i++];
    }
    message = out;
  }
  std::string line;
  for (std::size_t i = 0; i < message.size(); ++i) {
    char c = message[i];
    if (c == '\r') continue;
    if (c == '\n') {
      // Collapse runs of newlines/indentation into one separator.
      while (i + 1 < message.size() && (message[i + 1] == '\n' || message[i + 1] == ' ' || message[i + 1] == '\r')) ++i;
      if (!line.empty() && i + 1 < message.size()) line += "; ";
      continue;
    }
    line += c;
  }
  line = trim(line);
  return line.empty() ? std::string("unknown error") : line;
}

/// The file name of a path ("photos/cat.png" → "cat.png"), used in tables and metadata.
inline std::string base_name(const std::string& path) {
  return std::filesystem::path(path).filename().string();
}

/// Output names for decoded images: "<stem>.png" when the stems are known and unique, otherwise
/// "image_000.png", "image_001.png", ... for all of them (a mix would be confusing).
inline std::vector<std::string> png_names(const std::vector<std::string>& sources, std::size_t count) {
  std::vector<std::string> names;
  std::set<std::string> seen;
  bool usable = sources.size() == count;
  for (std::size_t i = 0; usable && i < count; ++i) {
    std::string stem = std::filesystem::path(sources[i]).stem().string();
    // Reject empty stems, hidden-file stems and anything that could escape the output folder.
    if (stem.empty() || stem[0] == '.' || stem.find('/') != std::string::npos || !seen.insert(stem).second) {
      usable = false;
      break;
    }
    names.push_back(stem + ".png");
  }
  if (usable) return names;
  names.clear();
  const int width = count > 1000 ? static_cast<int>(std::to_string(count - 1).size()) : 3;
  for (std::size_t i = 0; i < count; ++i) {
    std::string n = std::to_string(i);
    names.push_back("image_" +
                    std::string(static_cast<std::size_t>(std::max(0, width - static_cast<int>(n.size()))), '0') + n +
                    ".png");
  }
  return names;
}

/// A JSON array of strings, for safetensors metadata (values there must be strings).
inline std::string json_string_array(const std::vector<std::string>& items) {
  return nlohmann::json(items).dump();
}

/// Parses what json_string_array wrote; returns an empty list for anything else (metadata written
/// by other tools is advisory only). qlip::parse_json: a deeply nested value is rejected before it
/// is built, like any other malformed metadata.
inline std::vector<std::string> parse_string_array(const std::string& text) {
  try {
    nlohmann::json j = qlip::parse_json(text, "metadata");
    if (!j.is_array()) return {};
    std::vector<std::string> out;
    for (const auto& v : j) {
      if (!v.is_string()) return {};
      out.push_back(v.get<std::string>());
    }
    return out;
  } catch (const qlip::Error&) {
    return {};
  } catch (const nlohmann::json::exception&) {
    return {};
  }
}

}  // namespace qlip::cli
