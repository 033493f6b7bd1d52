/// @file test_cli_args.cpp
/// @brief `qlip` argument handling, help texts, `info`, and the input/output guards that need no
///        forward pass: every failure exits non-zero with one "qlip: error: " line and no output.

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <regex>

#include "cli_test_util.hpp"

namespace qlip::test::cli {
namespace {

const char* const kCommands[] = {"info", "encode", "decode", "reconstruct", "classify", "embed", "tokenize"};

TEST_F(CliTest, HelpListsEveryCommand) {
  const RunResult r = run("--help");
  QLIP_EXPECT_CLI_OK(r);
  for (const char* cmd : kCommands) EXPECT_NE(r.out.find(cmd), std::string::npos) << cmd << "\n" << r;
  for (const char* opt : {"--threads", "--quiet", "--progress", "Exit status"})
    EXPECT_NE(r.out.find(opt), std::string::npos) << opt << "\n" << r;
  EXPECT_TRUE(r.err.empty()) << r;
}

TEST_F(CliTest, EveryCommandHasHelpWithExamplesAndTheGlobalOptions) {
  for (const char* cmd : kCommands) {
    const RunResult r = run(std::string(cmd) + " --help");
    QLIP_EXPECT_CLI_OK(r);
    EXPECT_NE(r.out.find("Examples:"), std::string::npos) << r;
    EXPECT_NE(r.out.find(std::string("qlip ") + cmd), std::string::npos) << r;
    // CLI11 shows only a subcommand's own options; the global ones must be listed too.
    for (const char* opt : {"--threads", "-q,--quiet", "--progress"})
      EXPECT_NE(r.out.find(opt), std::string::npos) << cmd << " --help lacks " << opt << "\n" << r;
  }
}

TEST_F(CliTest, Version) {
  const RunResult r = run("--version");
  QLIP_EXPECT_CLI_OK(r);
  EXPECT_NE(r.out.find("0."), std::string::npos) << r;
}

TEST_F(CliTest, NoCommandPrintsTheHelp) {
  for (const char* args : {"", "--threads 2", "-q"}) {
    const RunResult r = run(args);
    EXPECT_EQ(r.code, 2) << r;
    EXPECT_NE(r.out.find("Usage: qlip"), std::string::npos) << r;
    for (const char* cmd : kCommands) EXPECT_NE(r.out.find(cmd), std::string::npos) << cmd << "\n" << r;
    EXPECT_TRUE(r.err.empty()) << r;
    EXPECT_TRUE(out_entries().empty());
  }
}

TEST_F(CliTest, GlobalOptionsWorkAfterTheCommand) {
  QLIP_EXPECT_CLI_OK(run("info " + q(kTiny) + " --threads 2 --quiet --progress never"));
  QLIP_EXPECT_CLI_OK(run("--threads 2 -q info " + q(kTiny)));
}

TEST_F(CliTest, UnknownCommandIsNamed) {
  QLIP_EXPECT_CLI_EXIT(*this, run("bogus " + q(kTiny)), 2, "unknown command 'bogus'");
  QLIP_EXPECT_CLI_EXIT(*this, run("--threads 2 encdoe x"), 2, "unknown command 'encdoe'");
}

TEST_F(CliTest, UnknownOptionIsAnError) {
  QLIP_EXPECT_CLI_EXIT(*this, run("info " + q(kTiny) + " --frobnicate"), 2, "frobnicate");
}

TEST_F(CliTest, MissingRequiredOutput) {
  const std::string img = make_png("a.png", 40, 40);
  QLIP_EXPECT_CLI_EXIT(*this, run("encode " + q(kTiny) + " " + q(img)), 2, "--output");
}

TEST_F(CliTest, ThreadsMustBePositive) {
  QLIP_EXPECT_CLI_EXIT(*this, run("--threads 0 info " + q(kTiny)), 2, "--threads", "got '0'");
  QLIP_EXPECT_CLI_EXIT(*this, run("info " + q(kTiny) + " --threads x"), 2, "--threads");
}

TEST_F(CliTest, BatchMustBePositive) {
  const std::string img = make_png("a.png", 40, 40);
  QLIP_EXPECT_CLI_EXIT(
      *this, run("encode " + q(kTiny) + " " + q(img) + " -o " + q(out("c.safetensors")) + " --batch 0"), 2, "--batch");
}

TEST_F(CliTest, InfoDescribesTheTinyCheckpoint) {
  const RunResult r = run("info " + q(kTiny));
  QLIP_EXPECT_CLI_OK(r);
  EXPECT_NE(r.out.find("qlip-test-tiny"), std::string::npos) << r;
  EXPECT_NE(r.out.find("32x32 px, patch 8, grid 4x4 = 16 tokens"), std::string::npos) << r;
  EXPECT_NE(r.out.find("width 64, depth 2, heads 4"), std::string::npos) << r;
  EXPECT_NE(r.out.find("q/k/v bias yes/no/yes, sub-LN yes, SwiGLU yes, RoPE yes"), std::string::npos) << r;
  EXPECT_NE(r.out.find("28 bits/token"), std::string::npos) << r;
  EXPECT_NE(r.out.find("F32"), std::string::npos) << r;
  // The parameter count with thousands separators.
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(parameters +[0-9]{1,3}(,[0-9]{3})+ )"))) << r;
}

TEST_F(CliTest, InfoDescribesThePlainCheckpoint) {
  const RunResult r = run("info " + q(kPlain));
  QLIP_EXPECT_CLI_OK(r);
  EXPECT_NE(r.out.find("qlip-test-plain"), std::string::npos) << r;
  EXPECT_NE(r.out.find("sub-LN no, SwiGLU no"), std::string::npos) << r;
}

TEST_F(CliTest, InfoWarnsAboutExtraTensors) {
  // A copy of the checkpoint with one tensor the model does not know.
  const std::string ck = path("extra");
  fs::create_directory(ck);
  for (const char* f : {"config.json", "preprocessor_config.json"}) fs::copy_file(kTiny + "/" + f, ck + "/" + f);
  const SafetensorsFile file = SafetensorsFile::open(kTiny + "/model.safetensors");
  std::vector<SafetensorsEntry> entries;
  for (const auto& t : file.tensors()) entries.push_back({t.name, t.dtype, t.shape, file.bytes(t.name).data()});
  const float extra[3] = {1, 2, 3};
  entries.push_back({"some_module.unused_weight", DType::f32, {3}, extra});
  write_safetensors(ck + "/model.safetensors", entries);
  const RunResult r = run("info " + q(ck));
  QLIP_EXPECT_CLI_OK(r);
  EXPECT_NE(r.out.find("some_module.unused_weight"), std::string::npos) << r;
}

// Every bad checkpoint folder exits with 1, like any other bad input (docs/CLI.md): missing, not a
// folder, no config.json, no weights, corrupt weights, a missing tensor.

TEST_F(CliTest, MissingCheckpointFolder) {
  const std::string img = make_png("a.png", 40, 40);
  const std::string missing = path("no_such_checkpoint");
  QLIP_EXPECT_CLI_EXIT(*this, run("info " + q(missing)), 1, "checkpoint folder", "no_such_checkpoint",
                       "does not exist");
  QLIP_EXPECT_CLI_EXIT(*this, run("encode " + q(missing) + " " + q(img) + " -o " + q(out("c.safetensors"))), 1,
                       "does not exist");
  QLIP_EXPECT_CLI_EXIT(*this, run("reconstruct " + q(missing) + " " + q(img) + " -o " + q(out("g.png"))), 1,
                       "does not exist");
  QLIP_EXPECT_CLI_EXIT(*this, run("classify " + q(missing) + " " + q(img) + " --labels a,b"), 1, "does not exist");
}

TEST_F(CliTest, CheckpointThatIsAFile) {
  const std::string img = make_png("a.png", 40, 40);
  QLIP_EXPECT_CLI_EXIT(*this, run("info " + q(img)), 1, "is not a folder");
}

TEST_F(CliTest, CheckpointWithoutConfigReadsAsASentence) {
  const std::string ck = path("no_config");
  fs::create_directory(ck);
  fs::copy_file(kTiny + "/model.safetensors", ck + "/model.safetensors");
  const RunResult r = run("info " + q(ck));
  QLIP_EXPECT_CLI_EXIT(*this, r, 1, "has no config.json");
  // The whole line: the message alone, no source location and no C++ condition text.
  EXPECT_EQ(r.err, "qlip: error: checkpoint folder '" + ck + "' has no config.json\n") << r;
  EXPECT_EQ(r.err.find("check failed"), std::string::npos) << r;
  // With QLIP_CLI_DEBUG=1 the location comes back, still without the condition.
  const RunResult d = run("info " + q(ck), "QLIP_CLI_DEBUG=1 ");
  EXPECT_EQ(d.code, 1) << d;
  EXPECT_TRUE(std::regex_search(d.err, std::regex(R"(^qlip: error: \S+\.hpp:[0-9]+: checkpoint folder)"))) << d;
  EXPECT_EQ(d.err.find("check failed"), std::string::npos) << d;
}

TEST_F(CliTest, CheckpointWithoutWeights) {
  const std::string ck = path("empty_ck");
  fs::create_directory(ck);
  fs::copy_file(kTiny + "/config.json", ck + "/config.json");
  const RunResult r = run("info " + q(ck));
  QLIP_EXPECT_CLI_EXIT(*this, r, 1, "model.safetensors");
  EXPECT_EQ(r.err, "qlip: error: checkpoint folder '" + ck + "' has no model.safetensors\n") << r;
}

TEST_F(CliTest, MissingTensorIsNamed) {
  const std::string ck = copy_checkpoint(kTiny, "broken", "vision_decoder.conv_out.weight");
  const std::string img = make_png("a.png", 40, 40);
  QLIP_EXPECT_CLI_EXIT(*this, run("encode " + q(ck) + " " + q(img) + " -o " + q(out("c.safetensors"))), 1,
                       "vision_decoder.conv_out.weight");
  const std::string ck2 = copy_checkpoint(kTiny, "broken2", "vision_model.encoder.layers.1.mlp.w3.weight");
  QLIP_EXPECT_CLI_EXIT(*this, run("reconstruct " + q(ck2) + " " + q(img) + " -o " + q(out("g.png"))), 1,
                       "vision_model.encoder.layers.1.mlp.w3.weight");
}

TEST_F(CliTest, CorruptWeightsFile) {
  const std::string ck = path("corrupt_ck");
  fs::create_directory(ck);
  fs::copy_file(kTiny + "/config.json", ck + "/config.json");
  std::ofstream(ck + "/model.safetensors") << "this is not a safetensors file at all";
  QLIP_EXPECT_CLI_EXIT(*this, run("info " + q(ck)), 1, "model.safetensors");
}

TEST_F(CliTest, NonImageFile) {
  const std::string txt = path("notes.png");
  std::ofstream(txt) << "I am text pretending to be a PNG\n";
  QLIP_EXPECT_CLI_EXIT(*this, run("encode " + q(kTiny) + " " + q(txt) + " -o " + q(out("c.safetensors"))), 1,
                       "notes.png");
  QLIP_EXPECT_CLI_EXIT(*this, run("reconstruct " + q(kTiny) + " " + q(txt) + " -o " + q(out("g.png"))), 1, "notes.png");
}

TEST_F(CliTest, UnsupportedAndCorruptInputsGetTheDecodersMessage) {
  // TIFF is not decoded at all; WebP is, and a broken bitstream is a corrupt file. Either way the CLI
  // passes the reader's one-line message through, naming the file, and writes nothing.
  const std::string webp = path("photo.webp"), tiff = path("scan.tiff");
  write_text(webp, std::string("RIFF\x24\x00\x00\x00WEBPVP8 \x18\x00\x00\x00", 20) + std::string(24, '\0'));
  write_text(tiff, std::string("II*\x00\x08\x00\x00\x00", 8) + std::string(64, '\0'));
  const std::pair<std::string, std::string> cases[] = {{tiff, "unsupported image format"}, {webp, "corrupt WebP file"}};
  for (const auto& [f, message] : cases) {
    const RunResult r = run("encode " + q(kTiny) + " " + q(f) + " -o " + q(out("c.safetensors")));
    QLIP_EXPECT_CLI_EXIT(*this, r, 1, f);
    EXPECT_NE(r.err.find(message), std::string::npos) << r;
  }
}

TEST_F(CliTest, MissingImageFile) {
  const std::string good = make_png("a.png", 40, 40);
  QLIP_EXPECT_CLI_EXIT(
      *this, run("encode " + q(kTiny) + " " + q(good) + " " + q(path("nope.jpg")) + " -o " + q(out("c.safetensors"))),
      1, "nope.jpg");
}

TEST_F(CliTest, ImageSmallerThanOnePatch) {
  // qlip-test-tiny has 8-pixel patches: 7 pixels on the short side is too small even though
  // preprocessing would resize it.
  const std::string small = make_png("small.png", 40, 7);
  QLIP_EXPECT_CLI_FAILS(*this, run("encode " + q(kTiny) + " " + q(small) + " -o " + q(out("c.safetensors"))),
                        "small.png", "40x7", "8x8 patch");
  // Exactly one patch is accepted.
  const std::string ok = make_png("ok.png", 8, 8);
  QLIP_EXPECT_CLI_OK(run("encode " + q(kTiny) + " " + q(ok) + " -o " + q(out("c.safetensors"))));
}

TEST_F(CliTest, BadImageInALaterBatchLeavesNoOutput) {
  const std::string a = make_png("a.png", 40, 40, 1);
  const std::string b = make_png("b.png", 40, 40, 2);
  const std::string bad = path("bad.png");
  std::ofstream(bad) << "garbage";
  QLIP_EXPECT_CLI_FAILS(
      *this,
      run("encode " + q(kTiny) + " " + q(a) + " " + q(b) + " " + q(bad) + " --batch 1 -o " + q(out("c.safetensors"))),
      "bad.png");
}

TEST_F(CliTest, OutputFolderMissingOrNotAFolder) {
  const std::string img = make_png("a.png", 40, 40);
  // A regular file where a folder is expected: not writable even for root.
  const std::string file = out("file.txt");
  { std::ofstream(file) << "x"; }
  auto fails_with_only_file = [&](const RunResult& r, const std::string& needle) {
    EXPECT_NE(r.code, 0) << r;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r;
    EXPECT_EQ(r.err.rfind("qlip: error: ", 0), 0u) << r;
    EXPECT_NE(r.err.find(needle), std::string::npos) << r;
    EXPECT_EQ(out_entries(), std::vector<std::string>{file}) << r;
  };
  fails_with_only_file(run("encode " + q(kTiny) + " " + q(img) + " -o " + q(file + "/c.safetensors")), "not a folder");
  fails_with_only_file(run("reconstruct " + q(kTiny) + " " + q(img) + " -o " + q(file + "/g.png")), "not a folder");
  fails_with_only_file(run("embed " + q(kTiny) + " " + q(img) + " -o " + q(file + "/e.safetensors")), "not a folder");
  fails_with_only_file(run("encode " + q(kTiny) + " " + q(img) + " -o " + q(out("missing/c.safetensors"))),
                       "does not exist");
  fs::remove(file);
  // -o naming an existing folder: the file system's state, so exit 1 like a bad input.
  QLIP_EXPECT_CLI_EXIT(*this, run("encode " + q(kTiny) + " " + q(img) + " -o " + q(out_dir())), 1, "is a folder");
}

TEST_F(CliTest, GridMustBeAPng) {
  // The grid is written as PNG; another extension would get PNG bytes under a wrong name.
  const std::string img = make_png("a.png", 40, 40);
  for (const char* name : {"grid.jpg", "grid.jpeg", "grid.webp", "grid"}) {
    const RunResult r = run("reconstruct " + q(kTiny) + " " + q(img) + " -o " + q(out(name)));
    QLIP_EXPECT_CLI_EXIT(*this, r, 2, std::string("-o ") + out(name), ".png");
  }
  QLIP_EXPECT_CLI_OK(run("reconstruct " + q(kTiny) + " " + q(img) + " -o " + q(out("GRID.PNG"))));
}

TEST_F(CliTest, BinaryOutputIsNotWrittenToATerminal) {
  // util-linux `script` gives the command a terminal as stdout; without it there is none to test on.
  if (!fs::exists("/usr/bin/script")) GTEST_SKIP() << "/usr/bin/script (util-linux) is not installed";
  const std::string img = make_png("a.png", 40, 40);
  const std::string transcript = path("tty.txt");
  const std::string inner = q(cli_) + " encode " + q(kTiny) + " " + q(img) + " -o -; echo \"exit=$?\"";
  ASSERT_EQ(
      std::system(("/usr/bin/script -qc " + q(inner) + " /dev/null >" + q(transcript) + " 2>&1 </dev/null").c_str()),
      0);
  const std::string t = read_text(transcript);
  EXPECT_NE(t.find("qlip: error: -o -: standard output is a terminal"), std::string::npos) << t;
  EXPECT_NE(t.find("exit=1"), std::string::npos) << t;
  EXPECT_EQ(t.find("__metadata__"), std::string::npos) << "binary data on the terminal\n" << t;
}

TEST_F(CliTest, DecodeRefusesStandardOutput) {
  const RunResult r = run("decode " + q(kTiny) + " " + q(path("codes.safetensors")) + " -o -");
  QLIP_EXPECT_CLI_EXIT(*this, r, 2, "-o -", "folder", "standard output");
  EXPECT_TRUE(r.out.empty()) << r;
  EXPECT_FALSE(fs::exists("-")) << "a file named '-' was created";
}

TEST_F(CliTest, OutputFolderNotWritable) {
  if (::geteuid() == 0)
    GTEST_SKIP() << "running as root: permission bits do not stop writes (the not-a-folder case is "
                    "covered by OutputFolderMissingOrNotAFolder)";
  const std::string img = make_png("a.png", 40, 40);
  fs::permissions(out_dir(), fs::perms::owner_read | fs::perms::owner_exec);
  const RunResult r = run("encode " + q(kTiny) + " " + q(img) + " -o " + q(out("c.safetensors")));
  fs::permissions(out_dir(), fs::perms::owner_all);
  QLIP_EXPECT_CLI_FAILS(*this, r, "not writable");
}

TEST_F(CliTest, GroupSizeMustDivideTheCode) {
  const std::string img = make_png("a.png", 40, 40);
  QLIP_EXPECT_CLI_EXIT(*this,
                       run("encode " + q(kTiny) + " " + q(img) + " -o " + q(out("c.safetensors")) + " --group-size 5"),
                       2, "--group-size 5", "1, 2, 4, 7, 14, 28");
  QLIP_EXPECT_CLI_FAILS(
      *this, run("encode " + q(kTiny) + " " + q(img) + " -o " + q(out("c.safetensors")) + " --index-dtype f32"),
      "--index-dtype");
}

TEST_F(CliTest, EmptyLabelList) {
  const std::string img = make_png("a.png", 40, 40);
  const std::string vocab = vocab_gz().empty() ? std::string() : " --vocab " + q(vocab_gz());
  const RunResult r = run("classify " + q(kTiny) + " " + q(img) + " --labels ''" + vocab);
  QLIP_EXPECT_CLI_EXIT(*this, r, 2, "empty label list");
  EXPECT_TRUE(r.out.empty()) << r;
  QLIP_EXPECT_CLI_FAILS(*this, run("classify " + q(kTiny) + " " + q(img) + " --labels ' , '" + vocab),
                        "label 1 of 2 is empty");
  QLIP_EXPECT_CLI_FAILS(*this, run("classify " + q(kTiny) + " " + q(img) + " --labels 'a dog,,a cat'" + vocab),
                        "label 2 of 3 is empty");
}

TEST_F(CliTest, TemplateNeedsAPlaceholder) {
  const std::string img = make_png("a.png", 40, 40);
  QLIP_EXPECT_CLI_EXIT(*this, run("classify " + q(kTiny) + " " + q(img) + " --labels 'a,b' --template 'a photo'"), 2,
                       "--template", "{}");
  // Every template is checked, not only the first.
  QLIP_EXPECT_CLI_EXIT(
      *this, run("classify " + q(kTiny) + " " + q(img) + " --labels 'a,b' --template '{}' --template 'a drawing'"), 2,
      "--template \"a drawing\"", "{}");
}

TEST_F(CliTest, ClassifyWithoutVocabularySaysWhereToGetOne) {
  const std::string img = make_png("a.png", 40, 40);
  QLIP_EXPECT_CLI_EXIT(*this, run("classify " + q(kTiny) + " " + q(img) + " --labels 'a,b'", "QLIP_VOCAB= "), 1,
                       "no tokenizer vocabulary", "--vocab");
  QLIP_EXPECT_CLI_EXIT(*this,
                       run("classify " + q(kTiny) + " " + q(img) + " --labels 'a,b' --vocab " + q(path("nope.gz"))), 1,
                       "--vocab", "nope.gz");
}

TEST_F(CliTest, LabelFileErrorsNameTheFile) {
  const std::string img = make_png("a.png", 40, 40);
  const std::string vocab = vocab_gz().empty() ? std::string() : " --vocab " + q(vocab_gz());
  const std::string missing = path("no_labels.txt");
  QLIP_EXPECT_CLI_EXIT(*this, run("classify " + q(kTiny) + " " + q(img) + " --labels @" + q(missing) + vocab), 1,
                       "--labels @" + missing, "cannot open '" + missing + "'");
  const std::string empty = path("comments.txt");
  write_text(empty, "# only comments\n\n   \n#another\n");
  QLIP_EXPECT_CLI_EXIT(*this, run("classify " + q(kTiny) + " " + q(img) + " --labels @" + q(empty) + vocab), 1,
                       "--labels @" + empty, "holds no labels");
  QLIP_EXPECT_CLI_EXIT(*this, run("classify " + q(kTiny) + " " + q(img) + " --labels @" + q(out_dir()) + vocab), 1,
                       "is a folder");
  QLIP_EXPECT_CLI_EXIT(*this, run("classify " + q(kTiny) + " " + q(img) + " --labels @" + vocab), 2, "--labels @");
}

TEST_F(CliTest, EmbedNeedsSomething) {
  QLIP_EXPECT_CLI_EXIT(*this, run("embed " + q(kTiny) + " -o " + q(out("e.safetensors"))), 2, "nothing to embed");
  QLIP_EXPECT_CLI_FAILS(*this, run("embed " + q(kTiny) + " --text '' -o " + q(out("e.safetensors"))),
                        "empty text list");
}

}  // namespace
}  // namespace qlip::test::cli
