/// @file test_external_parity.cpp
/// @brief Optional: the same parity checks on any checkpoint folder that holds a fixtures.safetensors
///        written by `tools/qlip_reference.py dump` (e.g. a random-weight qlip-b-16-256 made with
///        `make-checkpoint`, too big to commit). Set QLIP_PARITY_DIR=<folder>; skipped otherwise.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/compare.hpp"
#include "model/deviation.hpp"
#include "qlip/io/safetensors.hpp"
#include "qlip/model/qlip_model.hpp"

namespace {

using qlip::test::kF32Model;

template <class E, int R>
qlip::Tensor<E, R> ints(const qlip::SafetensorsFile& f, const std::string& name) {
  const auto& info = f.info(name);
  qlip::Extents<R> shape{};
  for (int d = 0; d < R; ++d) shape[d] = info.shape[static_cast<std::size_t>(d)];
  qlip::Tensor<E, R> out(shape);
  const auto bytes = f.bytes(name);
  for (std::int64_t i = 0; i < out.numel(); ++i) {
    if (info.dtype == qlip::DType::i64) {
      std::int64_t v;
      std::memcpy(&v, bytes.data() + 8 * i, 8);
      out.data()[i] = static_cast<E>(v);
    } else {
      out.data()[i] = static_cast<E>(static_cast<std::uint8_t>(bytes[static_cast<std::size_t>(i)]));
    }
  }
  return out;
}

template <class A, class B, int R>
void expect_close(const std::string& what, const qlip::HostView<A, R>& got, const qlip::HostView<B, R>& ref) {
  qlip::test::print_deviation(what, got, ref);
  EXPECT_TRUE(qlip::test::all_close(got, ref, kF32Model)) << what;
}

using qlip::test::as_const_view;

TEST(ExternalParity, FolderMatchesItsFixtures) {
  const char* dir = std::getenv("QLIP_PARITY_DIR");
  if (dir == nullptr || *dir == '\0') GTEST_SKIP() << "set QLIP_PARITY_DIR to a checkpoint folder with fixtures.safetensors";
  const auto fx = qlip::SafetensorsFile::open(std::string(dir) + "/fixtures.safetensors");
  qlip::with_qlip_model(dir, [&](auto& m) {
    using Model = std::remove_cvref_t<decltype(m)>;
    constexpr auto C = Model::kConfig;
    std::printf("[ info ] %s: %lld parameters\n", m.name(), static_cast<long long>(m.info().parameters));
    for (const auto& w : m.warnings()) ADD_FAILURE() << "warning: " << w;
    const auto pixels = fx.to_float<4>("pixels");
    const std::int64_t batch = pixels.size(0);
    qlip::ImageEncodeOptions io;
    for (int k = 0; k <= C.vision.stack.layers; ++k) io.hidden_states.push_back(k);
    io.group_sizes = {1, 2, 4, 7, 14, 28};
    qlip::Arena ws(m.encode_image_workspace_bytes(batch, io) + m.decode_workspace_bytes(batch, {{}, true}) +
                   m.encode_text_workspace_bytes(8, C.text.context_length, {}));
    const auto enc = m.encode_image(ws, pixels.view(), io);
    for (int k = 0; k <= C.vision.stack.layers; ++k)
      expect_close("vision.hidden_states." + std::to_string(k), as_const_view(enc.hidden_state(k)),
                   as_const_view(fx.to_float<3>("vision.hidden_states." + std::to_string(k))));
    expect_close("image_embeds", as_const_view(enc.image_embeds), as_const_view(fx.to_float<2>("image_embeds")));
    const auto u_ref = fx.to_float<3>("quant.u");
    expect_close("quant.u", as_const_view(enc.u), as_const_view(u_ref));
    const auto bits_ref = ints<std::uint8_t, 3>(fx, "quant.bits");
    std::int64_t near = 0, bad = 0;
    for (std::int64_t i = 0; i < bits_ref.numel(); ++i) {
      const bool nz = std::fabs(u_ref.data()[i]) < 1e-6f;
      near += nz;
      bad += (!nz && bits_ref.data()[i] != enc.bits.data()[i]);
    }
    std::printf("[ info ] |u| < 1e-6: %lld of %lld; bit mismatches elsewhere: %lld\n", static_cast<long long>(near),
                static_cast<long long>(bits_ref.numel()), static_cast<long long>(bad));
    EXPECT_EQ(bad, 0);
    if (near == 0) {
      const auto idx = ints<std::uint32_t, 2>(fx, "quant.indices");
      EXPECT_EQ(std::memcmp(idx.data(), enc.indices.data(), static_cast<std::size_t>(idx.numel()) * 4), 0);
      for (int g : io.group_sizes) {
        const auto ref = ints<std::uint32_t, 3>(fx, "quant.group_indices.g" + std::to_string(g));
        EXPECT_EQ(std::memcmp(ref.data(), enc.groups(g).data(), static_cast<std::size_t>(ref.numel()) * 4), 0) << g;
      }
    }
    qlip::DecodeOptions dopt;
    dopt.keep_zhat = true;
    for (int k = 0; k <= C.decoder.stack.layers; ++k) dopt.hidden_states.push_back(k);
    qlip::Arena dws(m.decode_workspace_bytes(batch, dopt));
    const auto dec = m.decode(dws, bits_ref.view(), dopt);
    expect_close("quant.zhat", as_const_view(dec.zhat), as_const_view(fx.to_float<3>("quant.zhat")));
    for (int k = 0; k <= C.decoder.stack.layers; ++k)
      expect_close("decoder.hidden_states." + std::to_string(k), as_const_view(dec.hidden_state(k)),
                   as_const_view(fx.to_float<3>("decoder.hidden_states." + std::to_string(k))));
    expect_close("decoder.recon", as_const_view(dec.pixels), as_const_view(fx.to_float<4>("decoder.recon")));
    const auto ids = ints<std::int32_t, 2>(fx, "text.input_ids");
    const auto txt = m.encode_text(ws, ids.view());
    expect_close("text_embeds", as_const_view(txt.text_embeds), as_const_view(fx.to_float<2>("text_embeds")));
    const auto probs = qlip::zero_shot_probs(enc.image_embeds, txt.text_embeds);
    expect_close("probs", as_const_view(probs), as_const_view(fx.to_float<2>("probs")));
  });
}

}  // namespace
