/// @file test_tokenizer_limits.cpp
/// @brief The tokenizer's limits: the O(n log n) merge loop against a plain transcription of
///        open_clip's quadratic bpe() (identical ids at every length, on word shapes that stress the
///        merge order), the time a 100k-byte word takes, and vocab.json parsed by qlip::parse_json
///        (duplicate tokens, deep nesting, bounded messages).
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "common/open_clip_bpe.hpp"
#include "qlip/text/clip_tokenizer.hpp"

namespace qlip::text::test {
namespace {

std::string vocab_gz() {
  return std::string(QLIP_VOCAB_DIR) + "/bpe_simple_vocab_16e6.txt.gz";
}

const detail::BpeModel& model() {
  static const detail::BpeModel m = detail::load_bpe_gz(vocab_gz());
  return m;
}


bool have_vocab() {
  if (std::filesystem::exists(vocab_gz())) return true;
  ADD_FAILURE() << "CLIP vocabulary " << vocab_gz() << " is missing: run scripts/setup.sh";
  return false;
}

std::string random_word(std::mt19937& rng, std::size_t n, std::string_view alphabet) {
  std::string w;
  for (std::size_t i = 0; i < n; ++i) w += alphabet[rng() % alphabet.size()];
  return w;
}

TEST(TokenizerLimits, MergeLoopEqualsOpenClipAtEveryLength) {
  if (!have_vocab()) return;
  std::mt19937 rng(7);
  // Runs of one letter (overlapping pairs of one rank), two letters, common letters, and UTF-8.
  const std::string_view alphabets[] = {"a", "ab", "etaoinshrdlu", "th", "\xe6\x97\xa5\xe6\x9c\xac", "aaab"};
  for (std::size_t n : {0, 1, 2, 3, 4, 5, 7, 8, 40, 255, 540, 1023, 1024, 1025, 3000}) {
    for (std::string_view alphabet : alphabets) {
      const std::string w = random_word(rng, n, alphabet);
      EXPECT_EQ(model().bpe(w), qlip::test::reference_bpe(model(), w)) << "length " << n << " alphabet " << alphabet;
    }
  }
  for (const char* w : {"aaaa", "aaaaa", "abababab", "thethethe", "mississippi", "\xff\xfe\x00\x01"}) {
    EXPECT_EQ(model().bpe(w), qlip::test::reference_bpe(model(), w)) << w;
  }
}

TEST(TokenizerLimits, HundredThousandLetterWordIsFast) {
  if (!have_vocab()) return;
  const ClipTokenizer tok = ClipTokenizer::from_bpe_gz(vocab_gz());
  std::mt19937 rng(9);
  const std::string w = random_word(rng, 100000, "etaoinshrdlu");
  const auto t0 = std::chrono::steady_clock::now();
  const auto ids = tok.encode(w);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GT(ids.size(), 100000u / 20);
  // Was 5.6 s optimised (quadratic), far more under sanitizers; the heap loop takes milliseconds.
  // 3 s leaves room for sanitizers and a busy machine while still failing the quadratic loop by far.
  EXPECT_LT(s, 3.0) << "100k-letter word took " << s << " s";
  EXPECT_EQ(ids, tok.encode(w));  // not cached (too long), merged again: the same ids
  EXPECT_EQ(tok.tokenize(w).size(), 77u);
}

void write_text(const std::filesystem::path& p, const std::string& s) {
  std::ofstream out(p, std::ios::binary);
  out << s;
}

TEST(TokenizerLimits, VocabJsonDuplicatesAndDepthAreErrors) {
  if (!have_vocab()) return;
  const auto dir = std::filesystem::temp_directory_path() / ("qlip_tok_limits_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const ClipTokenizer tok = ClipTokenizer::from_bpe_gz(vocab_gz());
  tok.save_hf(dir.string());
  const auto vocab = dir / "vocab.json", merges = dir / "merges.txt";
  std::ifstream in(vocab, std::ios::binary);
  std::string good((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // The same token twice (last-wins would silently renumber): an error naming the token.
  write_text(vocab, "{\"hello</w>\":0," + good.substr(1));
  try {
    (void)ClipTokenizer::from_hf(vocab.string(), merges.string());
    ADD_FAILURE() << "duplicate token accepted";
  } catch (const qlip::Error& e) {
    EXPECT_NE(std::string(e.what()).find("duplicate key \"hello</w>\""), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("vocab.json"), std::string::npos) << e.what();
  }
  write_text(vocab, std::string(100000, '['));
  try {
    (void)ClipTokenizer::from_hf(vocab.string(), merges.string());
    ADD_FAILURE() << "deep vocab.json accepted";
  } catch (const qlip::Error& e) {
    EXPECT_NE(std::string(e.what()).find("nesting deeper than 64"), std::string::npos) << e.what();
  }
  // A merge naming a megabyte-long token: the message is bounded.
  write_text(vocab, good);
  write_text(merges, "#version: 0.2\n" + std::string(1 << 20, 'q') + " x\n");
  try {
    (void)ClipTokenizer::from_hf(vocab.string(), merges.string());
    ADD_FAILURE() << "unknown merge accepted";
  } catch (const qlip::Error& e) {
    EXPECT_LT(std::string(e.what()).size(), 1000u);
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace qlip::text::test
