/// @file test_cli_info_defaults.cpp
/// @brief `qlip info` on a config.json in the short form save_pretrained writes: it loads, and one
///        line says which fields took the official class defaults; a full-form file assumes nothing.
#include "cli_test_util.hpp"

namespace qlip::test::cli {
namespace {

std::string defaults_line(const std::string& out) {
  for (const auto& l : lines(out))
    if (l.rfind("defaults", 0) == 0) return l;
  return "";
}

TEST_F(CliTest, InfoListsTheDefaultsADiffFormConfigLeftOpen) {
  const RunResult r = run("info " + q(kTiny + "-diff"));
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_NE(r.out.find("config       qlip-test-tiny"), std::string::npos) << r;
  const std::string line = defaults_line(r.out);
  EXPECT_NE(line.find("official class defaults"), std::string::npos) << r;
  EXPECT_NE(line.find("text_config.layer_norm_eps = 1e-05"), std::string::npos) << r;
  EXPECT_NE(line.find("text_config.eos_token_id = 49407"), std::string::npos) << r;
}

TEST_F(CliTest, InfoOnAFullFormConfigAssumesNothing) {
  const RunResult r = run("info " + q(kTiny));
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_NE(defaults_line(r.out).find("none"), std::string::npos) << r;
}

}  // namespace
}  // namespace qlip::test::cli
