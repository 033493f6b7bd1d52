/// @file test_idx.cpp
/// @brief The IDX reader on small generated files: plain and gzip round trips, and every refusal
///        (bad magic, unsupported type, truncated header / data / gzip stream, trailing bytes,
///        wrong dims, missing file) as one line naming the file and the problem.

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include <zlib.h>

#include "common/compare.hpp"
#include "common/data_pipeline_util.hpp"
#include "qlip/data/idx.hpp"

namespace qlip::data::test {
namespace {

using qlip::test::expect_error_naming;

/// An IDX uint8 file: magic 00 00 08 rank, big-endian dims, then `data`.
std::vector<std::uint8_t> idx_bytes(const std::vector<std::uint32_t>& dims, const std::vector<std::uint8_t>& data,
                                    std::uint8_t type = 0x08) {
  std::vector<std::uint8_t> b{0, 0, type, static_cast<std::uint8_t>(dims.size())};
  for (std::uint32_t d : dims) {
    b.push_back(static_cast<std::uint8_t>(d >> 24));
    b.push_back(static_cast<std::uint8_t>(d >> 16));
    b.push_back(static_cast<std::uint8_t>(d >> 8));
    b.push_back(static_cast<std::uint8_t>(d));
  }
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

std::vector<std::uint8_t> ramp(std::size_t n) {
  std::vector<std::uint8_t> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::uint8_t>((i * 37 + 11) % 256);
  return v;
}

void write_gz(const std::string& path, const std::vector<std::uint8_t>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
  ASSERT_EQ(gzclose(f), Z_OK);
}

TEST(Idx, PlainAndGzipRoundTrip) {
  ScratchDir dir;
  const auto data = ramp(3 * 5 * 7);
  const auto bytes = idx_bytes({3, 5, 7}, data);
  write_bytes(dir.file("a.idx"), bytes);
  write_gz(dir.file("a.idx.gz"), bytes);
  for (const std::string name : {"a.idx", "a.idx.gz"}) {
    SCOPED_TRACE(name);
    const IdxArray a = read_idx(dir.file(name), {kAnyDim, 5, 7});
    EXPECT_EQ(a.dims, (std::vector<std::int64_t>{3, 5, 7}));
    EXPECT_EQ(a.rank(), 3);
    EXPECT_EQ(a.item_size(), 35);
    EXPECT_EQ(a.data, data);
  }
  // Labels: rank 1, and no expectation at all.
  write_bytes(dir.file("l.idx"), idx_bytes({4}, {9, 0, 3, 255}));
  const IdxArray l = read_idx(dir.file("l.idx"));
  EXPECT_EQ(l.dims, (std::vector<std::int64_t>{4}));
  EXPECT_EQ(l.item_size(), 1);
  EXPECT_EQ(l.data, (std::vector<std::uint8_t>{9, 0, 3, 255}));
  // Zero samples is a valid (empty) array.
  write_bytes(dir.file("e.idx"), idx_bytes({0, 28, 28}, {}));
  EXPECT_TRUE(read_idx(dir.file("e.idx"), {kAnyDim, 28, 28}).data.empty());
}

/// The message names the file and contains `problem`, on one line.
void expect_idx_error(const std::string& path, const std::vector<std::int64_t>& dims, const std::string& problem) {
  try {
    (void)read_idx(path, dims);
    ADD_FAILURE() << "no error for " << path << "; expected one naming " << problem;
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find(path), std::string::npos) << m;
    EXPECT_NE(m.find(problem), std::string::npos) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << "not one line: " << m;
  }
}

TEST(Idx, BadMagic) {
  ScratchDir dir;
  auto b = idx_bytes({2, 2}, ramp(4));
  b[0] = 0x12;
  write_bytes(dir.file("magic.idx"), b);
  expect_idx_error(dir.file("magic.idx"), {}, "magic 0x12000802 does not start with two zero bytes");
  write_bytes(dir.file("tiny.idx"), {0, 0});
  expect_idx_error(dir.file("tiny.idx"), {}, "2 bytes, shorter than the 4-byte magic");
  write_text(dir.file("text.idx"), "hello world, not an IDX file");
  expect_idx_error(dir.file("text.idx"), {}, "not an IDX file");
}

TEST(Idx, UnsupportedTypeAndRank) {
  ScratchDir dir;
  write_bytes(dir.file("f32.idx"), idx_bytes({1}, {0, 0, 0, 0}, 0x0D));
  expect_idx_error(dir.file("f32.idx"), {}, "element type 0x0d (float32) is not supported");
  write_bytes(dir.file("r0.idx"), idx_bytes({}, {}));
  expect_idx_error(dir.file("r0.idx"), {}, "IDX rank 0");
}

TEST(Idx, Truncated) {
  ScratchDir dir;
  auto header = idx_bytes({10, 28, 28}, {});
  header.resize(9);  // rank 3 needs 16 header bytes
  write_bytes(dir.file("hdr.idx"), header);
  expect_idx_error(dir.file("hdr.idx"), {}, "truncated IDX header: rank 3 needs 16 bytes, the file has 9");

  write_bytes(dir.file("data.idx"), idx_bytes({10, 28, 28}, ramp(7839)));
  expect_idx_error(dir.file("data.idx"), {kAnyDim, 28, 28}, "truncated IDX file: dims [10, 28, 28] need 7840 data bytes, it has 7839");

  // Dimensions whose product overflows 64 bits must not wrap around into "fits".
  write_bytes(dir.file("huge.idx"), idx_bytes({0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu}, ramp(8)));
  expect_idx_error(dir.file("huge.idx"), {}, "truncated IDX file");

  auto gz_src = idx_bytes({50, 28, 28}, ramp(50 * 784));
  write_gz(dir.file("full.gz"), gz_src);
  auto gz = qlip::detail::read_file_bytes(dir.file("full.gz"));
  gz.resize(gz.size() / 2);
  write_bytes(dir.file("cut.gz"), gz);
  expect_idx_error(dir.file("cut.gz"), {}, "corrupt or truncated gzip file");
}

TEST(Idx, TrailingBytes) {
  ScratchDir dir;
  write_bytes(dir.file("long.idx"), idx_bytes({3}, {1, 2, 3, 4, 5}));
  expect_idx_error(dir.file("long.idx"), {}, "has 2 bytes after the 3 data bytes of dims [3]");
}

TEST(Idx, WrongDims) {
  ScratchDir dir;
  write_bytes(dir.file("27.idx"), idx_bytes({2, 28, 27}, ramp(2 * 28 * 27)));
  expect_idx_error(dir.file("27.idx"), {kAnyDim, 28, 28}, "IDX dims [2, 28, 27], expected [*, 28, 28]");
  expect_idx_error(dir.file("27.idx"), {kAnyDim}, "IDX dims [2, 28, 27], expected [*]");
  expect_idx_error(dir.file("27.idx"), {3, 28, 27}, "expected [3, 28, 27]");
}

TEST(Idx, MissingFile) {
  ScratchDir dir;
  expect_error_naming([&] { (void)read_idx(dir.file("nope.idx")); }, "cannot open " + dir.file("nope.idx"));
  expect_error_naming([&] { (void)read_idx(dir.str()); }, "cannot read " + dir.str() + ": is a directory");
}

}  // namespace
}  // namespace qlip::data::test
