/// @file fuzz_common.hpp
/// @brief Shared pieces of the fuzz targets (tests/fuzz/fuzz_<name>.cpp): a scratch folder in
///        /dev/shm (the readers under test take paths), file writing, the "only qlip::Error may
///        escape" rule, and a structure-aware JSON mutator for LLVMFuzzerCustomMutator.
///
/// Each target is built twice (tests/fuzz/CMakeLists.txt): as a libFuzzer binary (clang,
/// QLIP_FUZZ_LIBFUZZER defined, custom mutators compiled) and, with any compiler, linked with
/// replay_main.cpp to run its committed corpus and regression inputs under ctest.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iterator>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "qlip/core/error.hpp"
#include "qlip/io/json.hpp"

#ifdef QLIP_FUZZ_LIBFUZZER
extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);
#endif

namespace qlip::fuzz {

/// A per-process folder in /dev/shm (tmpfs: no disk I/O per input), removed at exit.
inline const std::string& scratch_dir() {
  static const std::string dir = [] {
    const char* base =
        ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : (std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp");
    std::string tmpl = std::string(base) + "/qlip_fuzz_XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (!::mkdtemp(buf.data())) {
      std::perror("mkdtemp");
      std::abort();
    }
    static std::string made = buf.data();
    std::atexit([] {
      std::string cmd = "rm -rf '" + made + "'";
      (void)std::system(cmd.c_str());
    });
    return made;
  }();
  return dir;
}

inline std::string scratch_path(const std::string& name) {
  return scratch_dir() + "/" + name;
}

/// Replaces `path` with `bytes` (unlink first: tmpfs reuses nothing, and an mmap of the old file held
/// by nobody is gone).
inline void write_file(const std::string& path, const void* bytes, std::size_t n) {
  ::unlink(path.c_str());
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    std::perror(path.c_str());
    std::abort();
  }
  const auto* p = static_cast<const std::uint8_t*>(bytes);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w <= 0) {
      std::perror("write");
      std::abort();
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  ::close(fd);
}

inline void write_file(const std::string& path, std::string_view s) {
  write_file(path, s.data(), s.size());
}

/// Reads a whole file (for seeds and fixed halves); aborts when it is missing: a fuzz target without
/// its fixture would test nothing.
inline std::string read_file(const std::string& path) {
  std::string out;
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) {
    std::fprintf(stderr, "fuzz: cannot open %s\n", path.c_str());
    std::abort();
  }
  char buf[1 << 16];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  std::fclose(f);
  return out;
}

/// Runs `body`; a qlip::Error is the expected outcome for a bad input. Any other exception breaks the
/// library's one-error-channel rule (ARCHITECTURE.md, Errors) and is reported as a finding (abort,
/// so libFuzzer saves the input). std::bad_alloc is a finding too: inputs are small, so an
/// allocation that fails is sized from an unchecked field.
/// QLIP_FUZZ_VERBOSE=1 prints each input's outcome (to see how deep the seeds get).
template <class Body>
void expect_only_qlip_errors(const char* target, Body&& body) {
  static const bool verbose = std::getenv("QLIP_FUZZ_VERBOSE") != nullptr;
  try {
    body();
    if (verbose) std::fprintf(stderr, "fuzz %s: accepted\n", target);
  } catch (const qlip::Error& e) {
    if (verbose) std::fprintf(stderr, "fuzz %s: %s\n", target, e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz %s: an exception that is not qlip::Error escaped: %s\n", target, e.what());
    std::abort();
  }
}

// ---- structure-aware JSON mutation ----

/// Values that sit on the limits of the readers (int, int64, 2^40, sizes) or break types.
inline nlohmann::json interesting_value(std::mt19937_64& rng) {
  static const std::int64_t ints[] = {0,
                                      1,
                                      -1,
                                      2,
                                      3,
                                      7,
                                      8,
                                      16,
                                      28,
                                      32,
                                      64,
                                      255,
                                      256,
                                      4095,
                                      4096,
                                      65536,
                                      2147483647LL,
                                      2147483648LL,
                                      -2147483648LL,
                                      4294967296LL,
                                      (1LL << 40),
                                      (1LL << 40) + 1,
                                      (1LL << 53),
                                      (1LL << 62),
                                      INT64_MAX,
                                      INT64_MIN,
                                      3037000499LL,
                                      3037000500LL};
  switch (rng() % 9) {
    case 0:
      return nlohmann::json(static_cast<std::uint64_t>(UINT64_MAX));
    case 1:
      return nlohmann::json(1e308);
    case 2:
      return nlohmann::json(0.5);
    case 3:
      return nlohmann::json("x");
    case 4:
      return nlohmann::json(true);
    case 5:
      return nlohmann::json(nullptr);
    case 6:
      return nlohmann::json::array({ints[rng() % std::size(ints)]});
    case 7:
      return nlohmann::json::object();
    default:
      return nlohmann::json(ints[rng() % std::size(ints)]);
  }
}

/// Every value of `j` (iterative: no recursion on the input's depth).
inline std::vector<nlohmann::json*> all_nodes(nlohmann::json& j) {
  std::vector<nlohmann::json*> out, stack{&j};
  while (!stack.empty()) {
    nlohmann::json* v = stack.back();
    stack.pop_back();
    out.push_back(v);
    if (v->is_structured())
      for (auto& c : *v) stack.push_back(&c);
  }
  return out;
}

/// One structural change to JSON text: a value replaced by a limit value, a key renamed to one of
/// `dictionary` or removed, an element duplicated or dropped, a value wrapped in arrays (depth), or,
/// after reserialising, a duplicate key inserted. Returns the new size, or 0 when the text is not
/// JSON (the caller then falls back to byte mutation).
inline std::size_t mutate_json(std::uint8_t* data, std::size_t size, std::size_t max_size, unsigned seed,
                               const std::vector<std::string>& dictionary) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    qlip::detail::json_check_depth(text, "mutator", kJsonMaxDepth);
  } catch (const qlip::Error&) {
    return 0;
  }
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded()) return 0;
  std::mt19937_64 rng(seed);
  std::vector<nlohmann::json*> nodes = all_nodes(j);
  nlohmann::json* v = nodes[rng() % nodes.size()];
  bool duplicate_key = false;
  switch (rng() % 8) {
    case 0:
    case 1:
    case 2:
      *v = interesting_value(rng);
      break;
    case 3:
      if (v->is_object() && !v->empty()) {
        auto it = std::next(v->begin(), static_cast<std::ptrdiff_t>(rng() % v->size()));
        nlohmann::json moved = *it;
        const std::string key = dictionary.empty() ? it.key() + "_" : dictionary[rng() % dictionary.size()];
        v->erase(it);
        if (rng() % 4) (*v)[key] = std::move(moved);
      } else if (!dictionary.empty()) {
        *v = nlohmann::json::object({{dictionary[rng() % dictionary.size()], interesting_value(rng)}});
      }
      break;
    case 4:
      if (v->is_array() && !v->empty()) {
        const std::size_t i = rng() % v->size();
        if (rng() % 2)
          v->push_back((*v)[i]);
        else
          v->erase(i);
      } else if (v->is_object() && !dictionary.empty()) {
        (*v)[dictionary[rng() % dictionary.size()]] = interesting_value(rng);
      }
      break;
    case 5: {
      const int wraps = 1 + static_cast<int>(rng() % 80);  // around the depth cap
      for (int w = 0; w < wraps; ++w) *v = nlohmann::json::array({std::move(*v)});
      break;
    }
    case 6:
      duplicate_key = true;
      break;
    default:
      if (v->is_string()) {
        std::string s = v->get<std::string>();
        s.append(1 + rng() % 8, static_cast<char>("a.0\\\"\xc3\xff"[rng() % 7]));
        *v = s;
      } else if (v->is_number_integer()) {
        // Wrapping unsigned arithmetic: the mutator itself must not overflow (UBSan checks it too).
        *v = static_cast<std::int64_t>(static_cast<std::uint64_t>(v->get<std::int64_t>()) + rng() % 3 - 1);
      }
  }
  std::string out;
  try {
    // Depth may now exceed what dump() should recurse on only by the 80 wraps above: fine.
    out = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  } catch (const nlohmann::json::exception&) {
    return 0;
  }
  if (duplicate_key) {
    // nlohmann objects cannot hold a duplicate; insert one in the text after the first key's '{'.
    const std::size_t brace = out.find("{\"");
    if (brace != std::string::npos) {
      const std::size_t end = out.find('"', brace + 2);
      if (end != std::string::npos) out.insert(brace + 1, out.substr(brace + 1, end - brace) + ":0,");
    }
  }
  if (out.size() > max_size) return 0;
  std::memcpy(data, out.data(), out.size());
  return out.size();
}

/// mutate_json on the header of a safetensors file (8-byte little-endian length, JSON, data), with
/// the length prefix fixed up and the data section kept. Returns 0 when the input has no parsable
/// header.
inline std::size_t mutate_safetensors_header(std::uint8_t* data, std::size_t size, std::size_t max_size, unsigned seed,
                                             const std::vector<std::string>& dictionary) {
  if (size < 8) return 0;
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];
  if (n > size - 8) return 0;
  std::vector<std::uint8_t> header(data + 8, data + 8 + n);
  const std::vector<std::uint8_t> rest(data + 8 + n, data + size);
  header.resize(std::max<std::size_t>(max_size, header.size()));
  const std::size_t m = mutate_json(header.data(), static_cast<std::size_t>(n), header.size(), seed, dictionary);
  if (m == 0 || 8 + m + rest.size() > max_size) return 0;
  for (int i = 0; i < 8; ++i) data[i] = static_cast<std::uint8_t>(static_cast<std::uint64_t>(m) >> (8 * i));
  std::memcpy(data + 8, header.data(), m);
  if (!rest.empty()) std::memcpy(data + 8 + m, rest.data(), rest.size());
  return 8 + m + rest.size();
}

/// Names of the safetensors header format and of QLIP tensors, for key mutations.
inline const std::vector<std::string>& safetensors_dictionary() {
  static const std::vector<std::string> d = {"dtype", "shape",         "data_offsets", "__metadata__", "indices",
                                             "bits",  "group_indices", "images",       "config",       "logit_scale"};
  return d;
}

#ifdef QLIP_FUZZ_LIBFUZZER
/// The custom mutator body for JSON inputs: structural half the time, libFuzzer's byte mutations
/// otherwise (and whenever the input is not JSON), so both valid-but-strange and broken files come.
inline std::size_t json_custom_mutator(std::uint8_t* data, std::size_t size, std::size_t max_size, unsigned seed,
                                       const std::vector<std::string>& dictionary) {
  if (seed % 2 == 0) {
    if (std::size_t n = mutate_json(data, size, max_size, seed, dictionary)) return n;
  }
  return LLVMFuzzerMutate(data, size, max_size);
}

/// The custom mutator body for safetensors files: the header structurally half the time.
inline std::size_t safetensors_custom_mutator(std::uint8_t* data, std::size_t size, std::size_t max_size,
                                              unsigned seed) {
  if (seed % 2 == 0) {
    if (std::size_t n = mutate_safetensors_header(data, size, max_size, seed, safetensors_dictionary())) return n;
  }
  return LLVMFuzzerMutate(data, size, max_size);
}
#endif

}  // namespace qlip::fuzz
