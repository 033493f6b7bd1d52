/// @file test_checkpoint_errors.cpp
/// @brief Broken checkpoint folders (built in a temp dir from the committed qlip-test-tiny fixture):
///        each failure must be a qlip::Error that names what is wrong; unknown tensors are warnings.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/compare.hpp"
#include "model/fixtures.hpp"
#include "qlip/io/safetensors.hpp"
#include "configs/small_qlip_configs.hpp"
#include "qlip/model/qlip_model.hpp"

namespace {

namespace fs = std::filesystem;
using qlip::test::qlip_fixture_dir;

/// A copy of a fixture checkpoint folder whose tensors and config.json can be edited.
class BrokenFolder {
 public:
  struct Entry {
    std::string name;
    qlip::DType dtype;
    std::vector<std::int64_t> shape;
    std::vector<std::byte> bytes;
  };

  explicit BrokenFolder(const std::string& config = "qlip-test-tiny") {
    static int counter = 0;
    dir_ = fs::temp_directory_path() /
           ("qlip_broken_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(dir_);
    const std::string src = qlip_fixture_dir(config);
    std::ifstream in(src + "/config.json");
    config_ = nlohmann::json::parse(in);
    const auto file = qlip::SafetensorsFile::open(src + "/model.safetensors");
    for (const auto& t : file.tensors()) {
      const auto b = file.bytes(t.name);
      entries_.push_back({t.name, t.dtype, t.shape, std::vector<std::byte>(b.begin(), b.end())});
    }
  }
  ~BrokenFolder() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  nlohmann::json& config() { return config_; }
  std::vector<Entry>& entries() { return entries_; }
  Entry& entry(const std::string& name) {
    for (auto& e : entries_)
      if (e.name == name) return e;
    throw std::runtime_error("test bug: no tensor " + name);
  }
  void remove(const std::string& name) {
    std::erase_if(entries_, [&](const Entry& e) { return e.name == name; });
  }
  void rename(const std::string& from, const std::string& to) { entry(from).name = to; }

  /// Writes config.json and model.safetensors; returns the folder.
  std::string write() {
    std::ofstream(dir_ / "config.json") << config_.dump(2);
    std::vector<qlip::SafetensorsEntry> es;
    for (const auto& e : entries_) es.push_back({e.name, e.dtype, e.shape, e.bytes.data()});
    qlip::write_safetensors((dir_ / "model.safetensors").string(), es, {{"format", "pt"}});
    return dir_.string();
  }
  std::string path(const std::string& file) const { return (dir_ / file).string(); }

 private:
  fs::path dir_;
  nlohmann::json config_;
  std::vector<Entry> entries_;
};

/// Runs f, expects a qlip::Error whose message contains every one of `needles`.
void expect_error(const std::function<void()>& f, const std::vector<std::string>& needles) {
  try {
    f();
    ADD_FAILURE() << "expected a qlip::Error";
  } catch (const qlip::Error& e) {
    const std::string msg = e.what();
    for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
  }
}

using Tiny = qlip::QlipModel<qlip::QlipTestTiny>;

TEST(CheckpointErrors, UnmodifiedCopyLoads) {
  BrokenFolder f;
  const auto m = Tiny::load(f.write());
  EXPECT_TRUE(m.warnings().empty());
}

TEST(CheckpointErrors, MissingLayerTensorNamesTensorAndFile) {
  BrokenFolder f;
  f.remove("vision_model.encoder.layers.1.mlp.w3.weight");
  const std::string dir = f.write();
  expect_error([&] { Tiny::load(dir); }, {"vision_model.encoder.layers.1.mlp.w3.weight", "model.safetensors", "missing"});
  expect_error([&] { qlip::with_qlip_model<qlip::ExampleQlipConfigs>(dir, [](auto&) {}); }, {"vision_model.encoder.layers.1.mlp.w3.weight"});
}

TEST(CheckpointErrors, MissingDetectionTensorNamesTensorAndFile) {
  BrokenFolder f;
  f.remove("visual_projection.weight");
  const std::string dir = f.write();
  expect_error([&] { Tiny::load(dir); }, {"visual_projection.weight", "model.safetensors", "missing"});
}

TEST(CheckpointErrors, ExtraTensorIsAWarningAndLoadSucceeds) {
  BrokenFolder f;
  f.entries().push_back({"vision_model.some_new_buffer", qlip::DType::f32, {2}, std::vector<std::byte>(8)});
  const std::string dir = f.write();
  const auto m = Tiny::load(dir);
  ASSERT_EQ(m.warnings().size(), 1u);
  EXPECT_NE(m.warnings()[0].find("vision_model.some_new_buffer"), std::string::npos) << m.warnings()[0];
}

TEST(CheckpointErrors, WrongShapeNamesTensorExpectedAndActual) {
  BrokenFolder f;
  auto& e = f.entry("text_model.encoder.layers.0.mlp.fc2.bias");  // [32]
  e.shape = {31};
  e.bytes.resize(31 * qlip::dtype_size(e.dtype));
  const std::string dir = f.write();
  expect_error([&] { Tiny::load(dir); }, {"text_model.encoder.layers.0.mlp.fc2.bias", "[31]", "[32]"});
}

TEST(CheckpointErrors, WrongDtypeIsAnError) {
  BrokenFolder f;
  auto& e = f.entry("vision_model.post_layernorm.bias");  // [64] f32 → i32 (same byte count)
  e.dtype = qlip::DType::i32;
  const std::string dir = f.write();
  expect_error([&] { Tiny::load(dir); }, {"vision_model.post_layernorm.bias", "I32"});
}

TEST(CheckpointErrors, ConfigHiddenSizeContradictingWeightsNamesField) {
  BrokenFolder f;
  f.config()["vision_config"]["hidden_size"] = 48;
  const std::string dir = f.write();
  expect_error([&] { Tiny::load(dir); }, {"vision_config.hidden_size", "48", "64", "config.json"});
}

TEST(CheckpointErrors, ConfigKBiasContradictingWeightsNamesField) {
  BrokenFolder f;
  f.config()["vision_config"]["k_bias"] = true;  // the weights have no k_proj.bias
  const std::string dir = f.write();
  expect_error([&] { Tiny::load(dir); }, {"vision_config.k_bias", "k_proj.bias"});
}

TEST(CheckpointErrors, ConfigProjectionBiasContradictingWeightsNamesField) {
  BrokenFolder f;
  f.config()["text_projection_bias"] = true;
  const std::string dir = f.write();
  expect_error([&] { Tiny::load(dir); }, {"text_projection_bias"});
}

TEST(CheckpointErrors, UnsupportedActivationNamesField) {
  BrokenFolder f;
  f.config()["text_config"]["hidden_act"] = "relu6";
  const std::string dir = f.write();
  expect_error([&] { Tiny::load(dir); }, {"text_config.hidden_act", "relu6"});
}

// ---- config.json fields absent: the official class defaults (save_pretrained's diff form) ----

bool lists(const qlip::Checkpoint& ck, const std::string& field) {
  for (const auto& d : ck.defaulted_fields)
    if (d == field) return true;
  return false;
}

TEST(CheckpointDefaults, AbsentHeadsTakeTheClassDefault) {
  BrokenFolder f;
  f.config()["text_config"].erase("num_attention_heads");  // QLIPTextConfig default: 8 (32 / 8 = 4)
  f.config()["vision_config"].erase("num_attention_heads");  // QLIPVisionConfig default: 12 ∤ 64
  const std::string dir = f.write();
  expect_error([&] { qlip::open_checkpoint(dir); },
               {"config.json", "vision_config.num_attention_heads", "12", "does not divide", "64"});
  f.config()["vision_config"]["num_attention_heads"] = 4;
  const auto ck = qlip::open_checkpoint(f.write());
  EXPECT_EQ(ck.structure.text.stack.heads, 8);
  EXPECT_TRUE(lists(ck, "text_config.num_attention_heads = 8"));
  // Not the tiny config any more (2 text heads): the mismatch names the field.
  expect_error([&] { Tiny::load(dir); }, {"not a qlip-test-tiny checkpoint", "text_config.num_attention_heads"});
}

TEST(CheckpointDefaults, AbsentStructuralFieldsAreTakenFromTheWeights) {
  BrokenFolder f;
  for (const char* k : {"hidden_size", "intermediate_size", "num_hidden_layers", "image_size", "patch_size",
                        "k_bias", "subln", "swiglu"})
    f.config()["vision_config"].erase(k);
  const auto m = Tiny::load(f.write());  // the weights decide these, whatever the class defaults say
  EXPECT_EQ(m.info().structure, qlip::QlipTestTiny::config);
}

TEST(CheckpointDefaults, MissingSectionMeansAllDefaults) {
  BrokenFolder f;
  f.config().erase("text_config");
  const auto ck = qlip::open_checkpoint(f.write());
  EXPECT_EQ(ck.structure.text.stack.heads, 8);
  EXPECT_EQ(ck.runtime.eos_token_id, 49407);
  EXPECT_TRUE(lists(ck, "text_config.layer_norm_eps = 1e-05"));
}

TEST(CheckpointDefaults, AbsentQuantizerTypeSaysTheDefaultApplied) {
  BrokenFolder f;
  f.config()["vision_config"].erase("quantizer");
  const std::string dir = f.write();
  expect_error([&] { qlip::open_checkpoint(dir); }, {"vision_config.quantizer", "\"none\"", "class default"});
}

// ---- config.json values of the wrong type or out of range: one line naming file and field ----

struct BadValue {
  const char* section;  ///< "" = top level; "vision_config.quantizer_cfg" = nested
  const char* key;
  nlohmann::json value;
  std::vector<std::string> needles;
};

class CheckpointBadValue : public ::testing::TestWithParam<BadValue> {};

TEST_P(CheckpointBadValue, IsAnErrorNamingFileAndField) {
  const BadValue& b = GetParam();
  BrokenFolder f;
  nlohmann::json* node = &f.config();
  std::string s = b.section;
  while (!s.empty()) {
    const auto dot = s.find('.');
    node = &(*node)[s.substr(0, dot)];
    s = dot == std::string::npos ? "" : s.substr(dot + 1);
  }
  (*node)[b.key] = b.value;
  const std::string dir = f.write();
  std::vector<std::string> needles = b.needles;
  needles.push_back("config.json");
  expect_error([&] { qlip::open_checkpoint(dir); }, needles);
}

INSTANTIATE_TEST_SUITE_P(
    TypesAndRanges, CheckpointBadValue,
    ::testing::Values(
        BadValue{"vision_config", "num_attention_heads", "4", {"vision_config.num_attention_heads", "string"}},
        BadValue{"vision_config", "num_attention_heads", 4.9, {"vision_config.num_attention_heads", "not an integer"}},
        BadValue{"vision_config", "num_attention_heads", 1e19, {"vision_config.num_attention_heads"}},
        BadValue{"vision_config", "num_attention_heads", 4294967300LL, {"vision_config.num_attention_heads", "range"}},
        BadValue{"vision_config", "num_attention_heads", true, {"vision_config.num_attention_heads", "boolean"}},
        BadValue{"vision_config", "num_attention_heads", nlohmann::json::array(), {"num_attention_heads", "array"}},
        BadValue{"vision_config", "hidden_size", 4294967360LL, {"vision_config.hidden_size", "= 4294967360", "contradicts"}},
        BadValue{"vision_config", "hidden_size", 9.3e18, {"vision_config.hidden_size", "range"}},
        BadValue{"vision_config", "hidden_size", 9.223372036854775807e18, {"vision_config.hidden_size", "range"}},
        BadValue{"vision_config", "num_hidden_layers", -1e300, {"vision_config.num_hidden_layers", "range"}},
        BadValue{"vision_config", "layer_norm_eps", -1, {"vision_config.layer_norm_eps", "range"}},
        BadValue{"decoder_config", "layer_norm_eps", "1e-6", {"decoder_config.layer_norm_eps", "string"}},
        BadValue{"text_config", "eos_token_id", -1, {"text_config.eos_token_id", "range"}},
        BadValue{"text_config", "eos_token_id", 49408, {"text_config.eos_token_id", "range"}},
        BadValue{"vision_config.quantizer_cfg", "group_size", -2, {"quantizer_cfg.group_size", "range"}},
        BadValue{"vision_config.quantizer_cfg", "group_size", 5, {"quantizer_cfg.group_size", "divide"}},
        BadValue{"vision_config.quantizer_cfg", "embed_dim", 27, {"quantizer_cfg.embed_dim", "contradicts"}},
        BadValue{"vision_config.quantizer_cfg", "l2_norm", 1, {"quantizer_cfg.l2_norm", "true or false"}},
        BadValue{"vision_config", "quantizer_cfg", nlohmann::json::array(), {"vision_config.quantizer_cfg", "object"}},
        BadValue{"vision_config", "rope", "yes", {"vision_config.rope", "true or false"}},
        BadValue{"text_config", "hidden_act", 3, {"text_config.hidden_act", "string"}},
        BadValue{"", "logit_scale_init_value", "2.6", {"logit_scale_init_value", "number"}},
        BadValue{"", "text_config", 5, {"text_config", "object"}}),
    [](const ::testing::TestParamInfo<BadValue>& info) {  // e.g. "6_hidden_size"
      return std::to_string(info.index) + "_" + info.param.key;
    });

TEST(CheckpointBadValue, TopLevelMustBeAnObject) {
  BrokenFolder f;
  f.config() = nlohmann::json::array({1, 2});
  const std::string dir = f.write();
  expect_error([&] { qlip::open_checkpoint(dir); }, {"config.json", "object"});
}

TEST(CheckpointBadValue, IntegralFloatIsAccepted) {
  BrokenFolder f;
  f.config()["vision_config"]["num_attention_heads"] = 4.0;  // some writers emit 4.0
  EXPECT_NO_THROW(Tiny::load(f.write()));
}

TEST(CheckpointErrors, TruncatedSafetensorsIsAnErrorNamingTheFile) {
  BrokenFolder f;
  const std::string dir = f.write();
  const std::string path = f.path("model.safetensors");
  fs::resize_file(path, fs::file_size(path) / 2);
  expect_error([&] { Tiny::load(dir); }, {"model.safetensors"});
  fs::resize_file(path, 5);  // not even the 8-byte header length
  expect_error([&] { Tiny::load(dir); }, {"model.safetensors"});
}

TEST(CheckpointErrors, MissingFilesAreErrors) {
  expect_error([&] { Tiny::load("/nonexistent/qlip"); }, {"/nonexistent/qlip"});
  BrokenFolder f;
  const std::string dir = f.write();
  fs::remove(f.path("config.json"));
  expect_error([&] { Tiny::load(dir); }, {"config.json"});
}

TEST(CheckpointErrors, UnknownConfigListsSupportedConfigs) {
  BrokenFolder f;
  f.config()["text_config"]["num_attention_heads"] = 4;  // consistent (32/4), but no compiled config has it
  const std::string dir = f.write();
  expect_error([&] { qlip::with_qlip_model<qlip::ExampleQlipConfigs>(dir, [](auto&) {}); },
               {"no compiled QLIP config", "text_config.num_attention_heads", "supported configs", "qlip-test-tiny",
                "qlip-test-plain", "qlip-b-16-256", "qlip-b-8-256", "qlip-l-14-392"});
  expect_error([&] { qlip::detect_qlip_config<qlip::ExampleQlipConfigs>(dir); }, {"supported configs"});
  expect_error([&] { Tiny::load(dir); }, {"not a qlip-test-tiny checkpoint", "text_config.num_attention_heads"});
}

TEST(CheckpointErrors, OtherCompiledConfigIsRejectedByName) {
  expect_error([&] { Tiny::load(qlip_fixture_dir("qlip-test-plain")); },
               {"not a qlip-test-tiny checkpoint", "vision_config.hidden_size"});
}

TEST(CheckpointRope, AliasedBufferKeyIsAccepted) {
  BrokenFolder f;
  f.rename("vision_model.rope.freqs_cos", "vision_model.encoder.layers.0.self_attn.rope.freqs_cos");
  f.rename("vision_model.rope.freqs_sin", "vision_model.encoder.layers.0.self_attn.rope.freqs_sin");
  const auto m = Tiny::load(f.write());
  EXPECT_TRUE(m.warnings().empty()) << m.warnings().front();
  EXPECT_EQ(m.info().vision_rope, qlip::nn::RopeSource::checkpoint);
}

TEST(CheckpointRope, MissingBuffersAreRecomputedAndStillMatchTheReference) {
  BrokenFolder f;
  for (const char* n : {"vision_model.rope.freqs_cos", "vision_model.rope.freqs_sin", "vision_decoder.rope.freqs_cos",
                        "vision_decoder.rope.freqs_sin"})
    f.remove(n);
  const auto m = Tiny::load(f.write());
  EXPECT_EQ(m.info().vision_rope, qlip::nn::RopeSource::computed);
  EXPECT_EQ(m.info().decoder_rope, qlip::nn::RopeSource::computed);
  qlip::test::Fixtures fx("qlip-test-tiny");
  const auto pixels = fx.f32<4>("pixels");
  qlip::Arena ws(m.encode_image_workspace_bytes(pixels.size(0)));
  const auto enc = m.encode_image(ws, pixels.view());
  const auto ref = fx.f32<2>("image_embeds");
  EXPECT_TRUE(qlip::test::all_close(qlip::HostView<const float, 2>(enc.image_embeds), ref.view(),
                                    qlip::test::kF32Model));
}

TEST(CheckpointRope, WrongShapeBufferIsRecomputedWithAWarning) {
  BrokenFolder f;
  auto& c = f.entry("vision_model.rope.freqs_cos");
  c.shape = {c.shape[0] / 2, c.shape[1] * 2};
  const auto m = Tiny::load(f.write());
  ASSERT_FALSE(m.warnings().empty());
  EXPECT_NE(m.warnings()[0].find("recomputing"), std::string::npos) << m.warnings()[0];
  EXPECT_EQ(m.info().vision_rope, qlip::nn::RopeSource::computed);
}

}  // namespace
