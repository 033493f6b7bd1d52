/// @file test_json.cpp
/// @brief read_json / json_get / json_get_or: values, and errors that name the file, the parse
///        position and the key path.
#include <gtest/gtest.h>

#include <chrono>
#include <iterator>

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

TEST(Json, NestingDeeperThan64IsAnErrorBeforeParsing) {
  const std::string ok = std::string(64, '[') + std::string(64, ']');
  EXPECT_NO_THROW((void)qlip::parse_json(ok, "ok.json"));
  EXPECT_TRUE(throws_error([&] { (void)qlip::parse_json("[" + ok + "]", "deep.json"); },
                           {"deep.json", "nesting deeper than 64 levels at byte 64"}));
  // 200 kB of '[' crashed every recursive operation on the parsed value; now it never gets built.
  EXPECT_TRUE(throws_error([&] { (void)qlip::parse_json(std::string(200000, '['), "huge.json"); }, {"huge.json", "nesting"}));
  EXPECT_TRUE(throws_error([&] { (void)qlip::parse_json("{\"a\":" + std::string(100, '{'), "obj.json"); }, {"nesting"}));
  // Brackets inside strings (escaped quotes included) are text, not nesting.
  const std::string in_string = "[\"" + std::string(1000, '[') + "\\\"" + std::string(1000, '{') + "\"]";
  EXPECT_EQ(qlip::parse_json(in_string, "s.json").size(), 1u);
}

TEST(Json, DuplicateKeysAreRejectedNamingKeyAndObject) {
  EXPECT_TRUE(throws_error([] { (void)qlip::parse_json(R"({"a": 1, "a": 2})", "d.json"); },
                           {"d.json", "duplicate key \"a\"", "top-level object"}));
  EXPECT_TRUE(throws_error([] { (void)qlip::parse_json(R"({"v": {"x": [{"k": 1, "k": 1}]}})", "d.json"); },
                           {"duplicate key \"k\"", "'v.x[]'"}));
  EXPECT_TRUE(throws_error([] { (void)qlip::parse_ordered_json(R"({"b": 0, "a": 1, "b": 2})", "o.json"); },
                           {"o.json", "duplicate key \"b\""}));
  // The same key in different objects, and keys that differ only after a NUL, are fine.
  EXPECT_NO_THROW((void)qlip::parse_json(R"({"a": {"a": 1}, "b": {"a": 2}, "a\u0000x": 3, "a\u0000y": 4})", "ok.json"));
  qlip::test::ScratchDir dir;
  qlip::test::write_bytes(dir.file("c.json"), R"({"hidden_size": 768, "hidden_size": 1024})");
  EXPECT_TRUE(throws_error([&] { (void)qlip::read_json(dir.file("c.json")); }, {"c.json", "duplicate key \"hidden_size\""}));
}

TEST(Json, ParseKeepsOrderWhenAskedAndMessagesAreBounded) {
  const auto o = qlip::parse_ordered_json(R"({"z": 1, "a": 2})", "o.json");
  EXPECT_EQ(o.begin().key(), "z");
  // Excerpts: at most 80 bytes plus "...", whatever the value.
  const auto big = qlip::parse_json("[\"" + std::string(100000, 'x') + "\", 1]", "b.json");
  const std::string e = qlip::json_excerpt(big);
  EXPECT_EQ(e.size(), qlip::kJsonExcerptBytes + 3);
  EXPECT_EQ(e.substr(0, 3), "[\"x");
  EXPECT_EQ(qlip::json_excerpt(qlip::parse_json(R"({"a":[1,2]})", "s")), R"({"a":[1,2]})");
  EXPECT_EQ(qlip::json_excerpt(qlip::parse_json("\"\u00e9\u00e9\"", "s"), 2), "\"...");  // no split UTF-8 sequence
  // A getter's type error prints an excerpt, not a dump.
  EXPECT_TRUE(throws_error([&] { (void)qlip::json_get<int>(qlip::parse_json("{\"k\": [\"" + std::string(5000, 'y') + "\"]}", "s"), "k"); },
                           {"'k'", "...", "expected an integer"}));
  try {
    (void)qlip::json_get<int>(qlip::parse_json("{\"k\": [\"" + std::string(5000, 'y') + "\"]}", "s"), "k");
  } catch (const qlip::Error& err) {
    EXPECT_LT(std::string(err.what()).size(), 300u);
  }
  // nlohmann's own message quotes the last token read; it is cut too.
  try {
    (void)qlip::parse_json("[\"" + std::string(100000, 'q'), "t.json");
    ADD_FAILURE() << "did not throw";
  } catch (const qlip::Error& err) {
    EXPECT_LT(std::string(err.what()).size(), 400u);
    EXPECT_NE(std::string(err.what()).find("t.json: invalid JSON at byte"), std::string::npos) << err.what();
  }
}

// nlohmann's parser callback rescans the parent object at every object_end and ordered_json's
// operator[] is a linear search: both quadratic in the number of keys. A safetensors header of 50k
// tensors took over a minute; it must take well under a second (a few under sanitizers).
TEST(Json, ParsingIsLinearInTheNumberOfKeys) {
  std::string text = "{";
  for (int i = 0; i < 50000; ++i)
    text += (i ? "," : "") + std::string("\"layers.") + std::to_string(i) + ".w\":{\"shape\":[0],\"data_offsets\":[0,0]}";
  text += "}";
  const auto t0 = std::chrono::steady_clock::now();
  const auto o = qlip::parse_ordered_json(text, "big.json");
  const auto j = qlip::parse_json(text, "big.json");
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(o.size(), 50000u);
  EXPECT_EQ(j.size(), 50000u);
  EXPECT_EQ(o.begin().key(), "layers.0.w");  // file order kept
  EXPECT_EQ(std::prev(o.end()).key(), "layers.49999.w");
  EXPECT_LT(s, 5.0) << "parsing 50k keys took " << s << " s";
}

}  // namespace
