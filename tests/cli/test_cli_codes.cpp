/// @file test_cli_codes.cpp
/// @brief `qlip encode`, `decode` and `reconstruct` end to end on the small test checkpoints: the
///        codes file layout (bit order, indices, group indices, metadata), batching invariance,
///        decoding from each code form, corrupt codes files, all-or-nothing PNG output, the
///        consistency of reconstruct with encode → decode, and `-o -` (the file on standard output).

#include <algorithm>
#include <cmath>
#include <regex>

#include "cli_test_util.hpp"

namespace qlip::test::cli {
namespace {

constexpr int kBits = 28;
constexpr int kTinyTokens = 16;  // 32 px / patch 8 → 4x4

class CodesTest : public CliTest {
 protected:
  /// Encodes two synthetic images with the tiny checkpoint into `name` (extra args appended).
  std::string encode_two(const std::string& name, const std::string& extra = "") {
    a_ = make_png("cat.png", 48, 40, 1);
    b_ = make_png("dog.png", 33, 60, 2);
    const std::string codes = path(name);
    const RunResult r = run("encode " + q(kTiny) + " " + q(a_) + " " + q(b_) + " -o " + q(codes) + extra);
    QLIP_EXPECT_CLI_OK(r);
    return codes;
  }
  std::string a_, b_;
};

TEST_F(CodesTest, EncodeWritesBitsIndicesAndGroupIndices) {
  const std::string codes = encode_two("codes.safetensors", " --group-size 4");
  const SafetensorsFile f = SafetensorsFile::open(codes);
  ASSERT_TRUE(f.contains("bits") && f.contains("indices") && f.contains("group_indices"));
  EXPECT_EQ(f.info("bits").dtype, DType::u8);
  EXPECT_EQ(f.info("bits").shape, (std::vector<std::int64_t>{2, kTinyTokens, kBits}));
  EXPECT_EQ(f.info("indices").dtype, DType::u32);
  EXPECT_EQ(f.info("indices").shape, (std::vector<std::int64_t>{2, kTinyTokens}));
  EXPECT_EQ(f.info("group_indices").shape, (std::vector<std::int64_t>{2, kTinyTokens, kBits / 4}));
  EXPECT_EQ(f.metadata().at("config"), "qlip-test-tiny");
  EXPECT_EQ(f.metadata().at("images"), R"(["cat.png","dog.png"])");
  EXPECT_EQ(f.metadata().at("group_size"), "4");

  // MODEL.md §3.4: dimension 0 is the most significant bit; group 0 is the most significant chunk.
  const auto bits = read_ints(f, "bits");
  const auto idx = read_ints(f, "indices");
  const auto grp = read_ints(f, "group_indices");
  std::int64_t ones = 0;
  for (std::size_t t = 0; t < idx.size(); ++t) {
    std::int64_t index = 0;
    for (int i = 0; i < kBits; ++i) {
      const std::int64_t bit = bits[t * kBits + static_cast<std::size_t>(i)];
      ASSERT_TRUE(bit == 0 || bit == 1);
      ones += bit;
      index = index * 2 + bit;
    }
    EXPECT_EQ(idx[t], index) << "token " << t;
    for (int j = 0; j < kBits / 4; ++j)
      EXPECT_EQ(grp[t * 7 + static_cast<std::size_t>(j)], (index >> (4 * (6 - j))) & 15);
  }
  // Random weights still give a mix of bits (a constant code would hide bit-order bugs).
  EXPECT_GT(ones, 0);
  EXPECT_LT(ones, static_cast<std::int64_t>(bits.size()));
}

TEST_F(CodesTest, QuietEncodePrintsNothing) {
  const std::string img = make_png("a.png", 40, 40);
  const RunResult r = run("--quiet encode " + q(kTiny) + " " + q(img) + " -o " + q(out("c.safetensors")));
  QLIP_EXPECT_CLI_OK(r);
  EXPECT_TRUE(r.out.empty() && r.err.empty()) << r;
  EXPECT_TRUE(fs::exists(out("c.safetensors")));
}

TEST_F(CodesTest, IndexDtypeI64) {
  const std::string c32 = encode_two("c32.safetensors", " --group-size 14");
  const std::string c64 = path("c64.safetensors");
  QLIP_EXPECT_CLI_OK(
      run("encode " + q(kTiny) + " " + q(a_) + " " + q(b_) + " -o " + q(c64) + " --group-size 14 --index-dtype i64"));
  const SafetensorsFile f32 = SafetensorsFile::open(c32), f64 = SafetensorsFile::open(c64);
  EXPECT_EQ(f64.info("indices").dtype, DType::i64);
  EXPECT_EQ(f64.info("group_indices").dtype, DType::i64);
  EXPECT_EQ(read_ints(f32, "indices"), read_ints(f64, "indices"));
  EXPECT_EQ(read_ints(f32, "group_indices"), read_ints(f64, "group_indices"));
}

TEST_F(CodesTest, BatchSizeAndThreadsDoNotChangeTheCodes) {
  const std::string one = encode_two("b1.safetensors", " --batch 1 --threads 1");
  const std::string two = path("b2.safetensors");
  QLIP_EXPECT_CLI_OK(
      run("--threads 2 encode " + q(kTiny) + " " + q(a_) + " " + q(b_) + " -o " + q(two) + " --batch 2"));
  // Each image alone must give the same codes as inside the batch.
  const std::string solo = path("solo.safetensors");
  QLIP_EXPECT_CLI_OK(run("encode " + q(kTiny) + " " + q(b_) + " -o " + q(solo)));
  const SafetensorsFile f1 = SafetensorsFile::open(one), f2 = SafetensorsFile::open(two),
                        fs_ = SafetensorsFile::open(solo);
  EXPECT_EQ(read_ints(f1, "bits"), read_ints(f2, "bits"));
  const auto all = read_ints(f2, "indices");
  EXPECT_EQ(std::vector<std::int64_t>(all.begin() + kTinyTokens, all.end()), read_ints(fs_, "indices"));
}

TEST_F(CodesTest, ProgressBarWhenForced) {
  const std::string img = make_png("a.png", 40, 40);
  const RunResult r = run("--progress always encode " + q(kTiny) + " " + q(img) + " " + q(img) + " --batch 1 -o " +
                          q(out("c.safetensors")));
  QLIP_EXPECT_CLI_OK(r);
  EXPECT_NE(r.err.find("encode ["), std::string::npos) << r;
  EXPECT_NE(r.err.find("2/2 images"), std::string::npos) << r;
}

TEST_F(CodesTest, ProgressBarIsErasedOnFailure) {
  const std::string img = make_png("a.png", 40, 40);
  std::ofstream(path("bad.png")) << "garbage";
  const RunResult r = run("--progress always encode " + q(kTiny) + " " + q(img) + " " + q(path("bad.png")) +
                          " --batch 1 -o " + q(out("c.safetensors")));
  EXPECT_NE(r.code, 0) << r;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r;
  const std::size_t erase = r.err.rfind("\r\033[K");
  ASSERT_NE(erase, std::string::npos) << r;
  EXPECT_EQ(r.err.compare(erase + 4, 13, "qlip: error: "), 0) << "the error line must follow the erased bar\n" << r;
  EXPECT_TRUE(out_entries().empty()) << r;
}

TEST_F(CodesTest, DecodeWritesOnePngPerImage) {
  const std::string codes = encode_two("codes.safetensors");
  const RunResult r = run("decode " + q(kTiny) + " " + q(codes) + " -o " + q(out("decoded")));
  QLIP_EXPECT_CLI_OK(r);
  for (const char* name : {"cat.png", "dog.png"}) {
    const std::string p = out(std::string("decoded/") + name);
    ASSERT_TRUE(fs::exists(p)) << r;
    const Image im = read_image(p);
    EXPECT_EQ(im.width, 32);
    EXPECT_EQ(im.height, 32);
  }
  EXPECT_EQ(out_entries().size(), 3u);  // the folder and two PNGs
}

TEST_F(CodesTest, DecodeFromBitsAndGroupIndicesMatchesIndices) {
  const std::string codes = encode_two("codes.safetensors", " --group-size 7");
  const SafetensorsFile f = SafetensorsFile::open(codes);
  // Files holding only one form each.
  auto only = [&](const std::string& tensor, const std::string& name) {
    const auto& t = f.info(tensor);
    write_safetensors(path(name), {{tensor, t.dtype, t.shape, f.bytes(tensor).data()}},
                      {{"images", R"(["cat.png","dog.png"])"}});
    return path(name);
  };
  QLIP_EXPECT_CLI_OK(run("decode " + q(kTiny) + " " + q(codes) + " -o " + q(out("from_indices"))));
  QLIP_EXPECT_CLI_OK(
      run("decode " + q(kTiny) + " " + q(only("bits", "bits.safetensors")) + " -o " + q(out("from_bits"))));
  const RunResult r =
      run("decode " + q(kTiny) + " " + q(only("group_indices", "g.safetensors")) + " -o " + q(out("from_groups")));
  QLIP_EXPECT_CLI_OK(r);
  EXPECT_NE(r.out.find("group_indices"), std::string::npos) << r;
  for (const char* name : {"cat.png", "dog.png"}) {
    const Image ref = read_image(out(std::string("from_indices/") + name));
    EXPECT_EQ(read_image(out(std::string("from_bits/") + name)).pixels, ref.pixels) << name;
    EXPECT_EQ(read_image(out(std::string("from_groups/") + name)).pixels, ref.pixels) << name;
  }
}

TEST_F(CodesTest, DecodeWithoutNamesUsesNumberedFiles) {
  const std::string codes = encode_two("codes.safetensors");
  const SafetensorsFile f = SafetensorsFile::open(codes);
  const auto& t = f.info("indices");
  write_safetensors(path("bare.safetensors"), {{"indices", t.dtype, t.shape, f.bytes("indices").data()}});
  QLIP_EXPECT_CLI_OK(run("decode " + q(kTiny) + " " + q(path("bare.safetensors")) + " -o " + q(out("d"))));
  EXPECT_TRUE(fs::exists(out("d/image_000.png")));
  EXPECT_TRUE(fs::exists(out("d/image_001.png")));
}

TEST_F(CodesTest, CorruptCodesFile) {
  std::ofstream(path("junk.safetensors")) << "\x10\x00\x00\x00\x00\x00\x00\x00{not json at all";
  QLIP_EXPECT_CLI_FAILS(*this, run("decode " + q(kTiny) + " " + q(path("junk.safetensors")) + " -o " + q(out("d"))),
                        "junk.safetensors");
  // Truncated copy of a real codes file.
  const std::string codes = encode_two("codes.safetensors");
  std::string bytes = read_text(codes);
  std::ofstream(path("cut.safetensors"), std::ios::binary) << bytes.substr(0, bytes.size() - 10);
  QLIP_EXPECT_CLI_FAILS(*this, run("decode " + q(kTiny) + " " + q(path("cut.safetensors")) + " -o " + q(out("d"))),
                        "cut.safetensors");
  QLIP_EXPECT_CLI_FAILS(*this, run("decode " + q(kTiny) + " " + q(path("absent.safetensors")) + " -o " + q(out("d"))),
                        "absent.safetensors", "does not exist");
}

TEST_F(CodesTest, CodesFileWithWrongContents) {
  // No code tensor at all.
  const float x[2] = {1, 2};
  write_safetensors(path("other.safetensors"), {{"weight", DType::f32, {2}, x}});
  QLIP_EXPECT_CLI_FAILS(*this, run("decode " + q(kTiny) + " " + q(path("other.safetensors")) + " -o " + q(out("d"))),
                        "no 'indices', 'bits' or 'group_indices'");
  // Wrong number of tokens per image.
  const std::uint32_t five[5] = {0, 1, 2, 3, 4};
  write_safetensors(path("five.safetensors"), {{"indices", DType::u32, {1, 5}, five}});
  QLIP_EXPECT_CLI_FAILS(*this, run("decode " + q(kTiny) + " " + q(path("five.safetensors")) + " -o " + q(out("d"))),
                        "5 tokens per image", "16");
  // An index outside [0, 2^28).
  std::vector<std::uint32_t> big(kTinyTokens, 7);
  big[3] = 1u << 28;
  write_safetensors(path("big.safetensors"), {{"indices", DType::u32, {1, kTinyTokens}, big.data()}});
  QLIP_EXPECT_CLI_FAILS(*this, run("decode " + q(kTiny) + " " + q(path("big.safetensors")) + " -o " + q(out("d"))),
                        "268435456", "2^28");
  // Bits that are not 0/1, and float indices.
  std::vector<std::uint8_t> bits(kTinyTokens * kBits, 1);
  bits[5] = 2;
  write_safetensors(path("bits.safetensors"), {{"bits", DType::u8, {1, kTinyTokens, kBits}, bits.data()}});
  QLIP_EXPECT_CLI_FAILS(*this, run("decode " + q(kTiny) + " " + q(path("bits.safetensors")) + " -o " + q(out("d"))),
                        "expected 0 or 1");
  std::vector<float> fidx(kTinyTokens, 1.0f);
  write_safetensors(path("float.safetensors"), {{"indices", DType::f32, {1, kTinyTokens}, fidx.data()}});
  QLIP_EXPECT_CLI_FAILS(*this, run("decode " + q(kTiny) + " " + q(path("float.safetensors")) + " -o " + q(out("d"))),
                        "integer dtype");
}

TEST_F(CodesTest, CodesOfAnotherModelAreRejected) {
  const std::string img = make_png("a.png", 40, 40);
  const std::string codes = path("plain.safetensors");
  QLIP_EXPECT_CLI_OK(run("encode " + q(kPlain) + " " + q(img) + " -o " + q(codes)));
  QLIP_EXPECT_CLI_FAILS(*this, run("decode " + q(kTiny) + " " + q(codes) + " -o " + q(out("d"))), "tokens per image",
                        "qlip-test-plain");
}

TEST_F(CodesTest, DecodeIsAllOrNothing) {
  const std::string codes = encode_two("codes.safetensors");
  // A folder where the second PNG should go: its write fails after the first PNG was written.
  fs::create_directories(out("d/dog.png"));
  const RunResult r = run("decode " + q(kTiny) + " " + q(codes) + " -o " + q(out("d")));
  EXPECT_NE(r.code, 0) << r;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r;
  EXPECT_FALSE(fs::exists(out("d/cat.png"))) << "partial output left behind\n" << r;
  EXPECT_TRUE(fs::is_directory(out("d/dog.png")));
}

TEST_F(CodesTest, DecodeIntoAFileFails) {
  const std::string codes = encode_two("codes.safetensors");
  { std::ofstream(out("f")) << "x"; }
  const RunResult r = run("decode " + q(kTiny) + " " + q(codes) + " -o " + q(out("f/sub")));
  EXPECT_NE(r.code, 0) << r;
  EXPECT_NE(r.err.find("not a folder"), std::string::npos) << r;
  EXPECT_EQ(out_entries(), std::vector<std::string>{out("f")});
}

TEST_F(CodesTest, ReconstructPrintsMetricsAndWritesTheGrid) {
  const std::string a = make_png("cat.png", 48, 40, 1);
  const std::string b = make_png("dog.png", 33, 60, 2);
  const RunResult r = run("reconstruct " + q(kTiny) + " " + q(a) + " " + q(b) + " -o " + q(out("grid.png")));
  QLIP_EXPECT_CLI_OK(r);
  // One row per image plus the mean: "<name>  <psnr>  <ssim>".
  const std::regex row(R"((cat\.png|dog\.png|mean) +(-?[0-9]+\.[0-9]{3}|inf) +(-?[0-9]\.[0-9]{4}))");
  int rows = 0;
  for (const auto& line : lines(r.out)) rows += std::regex_search(line, row) ? 1 : 0;
  EXPECT_EQ(rows, 3) << r;
  EXPECT_NE(r.out.find("PSNR"), std::string::npos) << r;
  EXPECT_NE(r.out.find("SSIM"), std::string::npos) << r;
  const Image grid = read_image(out("grid.png"));
  EXPECT_EQ(grid.width, 2 * (32 + 2) + 2);
  EXPECT_EQ(grid.height, 2 * (32 + 2) + 2);

  // The bottom-left cell is what `decode` makes of `encode`'s codes for the first image.
  const std::string codes = path("codes.safetensors");
  QLIP_EXPECT_CLI_OK(run("encode " + q(kTiny) + " " + q(a) + " " + q(b) + " -o " + q(codes)));
  QLIP_EXPECT_CLI_OK(run("decode " + q(kTiny) + " " + q(codes) + " -o " + q(path("dec"))));
  const Image dec = read_image(path("dec/cat.png"));
  bool same = true;
  for (int y = 0; y < 32 && same; ++y)
    for (int x = 0; x < 32 && same; ++x)
      for (int c = 0; c < 3; ++c) same &= grid.at(2 + 32 + 2 + y, 2 + x, c) == dec.at(y, x, c);
  EXPECT_TRUE(same) << "reconstruct and encode→decode disagree";
}

TEST_F(CodesTest, ReconstructGridColumns) {
  // Built with append(): GCC 12 warns falsely (-Wrestrict, PR 105651) on `"literal" + std::string` here.
  std::string args = "--quiet reconstruct ";
  args.append(q(kTiny));
  for (int i = 0; i < 3; ++i) {
    std::string name = "p";
    name.append(std::to_string(i)).append(".png");
    args.append(" ").append(q(make_png(name, 40, 40, static_cast<std::uint32_t>(i))));
  }
  args.append(" -o ").append(q(out("g.png"))).append(" --columns 2 --padding 0");
  QLIP_EXPECT_CLI_OK(run(args));
  const Image grid = read_image(out("g.png"));
  EXPECT_EQ(grid.width, 2 * 32);
  EXPECT_EQ(grid.height, 4 * 32);  // two row pairs
}

TEST_F(CodesTest, ReconstructOfAPlainCheckpoint) {
  const std::string a = make_png("cat.png", 50, 50, 3);
  const RunResult r = run("reconstruct " + q(kPlain) + " " + q(a) + " -o " + q(out("grid.png")));
  QLIP_EXPECT_CLI_OK(r);
  const Image grid = read_image(out("grid.png"));
  EXPECT_EQ(grid.width, 24 + 4);
  EXPECT_EQ(grid.height, 2 * (24 + 2) + 2);
}

TEST_F(CodesTest, EncodeToStandardOutput) {
  const std::string codes = encode_two("codes.safetensors");
  const RunResult r = run("encode " + q(kTiny) + " " + q(a_) + " " + q(b_) + " -o -");
  QLIP_EXPECT_CLI_OK(r);
  // stdout is the file, byte for byte; the "wrote" line moved to stderr.
  EXPECT_EQ(r.out, read_text(codes)) << "stdout differs from the file -o writes";
  EXPECT_EQ(r.err.rfind("wrote standard output: 2 images", 0), 0u) << r;
  EXPECT_TRUE(out_entries().empty());
  EXPECT_FALSE(fs::exists("-")) << "a file named '-' was created";
  const RunResult quiet = run("-q encode " + q(kTiny) + " " + q(a_) + " " + q(b_) + " -o -");
  EXPECT_EQ(quiet.out, r.out);
  EXPECT_TRUE(quiet.err.empty()) << quiet;
}

TEST_F(CodesTest, EncodeToStandardOutputFailsWithNothingOnIt) {
  const std::string a = make_png("a.png", 40, 40);
  const std::string bad = path("bad.png");
  write_text(bad, "garbage");
  const RunResult r = run("encode " + q(kTiny) + " " + q(a) + " " + q(bad) + " --batch 1 -o -");
  QLIP_EXPECT_CLI_EXIT(*this, r, 1, "bad.png");
  EXPECT_TRUE(r.out.empty()) << "partial output on stdout";
}

TEST_F(CodesTest, ReconstructGridToStandardOutput) {
  const std::string a = make_png("cat.png", 48, 40, 1);
  const std::string file = out("grid.png");
  const RunResult to_file = run("reconstruct " + q(kTiny) + " " + q(a) + " -o " + q(file));
  QLIP_EXPECT_CLI_OK(to_file);
  const RunResult r = run("reconstruct " + q(kTiny) + " " + q(a) + " -o -");
  QLIP_EXPECT_CLI_OK(r);
  EXPECT_EQ(r.out, read_text(file)) << "stdout is not the grid PNG";
  // The metrics table goes to stderr instead, unchanged apart from the name of the output.
  std::string table = to_file.out;
  table.replace(table.find("wrote " + file), 6 + file.size(), "wrote standard output");
  EXPECT_EQ(r.err, table);
}

}  // namespace
}  // namespace qlip::test::cli
