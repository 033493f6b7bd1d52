/// @file cli_test_util.hpp
/// @brief Helpers of the tests/cli suite: run the built `qlip` binary in a shell with captured
///        stdout/stderr and exit code, scratch folders, synthetic images, checkpoint copies, and the
///        checks every failure test makes (exit code ≠ 0, exactly one "qlip: error: " line, no output).
///
/// The binary: the compile definition QLIP_CLI_PATH when tests/CMakeLists.txt sets it
/// (`target_compile_definitions(test_cli PRIVATE QLIP_CLI_PATH="$<TARGET_FILE:qlip_cli>")`), else
/// `<build>/examples/qlip` or `<build>/examples/qlip_cli` next to `<build>/tests/test_cli`. Not
/// finding it is a test failure that says so, never a skip.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "qlip/io/image.hpp"
#include "qlip/io/safetensors.hpp"

#ifndef QLIP_TEST_DATA_DIR
#error "test_cli needs QLIP_TEST_DATA_DIR"
#endif

namespace qlip::test::cli {

namespace fs = std::filesystem;

inline const std::string kTiny = std::string(QLIP_TEST_DATA_DIR) + "/qlip/qlip-test-tiny";
inline const std::string kPlain = std::string(QLIP_TEST_DATA_DIR) + "/qlip/qlip-test-plain";

/// Path of the `qlip` binary under test ("" when it cannot be found).
inline std::string cli_path() {
#ifdef QLIP_CLI_PATH
  return fs::exists(QLIP_CLI_PATH) ? std::string(QLIP_CLI_PATH) : std::string();  // named: no fallback
#endif
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return "";
  for (const char* name : {"qlip", "qlip_cli"}) {
    const fs::path p = self.parent_path().parent_path() / "examples" / name;
    if (fs::is_regular_file(p)) return p.string();
  }
  return "";
}

/// The CLIP BPE vocabulary scripts/setup.sh installs ("" when it is not there).
inline std::string vocab_gz() {
#ifdef QLIP_VOCAB_DIR
  const std::string p = std::string(QLIP_VOCAB_DIR) + "/bpe_simple_vocab_16e6.txt.gz";
  if (fs::exists(p)) return p;
#endif
  return "";
}

/// Single-quotes a word for /bin/sh.
inline std::string q(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// What one run of the binary did.
struct RunResult {
  int code = -1;        ///< exit status (-1: killed by a signal)
  std::string out;      ///< stdout
  std::string err;      ///< stderr
  std::string command;  ///< for failure messages
};

inline std::ostream& operator<<(std::ostream& os, const RunResult& r) {
  return os << "command: " << r.command << "\nexit: " << r.code << "\nstdout:\n" << r.out << "\nstderr:\n" << r.err;
}

/// A scratch folder per test, removed at the end; runs the CLI with its stdout/stderr captured.
class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/qlip_cli_XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    ASSERT_NE(::mkdtemp(buf.data()), nullptr);
    dir_ = buf.data();
    fs::create_directory(out_dir());
    cli_ = cli_path();
    ASSERT_FALSE(cli_.empty())
        << "the qlip CLI binary was not found: build the qlip_cli target (examples/qlip_cli.cpp), "
           "or define QLIP_CLI_PATH for test_cli in tests/CMakeLists.txt";
  }
  void TearDown() override {
    std::error_code ec;
    fs::permissions(dir_, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(dir_, ec);
  }

  /// Scratch path for inputs.
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  /// A folder that only the CLI writes to: failure tests check it stays empty.
  std::string out_dir() const { return dir_ + "/out"; }
  std::string out(const std::string& name) const { return out_dir() + "/" + name; }

  /// Runs `qlip <args>` (args already shell-quoted where needed), with `env` prefixed (e.g.
  /// "QLIP_VOCAB= ") and standard input read from `stdin_path`.
  RunResult run(const std::string& args, const std::string& env = "",
                const std::string& stdin_path = "/dev/null") const {
    RunResult r;
    const std::string so = dir_ + "/.stdout", se = dir_ + "/.stderr";
    r.command = env + q(cli_) + " " + args;
    const std::string cmd = r.command + " >" + q(so) + " 2>" + q(se) + " <" + q(stdin_path);
    const int status = std::system(cmd.c_str());
    r.code = (status != -1 && WIFEXITED(status)) ? WEXITSTATUS(status) : -1;
    r.out = read_text(so);
    r.err = read_text(se);
    fs::remove(so);
    fs::remove(se);
    return r;
  }

  /// Entries of out_dir() (recursively), for the "no partial output" checks.
  std::vector<std::string> out_entries() const {
    std::vector<std::string> names;
    for (const auto& e : fs::recursive_directory_iterator(out_dir())) names.push_back(e.path().string());
    return names;
  }

  /// Writes a deterministic RGB test picture (smooth gradients + seeded noise) as PNG.
  std::string make_png(const std::string& name, int width, int height, std::uint32_t seed = 1) const {
    Image im = Image::zeros(width, height, 3);
    std::mt19937 rng(seed);
    for (int y = 0; y < height; ++y)
      for (int x = 0; x < width; ++x) {
        const int noise = static_cast<int>(rng() % 32);
        im.at(y, x, 0) = static_cast<std::uint8_t>((x * 255 / std::max(1, width - 1) + noise) % 256);
        im.at(y, x, 1) = static_cast<std::uint8_t>((y * 255 / std::max(1, height - 1) + 2 * noise) % 256);
        im.at(y, x, 2) = static_cast<std::uint8_t>(((x + y) * 4 + static_cast<int>(seed) * 40) % 256);
      }
    const std::string p = path(name);
    write_png(p, im);
    return p;
  }

  /// Copies a checkpoint folder, leaving out tensor `drop` from model.safetensors (when non-empty).
  std::string copy_checkpoint(const std::string& src, const std::string& name, const std::string& drop = "") const {
    const std::string dst = path(name);
    fs::create_directory(dst);
    for (const char* f : {"config.json", "preprocessor_config.json"}) {
      if (fs::exists(src + "/" + f)) fs::copy_file(src + "/" + f, dst + "/" + f);
    }
    const SafetensorsFile file = SafetensorsFile::open(src + "/model.safetensors");
    std::vector<SafetensorsEntry> entries;
    for (const auto& t : file.tensors()) {
      if (t.name == drop) continue;
      entries.push_back({t.name, t.dtype, t.shape, file.bytes(t.name).data()});
    }
    write_safetensors(dst + "/model.safetensors", entries, file.metadata());
    return dst;
  }

  std::string dir_;
  std::string cli_;
};

/// CliTest for commands that need the CLIP vocabulary (fetched by scripts/setup.sh): vocab_ is its path.
class VocabCliTest : public CliTest {
 protected:
  void SetUp() override {
    CliTest::SetUp();
    vocab_ = vocab_gz();
    ASSERT_FALSE(vocab_.empty()) << "the CLIP vocabulary bpe_simple_vocab_16e6.txt.gz is missing from QLIP_VOCAB_DIR: "
                                    "run scripts/setup.sh";
  }
  std::string vocab_;
};

/// The checks every failure test makes: non-zero exit, stderr exactly one line starting with
/// "qlip: error: " and containing each of `needles`, and nothing in out_dir().
#define QLIP_EXPECT_CLI_FAILS(test, result, ...)                                                           \
  do {                                                                                                     \
    const auto& r_ = (result);                                                                             \
    EXPECT_NE(r_.code, 0) << r_;                                                                           \
    EXPECT_EQ(r_.err.rfind("qlip: error: ", 0), 0u) << r_;                                                 \
    EXPECT_EQ(std::count(r_.err.begin(), r_.err.end(), '\n'), 1) << "stderr must be one line\n" << r_;     \
    EXPECT_TRUE(!r_.err.empty() && r_.err.back() == '\n') << r_;                                           \
    for (const std::string& n_ : std::vector<std::string>{__VA_ARGS__})                                    \
      EXPECT_NE(r_.err.find(n_), std::string::npos) << "stderr lacks \"" << n_ << "\"\n" << r_;            \
    const auto left_ = (test).out_entries();                                                               \
    EXPECT_TRUE(left_.empty()) << "output left behind: " << (left_.empty() ? "" : left_[0]) << "\n" << r_; \
  } while (0)

/// QLIP_EXPECT_CLI_FAILS with the exit status too: 1 for a missing or bad input, checkpoint or output
/// location, 2 for a wrong command line (docs/CLI.md, "Exit status and errors").
#define QLIP_EXPECT_CLI_EXIT(test, result, status, ...) \
  do {                                                  \
    const auto& rr_ = (result);                         \
    EXPECT_EQ(rr_.code, (status)) << rr_;               \
    QLIP_EXPECT_CLI_FAILS(test, rr_, __VA_ARGS__);      \
  } while (0)

/// Success: exit 0 (stderr shown on failure).
#define QLIP_EXPECT_CLI_OK(result) \
  do {                             \
    const auto& r_ = (result);     \
    EXPECT_EQ(r_.code, 0) << r_;   \
  } while (0)

/// Reads a whole integer tensor of a safetensors file as int64 (any integer dtype).
inline std::vector<std::int64_t> read_ints(const SafetensorsFile& f, const std::string& name) {
  const auto& t = f.info(name);
  const auto bytes = f.bytes(name);
  std::vector<std::int64_t> v(static_cast<std::size_t>(t.numel()));
  for (std::size_t i = 0; i < v.size(); ++i) {
    switch (t.dtype) {
      case DType::u8:
        v[i] = static_cast<std::uint8_t>(bytes[i]);
        break;
      case DType::u32: {
        std::uint32_t x;
        std::memcpy(&x, bytes.data() + 4 * i, 4);
        v[i] = x;
        break;
      }
      case DType::i64: {
        std::int64_t x;
        std::memcpy(&x, bytes.data() + 8 * i, 8);
        v[i] = x;
        break;
      }
      case DType::i32: {
        std::int32_t x;
        std::memcpy(&x, bytes.data() + 4 * i, 4);
        v[i] = x;
        break;
      }
      default:
        ADD_FAILURE() << name << ": not an integer tensor";
        return {};
    }
  }
  return v;
}

/// Writes `text` to `path` as is (binary).
inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
}

/// Splits text into lines (without the newlines).
inline std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  std::string line;
  while (std::getline(ss, line)) out.push_back(line);
  return out;
}

}  // namespace qlip::test::cli
