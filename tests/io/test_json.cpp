/// @file test_json.cpp
/// @brief read_json / json_get / json_get_or: values, and errors that name the file, the parse
///        position and the key path.
#include <gtest/gtest.h>

#include "io/io_test_util.hpp"
#include "qlip/io/json.hpp"

namespace {

using qlip::test::throws_error;

TEST(Json, ReadsFileAndGetsTypedValuesByPath) {
  qlip::test::ScratchDir dir;
  const std::string path = dir.file("config.json");
  qlip::test::write_bytes(path, R"({"vision_config": {"hidden_size": 768, "layer_norm_eps": 1e-6, "name": "vit",
                                    "use_rope": true, "mean": [0.5, 0.25]}, "big": 5000000000, "neg": -3, "n": null})");
  auto j = qlip::read_json(path);
  EXPECT_EQ(qlip::json_get<int>(j, "vision_config.hidden_size"), 768);
  EXPECT_EQ(qlip::json_get<std::int64_t>(j, "big"), 5000000000LL);
  EXPECT_EQ(qlip::json_get<double>(j, "vision_config.layer_norm_eps"), 1e-6);
  EXPECT_EQ(qlip::json_get<float>(j, "vision_config.hidden_size"), 768.0f);  // an integer is a number
  EXPECT_EQ(qlip::json_get<std::string>(j, "vision_config.name"), "vit");
  EXPECT_TRUE(qlip::json_get<bool>(j, "vision_config.use_rope"));
  EXPECT_EQ(qlip::json_get<std::vector<double>>(j, "vision_config.mean"), (std::vector<double>{0.5, 0.25}));
  EXPECT_EQ(qlip::json_get_or<int>(j, "vision_config.missing", 7), 7);
  EXPECT_EQ(qlip::json_get_or<int>(j, "nope.deeper", 8), 8);
  EXPECT_EQ(qlip::json_get_or<int>(j, "n", 9), 9);  // null counts as absent
  EXPECT_EQ(qlip::json_get_or<int>(j, "neg", 0), -3);
  EXPECT_TRUE(qlip::json_has(j, "vision_config.name"));
  EXPECT_FALSE(qlip::json_has(j, "vision_config.name.x"));

  EXPECT_TRUE(throws_error([&] { (void)qlip::json_get<int>(j, "vision_config.hidden"); }, {"vision_config.hidden", "missing"}));
  EXPECT_TRUE(throws_error([&] { (void)qlip::json_get<int>(j, "vision_config.layer_norm_eps"); },
                           {"vision_config.layer_norm_eps", "expected an integer"}));
  EXPECT_TRUE(throws_error([&] { (void)qlip::json_get<int>(j, "big"); }, {"'big'", "expected an integer"}));  // out of int range
  EXPECT_TRUE(throws_error([&] { (void)qlip::json_get<unsigned>(j, "neg"); }, {"'neg'"}));
  EXPECT_TRUE(throws_error([&] { (void)qlip::json_get<bool>(j, "vision_config.hidden_size"); }, {"expected a boolean"}));
  EXPECT_TRUE(throws_error([&] { (void)qlip::json_get<std::string>(j, "big"); }, {"expected a string"}));
  EXPECT_TRUE(throws_error([&] { (void)qlip::json_get<int>(j, "vision_config.name.x"); }, {"vision_config.name", "not an object"}));
  EXPECT_TRUE(throws_error([&] { (void)qlip::json_get_or<int>(j, "vision_config.name", 1); }, {"expected an integer"}));
}

TEST(Json, ParseErrorsNameFileAndPosition) {
  qlip::test::ScratchDir dir;
  const std::string path = dir.file("bad.json");
  qlip::test::write_bytes(path, "{\n  \"a\": 1,\n  \"b\": [1, 2,\n}");
  EXPECT_TRUE(throws_error([&] { (void)qlip::read_json(path); }, {"bad.json", "invalid JSON at byte", "line 4"}));
  EXPECT_TRUE(throws_error([&] { (void)qlip::read_json(dir.file("missing.json")); }, {"missing.json", "cannot open"}));
  qlip::test::write_bytes(path, "");
  EXPECT_TRUE(throws_error([&] { (void)qlip::read_json(path); }, {"bad.json", "invalid JSON"}));
}

}  // namespace
