/// @file test_config_forms.cpp
/// @brief config.json in the form `save_pretrained` writes it (only fields that differ from the
///        official config classes' defaults) loads exactly like the full form: same structure, same
///        run-time values, bit-identical outputs. The committed `<config>-diff` folders hold the diff
///        form beside the same weights (tools/make_qlip_fixtures.py); QLIP_DIFF_TWIN="FULL:DIFF" runs
///        the same comparison on a pair of full-size folders made by tools/qlip_reference.py.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "configs/small_qlip_configs.hpp"
#include "model/fixtures.hpp"
#include "qlip/core/philox.hpp"
#include "qlip/model/qlip_model.hpp"

namespace {

using qlip::test::qlip_fixture_dir;

/// True when two views hold the same bytes.
template <class T, int R>
bool same_bytes(const qlip::HostView<T, R>& a, const qlip::HostView<T, R>& b) {
  return a.shape() == b.shape() && a.is_contiguous() && b.is_contiguous() &&
         std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.numel()) * sizeof(T)) == 0;
}

/// Pixels in the CLIP-normalised range, from a fixed Philox stream.
qlip::Tensor<float, 4> random_pixels(std::int64_t batch, int size) {
  qlip::Tensor<float, 4> p({batch, 3, size, size});
  const qlip::Philox rng(7);
  for (std::int64_t i = 0; i < p.numel(); ++i) p.data()[i] = 2.0f * rng.uniform(static_cast<std::uint64_t>(i)) - 1.0f;
  return p;
}

/// Loads both folders as Tag and requires identical structure, run-time values and outputs.
template <class Tag>
void expect_identical_twins(const std::string& full_dir, const std::string& diff_dir) {
  const qlip::Checkpoint full_ck = qlip::open_checkpoint(full_dir);
  const qlip::Checkpoint diff_ck = qlip::open_checkpoint(diff_dir);
  EXPECT_TRUE(full_ck.structure == diff_ck.structure);
  const auto& a = full_ck.runtime;
  const auto& b = diff_ck.runtime;
  for (auto [x, y] : {std::pair{a.vision, b.vision}, std::pair{a.decoder, b.decoder}, std::pair{a.text, b.text}}) {
    EXPECT_EQ(x.layer_norm_eps, y.layer_norm_eps);
    EXPECT_EQ(x.act, y.act);
    EXPECT_EQ(x.rope, y.rope);
  }
  EXPECT_EQ(a.group_size, b.group_size);
  EXPECT_EQ(a.quantizer_l2_norm, b.quantizer_l2_norm);
  EXPECT_EQ(a.code_scale_l2, b.code_scale_l2);
  EXPECT_EQ(a.eos_token_id, b.eos_token_id);
  EXPECT_EQ(a.logit_scale, b.logit_scale);
  EXPECT_FALSE(diff_ck.defaulted_fields.empty()) << "the diff form should leave fields to the defaults";

  using Model = qlip::QlipModel<Tag>;
  const Model full = Model::from_checkpoint(full_ck);
  const Model diff = Model::from_checkpoint(diff_ck);
  const auto pixels = random_pixels(2, Model::image_size());
  qlip::Arena ws_a(full.workspace_bytes(2)), ws_b(diff.workspace_bytes(2));
  const auto ea = full.encode_image(ws_a, pixels.view());
  const auto eb = diff.encode_image(ws_b, pixels.view());
  EXPECT_TRUE(same_bytes(ea.image_embeds, eb.image_embeds));
  EXPECT_TRUE(same_bytes(ea.u, eb.u));
  EXPECT_TRUE(same_bytes(ea.bits, eb.bits));
  EXPECT_TRUE(same_bytes(ea.indices, eb.indices));
  const auto ra = full.decode(ws_a, ea.indices);
  const auto rb = diff.decode(ws_b, eb.indices);
  EXPECT_TRUE(same_bytes(ra.pixels, rb.pixels));

  qlip::Tensor<std::int32_t, 2> ids({1, Model::context_length()});  // SOT "a" "photo" EOT, zero padding
  for (std::int64_t i = 0; i < ids.numel(); ++i) ids.data()[i] = 0;
  const std::int32_t tokens[] = {49406, 320, 1125, 49407};
  for (int i = 0; i < 4; ++i) ids(0, i) = tokens[i];
  qlip::Arena ts_a(Model::encode_text_workspace_bytes(1, Model::context_length()));
  qlip::Arena ts_b(Model::encode_text_workspace_bytes(1, Model::context_length()));
  EXPECT_TRUE(same_bytes(full.encode_text(ts_a, ids.view()).text_embeds, diff.encode_text(ts_b, ids.view()).text_embeds));
}

TEST(ConfigForms, DiffFormOfTinyLoadsIdentically) {
  expect_identical_twins<qlip::QlipTestTiny>(qlip_fixture_dir("qlip-test-tiny"), qlip_fixture_dir("qlip-test-tiny-diff"));
}

TEST(ConfigForms, DiffFormOfPlainLoadsIdentically) {
  expect_identical_twins<qlip::QlipTestPlain>(qlip_fixture_dir("qlip-test-plain"),
                                              qlip_fixture_dir("qlip-test-plain-diff"));
}

TEST(ConfigForms, FullFormAssumesNothing) {
  for (const char* name : {"qlip-test-tiny", "qlip-test-plain"}) {
    const auto ck = qlip::open_checkpoint(qlip_fixture_dir(name));
    for (const auto& f : ck.defaulted_fields) ADD_FAILURE() << name << ": defaulted " << f;
  }
}

TEST(ConfigForms, DiffFormListsWhatItAssumed) {
  const auto ck = qlip::open_checkpoint(qlip_fixture_dir("qlip-test-tiny-diff"));
  auto has = [&](const std::string& f) {
    for (const auto& d : ck.defaulted_fields)
      if (d == f) return true;
    return false;
  };
  EXPECT_TRUE(has("text_config.layer_norm_eps = 1e-05"));
  EXPECT_TRUE(has("text_config.hidden_act = \"gelu\""));
  EXPECT_TRUE(has("text_config.eos_token_id = 49407"));
  EXPECT_TRUE(has("decoder_config.hidden_act = \"gelu\""));
  EXPECT_TRUE(has("logit_scale_init_value = 2.6592"));
}

/// QLIP_DIFF_TWIN="/tmp/qlip-b16:/tmp/qlip-b16-diff": the same checkpoint written by
/// `tools/qlip_reference.py make-checkpoint --config qlip-b-16-256` with --config-form full / diff.
TEST(ConfigForms, ExternalFullSizeTwin) {
  const char* env = std::getenv("QLIP_DIFF_TWIN");
  if (env == nullptr || env[0] == '\0') GTEST_SKIP() << "set QLIP_DIFF_TWIN=FULL_DIR:DIFF_DIR";
  const std::string spec = env;
  const auto colon = spec.find(':');
  ASSERT_NE(colon, std::string::npos) << "QLIP_DIFF_TWIN must be FULL_DIR:DIFF_DIR";
  const std::string full = spec.substr(0, colon), diff = spec.substr(colon + 1);
  const std::string name = qlip::detect_qlip_config(diff);
  qlip::dispatch_type(
      qlip::ReleasedQlipConfigs{}, "QLIP config", [&](auto tag) { return name == decltype(tag)::type::name; },
      [&](auto tag) { expect_identical_twins<typename decltype(tag)::type>(full, diff); });
}

}  // namespace
