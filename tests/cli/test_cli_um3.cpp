/// @file test_cli_um3.cpp
/// @brief um3-train and um3-sample end to end on the tiny compiled UM³ (um3-tiny) with a codes file
///        written here and Debian's fortunes (installed by scripts/setup.sh): the run folder (a
///        Hugging Face Llama folder + byte_bpe.json + um3.json + training state), the log and plot;
///        a run stopped after its first step and resumed equals the uninterrupted run bit for bit;
///        text continuation from the folder (fp32 and bf16 decoding weights); one-line errors for a
///        codes file of another bit layout, for a resume with other settings and for a bad
///        --decode-weights.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <algorithm>
#include <cstdlib>
#include <sstream>

#include "cli/cli_test_util.hpp"
#include "qlip/io/safetensors.hpp"

namespace qlip::test::cli {
namespace {

class Um3CliTest : public CliTest {
 protected:
  RunResult program(const char* path, const std::string& args) const {
    RunResult r;
    const std::string so = this->path(".um3_out"), se = this->path(".um3_err");
    r.command = q(path) + " " + args;
    const int status = std::system((r.command + " >" + q(so) + " 2>" + q(se)).c_str());
    r.code = (status != -1 && WIFEXITED(status)) ? WEXITSTATUS(status) : -1;
    r.out = read_text(so);
    r.err = read_text(se);
    return r;
  }
  /// A codes file of `images` images of 64 codes of `bits` bits, labels image % 10.
  std::string codes_file(const std::string& name, int bits, std::int64_t images = 40) const {
    std::vector<std::uint32_t> codes(static_cast<std::size_t>(images * 64));
    for (std::size_t i = 0; i < codes.size(); ++i) codes[i] = static_cast<std::uint32_t>((i * 2654435761u) % (1u << bits));
    std::vector<std::int32_t> labels;
    for (std::int64_t i = 0; i < images; ++i) labels.push_back(static_cast<std::int32_t>(i % 10));
    SafetensorsWriter w;
    w.add_raw("indices", DType::u32, {images, 64}, codes.data());
    w.add_raw("labels", DType::i32, {images}, labels.data());
    const std::string p = path(name);
    w.write(p, {{"format", "qlip-codes"}, {"bits", std::to_string(bits)}});
    return p;
  }
  std::string args(const std::string& codes, const std::string& out, int steps) const {
    return "--config um3-tiny --codes " + q(codes) + " --out " + q(out) + " --steps " + std::to_string(steps) +
           " --batch 4 --warmup 1 --text-length 16 --ratio-start 1:1:1 --ratio-end 1:2:1 --save-every 1 --log-every 1"
           " --threads 1 --seed 5";
  }
  /// log.csv without the tokens/s column (the only one that depends on timing).
  static std::string curve(const std::string& csv) {
    std::stringstream in(read_text(csv)), out;
    std::string line;
    while (std::getline(in, line)) {
      std::stringstream ss(line);
      std::string c;
      for (int i = 0; std::getline(ss, c, ','); ++i)
        if (i != 13) out << c << ',';
      out << '\n';
    }
    return out.str();
  }
};

TEST_F(Um3CliTest, TrainsWritesAFolderAndResumesExactly) {
  const std::string codes = codes_file("codes.safetensors", 28);
  const std::string straight = out("straight"), stopped = out("stopped");
  const RunResult r = program(QLIP_UM3_TRAIN_PATH, args(codes, straight, 3));
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_NE(r.err.find("um3-tiny"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("step 3/3  loss "), std::string::npos) << r.err;
  for (const char* f : {"config.json", "model.safetensors", "byte_bpe.json", "um3.json", "training_state.safetensors"})
    EXPECT_TRUE(fs::exists(straight + "/checkpoint/" + f)) << f;
  EXPECT_TRUE(fs::exists(straight + "/loss.png"));
  const std::string log = read_text(straight + "/log.csv");
  EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 4) << log;  // header + 3 steps
  const SafetensorsFile weights = SafetensorsFile::open(straight + "/checkpoint/model.safetensors");
  EXPECT_TRUE(weights.contains("model.embed_tokens.weight") && weights.contains("model.layers.0.mlp.up_proj.weight"));

  ASSERT_EQ(program(QLIP_UM3_TRAIN_PATH, args(codes, stopped, 3) + " --max-minutes 1e-9").code, 0);
  const RunResult resumed = program(QLIP_UM3_TRAIN_PATH, args(codes, stopped, 3) + " --resume");
  ASSERT_EQ(resumed.code, 0) << resumed;
  EXPECT_NE(resumed.err.find("resumed at step 1"), std::string::npos) << resumed.err;
  EXPECT_EQ(curve(stopped + "/log.csv"), curve(straight + "/log.csv"));
  EXPECT_EQ(read_text(stopped + "/checkpoint/model.safetensors"), read_text(straight + "/checkpoint/model.safetensors"));

  // Other settings on resume: one line naming the flag.
  const RunResult other = program(QLIP_UM3_TRAIN_PATH, args(codes, stopped, 3) + " --lr 0.01 --resume");
  EXPECT_EQ(other.code, 1) << other;
  EXPECT_NE(other.err.find("was started with --lr 0.003, not 0.01"), std::string::npos) << other.err;
  EXPECT_EQ(std::count(other.err.begin(), other.err.end(), '\n'), 1) << other.err;

  // The folder continues text (no QLIP needed for text to text); the same seed gives the same text.
  const std::string sample_args = q(straight + "/checkpoint") + " --text Hello --max-tokens 4 --seed 2 --threads 1";
  const RunResult s1 = program(QLIP_UM3_SAMPLE_PATH, sample_args), s2 = program(QLIP_UM3_SAMPLE_PATH, sample_args);
  ASSERT_EQ(s1.code, 0) << s1;
  EXPECT_EQ(s1.out.rfind("Hello", 0), 0u) << s1.out;
  EXPECT_EQ(s1.out, s2.out);
  // bf16 decoding weights run the same continuation; a bad choice is a usage error naming both.
  const RunResult b1 = program(QLIP_UM3_SAMPLE_PATH, sample_args + " --decode-weights bf16");
  ASSERT_EQ(b1.code, 0) << b1;
  EXPECT_EQ(b1.out.rfind("Hello", 0), 0u) << b1.out;
  const RunResult bad = program(QLIP_UM3_SAMPLE_PATH, sample_args + " --decode-weights f16");
  EXPECT_EQ(bad.code, 2) << bad;
  EXPECT_NE(bad.err.find("--decode-weights: f16 not in {f32,bf16}"), std::string::npos) << bad.err;
  const RunResult none = program(QLIP_UM3_SAMPLE_PATH, q(straight + "/checkpoint"));
  EXPECT_EQ(none.code, 1) << none;
  EXPECT_NE(none.err.find("nothing to do"), std::string::npos) << none.err;
}

TEST_F(Um3CliTest, RefusesCodesOfAnotherBitLayoutInOneLine) {
  const std::string codes = codes_file("codes14.safetensors", 14);
  const RunResult r = program(QLIP_UM3_TRAIN_PATH, args(codes, out("bad"), 2));
  EXPECT_EQ(r.code, 1) << r;
  EXPECT_NE(r.err.find("codes of 14 bits, the token layout splits 28-bit codes into 4 sub-tokens of 7 bits"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  const RunResult missing = program(QLIP_UM3_TRAIN_PATH, "--config um3-tiny --out " + q(out("x")));
  EXPECT_EQ(missing.code, 1) << missing;
  EXPECT_NE(missing.err.find("give --qlip"), std::string::npos) << missing.err;
}

}  // namespace
}  // namespace qlip::test::cli
