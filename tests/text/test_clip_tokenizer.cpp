/// @file test_clip_tokenizer.cpp
/// @brief ClipTokenizer against open_clip's SimpleTokenizer on every fixture string
///        (tests/data/tokenizer/cases.json, from tools/make_tokenizer_fixtures.py), plus the HF
///        files round trip, batching, truncation, decoding and error paths.

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>
#include <zlib.h>

#include "common/strings.hpp"
#include "qlip/text/clip_tokenizer.hpp"

namespace qlip::text::test {
namespace {


inline std::string vocab_gz_path() { return std::string(QLIP_VOCAB_DIR) + "/bpe_simple_vocab_16e6.txt.gz"; }
inline std::string cases_path() { return std::string(QLIP_TEST_DATA_DIR) + "/tokenizer/cases.json"; }

/// True when the vocabulary exists; otherwise records a failure that says how to get it. Tests
/// must not silently skip: a missing vocabulary is a broken checkout.
inline bool require_vocab() {
  if (std::filesystem::exists(vocab_gz_path())) return true;
  ADD_FAILURE() << "CLIP vocabulary " << vocab_gz_path() << " is missing: run scripts/setup.sh";
  return false;
}

/// The gz tokenizer, loaded once per test binary.
inline const ClipTokenizer& gz_tokenizer() {
  static const ClipTokenizer tok = ClipTokenizer::from_bpe_gz(vocab_gz_path());
  return tok;
}

inline const nlohmann::json& fixture() {
  static const nlohmann::json j = [] {
    std::ifstream in(cases_path());
    if (!in) throw std::runtime_error("cannot open " + cases_path() + " (tools/make_tokenizer_fixtures.py writes it)");
    return nlohmann::json::parse(in);
  }();
  return j;
}

/// A fresh empty folder under the system temp dir, removed when the object dies.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() / ("qlip_text_test_" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

inline std::string read_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void write_bytes(const std::filesystem::path& p, const std::string& data) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
}

using qlip::test::show;

inline std::string ids_string(const std::vector<std::int32_t>& ids) {
  std::string s = "[";
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(ids[i]);
  }
  return s + "]";
}


/// Runs `check` on every fixture case; reports each mismatching string (up to 25) and the count.
template <class F>
void for_each_case(const char* what, F&& check) {
  const auto& cases = fixture()["cases"];
  ASSERT_GE(cases.size(), 600u);
  int bad = 0;
  std::string report;
  for (const auto& c : cases) {
    std::string msg = check(c);
    if (!msg.empty()) {
      if (++bad <= 25) report += "\n  " + show(c["text"].get<std::string>()) + ": " + msg;
    }
  }
  EXPECT_EQ(bad, 0) << bad << " of " << cases.size() << " cases differ in " << what << ":" << report;
}

TEST(ClipTokenizer, Constants) {
  if (!require_vocab()) return;
  const auto& tok = gz_tokenizer();
  const auto& meta = fixture()["meta"];
  EXPECT_EQ(tok.vocab_size(), 49408);
  EXPECT_EQ(tok.sot_id(), 49406);
  EXPECT_EQ(tok.eot_id(), 49407);
  EXPECT_EQ(tok.vocab_size(), meta["vocab_size"].get<int>());
  EXPECT_EQ(tok.sot_id(), meta["sot_id"].get<int>());
  EXPECT_EQ(tok.eot_id(), meta["eot_id"].get<int>());
  EXPECT_EQ(tok.num_merges(), 48894u);
  EXPECT_EQ(tok.pad_id(), 0);
  EXPECT_EQ(tok.token(0), "!");
  EXPECT_EQ(tok.token(256), "!</w>");
  EXPECT_EQ(tok.token(49406), "<|startoftext|>");
}

TEST(ClipTokenizer, CleanTextMatchesOpenClip) {
  for_each_case("clean_text", [](const nlohmann::json& c) -> std::string {
    std::string got = clean_text(c["text"].get<std::string>());
    std::string want = c["clean"].get<std::string>();
    return got == want ? "" : "got " + show(got) + " want " + show(want);
  });
}

TEST(ClipTokenizer, EncodeMatchesOpenClip) {
  if (!require_vocab()) return;
  const auto& tok = gz_tokenizer();
  for_each_case("encode", [&](const nlohmann::json& c) -> std::string {
    auto got = tok.encode(c["text"].get<std::string>());
    auto want = c["ids"].get<std::vector<std::int32_t>>();
    return got == want ? "" : "got " + ids_string(got) + " want " + ids_string(want);
  });
}

TEST(ClipTokenizer, TokenizeMatchesOpenClip) {
  if (!require_vocab()) return;
  const auto& tok = gz_tokenizer();
  const int context = fixture()["meta"]["context_length"].get<int>();
  for_each_case("tokenize", [&](const nlohmann::json& c) -> std::string {
    auto got = tok.tokenize(c["text"].get<std::string>(), context);
    auto want = c["tokens"].get<std::vector<std::int32_t>>();
    return got == want ? "" : "got " + ids_string(got) + " want " + ids_string(want);
  });
}

TEST(ClipTokenizer, SaveHfIsByteIdenticalAndReloadsEqual) {
  if (!require_vocab()) return;
  const auto& tok = gz_tokenizer();
  TempDir dir;
  tok.save_hf((dir.path() / "ckpt").string());  // also creates the folder
  const auto& files = fixture()["meta"]["hf_files"];
  for (const char* name : {"vocab.json", "merges.txt"}) {
    std::string data = read_bytes(dir.path() / "ckpt" / name);
    auto crc = crc32(0L, reinterpret_cast<const Bytef*>(data.data()), static_cast<uInt>(data.size()));
    EXPECT_EQ(data.size(), files[name]["bytes"].get<std::size_t>()) << name;
    EXPECT_EQ(crc, files[name]["crc32"].get<unsigned long>()) << name << " differs from the Python-written file";
  }
  for (const auto& e : std::filesystem::directory_iterator(dir.path() / "ckpt")) {
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << "left a temp file: " << e.path();
  }

  auto hf = ClipTokenizer::from_hf((dir.path() / "ckpt" / "vocab.json").string(),
                                   (dir.path() / "ckpt" / "merges.txt").string());
  EXPECT_EQ(hf.vocab_size(), tok.vocab_size());
  EXPECT_EQ(hf.sot_id(), tok.sot_id());
  EXPECT_EQ(hf.eot_id(), tok.eot_id());
  EXPECT_EQ(hf.num_merges(), tok.num_merges());
  for (std::int32_t id = 0; id < tok.vocab_size(); ++id) ASSERT_EQ(hf.token(id), tok.token(id)) << id;
  for_each_case("from_hf encode", [&](const nlohmann::json& c) -> std::string {
    std::string text = c["text"].get<std::string>();
    auto a = hf.encode(text);
    auto b = c["ids"].get<std::vector<std::int32_t>>();
    return a == b ? "" : "from_hf " + ids_string(a) + " vs fixture " + ids_string(b);
  });

  // from_folder prefers the HF pair; saving again over existing files works (rename replaces).
  auto folder = ClipTokenizer::from_folder((dir.path() / "ckpt").string());
  EXPECT_EQ(folder.encode("a photo of a cat"), tok.encode("a photo of a cat"));
  EXPECT_NO_THROW(folder.save_hf((dir.path() / "ckpt").string()));
}

TEST(ClipTokenizer, FromFolderFallsBackToGzAndNamesWhatItLookedFor) {
  if (!require_vocab()) return;
  TempDir dir;
  std::filesystem::copy_file(vocab_gz_path(), dir.path() / "bpe_simple_vocab_16e6.txt.gz");
  write_bytes(dir.path() / "vocab.json", "{}");  // only half of the HF pair: the gz must be used
  auto tok = ClipTokenizer::from_folder(dir.str());
  EXPECT_EQ(tok.encode("hello world"), gz_tokenizer().encode("hello world"));

  TempDir empty;
  write_bytes(empty.path() / "merges.txt", "#version: 0.2\n");
  try {
    ClipTokenizer::from_folder(empty.str());
    ADD_FAILURE() << "expected qlip::Error";
  } catch (const qlip::Error& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("vocab.json"), std::string::npos) << what;
    EXPECT_NE(what.find("merges.txt present, vocab.json missing"), std::string::npos) << what;
    EXPECT_NE(what.find("bpe_simple_vocab_16e6.txt.gz"), std::string::npos) << what;
  }
}

TEST(ClipTokenizer, BatchShapeAndRows) {
  if (!require_vocab()) return;
  const auto& tok = gz_tokenizer();
  std::vector<std::string> texts = {"a photo of a cat", "", "DON'T PANIC", std::string(500, 'a') + " b c"};
  auto batch = tok.tokenize_batch(texts);
  ASSERT_EQ(batch.size(0), 4);
  ASSERT_EQ(batch.size(1), 77);
  for (std::size_t b = 0; b < texts.size(); ++b) {
    auto row = tok.tokenize(texts[b]);
    for (int t = 0; t < 77; ++t) EXPECT_EQ(batch(static_cast<std::int64_t>(b), t), row[static_cast<std::size_t>(t)]);
  }
  auto short_batch = tok.tokenize_batch(texts, 5);
  EXPECT_EQ(short_batch.size(1), 5);
  auto none = tok.tokenize_batch({});
  EXPECT_EQ(none.size(0), 0);
  EXPECT_EQ(none.size(1), 77);
  EXPECT_THROW(tok.tokenize("x", 1), qlip::Error);
  EXPECT_THROW(tok.tokenize_batch(texts, 0), qlip::Error);
}

TEST(ClipTokenizer, TruncationKeepsEotLast) {
  if (!require_vocab()) return;
  const auto& tok = gz_tokenizer();
  std::string text;
  for (int i = 0; i < 200; ++i) text += "cat ";
  auto ids = tok.encode(text);
  ASSERT_EQ(ids.size(), 200u);
  for (int ctx : {2, 3, 10, 77}) {
    auto row = tok.tokenize(text, ctx);
    ASSERT_EQ(row.size(), static_cast<std::size_t>(ctx));
    EXPECT_EQ(row.front(), tok.sot_id());
    EXPECT_EQ(row.back(), tok.eot_id());
    for (int t = 1; t + 1 < ctx; ++t) EXPECT_EQ(row[static_cast<std::size_t>(t)], ids[static_cast<std::size_t>(t - 1)]);
  }
  // Boundaries: 75 ids fit exactly, 76 are cut to 75.
  std::string fit, over;
  for (int i = 0; i < 75; ++i) fit += "cat ";
  over = fit + "cat";
  auto a = tok.tokenize(fit), b = tok.tokenize(over);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a[76], tok.eot_id());
  EXPECT_EQ(a[75], ids[0]);
  // Short text: EOT right after the ids, then pad.
  auto s = tok.tokenize("cat");
  EXPECT_EQ(s[0], tok.sot_id());
  EXPECT_EQ(s[1], ids[0]);
  EXPECT_EQ(s[2], tok.eot_id());
  EXPECT_EQ(s[3], 0);
}

TEST(ClipTokenizer, PadIdIsConfigurable) {
  if (!require_vocab()) return;
  ClipTokenizer tok = gz_tokenizer();  // a copy: its own pad id, shared model and cache
  tok.set_pad_id(tok.eot_id());
  auto row = tok.tokenize("a dog");
  EXPECT_EQ(row[3], tok.eot_id());
  EXPECT_EQ(row[76], tok.eot_id());
  EXPECT_EQ(gz_tokenizer().pad_id(), 0);
  auto batch = tok.tokenize_batch({"a dog"});
  EXPECT_EQ(batch(0, 76), tok.eot_id());
  EXPECT_THROW(tok.set_pad_id(49408), qlip::Error);
  EXPECT_THROW(tok.set_pad_id(-1), qlip::Error);
}

/// Removes spaces: decode() puts one after every word and punctuation run.
std::string squeeze(const std::string& s) {
  std::string out;
  for (char c : s)
    if (c != ' ') out += c;
  return out;
}

TEST(ClipTokenizer, DecodeInvertsEncodeOnAscii) {
  if (!require_vocab()) return;
  const auto& tok = gz_tokenizer();
  EXPECT_EQ(tok.decode(tok.encode("A photo of a CAT.")), "a photo of a cat . ");
  EXPECT_EQ(tok.decode(tok.tokenize("Hello, World!")), "hello , world ! ");  // SOT skipped, stops at EOT
  EXPECT_EQ(tok.decode({}), "");
  int checked = 0;
  for_each_case("decode(encode(x)) on ASCII", [&](const nlohmann::json& c) -> std::string {
    std::string text = c["text"].get<std::string>();
    std::string clean = c["clean"].get<std::string>();
    bool ascii = std::all_of(clean.begin(), clean.end(), [](char ch) { return static_cast<unsigned char>(ch) < 0x80; });
    if (!ascii || clean.find("</w>") != std::string::npos || clean.find("<start_of_text>") != std::string::npos ||
        clean.find("<end_of_text>") != std::string::npos)
      return "";
    ++checked;
    std::string dec = tok.decode(tok.encode(text));
    return squeeze(dec) == squeeze(clean) ? "" : "decoded " + show(dec) + " clean " + show(clean);
  });
  EXPECT_GT(checked, 300);
  // Non-ASCII survives too, and a lone continuation byte token decodes to U+FFFD.
  EXPECT_EQ(tok.decode(tok.encode("Café 東京 👍🏽")), "café 東京 👍🏽 ");
  EXPECT_THROW(tok.decode({49408}), qlip::Error);
  EXPECT_THROW(tok.decode({-1}), qlip::Error);
}

TEST(ClipTokenizer, InvalidUtf8BecomesReplacementCharacter) {
  if (!require_vocab()) return;
  const auto& tok = gz_tokenizer();
  EXPECT_EQ(tok.encode("a\xff" "b"), tok.encode("a\xEF\xBF\xBD" "b"));
  EXPECT_EQ(tok.encode("\xE2\x82"), tok.encode("\xEF\xBF\xBD"));  // truncated sequence: one U+FFFD
}

TEST(ClipTokenizer, ConcurrentEncodeIsConsistent) {
  if (!require_vocab()) return;
  ClipTokenizer tok = ClipTokenizer::from_bpe_gz(vocab_gz_path());  // cold cache
  const auto& cases = fixture()["cases"];
  std::vector<std::string> texts;
  for (const auto& c : cases) texts.push_back(c["text"].get<std::string>());
  std::vector<int> bad(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (std::size_t i = 0; i < texts.size(); ++i) {
        std::size_t k = (i * 7 + static_cast<std::size_t>(t) * 131) % texts.size();
        if (tok.encode(texts[k]) != cases[k]["ids"].get<std::vector<std::int32_t>>()) ++bad[static_cast<std::size_t>(t)];
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(bad[static_cast<std::size_t>(t)], 0) << "thread " << t;
}

/// Expects `f` to throw qlip::Error whose message names `file`.
template <class F>
void expect_error_naming(F&& f, const std::string& file, const std::string& also = "") {
  try {
    f();
    ADD_FAILURE() << "expected qlip::Error naming " << file;
  } catch (const qlip::Error& e) {
    std::string what = e.what();
    EXPECT_NE(what.find(file), std::string::npos) << what;
    if (!also.empty()) {
      EXPECT_NE(what.find(also), std::string::npos) << what;
    }
  }
}

TEST(ClipTokenizer, BadVocabularyFilesThrowNamingTheFile) {
  TempDir dir;
  std::string missing = (dir.path() / "nope.txt.gz").string();
  expect_error_naming([&] { ClipTokenizer::from_bpe_gz(missing); }, missing, "missing");

  std::string plain = (dir.path() / "plain.txt.gz").string();
  write_bytes(plain, "\"bpe_simple_vocab_16e6.txt#version: 0.2\ni n\nt h\n");
  expect_error_naming([&] { ClipTokenizer::from_bpe_gz(plain); }, plain, "not a gzip");

  std::string garbage = (dir.path() / "garbage.gz").string();
  write_bytes(garbage, std::string("\x1f\x8b\x08\x00garbage-garbage-garbage-garbage", 35));
  expect_error_naming([&] { ClipTokenizer::from_bpe_gz(garbage); }, garbage);

  if (!require_vocab()) return;
  std::string whole = read_bytes(vocab_gz_path());
  std::string truncated = (dir.path() / "truncated.gz").string();
  write_bytes(truncated, whole.substr(0, whole.size() / 2));
  expect_error_naming([&] { ClipTokenizer::from_bpe_gz(truncated); }, truncated);

  // A valid gzip holding too few merges.
  std::string small = (dir.path() / "small.gz").string();
  gzFile f = gzopen(small.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  std::string body = "header\ni n\nt h\n";
  gzwrite(f, body.data(), static_cast<unsigned>(body.size()));
  gzclose(f);
  expect_error_naming([&] { ClipTokenizer::from_bpe_gz(small); }, small, "merges");

  // HF files: bad JSON, bad merge line, unknown merge token, missing special.
  const auto& tok = gz_tokenizer();
  tok.save_hf(dir.str());
  std::string vocab = (dir.path() / "vocab.json").string(), merges = (dir.path() / "merges.txt").string();
  std::string good_vocab = read_bytes(vocab), good_merges = read_bytes(merges);
  write_bytes(vocab, good_vocab.substr(0, 1000));
  expect_error_naming([&] { ClipTokenizer::from_hf(vocab, merges); }, vocab, "JSON");
  write_bytes(vocab, good_vocab);
  write_bytes(merges, good_merges + "a b c\n");
  expect_error_naming([&] { ClipTokenizer::from_hf(vocab, merges); }, merges, "line");
  write_bytes(merges, good_merges + "zzzzzzqq xxxxyy\n");
  expect_error_naming([&] { ClipTokenizer::from_hf(vocab, merges); }, merges, "zzzzzzqq");
  write_bytes(merges, good_merges);
  std::string no_sot = good_vocab;
  no_sot.replace(no_sot.find("<|startoftext|>"), 15, "<|startoftexx|>");
  write_bytes(vocab, no_sot);
  expect_error_naming([&] { ClipTokenizer::from_hf(vocab, merges); }, vocab, "<|startoftext|>");
  expect_error_naming([&] { ClipTokenizer::from_hf((dir.path() / "none.json").string(), merges); },
                      (dir.path() / "none.json").string());
}

}  // namespace
}  // namespace qlip::text::test
