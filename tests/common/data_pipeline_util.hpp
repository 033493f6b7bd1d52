/// @file data_pipeline_util.hpp
/// @brief Helpers of the data-pipeline tests: scratch folders, raw file writing, the tokenizer,
///        a synthetic DataSource (cheap samples whose pixels and caption encode the index, some of
///        which can be made unreadable) and batch comparison.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <unistd.h>

#include "qlip/data/loader.hpp"
#include "qlip/data/source.hpp"
#include "qlip/text/clip_tokenizer.hpp"

namespace qlip::data::test {

/// A fresh folder under the system temp dir, removed with its contents on destruction.
class ScratchDir {
 public:
  ScratchDir() {
    static std::atomic<int> counter{0};
    path_ = std::filesystem::temp_directory_path() /
            ("qlip_data_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

inline void write_bytes(const std::string& path, const std::vector<std::uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(f.good()) << "cannot write " << path;
}

inline void write_text(const std::string& path, const std::string& text) {
  write_bytes(path, std::vector<std::uint8_t>(text.begin(), text.end()));
}

inline std::string vocab_gz_path() { return std::string(QLIP_VOCAB_DIR) + "/bpe_simple_vocab_16e6.txt.gz"; }

/// The CLIP tokenizer, loaded once per test binary. A missing vocabulary is a broken checkout
/// (scripts/setup.sh fetches it), so it fails rather than skips.
inline const text::ClipTokenizer& tokenizer() {
  static const text::ClipTokenizer tok = [] {
    if (!std::filesystem::exists(vocab_gz_path())) {
      ADD_FAILURE() << "CLIP vocabulary " << vocab_gz_path() << " is missing: run scripts/setup.sh";
    }
    return text::ClipTokenizer::from_bpe_gz(vocab_gz_path());
  }();
  return tok;
}

/// `n` samples at resolution `s`: pixel (c, y, x) of sample i is i + 0.001·(c·s·s + y·s + x) + epoch·1e3,
/// the caption "item <i> of epoch <e>", label i % 7. Indices in `broken` fail to load; `throwing`
/// throws qlip::Error (a programming error, which the loader must not swallow).
class SyntheticSource final : public DataSource {
 public:
  SyntheticSource(std::int64_t n, int s, std::set<std::int64_t> broken = {}, std::set<std::int64_t> throwing = {})
      : n_(n), s_(s), broken_(std::move(broken)), throwing_(std::move(throwing)) {}
  std::int64_t size() const override { return n_; }
  int resolution() const override { return s_; }
  bool has_labels() const override { return true; }
  std::string name() const override { return "synthetic"; }
  SampleLoad load(std::int64_t i, std::uint64_t epoch, HostView<float, 3> px) const override {
    detail::check_sample_args(*this, i, px);
    QLIP_CHECK(!throwing_.count(i), "synthetic: sample ", i, " throws");
    if (broken_.count(i)) return SampleLoad::failure("item" + std::to_string(i) + ".png: broken on purpose");
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < s_; ++y)
        for (int x = 0; x < s_; ++x)
          px(c, y, x) = static_cast<float>(static_cast<double>(i) + 0.001 * ((c * s_ + y) * s_ + x) + 1e3 * static_cast<double>(epoch));
    SampleLoad r;
    r.caption = "item " + std::to_string(i) + " of epoch " + std::to_string(epoch);
    r.label = static_cast<std::int32_t>(i % 7);
    return r;
  }

 private:
  std::int64_t n_;
  int s_;
  std::set<std::int64_t> broken_, throwing_;
};

/// Every field of two batches equal (pixels bit for bit).
inline void expect_same_batch(const Batch& a, const Batch& b, const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_EQ(a.position, b.position);
  EXPECT_EQ(a.samples, b.samples);
  EXPECT_EQ(a.captions, b.captions);
  EXPECT_EQ(a.warnings, b.warnings);
  EXPECT_EQ(a.skipped, b.skipped);
  ASSERT_EQ(a.pixels.shape(), b.pixels.shape());
  ASSERT_EQ(a.tokens.shape(), b.tokens.shape());
  ASSERT_EQ(a.labels.shape(), b.labels.shape());
  std::int64_t diff = 0;
  for (std::int64_t i = 0; i < a.pixels.numel(); ++i) diff += a.pixels.data()[i] != b.pixels.data()[i];
  EXPECT_EQ(diff, 0) << "pixels differ in " << diff << " elements";
  for (std::int64_t i = 0; i < a.tokens.numel(); ++i) ASSERT_EQ(a.tokens.data()[i], b.tokens.data()[i]) << "token " << i;
  for (std::int64_t i = 0; i < a.labels.numel(); ++i) ASSERT_EQ(a.labels.data()[i], b.labels.data()[i]) << "label " << i;
}

}  // namespace qlip::data::test
