/// @file test_qlip_parity.cpp
/// @brief QlipModel on CPU against the PyTorch reference fixtures of both small configs: every
///        hidden state of the three towers, the BSQ intermediates (u, bits, indices, group indices),
///        the reconstruction, text embeddings and zero-shot probabilities; decode paths agree exactly.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "common/compare.hpp"
#include "model/deviation.hpp"
#include "model/fixtures.hpp"
#include "configs/small_qlip_configs.hpp"
#include "qlip/model/qlip_model.hpp"

#if __has_include("qlip/text/clip_tokenizer.hpp")
#include "qlip/text/clip_tokenizer.hpp"
#define QLIP_HAVE_TOKENIZER 1
#endif

namespace {

using qlip::test::all_close;
using qlip::test::Fixtures;
using qlip::test::kExact;
using qlip::test::kF32Model;
using qlip::test::qlip_fixture_dir;

template <class T>
class QlipParity : public ::testing::Test {
 public:
  using Tag = T;
  using Model = qlip::QlipModel<T>;
  static inline Model* model = nullptr;
  static inline Fixtures* fx = nullptr;

  static void SetUpTestSuite() {
    model = new Model(Model::load(qlip_fixture_dir(T::name)));
    fx = new Fixtures(T::name);
  }
  static void TearDownTestSuite() {
    delete model;
    delete fx;
    model = nullptr;
    fx = nullptr;
  }
};

using Configs = ::testing::Types<qlip::QlipTestTiny, qlip::QlipTestPlain>;
TYPED_TEST_SUITE(QlipParity, Configs);

using qlip::test::as_const_view;

/// all_close with the largest deviation printed (what the report quotes).
template <class A, class B, int R>
void expect_close(const std::string& what, const qlip::HostView<A, R>& got, const qlip::HostView<B, R>& ref,
                  qlip::test::Tolerance tol) {
  qlip::test::print_deviation(what, got, ref);
  EXPECT_TRUE(all_close(got, ref, tol)) << what;
}

TYPED_TEST(QlipParity, LoadsWithoutWarnings) {
  auto& m = *this->model;
  for (const auto& w : m.warnings()) ADD_FAILURE() << "unexpected warning: " << w;
  EXPECT_STREQ(m.info().name.c_str(), TypeParam::name);
  EXPECT_GT(m.info().parameters, 0);
  // Learnable parameters + logit_scale + RoPE buffers = every element of the file.
  std::int64_t rope = 0;
  if (m.info().vision_rope == qlip::nn::RopeSource::checkpoint)
    rope += 2 * m.kPatches * TypeParam::config.vision.stack.head_dim();
  if (m.info().decoder_rope == qlip::nn::RopeSource::checkpoint)
    rope += 2 * m.kPatches * TypeParam::config.decoder.stack.head_dim();
  EXPECT_EQ(m.info().parameters + 1 + rope, m.info().file_elements);
}

TYPED_TEST(QlipParity, EncodeImageMatchesReference) {
  auto& m = *this->model;
  auto& fx = *this->fx;
  const auto pixels = fx.template f32<4>("pixels");
  const std::int64_t batch = pixels.size(0);
  const int layers = TypeParam::config.vision.stack.layers;
  qlip::ImageEncodeOptions opt;
  for (int k = 0; k <= layers; ++k) opt.hidden_states.push_back(k);
  opt.keep_pre_norm = true;
  opt.group_sizes = {1, 2, 4, 7, 14, 28};
  qlip::Arena ws(m.encode_image_workspace_bytes(batch, opt));
  const auto enc = m.encode_image(ws, pixels.view(), opt);

  for (int k = 0; k <= layers; ++k) {
    const auto ref = fx.template f32<3>("vision.hidden_states." + std::to_string(k));
    expect_close(std::string("vision.hidden_states.") + std::to_string(k), as_const_view(enc.hidden_state(k)), as_const_view(ref), kF32Model);
  }
  expect_close("enc.last_hidden_state", as_const_view(enc.last_hidden_state),
               as_const_view(fx.template f32<3>("vision.hidden_states." + std::to_string(layers))), kF32Model);
  expect_close("enc.cls", as_const_view(enc.cls), as_const_view(fx.template f32<2>("vision.cls_post_layernorm")), kF32Model);
  expect_close("enc.image_embeds", as_const_view(enc.image_embeds), as_const_view(fx.template f32<2>("image_embeds")), kF32Model);
  expect_close("enc.image_embeds_normalized", as_const_view(enc.image_embeds_normalized), as_const_view(fx.template f32<2>("image_embeds_normalized")), kF32Model);
  expect_close("enc.pre_norm", as_const_view(enc.pre_norm), as_const_view(fx.template f32<3>("quant.pre_norm")), kF32Model);
  const auto u_ref = fx.template f32<3>("quant.u");
  expect_close("enc.u", as_const_view(enc.u), as_const_view(u_ref), kF32Model);

  // Bits: identical except where |u| < 1e-6 (either side may round to the other sign there).
  const auto bits_ref = fx.template ints<std::uint8_t, 3>("quant.bits");
  std::int64_t near_zero = 0, mismatches = 0;
  std::vector<bool> token_near_zero(static_cast<std::size_t>(enc.indices.numel()), false);
  for (std::int64_t i = 0; i < bits_ref.numel(); ++i) {
    const bool nz = std::fabs(u_ref.data()[i]) < 1e-6f;
    near_zero += nz ? 1 : 0;
    if (nz) token_near_zero[static_cast<std::size_t>(i / m.kBits)] = true;
    if (!nz && enc.bits.data()[i] != bits_ref.data()[i]) ++mismatches;
  }
  EXPECT_EQ(mismatches, 0) << "bits differ away from u ≈ 0";
  ::testing::Test::RecordProperty("near_zero_u_components", static_cast<int>(near_zero));
  std::printf("[ %s ] |u| < 1e-6 components: %lld of %lld (fixture says %lld)\n", TypeParam::name,
              static_cast<long long>(near_zero), static_cast<long long>(bits_ref.numel()),
              static_cast<long long>(fx.template ints<std::int64_t, 1>("quant.count_abs_u_lt_1e-6").data()[0]));
  EXPECT_EQ(near_zero, enc.count_near_zero(1e-6f));  // u agrees to ~1e-6, so the counts agree here

  // Indices and group indices: exact on every token without a near-zero component.
  const auto idx_ref = fx.template ints<std::uint32_t, 2>("quant.indices");
  for (std::int64_t t = 0; t < idx_ref.numel(); ++t)
    if (!token_near_zero[static_cast<std::size_t>(t)]) {
      ASSERT_EQ(enc.indices.data()[t], idx_ref.data()[t]) << "token " << t;
    }
  for (int g : {1, 2, 4, 7, 14, 28}) {
    const auto ref = fx.template ints<std::uint32_t, 3>("quant.group_indices.g" + std::to_string(g));
    const auto got = enc.groups(g);
    ASSERT_EQ(got.shape(), ref.shape()) << "g = " << g;
    const std::int64_t per = ref.size(2);
    for (std::int64_t i = 0; i < ref.numel(); ++i)
      if (!token_near_zero[static_cast<std::size_t>(i / per)]) {
        ASSERT_EQ(got.data()[i], ref.data()[i]) << "g = " << g << " element " << i;
      }
  }
}

TYPED_TEST(QlipParity, DecodeMatchesReference) {
  auto& m = *this->model;
  auto& fx = *this->fx;
  // Decode the reference bits, so the decoder is checked even if a near-zero bit ever differs.
  const auto bits = fx.template ints<std::uint8_t, 3>("quant.bits");
  const std::int64_t batch = bits.size(0);
  const int layers = TypeParam::config.decoder.stack.layers;
  qlip::DecodeOptions opt;
  for (int k = 0; k <= layers; ++k) opt.hidden_states.push_back(k);
  opt.keep_zhat = true;
  qlip::Arena ws(m.decode_workspace_bytes(batch, opt));
  const auto dec = m.decode(ws, bits.view(), opt);
  expect_close("dec.zhat", as_const_view(dec.zhat), as_const_view(fx.template f32<3>("quant.zhat")), kF32Model);
  for (int k = 0; k <= layers; ++k) {
    const auto ref = fx.template f32<3>("decoder.hidden_states." + std::to_string(k));
    expect_close(std::string("decoder.hidden_states.") + std::to_string(k), as_const_view(dec.hidden_state(k)), as_const_view(ref), kF32Model);
  }
  expect_close("dec.pixels", as_const_view(dec.pixels), as_const_view(fx.template f32<4>("decoder.recon")), kF32Model);
}

TYPED_TEST(QlipParity, DecodePathsAgreeExactly) {
  auto& m = *this->model;
  auto& fx = *this->fx;
  const auto bits = fx.template ints<std::uint8_t, 3>("quant.bits");
  const auto idx = fx.template ints<std::uint32_t, 2>("quant.indices");
  const std::int64_t batch = bits.size(0);
  qlip::Arena ws(4 * m.decode_workspace_bytes(batch));
  const auto from_bits = m.decode(ws, bits.view());
  const auto from_idx = m.decode(ws, idx.view());
  const std::size_t bytes = static_cast<std::size_t>(from_bits.pixels.numel()) * sizeof(float);
  EXPECT_EQ(std::memcmp(from_bits.pixels.data(), from_idx.pixels.data(), bytes), 0) << "decode(bits) != decode(indices)";
  for (int g : {1, 2, 4, 7, 14, 28}) {
    qlip::ArenaScope scope(ws);
    const auto groups = fx.template ints<std::uint32_t, 3>("quant.group_indices.g" + std::to_string(g));
    const auto from_groups = m.decode(ws, groups.view(), g);
    EXPECT_EQ(std::memcmp(from_bits.pixels.data(), from_groups.pixels.data(), bytes), 0)
        << "decode(bits) != decode(group indices, g = " << g << ")";
  }
  // Codes path: the same ±1/√L values as the bits give.
  qlip::Tensor<float, 3> codes(bits.shape());
  const float s = static_cast<float>(1.0 / std::sqrt(static_cast<double>(m.kBits)));
  for (std::int64_t i = 0; i < codes.numel(); ++i) codes.data()[i] = bits.data()[i] ? s : -s;
  const auto from_codes = m.decode_codes(ws, codes.view());
  EXPECT_EQ(std::memcmp(from_bits.pixels.data(), from_codes.pixels.data(), bytes), 0);
  expect_close("codes", as_const_view(codes), as_const_view(fx.template f32<3>("quant.q")), kExact);
}

TYPED_TEST(QlipParity, EncodeTextMatchesReference) {
  auto& m = *this->model;
  auto& fx = *this->fx;
  const auto ids = fx.template ints<std::int32_t, 2>("text.input_ids");
  const std::int64_t batch = ids.size(0), tokens = ids.size(1);
  const int layers = TypeParam::config.text.stack.layers;
  qlip::TextEncodeOptions opt;
  for (int k = 0; k <= layers; ++k) opt.hidden_states.push_back(k);
  opt.keep_final = true;
  qlip::Arena ws(m.encode_text_workspace_bytes(batch, tokens, opt));
  const auto txt = m.encode_text(ws, ids.view(), opt);
  for (int k = 0; k <= layers; ++k) {
    const auto ref = fx.template f32<3>("text.hidden_states." + std::to_string(k));
    expect_close(std::string("text.hidden_states.") + std::to_string(k), as_const_view(txt.hidden_state(k)), as_const_view(ref), kF32Model);
  }
  expect_close("txt.final", as_const_view(txt.final), as_const_view(fx.template f32<3>("text.final")), kF32Model);
  expect_close("txt.pooled", as_const_view(txt.pooled), as_const_view(fx.template f32<2>("text.pooled")), kF32Model);
  expect_close("txt.text_embeds", as_const_view(txt.text_embeds), as_const_view(fx.template f32<2>("text_embeds")), kF32Model);
  expect_close("txt.text_embeds_normalized", as_const_view(txt.text_embeds_normalized), as_const_view(fx.template f32<2>("text_embeds_normalized")), kF32Model);
  const auto eot = fx.template ints<std::int64_t, 1>("text.eot_index");
  expect_close("txt.eot_index", as_const_view(txt.eot_index), as_const_view(eot), kExact);
}

TYPED_TEST(QlipParity, ZeroShotMatchesReference) {
  auto& m = *this->model;
  auto& fx = *this->fx;
  const auto pixels = fx.template f32<4>("pixels");
  const auto ids = fx.template ints<std::int32_t, 2>("text.input_ids");
  qlip::Arena ws(m.encode_image_workspace_bytes(pixels.size(0)) + m.encode_text_workspace_bytes(ids.size(0), ids.size(1)));
  const auto img = m.encode_image(ws, pixels.view());
  const auto txt = m.encode_text(ws, ids.view());
  const auto logits = qlip::similarity(img.image_embeds, txt.text_embeds);
  expect_close("logits", as_const_view(logits), as_const_view(fx.template f32<2>("logits_per_image")), kF32Model);
  const auto probs = qlip::zero_shot_probs(img.image_embeds, txt.text_embeds);
  expect_close("probs", as_const_view(probs), as_const_view(fx.template f32<2>("probs")), kF32Model);
  const float model_scale = std::exp(m.runtime().logit_scale);
  EXPECT_FLOAT_EQ(m.runtime().logit_scale, fx.template f32<1>("logit_scale").data()[0]);
  const auto logits_model = qlip::similarity(img.image_embeds, txt.text_embeds, model_scale);
  expect_close("logits_model", as_const_view(logits_model), as_const_view(fx.template f32<2>("logits_per_image_model_scale")), kF32Model);
}

TYPED_TEST(QlipParity, BatchOfOneEqualsBatchRow) {
  // Every op is row-independent: image 1 alone gives the same codes as inside the batch.
  auto& m = *this->model;
  auto& fx = *this->fx;
  const auto pixels = fx.template f32<4>("pixels");
  qlip::Arena ws(m.encode_image_workspace_bytes(pixels.size(0)) + m.encode_image_workspace_bytes(1));
  const auto all = m.encode_image(ws, pixels.view());
  const auto one = m.encode_image(ws, pixels.view().slice(0, 1, 2));
  for (std::int64_t t = 0; t < m.kPatches; ++t) EXPECT_EQ(one.indices(0, t), all.indices(1, t));
  EXPECT_TRUE(all_close(as_const_view(one.image_embeds.select(0, 0).template reshape<2>({1, m.kProjection})),
                        as_const_view(all.image_embeds.slice(0, 1, 2)), qlip::test::kF32Op));
}

#ifdef QLIP_HAVE_TOKENIZER
TYPED_TEST(QlipParity, TokenizerReproducesInputIds) {
  auto& fx = *this->fx;
  const auto ids = fx.template ints<std::int32_t, 2>("text.input_ids");
  const auto tok = qlip::text::ClipTokenizer::from_bpe_gz(std::string(QLIP_VOCAB_DIR) + "/bpe_simple_vocab_16e6.txt.gz");
  const std::vector<std::string> captions = {"a photo of a cat", "a diagram", "two dogs playing in the snow"};
  ASSERT_EQ(ids.size(0), static_cast<std::int64_t>(captions.size()));
  for (std::size_t i = 0; i < captions.size(); ++i) {
    const auto got = tok.tokenize(captions[i], 77);
    ASSERT_EQ(static_cast<std::int64_t>(got.size()), ids.size(1));
    for (std::int64_t t = 0; t < ids.size(1); ++t) {
      // open_clip pads with 0, HF with EOT: both give the same embedding (causal mask + first-EOT pooling).
      const std::int32_t ref = ids(static_cast<std::int64_t>(i), t);
      if (t > 0 && ref == 0) continue;
      EXPECT_EQ(got[static_cast<std::size_t>(t)], ref) << "caption " << i << " token " << t;
    }
  }
}
#endif

TEST(QlipDetect, PicksTheRightCompiledConfig) {
  for (const std::string name : {"qlip-test-tiny", "qlip-test-plain"}) {
    EXPECT_EQ(qlip::detect_qlip_config<qlip::SmallQlipConfigs>(qlip_fixture_dir(name)), name);
    std::string seen;
    qlip::with_qlip_model<qlip::SmallQlipConfigs>(qlip_fixture_dir(name), [&](auto& model) { seen = model.name(); });
    EXPECT_EQ(seen, name);
  }
}

TEST(QlipDetect, EnsembleOfIdenticalTemplatesIsTheNormalisedEmbedding) {
  qlip::Tensor<float, 2> t({4, 3});
  const float rows[4][3] = {{1, 0, 0}, {2, 0, 0}, {0, 3, 4}, {0, 6, 8}};
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 3; ++j) t(i, j) = rows[i][j];
  const auto e = qlip::ensemble_class_embeddings(t.view(), 2);
  ASSERT_EQ(e.size(0), 2);
  EXPECT_FLOAT_EQ(e(0, 0), 1.0f);
  EXPECT_FLOAT_EQ(e(1, 1), 0.6f);
  EXPECT_FLOAT_EQ(e(1, 2), 0.8f);
}

}  // namespace
