/// @file test_byte_bpe.cpp
/// @brief The byte-level BPE (text/byte_bpe.hpp) and the fortunes corpus (data/text_corpus.hpp):
///        pre-tokenisation, hand-checked merges, the incremental trainer and the encoder against
///        plain re-counting / rank-order oracles, determinism, lossless round trips (random bytes,
///        invalid UTF-8, NUL, long pieces, the held-out fortunes), specials, save/load and one error
///        per malformed file; on the fortunes corpus, training time and bytes per token next to CLIP's.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/strings.hpp"
#include "qlip/core/philox.hpp"
#include "qlip/data/text_corpus.hpp"
#include "qlip/text/byte_bpe.hpp"
#include "qlip/text/clip_tokenizer.hpp"

namespace qlip::text::test {
namespace {

using Merges = std::vector<ByteBpe::Merge>;
using Ids = std::vector<std::int32_t>;

const std::vector<std::string> kSpecials = {"<|bos|>", "<|eos|>", "<|pad|>"};

/// A fresh empty folder under the system temp dir, removed when the object dies.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() / ("qlip_bbpe_test_" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(path_)) out.push_back(e.path().filename().string());
    return out;
  }

 private:
  std::filesystem::path path_;
};

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

/// what() of the qlip::Error `f` throws ("" and a test failure when it throws nothing).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const qlip::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no qlip::Error thrown";
  return "";
}

/// Random strings from Philox: lengths in [0, max_len), bytes either uniform or from a small
/// alphabet (so that merges apply), by `mode`.
std::vector<std::string> random_strings(std::uint64_t seed, int count, std::uint32_t max_len, bool small_alphabet) {
  static const unsigned char kAlpha[] = {'a', 'b', 'a', 'b', 'c', ' ', ' ', '\n', '0', '1', '.', 0x00, 0xC3, 0xA9, 0xFF};
  const Philox rng(seed);
  std::vector<std::string> out;
  std::uint64_t ctr = 0;
  for (int k = 0; k < count; ++k) {
    const std::uint32_t n = rng.draw(ctr++)[0] % max_len;
    std::string s;
    for (std::uint32_t i = 0; i < n; i += 4) {
      const Philox::Block b = rng.draw(ctr++);
      for (int q = 0; q < 4 && i + q < n; ++q) {
        const std::uint32_t r = b[static_cast<std::size_t>(q)];
        s += static_cast<char>(small_alphabet ? kAlpha[r % sizeof(kAlpha)] : static_cast<unsigned char>(r & 0xFF));
      }
    }
    out.push_back(std::move(s));
  }
  return out;
}

/// Word-like text from Philox: words of 1-7 letters from a 10-letter alphabet, spaces, some
/// punctuation and newlines, digits.
std::vector<std::string> synthetic_corpus(std::uint64_t seed, int lines) {
  const Philox rng(seed);
  std::vector<std::string> out;
  std::uint64_t ctr = 0;
  for (int l = 0; l < lines; ++l) {
    std::string s;
    const int words = 3 + static_cast<int>(rng.draw(ctr++)[0] % 12);
    for (int w = 0; w < words; ++w) {
      const Philox::Block b = rng.draw(ctr++);
      if (w) s += (b[0] % 9 == 0) ? ",  " : " ";
      const int len = 1 + static_cast<int>(b[1] % 7);
      for (int i = 0; i < len; ++i) s += "etaoinshrd"[(b[2] >> (3 * i)) % 10];
      if (b[3] % 11 == 0) s += std::to_string(b[3] % 1000);
    }
    s += (l % 3 == 0) ? ".\n" : "!";
    out.push_back(std::move(s));
  }
  return out;
}

// ---- oracles: the definitions, written the slow way ----

/// Training by re-counting every pair of every piece occurrence after each merge.
Merges naive_train(const std::vector<std::string>& texts, std::size_t max_merges) {
  std::vector<Ids> words;
  for (const std::string& t : texts)
    for (std::string_view p : ByteBpe::pretokenize(t)) {
      Ids w;
      for (char c : p) w.push_back(static_cast<unsigned char>(c));
      words.push_back(std::move(w));
    }
  Merges merges;
  while (merges.size() < max_merges) {
    std::map<std::pair<std::int32_t, std::int32_t>, std::int64_t> count;  // ordered: ties → smallest
    for (const Ids& w : words)
      for (std::size_t i = 0; i + 1 < w.size(); ++i) ++count[{w[i], w[i + 1]}];
    std::pair<std::int32_t, std::int32_t> best{};
    std::int64_t best_count = 0;
    for (const auto& [p, c] : count)
      if (c > best_count) best = p, best_count = c;
    if (best_count < 2) break;
    const auto id = static_cast<std::int32_t>(256 + merges.size());
    merges.push_back(best);
    for (Ids& w : words) {
      Ids out;
      for (std::size_t i = 0; i < w.size();) {
        if (i + 1 < w.size() && w[i] == best.first && w[i + 1] == best.second) {
          out.push_back(id);
          i += 2;
        } else {
          out.push_back(w[i++]);
        }
      }
      w = std::move(out);
    }
  }
  return merges;
}

/// Encoding by applying every merge in rank order to each piece, left to right.
Ids naive_encode(const Merges& merges, std::string_view text) {
  Ids ids;
  for (std::string_view p : ByteBpe::pretokenize(text)) {
    Ids w;
    for (char c : p) w.push_back(static_cast<unsigned char>(c));
    for (std::size_t k = 0; k < merges.size(); ++k) {
      Ids out;
      for (std::size_t i = 0; i < w.size();) {
        if (i + 1 < w.size() && w[i] == merges[k].first && w[i + 1] == merges[k].second) {
          out.push_back(static_cast<std::int32_t>(256 + k));
          i += 2;
        } else {
          out.push_back(w[i++]);
        }
      }
      w = std::move(out);
    }
    ids.insert(ids.end(), w.begin(), w.end());
  }
  return ids;
}

// ---- pre-tokenisation ----

TEST(ByteBpePretokenize, PiecesFollowTheDocumentedRules) {
  const std::string text = std::string("Hello, world!  It's 42\n\n  caf\xC3\xA9\tx") + '\0' + "y";
  const std::vector<std::string> expect = {"Hello", ",", " world", "!", " ", " It", "'", "s", " 42", "\n\n ",
                                           " caf\xC3\xA9", "\t", "x", std::string(1, '\0'), "y"};
  std::vector<std::string> got;
  for (std::string_view p : ByteBpe::pretokenize(text)) got.emplace_back(p);
  ASSERT_EQ(got.size(), expect.size());
  for (std::size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], expect[i]) << "piece " << i << " " << qlip::test::show(got[i]);

  auto pieces = [](std::string_view s) {
    std::vector<std::string> v;
    for (std::string_view p : ByteBpe::pretokenize(s)) v.emplace_back(p);
    return v;
  };
  EXPECT_EQ(pieces(" !!!a  "), (std::vector<std::string>{" !!!", "a", "  "}));       // trailing run kept whole
  EXPECT_EQ(pieces(" \nword"), (std::vector<std::string>{" \n", "word"}));          // run not ending in ' '
  EXPECT_EQ(pieces("a   b"), (std::vector<std::string>{"a", "  ", " b"}));          // last space joins the word
  EXPECT_EQ(pieces(" 2024 x1"), (std::vector<std::string>{" 2024", " x", "1"}));
  // Every byte >= 0x80 is a letter: UTF-8 sequences (and non-ASCII punctuation) stay in the word.
  EXPECT_EQ(pieces("\xE6\x97\xA5\xE6\x9C\xAC x\xE2\x80\x94y"),
            (std::vector<std::string>{"\xE6\x97\xA5\xE6\x9C\xAC", " x\xE2\x80\x94y"}));
  EXPECT_TRUE(ByteBpe::pretokenize("").empty());
}

TEST(ByteBpePretokenize, PiecesConcatenateToTheInput) {
  for (bool small : {false, true})
    for (const std::string& s : random_strings(small ? 11 : 12, 300, 200, small)) {
      std::string joined;
      for (std::string_view p : ByteBpe::pretokenize(s)) {
        ASSERT_FALSE(p.empty());
        joined += p;
      }
      ASSERT_EQ(joined, s) << qlip::test::show(s);
    }
}

// ---- training ----

TEST(ByteBpeTrain, HandCheckedMergesOnAaabdaaabac) {
  // One piece "aaabdaaabac". Pairs: aa 4, ab 2, bd/da/ba/ac 1.
  //   merge 0: (a, a) → 256 "aa":   256 a b d 256 a b a c   (aa 2 times left to right: 0-1, 5-6)
  //   now (256, a) = 2 and (a, b) = 2 tie: the smaller pair (97, 98) wins
  //   merge 1: (a, b) → 257 "ab":   256 257 d 256 257 a c
  //   merge 2: (256, 257) → 258 "aaab":  258 d 258 a c; every pair now occurs once: stop.
  const ByteBpe tok = ByteBpe::train({"aaabdaaabac"}, 1000, {"<|bos|>", "<|eos|>"});
  EXPECT_EQ(tok.merges(), (Merges{{97, 97}, {97, 98}, {256, 257}}));
  EXPECT_EQ(tok.vocab_size(), 256 + 3 + 2);  // stopped early: fewer than asked
  EXPECT_EQ(tok.token_bytes(256), "aa");
  EXPECT_EQ(tok.token_bytes(257), "ab");
  EXPECT_EQ(tok.token_bytes(258), "aaab");
  EXPECT_EQ(tok.encode("aaabdaaabac"), (Ids{258, 'd', 258, 'a', 'c'}));
  EXPECT_EQ(tok.id_of_special("<|bos|>"), 259);
  EXPECT_EQ(tok.id_of_special("<|eos|>"), 260);

  // vocab_size counts bytes + merges + specials: room for one merge only.
  const ByteBpe one = ByteBpe::train({"aaabdaaabac"}, 256 + 1 + 2, {"<|bos|>", "<|eos|>"});
  EXPECT_EQ(one.merges(), (Merges{{97, 97}}));
  EXPECT_EQ(one.vocab_size(), 259);
  EXPECT_EQ(one.encode("aaabdaaabac"), (Ids{256, 'a', 'b', 'd', 256, 'a', 'b', 'a', 'c'}));
}

TEST(ByteBpeTrain, CountsAreWeightedByPieceFrequency) {
  // Pieces "ab" ×1 and " ab" ×2: (a, b) = 3, (' ', a) = 2 → merge (97, 98); then " ab" = ' ' 256
  // twice → merge (32, 256); nothing occurs twice after that.
  const ByteBpe tok = ByteBpe::train({"ab ab ab"}, 4096, {});
  EXPECT_EQ(tok.merges(), (Merges{{97, 98}, {32, 256}}));
  EXPECT_EQ(tok.encode("ab ab ab"), (Ids{256, 257, 257}));
}

TEST(ByteBpeTrain, TiesGoToTheSmallestPair) {
  // Pieces "ab", " ab", " ba", " ba": (a,b) 2, (b,a) 2, (' ',b) 2, (' ',a) 1. The tie of three goes
  // to (32, 98); then (97, 98) beats (256, 97) (both 2); then (256, 97) → " ba"; (32, 257) = 1: stop.
  const ByteBpe tok = ByteBpe::train({"ab ab ba ba"}, 4096, {});
  EXPECT_EQ(tok.merges(), (Merges{{32, 98}, {97, 98}, {256, 97}}));
  EXPECT_EQ(tok.merges(), naive_train({"ab ab ba ba"}, 100));
}

TEST(ByteBpeTrain, IncrementalCountsMatchRecountingEveryStep) {
  const std::vector<std::string> corpus = synthetic_corpus(7, 400);
  const Merges fast = ByteBpe::train(corpus, 256 + 300, {}).merges();
  const Merges slow = naive_train(corpus, 300);
  ASSERT_EQ(fast.size(), 300u);
  ASSERT_EQ(slow.size(), 300u);
  for (std::size_t k = 0; k < fast.size(); ++k)
    ASSERT_EQ(fast[k], slow[k]) << "merge " << k;
  // Overlapping runs ("aaaa", "abab") are where incremental updates go wrong.
  const std::vector<std::string> runs = random_strings(3, 200, 60, true);
  const Merges fast_runs = ByteBpe::train(runs, 256 + 200, {}).merges();
  EXPECT_GT(fast_runs.size(), 100u);
  EXPECT_EQ(fast_runs, naive_train(runs, 200));
}

TEST(ByteBpeTrain, DeterministicAndIndependentOfTextOrder) {
  std::vector<std::string> corpus = synthetic_corpus(21, 600);
  const ByteBpe a = ByteBpe::train(corpus, 700, kSpecials);
  const ByteBpe b = ByteBpe::train(corpus, 700, kSpecials);
  EXPECT_EQ(a.merges(), b.merges());
  EXPECT_TRUE(a == b);
  std::reverse(corpus.begin(), corpus.end());
  EXPECT_EQ(ByteBpe::train(corpus, 700, kSpecials).merges(), a.merges());
  // Greedy: a smaller vocabulary is a prefix of a larger one.
  const Merges small = ByteBpe::train(corpus, 400, kSpecials).merges();
  ASSERT_EQ(small.size(), 400u - 256 - 3);
  EXPECT_TRUE(std::equal(small.begin(), small.end(), a.merges().begin()));
}

TEST(ByteBpeTrain, TokensStopAtTheLengthCap) {
  // 4096 'a': merges double the run token (2, 4, ..., 1024 bytes); joining two 1024-byte tokens
  // would pass kByteBpeMaxTokenBytes, so training stops with 4 tokens of 1024 'a'.
  const std::string run(4096, 'a');
  const ByteBpe tok = ByteBpe::train({run}, 5000, {});
  ASSERT_EQ(tok.merges().size(), 10u);
  EXPECT_EQ(tok.token_bytes(265), std::string(kByteBpeMaxTokenBytes, 'a'));
  EXPECT_EQ(tok.encode(run), (Ids{265, 265, 265, 265}));
}

TEST(ByteBpeTrain, RejectsBadArguments) {
  EXPECT_NE(error_of([] { ByteBpe::train({"x"}, 258, kSpecials); }).find("vocab_size 258 is below 256 bytes + 3 specials = 259"),
            std::string::npos);
  EXPECT_NE(error_of([] { ByteBpe::train({"x"}, 300, {"<|a|>", "<|a|>"}); }).find("special 1 \"<|a|>\" duplicates special 0"),
            std::string::npos);
  EXPECT_NE(error_of([] { ByteBpe::train({"x"}, 300, {""}); }).find("special 0 is empty"), std::string::npos);
  EXPECT_NE(error_of([] { ByteBpe::train({"x"}, 300, {"\xFF"}); }).find("not valid UTF-8"), std::string::npos);
  const ByteBpe none = ByteBpe::train({}, 300, {"<|eos|>"});
  EXPECT_TRUE(none.merges().empty());
  EXPECT_EQ(none.vocab_size(), 257);
}

// ---- encode / decode ----

TEST(ByteBpeEncode, MatchesRankOrderMerging) {
  const ByteBpe tok = ByteBpe::train(synthetic_corpus(5, 500), 256 + 250, {});
  std::vector<std::string> texts = synthetic_corpus(6, 100);
  for (const std::string& s : random_strings(8, 100, 120, true)) texts.push_back(s);
  for (const std::string& t : texts) ASSERT_EQ(tok.encode(t), naive_encode(tok.merges(), t)) << qlip::test::show(t);
}

TEST(ByteBpeEncode, RoundTripsRandomBytes) {
  const ByteBpe tok = ByteBpe::train(random_strings(1, 400, 100, true), 256 + 300, kSpecials);
  ASSERT_GT(tok.merges().size(), 100u);
  for (bool small : {true, false})
    for (const std::string& s : random_strings(small ? 2 : 4, 500, 300, small)) {
      const Ids ids = tok.encode(s);
      for (std::int32_t id : ids) ASSERT_FALSE(tok.is_special(id));
      ASSERT_EQ(tok.decode(ids), s) << qlip::test::show(s);
    }
}

TEST(ByteBpeEncode, RoundTripsInvalidUtf8AndNul) {
  std::vector<std::string> corpus = synthetic_corpus(9, 200);
  corpus.push_back("caf\xC3\xA9 caf\xC3\xA9 \xFF\xFE\xFF\xFE");
  const ByteBpe tok = ByteBpe::train(corpus, 600, kSpecials);
  const std::vector<std::string> cases = {
      "\xFF\xFE",  "\xC3",         "caf\xC3",      "\xC0\xAF",  "\x80" "abc",  "\xED\xA0\x80",
      "\xF4\x90\x80\x80", std::string("a\0b", 3), std::string(5, '\0'), "\xFF\xFE\xFF\xFE caf\xC3\xA9",
      " \xE2\x82",  std::string("\0 \0", 3) + "\xC3\xA9\n\n"};
  for (const std::string& s : cases) {
    const Ids ids = tok.encode(s);
    EXPECT_EQ(tok.decode(ids), s) << qlip::test::show(s);
  }
  EXPECT_TRUE(tok.encode("").empty());
  EXPECT_EQ(tok.decode(Ids{}), "");
}

TEST(ByteBpeEncode, LongPiecesAreFastAndLossless) {
  const ByteBpe tok = ByteBpe::train({std::string(64, 'a') + " " + std::string(64, 'b') + "ab"}, 300, {});
  std::string word;
  const Philox rng(17);
  for (std::uint64_t i = 0; i < 100000; ++i) word += "ab"[rng.draw(i)[0] % 2];
  const auto t0 = std::chrono::steady_clock::now();
  const Ids ids = tok.encode(word);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(tok.decode(ids), word);
  EXPECT_EQ(ids, naive_encode(tok.merges(), word));
  EXPECT_LT(s, 5.0) << "a 100k-byte piece took " << s << " s";
}

TEST(ByteBpeEncode, ConcurrentEncodesAgree) {
  const std::vector<std::string> corpus = synthetic_corpus(31, 300);
  const ByteBpe tok = ByteBpe::train(corpus, 500, kSpecials);
  std::vector<Ids> expect;
  for (const std::string& t : corpus) expect.push_back(naive_encode(tok.merges(), t));
  std::vector<int> bad(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      const ByteBpe copy = tok;  // copies share the cache
      for (std::size_t i = 0; i < corpus.size(); ++i) bad[static_cast<std::size_t>(t)] += copy.encode(corpus[i]) != expect[i];
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad, (std::vector<int>(4, 0)));
}

TEST(ByteBpeSpecials, IdsNamesAndDecoding) {
  const ByteBpe tok = ByteBpe::train(synthetic_corpus(3, 100), 400, kSpecials);
  ASSERT_EQ(tok.vocab_size(), 400);
  EXPECT_EQ(tok.id_of_special("<|bos|>"), 397);
  EXPECT_EQ(tok.id_of_special("<|eos|>"), 398);
  EXPECT_EQ(tok.id_of_special("<|pad|>"), 399);
  EXPECT_TRUE(tok.is_special(397));
  EXPECT_FALSE(tok.is_special(396));
  EXPECT_EQ(tok.specials(), kSpecials);
  EXPECT_EQ(tok.token_bytes(398), "<|eos|>");
  // The names in text are just bytes.
  const std::string text = "<|bos|>hi<|eos|>";
  const Ids ids = tok.encode(text);
  for (std::int32_t id : ids) EXPECT_FALSE(tok.is_special(id));
  EXPECT_EQ(tok.decode(ids), text);
  EXPECT_EQ(tok.decode(Ids{397, 'h', 'i', 398}), "<|bos|>hi<|eos|>");
  const std::string unknown = error_of([&] { tok.id_of_special("<|unk|>"); });
  EXPECT_NE(unknown.find("no special token '<|unk|>' in this vocabulary (specials: <|bos|>, <|eos|>, <|pad|>)"),
            std::string::npos)
      << unknown;
  EXPECT_NE(error_of([&] { tok.decode(Ids{'a', 400}); }).find("token id 400 outside the vocabulary [0, 400)"),
            std::string::npos);
  EXPECT_NE(error_of([&] { tok.decode(Ids{-1}); }).find("token id -1 outside the vocabulary [0, 400)"), std::string::npos);
}

// ---- save / load ----

TEST(ByteBpeFile, SaveLoadRoundTrip) {
  TempDir dir;
  const std::vector<std::string> specials = {"<|bos|>", "<|\xC3\xA9\"q\\|>", "<|pad|>"};
  const ByteBpe tok = ByteBpe::train(synthetic_corpus(13, 300), 600, specials);
  const std::string path = dir.file("tok.json");
  tok.save(path);
  EXPECT_EQ(dir.names(), std::vector<std::string>{"tok.json"});  // no temp file left behind
  const ByteBpe back = ByteBpe::load(path);
  EXPECT_TRUE(back == tok);
  EXPECT_EQ(back.merges(), tok.merges());
  EXPECT_EQ(back.specials(), specials);
  EXPECT_EQ(back.vocab_size(), tok.vocab_size());
  for (const std::string& t : synthetic_corpus(14, 50)) EXPECT_EQ(back.encode(t), tok.encode(t));
  const nlohmann::json j = read_json(path);
  EXPECT_EQ(j["format"], "qlip-byte-bpe");
  EXPECT_EQ(j["version"], 1);
  EXPECT_EQ(j["merges"].size(), tok.merges().size());
  // Saving again over the file, and an empty vocabulary.
  const ByteBpe empty = ByteBpe::from_merges({}, {});
  empty.save(path);
  EXPECT_TRUE(ByteBpe::load(path) == empty);
  EXPECT_EQ(ByteBpe::load(path).vocab_size(), 256);
}

TEST(ByteBpeFile, EachMalformedFileGetsAOneLineError) {
  TempDir dir;
  const std::string ok_head = R"("format": "qlip-byte-bpe", "version": 1)";
  struct Case {
    std::string text;
    std::string expect;  // part of what()
  };
  std::string chain = "[[97, 97]";  // doubling: merge k makes a token of 2^(k+1) bytes
  for (int k = 1; k < 10; ++k) chain += ", [" + std::to_string(255 + k) + ", " + std::to_string(255 + k) + "]";
  chain += "]";
  const std::vector<Case> cases = {
      {"", "invalid JSON"},
      {"{\"format\": ", "invalid JSON"},
      {"[]", "expected a JSON object (a qlip byte-BPE file), got array"},
      {R"({"version": 1, "merges": [], "specials": []})", "missing key 'format' (not a qlip byte-BPE file?)"},
      {R"({"format": "gpt2", "version": 1, "merges": [], "specials": []})", "format is \"gpt2\", expected \"qlip-byte-bpe\""},
      {R"({"format": "qlip-byte-bpe", "merges": [], "specials": []})", "missing key 'version'"},
      {"{" + ok_head + R"(, "merges": []})", "missing key 'specials'"},
      {"{" + ok_head + R"(, "specials": []})", "missing key 'merges'"},
      {R"({"format": "qlip-byte-bpe", "version": 2, "merges": [], "specials": []})",
       "unsupported version 2 (this build reads version 1)"},
      {R"({"format": "qlip-byte-bpe", "version": "1", "merges": [], "specials": []})", "version is \"1\", expected an integer"},
      {R"({"format": "qlip-byte-bpe", "version": 1.0, "merges": [], "specials": []})", "version is 1.0, expected an integer"},
      {"{" + ok_head + R"(, "merges": {}, "specials": []})", "'merges' must be an array of [left, right] pairs, got object"},
      {"{" + ok_head + R"(, "merges": [[97]], "specials": []})", "merge 0 is [97], expected a [left, right] pair of ids"},
      {"{" + ok_head + R"(, "merges": [[97, 98], [97, 98, 99]], "specials": []})",
       "merge 1 is [97,98,99], expected a [left, right] pair of ids"},
      {"{" + ok_head + R"(, "merges": ["ab"], "specials": []})", "merge 0 is \"ab\", expected a [left, right] pair of ids"},
      {"{" + ok_head + R"(, "merges": [[97, "b"]], "specials": []})", "merge 0 [97,\"b\"]: ids must be integers, got \"b\""},
      {"{" + ok_head + R"(, "merges": [[97, 1.5]], "specials": []})", "merge 0 [97,1.5]: ids must be integers, got 1.5"},
      {"{" + ok_head + R"(, "merges": [[true, 97]], "specials": []})", "ids must be integers, got true"},
      {"{" + ok_head + R"(, "merges": [[97, 256]], "specials": []})",
       "merge 0 [97,256] refers to id 256, not yet defined (ids 0..255 exist before merge 0)"},
      {"{" + ok_head + R"(, "merges": [[97, 98], [256, 257]], "specials": []})",
       "merge 1 [256,257] refers to id 257, not yet defined (ids 0..256 exist before merge 1)"},
      {"{" + ok_head + R"(, "merges": [[-1, 97]], "specials": []})", "merge 0 [-1,97] refers to id -1, not yet defined"},
      {"{" + ok_head + R"(, "merges": [[97, 18446744073709551615]], "specials": []})",
       "refers to id 18446744073709551615, not yet defined"},
      {"{" + ok_head + R"(, "merges": [[97, 98], [32, 256], [97, 98]], "specials": []})",
       "merge 2 [97, 98] duplicates merge 0"},
      {"{" + ok_head + R"(, "merges": [], "specials": "<|eos|>"})", "'specials' must be an array of names, got string"},
      {"{" + ok_head + R"(, "merges": [], "specials": ["<|eos|>", 7]})", "special 1 is 7, expected a string"},
      {"{" + ok_head + R"(, "merges": [], "specials": [""]})", "special 0 is empty"},
      {"{" + ok_head + R"(, "merges": [], "specials": ["<|a|>", "<|b|>", "<|a|>"]})",
       "special 2 \"<|a|>\" duplicates special 0"},
      {"{" + ok_head + R"(, "merges": [], "specials": [], "merge": []})",
       "unknown key 'merge' (a qlip byte-BPE file holds format, version, specials, merges)"},
      {"{" + ok_head + R"(, "merges": [], "merges": [], "specials": []})", "duplicate key \"merges\""},
  };
  int n = 0;
  for (const Case& c : cases) {
    const std::string path = dir.file("bad" + std::to_string(n++) + ".json");
    write_text(path, c.text);
    const std::string msg = error_of([&] { ByteBpe::load(path); });
    EXPECT_NE(msg.find(path), std::string::npos) << "message does not name the file: " << msg;
    EXPECT_NE(msg.find(c.expect), std::string::npos) << "file " << c.text << "\n  message: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "not one line: " << msg;
  }
  // The doubling chain: 10 merges reach 1024 bytes (allowed); an 11th would make 2048.
  const std::string path = dir.file("chain.json");
  write_text(path, "{" + ok_head + ", \"merges\": " + chain + R"(, "specials": []})");
  EXPECT_EQ(ByteBpe::load(path).token_bytes(265).size(), 1024u);
  chain.back() = ',';
  write_text(path, "{" + ok_head + ", \"merges\": " + chain + R"( [265, 265]], "specials": []})");
  const std::string msg = error_of([&] { ByteBpe::load(path); });
  EXPECT_NE(msg.find(path + ": merge 10 [265, 265] makes a token of 2048 bytes (at most 1024 accepted"), std::string::npos)
      << msg;
  const std::string missing = error_of([&] { ByteBpe::load(dir.file("nope.json")); });
  EXPECT_NE(missing.find("cannot open " + dir.file("nope.json")), std::string::npos) << missing;
  // from_merges checks the same things.
  EXPECT_NE(error_of([] { ByteBpe::from_merges({{97, 98}, {97, 98}}, {}); }).find("ByteBpe::from_merges: merge 1 [97, 98] duplicates merge 0"),
            std::string::npos);
}

// ---- the fortunes corpus ----

TEST(TextCorpus, ParsesEntriesAndHashes) {
  EXPECT_EQ(data::parse_fortune_entries("a\n%\n\n  b  \n%\n%\nc\r\n%\r\nd\n%\n"),
            (std::vector<std::string>{"a", "b", "c", "d"}));
  EXPECT_EQ(data::parse_fortune_entries("x\n%%\n\ty\n50%\n% \nz"), (std::vector<std::string>{"x\n%%\n\ty\n50%\n% \nz"}));
  EXPECT_EQ(data::parse_fortune_entries("%"), std::vector<std::string>{});
  EXPECT_EQ(data::parse_fortune_entries(""), std::vector<std::string>{});
  EXPECT_EQ(data::fnv1a64(""), 0xcbf29ce484222325ull);  // FNV-1a test vectors
  EXPECT_EQ(data::fnv1a64("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(data::fnv1a64("foobar"), 0x85944171f73967e8ull);
  // FNV-1a mod 3: "a" 1, "b" 1, "foobar" 0, "c" 0. Order kept; copies fall on the same side.
  const data::TextSplit s = data::split_held_out({"a", "foobar", "b", "c", "a"}, 3);
  EXPECT_EQ(s.held_out, (std::vector<std::string>{"foobar", "c"}));
  EXPECT_EQ(s.train, (std::vector<std::string>{"a", "b", "a"}));
  EXPECT_NE(error_of([] { data::is_held_out("a", 0); }).find("every must be at least 1"), std::string::npos);
}

TEST(TextCorpus, MissingFolderSaysHowToGetIt) {
  const std::string msg = error_of([] { data::read_fortunes("/nonexistent/qlip/fortunes"); });
  EXPECT_NE(msg.find("/nonexistent/qlip/fortunes: not found; install the Debian package fortunes (scripts/setup.sh does)"),
            std::string::npos)
      << msg;
  TempDir dir;
  write_text(dir.file("x.dat"), "binary");
  EXPECT_NE(error_of([&] { data::read_fortunes(dir.file("")); }).find("no fortune databases"), std::string::npos);
  // What read_fortunes reads: regular files, not .dat / .u8 / links / folders, sorted by name.
  write_text(dir.file("b"), "two\n%\nthree\n");
  write_text(dir.file("a"), "one\n");
  std::filesystem::create_symlink(dir.file("b"), dir.file("b.u8"));
  std::filesystem::create_symlink(dir.file("a"), dir.file("c"));
  std::filesystem::create_directory(dir.file("off"));
  write_text(dir.file("off/rude"), "rude\n");
  EXPECT_EQ(data::read_fortunes(dir.file("")), (std::vector<std::string>{"one", "two", "three"}));
}

bool have_fortunes() { return std::filesystem::is_directory(data::kFortunesDebianDir); }

const std::vector<std::string>& fortunes() {
  static const std::vector<std::string> all = data::read_fortunes();
  return all;
}

TEST(TextCorpus, FortunesAreDeterministicAndClean) {
  if (!have_fortunes()) GTEST_SKIP() << data::kFortunesDebianDir << " is absent: install the Debian package fortunes";
  const std::vector<std::string>& all = fortunes();
  EXPECT_GT(all.size(), 10000u);
  EXPECT_EQ(data::read_fortunes(), all);
  for (const std::string& e : all) {
    ASSERT_FALSE(e.empty());
    ASSERT_FALSE(e.front() == ' ' || e.front() == '\n' || e.back() == ' ' || e.back() == '\n') << qlip::test::show(e);
    ASSERT_EQ(("\n" + e + "\n").find("\n%\n"), std::string::npos) << qlip::test::show(e);
  }
  for (const auto& f : data::fortune_files()) {
    const std::string name = f.filename().string();
    EXPECT_FALSE(name.ends_with(".dat") || name.ends_with(".u8")) << name;
  }
  const data::TextSplit s = data::split_held_out(all);
  EXPECT_EQ(s.train.size() + s.held_out.size(), all.size());
  const double frac = static_cast<double>(s.held_out.size()) / static_cast<double>(all.size());
  EXPECT_GT(frac, 0.03);
  EXPECT_LT(frac, 0.07);
  for (const std::string& e : s.held_out) EXPECT_TRUE(data::is_held_out(e));
  for (const std::string& e : s.train) EXPECT_FALSE(data::is_held_out(e));
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

TEST(ByteBpeFortunes, TrainsRoundTripsAndCompresses) {
  if (!have_fortunes()) GTEST_SKIP() << data::kFortunesDebianDir << " is absent: install the Debian package fortunes";
  const data::TextSplit split = data::split_held_out(fortunes());
  auto bytes_of = [](const std::vector<std::string>& v) {
    std::size_t n = 0;
    for (const std::string& s : v) n += s.size();
    return n;
  };
  const std::size_t held_bytes = bytes_of(split.held_out);
  std::printf("[fortunes] %zu entries, %zu bytes (train %zu entries / %zu bytes, held-out %zu / %zu)\n",
              fortunes().size(), bytes_of(fortunes()), split.train.size(), bytes_of(split.train), split.held_out.size(),
              held_bytes);

  std::map<int, ByteBpe> toks;
  for (int v : {4096, 2048, 512}) {
    const auto t0 = std::chrono::steady_clock::now();
    ByteBpe tok = ByteBpe::train(split.train, v, kSpecials);
    const double s = seconds_since(t0);
    ASSERT_EQ(tok.vocab_size(), v);
    std::printf("[fortunes] train to %d tokens (%zu merges): %.3f s\n", v, tok.merges().size(), s);
    toks.emplace(v, std::move(tok));
  }
  // Greedy training: each smaller vocabulary is a prefix of the larger one.
  for (int v : {2048, 512})
    EXPECT_TRUE(std::equal(toks.at(v).merges().begin(), toks.at(v).merges().end(), toks.at(4096).merges().begin()));

  for (const auto& [v, tok] : toks) {
    std::size_t n = 0;
    const auto t0 = std::chrono::steady_clock::now();
    for (const std::string& e : split.held_out) {
      const Ids ids = tok.encode(e);
      n += ids.size();
      ASSERT_EQ(tok.decode(ids), e) << qlip::test::show(e);
    }
    std::printf("[fortunes] vocab %4d: held-out %.3f bytes/token (%zu tokens, encode+decode %.3f s)\n", v,
                static_cast<double>(held_bytes) / static_cast<double>(n), n, seconds_since(t0));
  }
  // The held-out set as one text (entries joined as in the files) round-trips too.
  std::string joined;
  for (const std::string& e : split.held_out) joined += e + "\n%\n";
  EXPECT_EQ(toks.at(4096).decode(toks.at(4096).encode(joined)), joined);

  const std::string gz = std::string(QLIP_VOCAB_DIR) + "/bpe_simple_vocab_16e6.txt.gz";
  if (std::filesystem::exists(gz)) {
    const ClipTokenizer clip = ClipTokenizer::from_bpe_gz(gz);
    std::size_t n = 0;
    for (const std::string& e : split.held_out) n += clip.encode(e).size();
    std::printf("[fortunes] CLIP BPE (vocab %d, lower-cased, whitespace dropped, not lossless): held-out %.3f bytes/token\n",
                clip.vocab_size(), static_cast<double>(held_bytes) / static_cast<double>(n));
  } else {
    std::printf("[fortunes] CLIP BPE vocabulary %s absent (scripts/setup.sh fetches it): no comparison\n", gz.c_str());
  }
}

}  // namespace
}  // namespace qlip::text::test
