/// @file test_cli_tokenize.cpp
/// @brief `qlip tokenize` against open_clip: every string of the tokenizer fixtures
///        (tests/data/tokenizer/cases.json, open_clip's ids for 663 strings) goes through the binary,
///        in both context modes, once through standard input and once as arguments; `--decode` is
///        checked against the library's decode and by round trips; plus the argument errors.
///
/// Standard input is read line by line, so the strings holding a line break ('\n', or '\r', which a
/// CRLF file would lose) cannot go that way: they are passed as arguments only. Arguments cannot
/// hold a NUL byte, so the one string with a NUL goes through standard input only. Every fixture
/// string is therefore checked at least once, and most twice.

#include <fstream>

#include <nlohmann/json.hpp>

#include "cli_test_util.hpp"
#include "common/strings.hpp"
#include "qlip/text/clip_tokenizer.hpp"

namespace qlip::test::cli {
namespace {

struct Case {
  std::string text;
  std::vector<std::int32_t> ids;     ///< open_clip encode(): raw BPE ids
  std::vector<std::int32_t> tokens;  ///< open_clip tokenize(): 77 ids, SOT ... EOT, zero padding
};

const std::vector<Case>& fixture_cases() {
  static const std::vector<Case> cases = [] {
    const std::string path = std::string(QLIP_TEST_DATA_DIR) + "/tokenizer/cases.json";
    std::ifstream in(path);
    if (!in) throw std::runtime_error("cannot open " + path);
    const nlohmann::json j = nlohmann::json::parse(in);
    std::vector<Case> out;
    for (const auto& c : j["cases"]) {
      out.push_back({c["text"].get<std::string>(), c["ids"].get<std::vector<std::int32_t>>(),
                     c["tokens"].get<std::vector<std::int32_t>>()});
    }
    return out;
  }();
  return cases;
}

std::string ids_line(const std::vector<std::int32_t>& ids) {
  std::string s;
  for (std::size_t i = 0; i < ids.size(); ++i) s += (i ? " " : "") + std::to_string(ids[i]);
  return s;
}

bool has_line_break(const std::string& s) {
  return s.find('\n') != std::string::npos || s.find('\r') != std::string::npos;
}

using qlip::test::show;

class TokenizeTest : public VocabCliTest {
 protected:
  void SetUp() override {
    VocabCliTest::SetUp();
    ASSERT_EQ(fixture_cases().size(), 663u);
  }

  /// The cases selected by `keep`, with their indices.
  template <class Keep>
  std::vector<std::size_t> select(Keep keep) const {
    std::vector<std::size_t> idx;
    for (std::size_t i = 0; i < fixture_cases().size(); ++i)
      if (keep(fixture_cases()[i].text)) idx.push_back(i);
    return idx;
  }

  /// Compares the binary's stdout, line by line, with the expected id lines of `idx`.
  void expect_lines(const RunResult& r, const std::vector<std::size_t>& idx, bool raw) const {
    QLIP_EXPECT_CLI_OK(r);
    const std::vector<std::string> got = lines(r.out);
    ASSERT_EQ(got.size(), idx.size()) << r.command.substr(0, 300);
    int bad = 0;
    std::string report;
    for (std::size_t k = 0; k < idx.size(); ++k) {
      const Case& c = fixture_cases()[idx[k]];
      const std::string want = ids_line(raw ? c.ids : c.tokens);
      if (got[k] != want && ++bad <= 10) report += "\n  " + show(c.text) + ": got " + got[k] + "\n    want " + want;
    }
    EXPECT_EQ(bad, 0) << bad << " of " << idx.size() << " strings differ from open_clip" << report;
  }

  /// `qlip tokenize` of the cases `idx` through standard input.
  RunResult run_stdin(const std::vector<std::size_t>& idx, const std::string& options) const {
    std::string input;
    for (std::size_t i : idx) input += fixture_cases()[i].text + "\n";
    write_text(path("input.txt"), input);
    return run("tokenize --vocab " + q(vocab_) + " " + options + " -", "", path("input.txt"));
  }

  /// `qlip tokenize` of the cases `idx` as arguments (after "--", since some begin with '-').
  RunResult run_args(const std::vector<std::size_t>& idx, const std::string& options) const {
    std::string args;
    for (std::size_t i : idx) args += " " + q(fixture_cases()[i].text);
    return run("tokenize --vocab " + q(vocab_) + " " + options + " --" + args);
  }

};

TEST_F(TokenizeTest, StdinMatchesOpenClipInBothContextModes) {
  const auto idx = select([](const std::string& t) { return !has_line_break(t); });
  // 40 fixture strings hold a line break; they are covered by ArgumentsMatchOpenClip.
  EXPECT_EQ(idx.size(), 623u);
  expect_lines(run_stdin(idx, ""), idx, false);  // default --context 77
  expect_lines(run_stdin(idx, "--context 77"), idx, false);
  expect_lines(run_stdin(idx, "--context none"), idx, true);
}

TEST_F(TokenizeTest, ArgumentsMatchOpenClipInBothContextModes) {
  const auto idx = select([](const std::string& t) { return t.find('\0') == std::string::npos; });
  EXPECT_EQ(idx.size(), 662u);  // all but "nul\x00char", which StdinMatchesOpenClip covers
  expect_lines(run_args(idx, "--context 77"), idx, false);
  expect_lines(run_args(idx, "--context none"), idx, true);
}

TEST_F(TokenizeTest, VocabularyFromTheEnvironment) {
  const RunResult r = run("tokenize --context none 'a photo of a cat'", "QLIP_VOCAB=" + q(vocab_) + " ");
  QLIP_EXPECT_CLI_OK(r);
  EXPECT_EQ(r.out, "320 1125 539 320 2368\n") << r;
}

TEST_F(TokenizeTest, DecodeMatchesTheLibraryOnEveryFixture) {
  const text::ClipTokenizer tok = text::ClipTokenizer::from_bpe_gz(vocab_);
  // Each case twice: its raw ids and its 77-token row; both must decode to the same text.
  std::string input;
  for (const Case& c : fixture_cases()) input += ids_line(c.ids) + "\n" + ids_line(c.tokens) + "\n";
  write_text(path("ids.txt"), input);
  const RunResult r = run("tokenize --decode --vocab " + q(vocab_) + " -", "", path("ids.txt"));
  QLIP_EXPECT_CLI_OK(r);
  const std::vector<std::string> got = lines(r.out);
  ASSERT_EQ(got.size(), 2 * fixture_cases().size()) << r.err;
  int bad = 0;
  std::string report;
  for (std::size_t i = 0; i < fixture_cases().size(); ++i) {
    const Case& c = fixture_cases()[i];
    // The library's decode() is open_clip's (a space after every word); the CLI drops the final
    // one and prints any line break as a space, so that each input line gives one output line.
    std::string want = tok.decode(c.ids);
    for (char& ch : want)
      if (ch == '\n' || ch == '\r') ch = ' ';
    while (!want.empty() && want.back() == ' ') want.pop_back();
    const bool cut = c.ids.size() > 75;  // the 77-token row holds only the first 75 ids
    const std::string& raw = got[2 * i];
    const std::string& row = got[2 * i + 1];
    if (raw != want || (!cut && row != want)) {
      if (++bad <= 10)
        report += "\n  " + show(c.text) + ": got " + show(raw) + " / " + show(row) + " want " + show(want);
    }
  }
  EXPECT_EQ(bad, 0) << bad << " cases decode differently" << report;
}

TEST_F(TokenizeTest, DecodeRoundTrip) {
  // Plain captions: tokenize → decode gives the cleaned text with a space between pieces, and
  // tokenizing that again gives the same ids.
  const std::vector<std::pair<std::string, std::string>> texts = {
      {"A Photo of a CAT.", "a photo of a cat ."},
      {"there is a car and a laptop in the street, looking wooden",
       "there is a car and a laptop in the street , looking wooden"},
      {"don't stop: 3.14 apples!", "don 't stop : 3 . 1 4 apples !"},
      {"Über straße", "über straße"},
  };
  std::string args;
  for (const auto& [text, decoded] : texts) args += " " + q(text);
  const RunResult ids = run("tokenize --vocab " + q(vocab_) + args);
  QLIP_EXPECT_CLI_OK(ids);
  const std::vector<std::string> id_lines = lines(ids.out);
  ASSERT_EQ(id_lines.size(), texts.size()) << ids;
  write_text(path("ids.txt"), ids.out);
  const RunResult back = run("tokenize --decode --vocab " + q(vocab_) + " -", "", path("ids.txt"));
  QLIP_EXPECT_CLI_OK(back);
  const std::vector<std::string> decoded = lines(back.out);
  ASSERT_EQ(decoded.size(), texts.size()) << back;
  std::string again_args;
  for (std::size_t i = 0; i < texts.size(); ++i) {
    EXPECT_EQ(decoded[i], texts[i].second) << texts[i].first;
    again_args += " " + q(decoded[i]);
  }
  const RunResult again = run("tokenize --vocab " + q(vocab_) + again_args);
  QLIP_EXPECT_CLI_OK(again);
  EXPECT_EQ(again.out, ids.out) << "re-tokenizing the decoded texts changed the ids";
}

TEST_F(TokenizeTest, BracketedArgumentsStayOneArgument) {
  // CLI11 would read "[a, b]" as two values; a text or a Python list of ids must stay one line.
  const RunResult r = run("tokenize --context none --vocab " + q(vocab_) + " '[citation needed]' 'x'");
  QLIP_EXPECT_CLI_OK(r);
  const text::ClipTokenizer tok = text::ClipTokenizer::from_bpe_gz(vocab_);
  EXPECT_EQ(r.out, ids_line(tok.encode("[citation needed]")) + "\n" + ids_line(tok.encode("x")) + "\n") << r;
  const RunResult d = run("tokenize --decode --vocab " + q(vocab_) + " '[49406, 320, 1125, 49407]'");
  QLIP_EXPECT_CLI_OK(d);
  EXPECT_EQ(d.out, "a photo\n") << d;
}

TEST_F(TokenizeTest, LongTextIsCutWithAWarning) {
  std::string longer;
  for (int i = 0; i < 80; ++i) longer += "cat ";
  const RunResult r = run("tokenize --vocab " + q(vocab_) + " " + q(longer) + " 'a dog'");
  QLIP_EXPECT_CLI_OK(r);
  const auto out = lines(r.out);
  ASSERT_EQ(out.size(), 2u) << r;
  EXPECT_NE(out[0].find(" 2368 49407"), std::string::npos) << "EOT in the last slot\n" << r;
  EXPECT_EQ(lines(r.err).size(), 1u) << r;
  EXPECT_EQ(r.err.rfind("qlip: warning: text \"cat cat", 0), 0u) << r;
  EXPECT_NE(r.err.find("80 tokens"), std::string::npos) << r;
  EXPECT_TRUE(run("--quiet tokenize --vocab " + q(vocab_) + " " + q(longer)).err.empty());
  // The raw ids are not cut, so there is nothing to warn about.
  const RunResult raw = run("tokenize --context none --vocab " + q(vocab_) + " " + q(longer));
  QLIP_EXPECT_CLI_OK(raw);
  EXPECT_TRUE(raw.err.empty()) << raw;
  EXPECT_EQ(lines(raw.out).at(0), ids_line(std::vector<std::int32_t>(80, 2368))) << raw;
}

TEST_F(TokenizeTest, Errors) {
  const std::string v = " --vocab " + q(vocab_);
  QLIP_EXPECT_CLI_EXIT(*this, run("tokenize" + v), 2, "nothing to tokenize", "-");
  QLIP_EXPECT_CLI_EXIT(*this, run("tokenize" + v + " --context 1 a"), 2, "--context", "'1'");
  QLIP_EXPECT_CLI_EXIT(*this, run("tokenize" + v + " --context all a"), 2, "--context", "none");
  QLIP_EXPECT_CLI_EXIT(*this, run("tokenize" + v + " a -"), 2, "'-'");
  QLIP_EXPECT_CLI_EXIT(*this, run("tokenize a", "QLIP_VOCAB= "), 1, "no tokenizer vocabulary", "--vocab");
  QLIP_EXPECT_CLI_EXIT(*this, run("tokenize a --vocab " + q(path("nope.gz"))), 1, "--vocab", "nope.gz");
  // --decode: a bad line names where it is, and nothing else is printed.
  write_text(path("ids.txt"), "320 1125\n320 cat\n");
  RunResult r = run("tokenize --decode" + v + " -", "", path("ids.txt"));
  QLIP_EXPECT_CLI_EXIT(*this, r, 1, "standard input line 2", "'cat' is not a token id");
  EXPECT_TRUE(r.out.empty()) << r;
  r = run("tokenize --decode" + v + " '320 49408'");
  QLIP_EXPECT_CLI_EXIT(*this, r, 1, "argument 1", "49408", "outside the vocabulary [0, 49408)");
  EXPECT_TRUE(r.out.empty()) << r;
  QLIP_EXPECT_CLI_EXIT(*this, run("tokenize --decode" + v + " -- -5"), 1, "-5", "outside the vocabulary");
}

TEST_F(TokenizeTest, EmptyInputs) {
  // An empty text is SOT, EOT and padding (open_clip), or no ids at all; an empty line of ids is an
  // empty text.
  const RunResult r = run("tokenize --vocab " + q(vocab_) + " ''");
  QLIP_EXPECT_CLI_OK(r);
  std::string want = "49406 49407";
  for (int i = 0; i < 75; ++i) want += " 0";
  EXPECT_EQ(r.out, want + "\n") << r;
  const RunResult raw = run("tokenize --context none --vocab " + q(vocab_) + " ''");
  QLIP_EXPECT_CLI_OK(raw);
  EXPECT_EQ(raw.out, "\n") << raw;
  // An empty standard input gives no lines.
  write_text(path("empty.txt"), "");
  const RunResult none = run("tokenize --vocab " + q(vocab_) + " -", "", path("empty.txt"));
  QLIP_EXPECT_CLI_OK(none);
  EXPECT_EQ(none.out, "") << none;
}

}  // namespace
}  // namespace qlip::test::cli
