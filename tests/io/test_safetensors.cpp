/// @file test_safetensors.cpp
/// @brief SafetensorsFile / write_safetensors: exact round trips of every dtype, a file written by
///        the Python library, every class of corrupt input (each must throw qlip::Error with a
///        useful message, never crash), a byte-flip fuzz loop, and the atomic-write guarantees.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "common/compare.hpp"
#include "io/io_test_util.hpp"
#include "qlip/core/philox.hpp"
#include "qlip/io/safetensors.hpp"

namespace {

using qlip::DType;
using qlip::SafetensorsFile;
using qlip::test::ScratchDir;
using qlip::test::throws_error;

/// Builds a raw safetensors file: length prefix + header text (unpadded unless given) + data.
std::string raw_file(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

template <class T>
std::vector<T> random_values(std::int64_t n, std::uint64_t seed) {
  qlip::Philox rng(seed);
  std::vector<T> v(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    double u = rng.uniform(static_cast<std::uint64_t>(i));
    if constexpr (std::is_same_v<T, float>) {
      v[i] = static_cast<float>((u - 0.5) * 200.0);
    } else if constexpr (std::is_same_v<T, qlip::f16> || std::is_same_v<T, qlip::bf16>) {
      v[i].bits = static_cast<std::uint16_t>(u * 65535.0);  // every bit pattern, NaNs included
    } else if constexpr (std::is_same_v<T, std::int64_t>) {
      v[i] = static_cast<std::int64_t>((u - 0.5) * 9.0e18);
    } else if constexpr (std::is_same_v<T, std::int32_t>) {
      v[i] = static_cast<std::int32_t>((u - 0.5) * 4.0e9);
    } else if constexpr (std::is_same_v<T, std::uint32_t>) {
      v[i] = static_cast<std::uint32_t>(u * 4.0e9);
    } else {
      v[i] = static_cast<T>(u * 255.0);
    }
  }
  return v;
}

template <class T>
void round_trip_one(const ScratchDir& dir, std::uint64_t seed) {
  const std::vector<std::int64_t> shape = {3, 5, 7};
  auto values = random_values<T>(3 * 5 * 7, seed);
  const std::string path = dir.file("rt_" + qlip::dtype_name(qlip::dtype_v<T>) + ".safetensors");
  qlip::write_safetensors(path, {{"x", qlip::dtype_v<T>, shape, values.data()}}, {{"k", "v"}});
  auto f = SafetensorsFile::open(path);
  auto view = f.view<T, 3>("x");
  ASSERT_TRUE((view.shape() == qlip::Extents<3>{3, 5, 7}));
  // Bitwise comparison: f16/bf16 NaN payloads must survive too.
  EXPECT_EQ(std::memcmp(view.data(), values.data(), values.size() * sizeof(T)), 0) << qlip::dtype_name(qlip::dtype_v<T>);
  auto as_float = f.to_float<3>("x");
  for (std::size_t i = 0; i < values.size(); ++i) {
    float want = qlip::to_float(values[i]);
    float got = as_float.data()[i];
    ASSERT_TRUE((std::isnan(want) && std::isnan(got)) || want == got) << "element " << i;
  }
  EXPECT_EQ(f.metadata().at("k"), "v");
  // Data section 8-byte aligned, as the Python library writes it.
  std::string bytes = qlip::test::read_bytes(path);
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<std::uint8_t>(bytes[i]);
  EXPECT_EQ((8 + n) % 8, 0u);
}

TEST(Safetensors, RoundTripEveryDtypeExactly) {
  ScratchDir dir;
  round_trip_one<float>(dir, 1);
  round_trip_one<qlip::f16>(dir, 2);
  round_trip_one<qlip::bf16>(dir, 3);
  round_trip_one<std::int32_t>(dir, 4);
  round_trip_one<std::int64_t>(dir, 5);
  round_trip_one<std::uint8_t>(dir, 6);
  round_trip_one<std::uint32_t>(dir, 7);
}

TEST(Safetensors, WriterCopiesStridedViewsAndKeepsOrder) {
  ScratchDir dir;
  qlip::Tensor<float, 2> a({4, 6});
  for (std::int64_t i = 0; i < a.numel(); ++i) a.data()[i] = static_cast<float>(i) * 0.25f;
  auto t = a.view().transpose(0, 1);  // [6, 4], non-contiguous
  qlip::SafetensorsWriter w;
  w.add("t", t);
  w.add("a", a.view());
  std::vector<std::int32_t> codes = {5, -6, 7};
  w.add_raw("codes", DType::i32, {3}, codes.data());
  const std::string path = dir.file("w.safetensors");
  w.write(path);
  auto f = SafetensorsFile::open(path);
  ASSERT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.tensors()[0].name, "t");
  EXPECT_EQ(f.tensors()[2].name, "codes");
  EXPECT_TRUE(qlip::test::all_close(f.view<float, 2>("t"), qlip::HostView<const float, 2>(t), qlip::test::kExact));
  EXPECT_TRUE(qlip::test::all_close(f.view<float, 2>("a"), a.view(), qlip::test::kExact));
  EXPECT_EQ((f.view<std::int32_t, 1>("codes")(1)), -6);
  EXPECT_TRUE(f.metadata().empty());
  // safetensors_entry refuses strided views (no silent copy there).
  EXPECT_TRUE(throws_error([&] { (void)qlip::safetensors_entry("t", t); }, {"not contiguous"}));
}

TEST(Safetensors, ReadsFileWrittenByPythonLibrary) {
  auto f = SafetensorsFile::open(QLIP_TEST_DATA_DIR "/io/py_written.safetensors");
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.metadata().at("note"), "qlip fixture");
  EXPECT_EQ(f.tensors().size(), 10u);

  auto f32 = f.view<float, 2>("f32");
  const float f32_want[6] = {0.0f, 1.5f, -2.25f, 3.0e-8f, 65504.0f, -1.0e30f};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(f32(i / 3, i % 3), f32_want[i]);

  auto f16 = f.to_float<1>("f16");
  const float f16_want[4] = {1.0f, -0.5f, 65504.0f, std::ldexp(1.0f, -24)};
  for (int i = 0; i < 4; ++i) EXPECT_EQ(f16(i), f16_want[i]);
  EXPECT_EQ((f.view<qlip::f16, 1>("f16")(0).bits), 0x3c00);

  auto bf = f.to_float<2>("bf16");
  EXPECT_EQ(bf(0, 0), 1.0f);
  EXPECT_EQ(bf(0, 1), -2.0f);
  EXPECT_EQ(bf(1, 0), 3.140625f);
  EXPECT_EQ(bf(1, 1), std::ldexp(1.0f, 100));

  auto i32 = f.view<std::int32_t, 1>("i32");
  EXPECT_EQ(i32(0), -7);
  EXPECT_EQ(i32(1), 0);
  EXPECT_EQ(i32(2), 2147483647);
  auto i64 = f.view<std::int64_t, 1>("i64");
  EXPECT_EQ(i64(0), -9007199254740993LL);
  EXPECT_EQ(i64(1), 1LL << 40);
  auto u8 = f.view<std::uint8_t, 1>("u8");
  const int u8_want[5] = {0, 1, 127, 128, 255};
  for (int i = 0; i < 5; ++i) EXPECT_EQ(u8(i), u8_want[i]);
  auto u32 = f.view<std::uint32_t, 1>("u32");
  EXPECT_EQ(u32(1), 4294967295u);
  EXPECT_EQ(u32(2), 123456789u);

  auto scalar = f.to_float_vector("scalar");
  ASSERT_EQ(scalar.size(), 1u);
  EXPECT_EQ(scalar[0], 42.0f);
  EXPECT_TRUE(f.info("scalar").shape.empty());
  EXPECT_TRUE((f.view<float, 2>("empty").shape() == qlip::Extents<2>{0, 3}));
  auto nested = f.view<float, 3>("nested.name.weight");
  for (int i = 0; i < 24; ++i) EXPECT_EQ(nested(i / 12, (i / 4) % 3, i % 4), static_cast<float>(i));
  EXPECT_EQ(f.bytes("u8").size(), 5u);
}

TEST(Safetensors, AccessErrorsNameTensorAndFile) {
  const std::string path = QLIP_TEST_DATA_DIR "/io/py_written.safetensors";
  auto f = SafetensorsFile::open(path);
  EXPECT_FALSE(f.contains("nope"));
  EXPECT_TRUE(throws_error([&] { (void)f.info("nope"); }, {"nope", "py_written.safetensors"}));
  EXPECT_TRUE(throws_error([&] { (void)f.view<float, 1>("nope"); }, {"nope"}));
  EXPECT_TRUE(throws_error([&] { (void)f.view<std::int64_t, 2>("f32"); }, {"f32", "F32", "I64"}));
  EXPECT_TRUE(throws_error([&] { (void)f.view<float, 3>("f32"); }, {"f32", "rank 2", "rank 3"}));
  EXPECT_TRUE(throws_error([&] { (void)f.to_float<1>("f32"); }, {"f32", "rank 2", "rank 1"}));
  EXPECT_TRUE(throws_error([] { (void)SafetensorsFile::open("/nonexistent/x.safetensors"); }, {"/nonexistent/x.safetensors"}));
}

TEST(Safetensors, MisalignedDataRefusesViewButConverts) {
  ScratchDir dir;
  const std::string path = dir.file("mis.safetensors");
  float v = 1.25f;
  std::string data = "ab" + std::string(reinterpret_cast<const char*>(&v), 4);
  // Header of 6 bytes + 8 → data section starts at 14 (2 mod 4); "x" starts 2 bytes later → 16: aligned.
  // Make it misaligned on purpose: pad the header to a multiple of 8 and start "x" at offset 2.
  std::string header = R"({"p":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"x":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  qlip::test::write_bytes(path, raw_file(header, data));
  auto f = SafetensorsFile::open(path);
  EXPECT_TRUE(throws_error([&] { (void)f.view<float, 1>("x"); }, {"'x'", "aligned"}));
  EXPECT_EQ(f.to_float<1>("x")(0), 1.25f);
}

struct Corrupt {
  const char* what;
  std::string bytes;
  std::vector<std::string> needles;
};

TEST(Safetensors, CorruptInputsThrowUsefulErrors) {
  ScratchDir dir;
  const std::string d24(24, '\0');
  auto entry = [](const std::string& body) { return "{\"t\":" + body + "}"; };
  std::string huge_len(8, '\0');
  huge_len[5] = 1;  // 2^40-byte header
  std::string beyond = raw_file(entry(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})"), std::string(8, '\0'));
  beyond[0] = static_cast<char>(beyond[0] + 100);  // header length 100 bytes past the real one
  const std::vector<Corrupt> cases = {
      {"empty file", "", {"shorter than the 8-byte"}},
      {"7 bytes", "1234567", {"shorter than the 8-byte"}},
      {"absurd header length", huge_len + "{}", {"100 MB"}},
      {"header beyond file", beyond, {"past the end of the file"}},
      {"bad JSON", raw_file("{\"t\": [1, 2", ""), {"header: invalid JSON at byte"}},
      {"empty header", raw_file("", ""), {"header: invalid JSON"}},
      {"not an object", raw_file("[1,2,3]", ""), {"expected an object"}},
      {"entry not an object", raw_file(entry("5"), ""), {"'t'", "expected an object"}},
      {"missing dtype", raw_file(entry(R"({"shape":[1],"data_offsets":[0,4]})"), d24), {"'t'", "missing 'dtype'"}},
      {"missing shape", raw_file(entry(R"({"dtype":"F32","data_offsets":[0,4]})"), d24), {"'t'", "missing 'shape'"}},
      {"missing offsets", raw_file(entry(R"({"dtype":"F32","shape":[1]})"), d24), {"'t'", "missing 'data_offsets'"}},
      {"dtype wrong type", raw_file(entry(R"({"dtype":3,"shape":[1],"data_offsets":[0,4]})"), d24), {"'dtype' is not a string"}},
      {"shape wrong type", raw_file(entry(R"({"dtype":"F32","shape":"1","data_offsets":[0,4]})"), d24), {"'shape' is not an array"}},
      {"shape float", raw_file(entry(R"({"dtype":"F32","shape":[1.5],"data_offsets":[0,4]})"), d24), {"not an integer"}},
      {"offsets wrong type", raw_file(entry(R"({"dtype":"F32","shape":[1],"data_offsets":"0,4"})"), d24), {"'data_offsets' must be"}},
      {"offsets negative", raw_file(entry(R"({"dtype":"F32","shape":[1],"data_offsets":[-4,0]})"), d24), {"'data_offsets' must be"}},
      {"offsets three", raw_file(entry(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4,8]})"), d24), {"'data_offsets' must be"}},
      {"unknown dtype", raw_file(entry(R"({"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]})"), d24), {"'t'", "unknown", "F8_E4M3"}},
      {"negative dim", raw_file(entry(R"({"dtype":"F32","shape":[-1,4],"data_offsets":[0,4]})"), d24), {"'t'", "negative dimension -1"}},
      {"huge shape", raw_file(entry(R"({"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,4]})"), d24), {"'t'", "overflows"}},
      {"huge bytes", raw_file(entry(R"({"dtype":"I64","shape":[2305843009213693952],"data_offsets":[0,4]})"), d24), {"'t'", "overflows"}},
      {"dim beyond int64", raw_file(entry(R"({"dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,4]})"), d24), {"'t'", "int64"}},
      {"begin > end", raw_file(entry(R"({"dtype":"F32","shape":[0],"data_offsets":[8,4]})"), d24), {"'t'", "begin 8 > end 4"}},
      {"offsets out of range", raw_file(entry(R"({"dtype":"F32","shape":[4],"data_offsets":[16,32]})"), d24), {"'t'", "beyond the data section (24 bytes)"}},
      {"wrong byte size", raw_file(entry(R"({"dtype":"F32","shape":[3],"data_offsets":[0,8]})"), d24), {"'t'", "span 8 bytes", "need 12"}},
      {"bf16 size", raw_file(entry(R"({"dtype":"BF16","shape":[2,2],"data_offsets":[0,16]})"), d24), {"'t'", "need 8"}},
      {"overlap",
       raw_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},"b":{"dtype":"F32","shape":[3],"data_offsets":[8,20]}})", d24),
       {"'a'", "'b'", "overlap"}},
      {"overlap reversed order",
       raw_file(R"({"b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]},"a":{"dtype":"F32","shape":[4],"data_offsets":[4,20]}})", d24),
       {"overlap"}},
      {"metadata not strings", raw_file(R"({"__metadata__":{"format":5}})", ""), {"__metadata__", "not a string"}},
  };
  for (const auto& c : cases) {
    const std::string path = dir.file("bad.safetensors");
    qlip::test::write_bytes(path, c.bytes);
    std::vector<std::string> needles = c.needles;
    needles.push_back("bad.safetensors");  // every message names the file
    try {
      (void)SafetensorsFile::open(path);
      ADD_FAILURE() << c.what << ": did not throw";
    } catch (const qlip::Error& e) {
      for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << c.what << ": " << e.what();
    }
  }
  // Gaps and trailing bytes are tolerated; zero-sized tensors may sit anywhere.
  const std::string ok = dir.file("ok.safetensors");
  qlip::test::write_bytes(ok, raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"z":{"dtype":"F32","shape":[0],"data_offsets":[6,6]}})", d24));
  EXPECT_EQ(SafetensorsFile::open(ok).tensors().size(), 2u);
}

std::string valid_file_bytes(const ScratchDir& dir) {
  const std::string path = dir.file("valid.safetensors");
  std::vector<float> a = {1, 2, 3, 4, 5, 6};
  std::vector<std::uint16_t> b = {0x3c00, 0xc000};
  std::vector<std::int64_t> c = {7, 8, 9};
  qlip::write_safetensors(path,
                          {{"alpha", DType::f32, {2, 3}, a.data()}, {"beta", DType::bf16, {2}, b.data()},
                           {"gamma", DType::i64, {3}, c.data()}},
                          {{"format", "pt"}});
  return qlip::test::read_bytes(path);
}

// A zero-size tensor occupies no bytes, so only the header limits its other dimensions: without
// the limits a shape [2^63-1, 0] is valid and any product of two dimensions overflows downstream.
TEST(Safetensors, ShapeLimitsHoldForZeroSizeTensors) {
  ScratchDir dir;
  auto one = [](const std::string& shape, const std::string& dtype = "F32") {
    return raw_file("{\"t\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":[0,0]}}", "");
  };
  const std::string path = dir.file("z.safetensors");
  auto expect_rejected = [&](const std::string& bytes, std::vector<std::string> needles) {
    qlip::test::write_bytes(path, bytes);
    needles.push_back("z.safetensors");
    try {
      (void)SafetensorsFile::open(path);
      ADD_FAILURE() << needles[0] << ": did not throw";
    } catch (const qlip::Error& e) {
      for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
    }
  };
  expect_rejected(one("[9223372036854775807,0]"), {"'t'", "overflows the byte size"});
  expect_rejected(one("[9223372036854775807,0]", "U8"), {"'t'", "exceeds the limit of 2^40"});
  expect_rejected(one("[1099511627777,0]"), {"'t'", "dimension 1099511627777 exceeds"});
  expect_rejected(one("[0,1099511627776,1099511627776]"), {"'t'", "overflows int64 element count"});
  expect_rejected(one("[0,1152921504606846976]", "I64"), {"'t'", "overflows the byte size"});
  std::string rank65 = "[";
  for (int i = 0; i < 65; ++i) rank65 += (i ? ",0" : "0");
  expect_rejected(one(rank65 + "]"), {"'t'", "65 dimensions"});
  // At the limits: accepted, and numel/bytes are 0.
  qlip::test::write_bytes(path, one("[1099511627776,0,1048576]"));
  const auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f.info("t").numel(), 0);
  EXPECT_EQ(f.bytes("t").size(), 0u);
  EXPECT_TRUE(f.to_float_vector("t").empty());
  // The writer enforces the same limits, so it never writes what the reader rejects.
  EXPECT_TRUE(throws_error([&] { qlip::write_safetensors(dir.file("w.safetensors"), {{"t", DType::f32, {std::int64_t{1} << 41, 0}, nullptr}}); },
                           {"'t'", "2^40"}));
}

// The header goes through qlip::parse_ordered_json: duplicate keys (two tensors of one name, which
// last-wins parsing made invisible) and deep nesting are errors, and no message dumps a whole value.
TEST(Safetensors, HeaderDuplicatesDepthAndBoundedMessages) {
  ScratchDir dir;
  const std::string path = dir.file("h.safetensors");
  auto rejected = [&](const std::string& header, const std::string& data, std::vector<std::string> needles) {
    qlip::test::write_bytes(path, raw_file(header, data));
    needles.push_back("h.safetensors");
    try {
      (void)SafetensorsFile::open(path);
      ADD_FAILURE() << needles[0] << ": did not throw";
    } catch (const qlip::Error& e) {
      const std::string m = e.what();
      for (const auto& n : needles) EXPECT_NE(m.find(n), std::string::npos) << m;
      EXPECT_LT(m.size(), 600u) << m.substr(0, 600);
    }
  };
  rejected(R"({"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"t":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})", "ab",
           {"duplicate key \"t\""});
  rejected(R"({"__metadata__":{"a":"1","a":"2"}})", "", {"duplicate key \"a\"", "'__metadata__'"});
  rejected("{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":" + std::string(200000, '[') + "}}", "",
           {"nesting deeper than 64"});
  // Deep but allowed (64 levels): the error prints a bounded excerpt of the offending value.
  rejected("{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":" + std::string(62, '[') + std::string(62, ']') + "}}", "",
           {"'data_offsets' must be", "..."});
  rejected(R"({"t":{"dtype":"U8","shape":[1],"data_offsets":[0,")" + std::string(100000, '7') + "]}}", "", {"invalid JSON"});
  rejected("{\"" + std::string(100000, 'n') + "\":5}", "", {"expected an object", "..."});
  rejected(R"({"t":{"dtype":"U8","shape":[")" + std::string(100000, 's') + R"("],"data_offsets":[0,1]}})", "a", {"not an integer", "..."});
}

TEST(Safetensors, TruncatedFilesThrow) {
  ScratchDir dir;
  const std::string bytes = valid_file_bytes(dir);
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<std::uint8_t>(bytes[i]);
  const std::size_t cuts[] = {0, 1, 7, 8, 9, 8 + n / 2, 8 + n - 1, 8 + n, 8 + n + 5, bytes.size() - 1};
  for (std::size_t cut : cuts) {
    const std::string path = dir.file("cut.safetensors");
    qlip::test::write_bytes(path, bytes.substr(0, cut));
    EXPECT_TRUE(throws_error([&] { (void)SafetensorsFile::open(path); }, {"cut.safetensors", "invalid safetensors"}))
        << "cut at " << cut << " of " << bytes.size();
  }
}

TEST(Safetensors, ByteFlipFuzzEitherLoadsOrThrows) {
  ScratchDir dir;
  const std::string bytes = valid_file_bytes(dir);
  const std::string path = dir.file("fuzz.safetensors");
  qlip::Philox rng(1234);
  int loaded = 0, rejected = 0;
  constexpr int kMutations = 3000;
  for (int m = 0; m < kMutations; ++m) {
    std::string b = bytes;
    const int flips = 1 + static_cast<int>(rng.uniform(4ull * m) * 3);
    for (int k = 0; k < flips; ++k) {
      // Mostly the length prefix and header (where the parser lives), sometimes the data.
      const double u = rng.uniform(4ull * m + 1 + k);
      const std::size_t pos = static_cast<std::size_t>(u * static_cast<double>(b.size())) % b.size();
      const std::uint64_t r = static_cast<std::uint64_t>(rng.uniform(4ull * m + 3) * 256.0) & 0xff;
      b[pos] = static_cast<char>(m % 2 ? (b[pos] ^ (1 << (r % 8))) : static_cast<char>(r));
    }
    qlip::test::write_bytes(path, b);
    try {
      auto f = SafetensorsFile::open(path);
      for (const auto& t : f.tensors()) (void)f.to_float_vector(t.name);  // touch every byte
      ++loaded;
    } catch (const qlip::Error&) {
      ++rejected;
    }
  }
  EXPECT_EQ(loaded + rejected, kMutations);
  EXPECT_GT(rejected, 100);
  EXPECT_GT(loaded, 100);
  std::printf("fuzz: %d mutations, %d loaded, %d rejected with qlip::Error\n", kMutations, loaded, rejected);
}

TEST(Safetensors, AtomicWriteToMissingDirectoryLeavesNothing) {
  ScratchDir dir;
  float v = 1.0f;
  const std::string path = dir.file("no_such_dir/x.safetensors");
  EXPECT_TRUE(throws_error([&] { qlip::write_safetensors(path, {{"v", DType::f32, {1}, &v}}); }, {"no_such_dir"}));
  EXPECT_TRUE(dir.list().empty());
}

TEST(Safetensors, FailedWriteKeepsExistingFile) {
  ScratchDir dir;
  const std::string path = dir.file("keep.safetensors");
  std::vector<float> small = {1, 2, 3};
  qlip::write_safetensors(path, {{"s", DType::f32, {3}, small.data()}});
  const std::string before = qlip::test::read_bytes(path);

  // 1) Invalid entries are rejected before anything is created.
  EXPECT_TRUE(throws_error([&] { qlip::write_safetensors(path, {{"s", DType::f32, {-1}, small.data()}}); }, {"negative"}));
  EXPECT_TRUE(throws_error([&] { qlip::write_safetensors(path, {{"s", DType::f32, {3}, small.data()}, {"s", DType::f32, {3}, small.data()}}); },
                           {"duplicate"}));
  EXPECT_TRUE(throws_error([&] { qlip::write_safetensors(path, {{"bad\xff", DType::f32, {3}, small.data()}}); }, {"cannot encode"}));
  EXPECT_TRUE(throws_error([&] { qlip::write_safetensors(path, {{"__metadata__", DType::f32, {3}, small.data()}}); }, {"reserved"}));
  // 2) A real I/O failure in the middle of the data: cap the file size (EFBIG instead of SIGXFSZ).
  std::vector<float> big(1 << 16, 0.5f);
  struct rlimit old {};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
  auto old_handler = signal(SIGXFSZ, SIG_IGN);
  struct rlimit capped = old;
  capped.rlim_cur = 4096;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &capped), 0);
  bool threw = false;
  try {
    qlip::write_safetensors(path, {{"big", DType::f32, {1 << 16}, big.data()}});
  } catch (const qlip::Error& e) {
    threw = true;
    EXPECT_NE(std::string(e.what()).find("keep.safetensors"), std::string::npos) << e.what();
  }
  setrlimit(RLIMIT_FSIZE, &old);
  signal(SIGXFSZ, old_handler);
  EXPECT_TRUE(threw);
  // 3) The target is a directory: rename fails after the temp file was fully written.
  const std::string as_dir = dir.file("is_a_dir");
  ASSERT_EQ(::mkdir(as_dir.c_str(), 0755), 0);
  EXPECT_TRUE(throws_error([&] { qlip::write_safetensors(as_dir, {{"s", DType::f32, {3}, small.data()}}); }, {"is_a_dir"}));
  ::rmdir(as_dir.c_str());

  EXPECT_EQ(qlip::test::read_bytes(path), before);
  EXPECT_EQ(dir.list(), std::vector<std::string>{"keep.safetensors"});  // no temp files left
}

}  // namespace
