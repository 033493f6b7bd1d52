/// @file test_cli_malformed_inputs.cpp
/// @brief The CLI on hostile files: a codes file whose safetensors header is 200 kB of nested JSON
///        (it overflowed the stack of the release binary while an error message dumped the value),
///        duplicate keys and zero-size tensors with absurd dimensions. Each must end in the one-line
///        error, never a signal.
#include <cstdint>
#include <string>

#include "cli_test_util.hpp"

namespace qlip::test::cli {
namespace {

/// length prefix + header + data, as safetensors lays them out.
std::string raw_safetensors(const std::string& header, const std::string& data = "") {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((static_cast<std::uint64_t>(header.size()) >> (8 * i)) & 0xff);
  return out + header + data;
}

void write_raw(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

class MalformedInputs : public CliTest {};

TEST_F(MalformedInputs, DeeplyNestedCodesFileIsAOneLineError) {
  const std::string codes = path("nested.safetensors");
  const std::string deep(200000, '[');
  write_raw(codes, raw_safetensors("{\"indices\":{\"dtype\":\"U32\",\"shape\":[1,16],\"data_offsets\":" + deep + "}}"));
  const RunResult r = run("decode " + q(kTiny) + " " + q(codes) + " -o " + q(out_dir() + "/png"));
  QLIP_EXPECT_CLI_FAILS(*this, r, "nested.safetensors", "nesting deeper than 64");
  EXPECT_LT(r.err.size(), 400u) << r;

  write_raw(codes, raw_safetensors("{\"__metadata__\":{\"images\":\"" + deep + "\"}," + deep + "}"));
  QLIP_EXPECT_CLI_FAILS(*this, run("decode " + q(kTiny) + " " + q(codes) + " -o " + q(out_dir() + "/png")),
                        "nesting deeper than 64");
}

TEST_F(MalformedInputs, DuplicateAndZeroSizeTensorsInCodesFiles) {
  const std::string codes = path("dup.safetensors");
  const std::string entry = "{\"dtype\":\"U8\",\"shape\":[1,16,28],\"data_offsets\":[0,448]}";
  write_raw(codes, raw_safetensors("{\"bits\":" + entry + ",\"bits\":" + entry + "}", std::string(448, '\0')));
  QLIP_EXPECT_CLI_FAILS(*this, run("decode " + q(kTiny) + " " + q(codes) + " -o " + q(out_dir() + "/png")),
                        "duplicate key \"bits\"");

  write_raw(codes, raw_safetensors(
                       "{\"indices\":{\"dtype\":\"U8\",\"shape\":[9223372036854775807,0],\"data_offsets\":[0,0]}}"));
  QLIP_EXPECT_CLI_FAILS(*this, run("decode " + q(kTiny) + " " + q(codes) + " -o " + q(out_dir() + "/png")),
                        "exceeds the limit of 2^40");
}

}  // namespace
}  // namespace qlip::test::cli
