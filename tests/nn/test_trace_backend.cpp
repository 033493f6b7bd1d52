/// @file test_trace_backend.cpp
/// @brief Every nn/ module, and QlipTrainable, instantiated with the tracing backend
///        (trace/trace_backend.hpp), which computes nothing and counts each op's FLOPs and bytes.
///
/// Two things are checked. At compile time: this translation unit includes no CPU backend header,
/// no OpenMP and no Eigen (the #error below), so a module that called a CPU-only function, or an op
/// the vocabulary does not have, would not compile here. At run time: a forward (and for the
/// trainable modules a backward) on the small train-tiny config records exactly the linear-layer
/// FLOPs counted by hand from the config (2·M·N·K per product), and the expected number of
/// attention calls — so every module passes its backend context on to every op it runs.
#include <gtest/gtest.h>

#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "common/train_tiny.hpp"
#include "qlip/model/lpips_weights.hpp"
#include "qlip/model/qlip_trainable.hpp"
#include "qlip/nn/discriminator.hpp"
#include "qlip/nn/lpips.hpp"
#include "qlip/nn/block_stack.hpp"
#include "qlip/nn/bsq_bottleneck.hpp"
#include "qlip/nn/decoder_tower.hpp"
#include "qlip/nn/encoder_layer.hpp"
#include "qlip/nn/llama.hpp"
#include "qlip/nn/pixel_decoder.hpp"
#include "qlip/nn/quantizer.hpp"
#include "qlip/nn/text_encoder.hpp"
#include "qlip/nn/text_tower.hpp"
#include "qlip/nn/transformer_block.hpp"
#include "qlip/nn/vision_encoder.hpp"
#include "qlip/nn/vision_tower.hpp"
#include "qlip/trace/trace_backend.hpp"

#if defined(QLIP_CPU_BACKEND_HEADERS) || defined(_OMP_H) || defined(EIGEN_WORLD_VERSION)
#error "nn/ (or model/qlip_trainable.hpp) reached the CPU backend: modules may only compose ops"
#endif

namespace qlip {
namespace {

constexpr QlipConfig kC = TrainTinyQlip::config;
constexpr std::int64_t kBatch = 2, kTextTokens = 7;
constexpr std::int64_t kN = kC.vision.patches();
constexpr std::int64_t kP = kC.projection_dim;

// ---- the analytic counts (2 FLOPs per multiply-add of each linear layer) ----

std::int64_t linear_flops(std::int64_t rows, std::int64_t in, std::int64_t out) { return 2 * rows * in * out; }

/// One block on n rows: q, k, v, out_proj, the up projection(s) and the down projection.
std::int64_t block_flops(const StackConfig& s, std::int64_t n) {
  const std::int64_t d = s.hidden, i = s.intermediate, up = s.mlp == MlpKind::swiglu ? 2 * i : i;
  return 4 * linear_flops(n, d, d) + linear_flops(n, d, up) + linear_flops(n, i, d);
}
std::int64_t stack_flops(const StackConfig& s, std::int64_t n) { return s.layers * block_flops(s, n); }

std::int64_t patch_embed_flops() { return linear_flops(kBatch * kN, kC.vision.patch_dim(), kC.vision.stack.hidden); }
/// Patch embedding, the blocks on N+1 tokens, and the visual projection of the CLS rows.
std::int64_t vision_flops() {
  return patch_embed_flops() + stack_flops(kC.vision.stack, kBatch * (kN + 1)) +
         linear_flops(kBatch, kC.vision.stack.hidden, kP);
}
/// quant_embed (D→D→L) and quant_embed_post (L→Dq→Dq) on every patch token.
std::int64_t bottleneck_flops() {
  const std::int64_t m = kBatch * kN, d = kC.vision.stack.hidden, l = kC.quantizer.bits, dq = kC.quantizer.hidden_post_q;
  return linear_flops(m, d, d) + linear_flops(m, d, l) + linear_flops(m, l, dq) + linear_flops(m, dq, dq);
}
/// The blocks on N tokens and the head Linear(D→I) → tanh → Linear(I→C·p²).
std::int64_t decoder_flops() {
  const StackConfig& s = kC.decoder.stack;
  return stack_flops(s, kBatch * kN) + linear_flops(kBatch * kN, s.hidden, s.intermediate) +
         linear_flops(kBatch * kN, s.intermediate, kC.decoder.patch_dim());
}
/// The causal blocks and the text projection of the pooled rows.
std::int64_t text_flops() {
  return stack_flops(kC.text.stack, kBatch * kTextTokens) + linear_flops(kBatch, kC.text.stack.hidden, kP);
}

// ---- inputs ----

/// A checkpoint of zeros: the trace never reads a weight, the modules only need the shapes.
class ShapeOnlyWeights final : public nn::WeightSource {
 public:
  bool contains(const std::string&) const override { return true; }
  void read(const std::string&, std::span<const std::int64_t> shape, float* dst) override {
    std::int64_t n = 1;
    for (auto s : shape) n *= s;
    std::fill_n(dst, n, 0.0f);
  }
  std::vector<std::string> names() const override { return {}; }  // no stored RoPE tables: computed
  std::vector<std::int64_t> shape_of(const std::string& name) const override {
    QLIP_THROW("shape-only weights store no shape for '", name, "'");
  }
};

/// Token ids [B, T] with the end-of-text id last (the id the towers are given as eos).
constexpr std::int32_t kEos = kC.text.vocab_size - 1;
Tensor<std::int32_t, 2> text_ids() {
  Tensor<std::int32_t, 2> ids({kBatch, kTextTokens});
  for (std::int64_t b = 0; b < kBatch; ++b)
    for (std::int64_t t = 0; t < kTextTokens; ++t) ids(b, t) = t + 1 == kTextTokens ? kEos : static_cast<std::int32_t>(t + b);
  return ids;
}

QlipRuntimeConfig tiny_runtime() {
  QlipRuntimeConfig rt;
  rt.vision = {1e-6f, Activation::gelu, true};
  rt.decoder = {1e-6f, Activation::gelu, true};
  rt.text = {1e-5f, Activation::quick_gelu, false};
  rt.eos_token_id = kEos;
  return rt;
}

/// Value and gradient storage for every parameter of a trainable module (zeros: never read).
struct BoundParameters {
  std::vector<AlignedBuffer<float>> storage;

  template <class Module>
  explicit BoundParameters(Module& m) {
    m.visit_parameters([&](const std::string&, auto& p) { bind(p); });
  }
  template <class Module>
  BoundParameters(Module& m, const std::string& prefix) {
    m.visit_parameters([&](const std::string&, auto& p) { bind(p); }, prefix);
  }
  template <class P>
  void bind(P& p) {
    using V = std::remove_cvref_t<decltype(p.value)>;
    storage.emplace_back(p.numel());
    p.value = V(storage.back().data(), p.shape);
    storage.emplace_back(p.numel());
    p.grad = V(storage.back().data(), p.shape);
  }
};

// ---- inference modules ----

TEST(TraceBackend, EncoderLayerCountsItsLinearsAndOneAttention) {
  constexpr StackConfig s = kC.vision.stack;
  OpTrace trace;
  nn::EncoderLayer<s, trace_backend> layer(trace_backend{&trace});
  ShapeOnlyWeights src;
  layer.load(src, "l", 1e-6f);
  Tensor<float, 3> x({kBatch, kN, s.hidden});
  Arena ws(nn::EncoderLayer<s, trace_backend>::workspace_bytes(kBatch, kN) + kHostAlignment);
  layer.forward(ws, x.view(), nn::LayerArgs{});
  EXPECT_EQ(trace.cost("linear").flops, block_flops(s, kBatch * kN));
  EXPECT_EQ(trace.cost("linear").calls, 4);  // q|k|v, out_proj, up (w1|w2), down
  EXPECT_EQ(trace.cost("attention").calls, 1);
  EXPECT_EQ(trace.cost("layer_norm").calls, 4);  // LN1, inner_attn_ln, LN2, ffn_ln
}

TEST(TraceBackend, VisionEncoderForward) {
  OpTrace trace;
  nn::VisionEncoder<kC.vision, trace_backend> enc(trace_backend{&trace});
  ShapeOnlyWeights src;
  enc.load(src, "vision_model", tiny_runtime().vision, "visual_projection", kP, nn::Bias::present);
  Tensor<float, 4> pixels({kBatch, kC.vision.channels, kC.vision.image_size, kC.vision.image_size});
  Tensor<float, 3> x({kBatch, kN + 1, kC.vision.stack.hidden}), keep0(x.shape());
  Tensor<float, 2> cls({kBatch, kC.vision.stack.hidden}), embeds({kBatch, kP});
  Arena ws(enc.workspace_bytes(kBatch) + kHostAlignment);
  const std::vector<HostView<float, 3>> keep{keep0.view()};
  enc.forward(ws, pixels.view(), x.view(), keep);
  enc.project_cls(x.view(), cls.view(), embeds.view());
  EXPECT_EQ(trace.cost("linear").flops, vision_flops());
  EXPECT_EQ(trace.cost("attention").calls, kC.vision.stack.layers);
  EXPECT_EQ(trace.cost("apply_rope_interleaved").calls, 2 * kC.vision.stack.layers);  // q and k
  EXPECT_EQ(trace.cost("patchify").calls, 1);
  EXPECT_EQ(trace.cost("copy").calls, kBatch + 1);  // the CLS row of each sequence, the kept state
}

TEST(TraceBackend, BsqBottleneckEncodeDecode) {
  OpTrace trace;
  nn::BsqBottleneck<kC.vision.stack.hidden, kC.quantizer, trace_backend> bsq(trace_backend{&trace});
  ShapeOnlyWeights src;
  bsq.load(src, "vision_model", true, true);
  const std::int64_t m = kBatch * kN, l = kC.quantizer.bits;
  Tensor<float, 2> z({m, kC.vision.stack.hidden}), u({m, l}), codes({m, l}), zhat({m, kC.quantizer.hidden_post_q});
  Tensor<std::uint8_t, 2> bits({m, l});
  Arena ws(bsq.encode_workspace_bytes(m) + bsq.decode_workspace_bytes(m) + kHostAlignment);
  bsq.encode(ws, z.view(), HostView<float, 2>(), u.view(), bits.view());
  bsq.codes_from_bits(bits.view(), codes.view());
  bsq.decode(ws, codes.view(), zhat.view());
  EXPECT_EQ(trace.cost("linear").flops, bottleneck_flops());
  EXPECT_EQ(trace.cost("l2_normalize_rows").calls, 1);
  EXPECT_EQ(trace.cost("bsq_quantize").calls, 1);
  EXPECT_EQ(trace.cost("bits_to_codes").calls, 1);
}

TEST(TraceBackend, PixelDecoderForward) {
  OpTrace trace;
  nn::PixelDecoder<kC.decoder, trace_backend> dec(trace_backend{&trace});
  ShapeOnlyWeights src;
  dec.load(src, "vision_decoder", tiny_runtime().decoder);
  Tensor<float, 3> zhat({kBatch, kN, kC.decoder.stack.hidden});
  Tensor<float, 4> img({kBatch, kC.decoder.channels, kC.decoder.image_size, kC.decoder.image_size});
  Arena ws(dec.workspace_bytes(kBatch) + kHostAlignment);
  dec.forward(ws, zhat.view(), img.view());
  EXPECT_EQ(trace.cost("linear").flops, decoder_flops());
  EXPECT_EQ(trace.cost("attention").calls, kC.decoder.stack.layers);
  EXPECT_EQ(trace.cost("tanh_act").calls, 1);
  EXPECT_EQ(trace.cost("unpatchify").calls, 1);
}

TEST(TraceBackend, TextEncoderForward) {
  OpTrace trace;
  nn::TextEncoder<kC.text, trace_backend> text(trace_backend{&trace});
  ShapeOnlyWeights src;
  text.load(src, "text_model", tiny_runtime().text, kEos, "text_projection", kP, nn::Bias::none);
  const Tensor<std::int32_t, 2> ids = text_ids();
  Tensor<float, 2> embeds({kBatch, kP});
  Tensor<std::int64_t, 1> eot({kBatch});
  Arena ws(text.workspace_bytes(kBatch, kTextTokens) + kHostAlignment);
  text.forward(ws, ids.view(), embeds.view(), {}, {}, {}, eot.view());
  EXPECT_EQ(trace.cost("linear").flops, text_flops());
  EXPECT_EQ(trace.cost("attention").calls, kC.text.stack.layers);
  EXPECT_EQ(trace.cost("embedding").calls, kBatch);
  EXPECT_EQ(trace.cost("gather_rows").calls, 1);
  EXPECT_EQ(eot(0), kTextTokens - 1);  // the pooled position comes from the ids, which are real
}

// ---- trainable modules ----

TEST(TraceBackend, TransformerBlockForwardAndBackward) {
  constexpr StackConfig s = kC.vision.stack;
  const std::int64_t n = kBatch * kN;
  OpTrace trace;
  nn::TransformerBlock<s, trace_backend> block(trace_backend{&trace});
  BoundParameters params(block, "l");
  using Block = nn::TransformerBlock<s, trace_backend>;
  std::vector<float> saved(static_cast<std::size_t>(Block::activation_elements(kBatch, kN)));
  std::vector<float> work(static_cast<std::size_t>(Block::workspace_elements(kBatch, kN)));
  Tensor<float, 2> x({n, s.hidden}), y({n, s.hidden}), dx({n, s.hidden});
  Arena arena(std::size_t{1} << 16);
  const nn::BlockArgs<float, host_memory> args{};
  block.forward_train(arena, x.view(), y.view(), saved.data(), static_cast<std::int64_t>(saved.size()), kBatch, kN,
                      args);
  block.backward(arena, x.view(), y.view(), dx.view(), saved.data(), static_cast<std::int64_t>(saved.size()),
                 work.data(), static_cast<std::int64_t>(work.size()), kBatch, kN, args);
  EXPECT_EQ(trace.cost("linear").flops, block_flops(s, n));
  EXPECT_EQ(trace.cost("linear_backward").flops, 2 * block_flops(s, n));  // dx and dw of every linear
  EXPECT_EQ(trace.cost("attention_train").calls, 1);
  EXPECT_EQ(trace.cost("attention_backward").calls, 1);
}

/// GQA Llama (4 query heads of 4 over 2 kv heads, q width 16 ≠ hidden 8), untied head.
constexpr LlamaConfig kTraceLlama{.vocab_size = 13, .hidden = 8, .layers = 2, .heads = 4, .kv_heads = 2,
                                  .head_dim = 4, .intermediate = 12, .tied = false};
/// q, k, v, o, gate, up and down of every layer on n rows.
std::int64_t llama_layers_flops(std::int64_t n) {
  const LlamaConfig& c = kTraceLlama;
  const std::int64_t d = c.hidden, wq = c.q_width(), wkv = c.kv_width(), i = c.intermediate;
  return c.layers * (linear_flops(n, d, wq) + 2 * linear_flops(n, d, wkv) + linear_flops(n, wq, d) +
                     2 * linear_flops(n, d, i) + linear_flops(n, i, d));
}

TEST(TraceBackend, LlamaTrainingStepAndCachedDecode) {
  OpTrace trace;
  using Model = nn::LlamaModel<kTraceLlama, trace_backend>;
  LlamaRuntime rt;
  rt.max_positions = 16;
  auto model = std::make_unique<Model>(rt, trace_backend{&trace});
  BoundParameters params(*model);
  constexpr std::int64_t kT = 5, n = kBatch * kT;
  std::vector<std::int32_t> ids(n, 1), targets(n, 2);
  const HostView<const std::int32_t, 1> id_view(ids.data(), {n}), target_view(targets.data(), {n});
  std::vector<float> saved(static_cast<std::size_t>(Model::activation_elements(kBatch, kT)));
  std::vector<float> work(static_cast<std::size_t>(Model::workspace_elements(kBatch, kT)));
  Arena arena(std::size_t{1} << 16);
  (void)model->forward_train(arena, id_view, target_view, saved.data(), static_cast<std::int64_t>(saved.size()), kBatch,
                             kT);
  model->backward(arena, id_view, target_view, 1.0, saved.data(), static_cast<std::int64_t>(saved.size()), work.data(),
                  static_cast<std::int64_t>(work.size()), kBatch, kT);
  const std::int64_t head = linear_flops(n, kTraceLlama.hidden, kTraceLlama.vocab_size);
  EXPECT_EQ(trace.cost("linear").flops, llama_layers_flops(n) + head);
  EXPECT_EQ(trace.cost("linear_backward").flops, 2 * (llama_layers_flops(n) + head));
  EXPECT_EQ(trace.cost("attention_train").calls, kTraceLlama.layers);
  EXPECT_EQ(trace.cost("attention_backward").calls, kTraceLlama.layers);
  EXPECT_EQ(trace.cost("apply_rope_half").calls, 2 * kTraceLlama.layers);
  EXPECT_EQ(trace.cost("cross_entropy").calls, 1);
  EXPECT_EQ(trace.cost("embedding_backward").calls, 1);
  // Decoding: a prefill of kT tokens, then one token; the head runs on each sequence's last row.
  trace.clear();
  nn::KvCache<kTraceLlama> cache(kBatch, 8);
  Tensor<float, 2> logits({kBatch, kTraceLlama.vocab_size});
  Arena decode_arena(Model::decode_workspace_bytes(kBatch, kT));
  model->decode(decode_arena, id_view, cache, kBatch, kT, logits.view());
  model->decode(decode_arena, HostView<const std::int32_t, 1>(ids.data(), {kBatch}), cache, kBatch, 1, logits.view());
  const std::int64_t decode_head = 2 * linear_flops(kBatch, kTraceLlama.hidden, kTraceLlama.vocab_size);
  EXPECT_EQ(trace.cost("linear").flops, llama_layers_flops(n) + llama_layers_flops(kBatch) + decode_head);
  EXPECT_EQ(trace.cost("attention").calls, 2 * kTraceLlama.layers);
  EXPECT_EQ(cache.length(), kT + 1);
  // bf16 decoding weights: the same FLOPs per token, the weights' bytes halved.
  trace.clear();
  model->decode(decode_arena, HostView<const std::int32_t, 1>(ids.data(), {kBatch}), cache, kBatch, 1, logits.view());
  const OpCost f32 = trace.cost("linear");
  trace.clear();
  model->set_decode_weights(nn::DecodeWeights::bf16);
  model->decode(decode_arena, HostView<const std::int32_t, 1>(ids.data(), {kBatch}), cache, kBatch, 1, logits.view());
  const OpCost b16 = trace.cost("linear");
  EXPECT_EQ(b16.flops, f32.flops);
  EXPECT_EQ(b16.calls, f32.calls);
  // One row's FLOPs are twice the weights' elements, so the two bytes saved per weight sum to them.
  const std::int64_t weight_elements = (llama_layers_flops(1) + linear_flops(1, kTraceLlama.hidden, kTraceLlama.vocab_size)) / 2;
  EXPECT_EQ(f32.bytes - b16.bytes, 2 * weight_elements);
}

TEST(TraceBackend, QlipTrainableStage1Step) {
  OpTrace trace;
  QlipTrainable<TrainTinyQlip, trace_backend> model(tiny_runtime(), BsqLossConfig{.group_size = 7},
                                                    trace_backend{&trace});
  BoundParameters params(model);
  model.prepare(kBatch, kTextTokens);
  Tensor<float, 4> pixels({kBatch, kC.vision.channels, kC.vision.image_size, kC.vision.image_size});
  const Tensor<std::int32_t, 2> ids = text_ids();
  const HostView<const std::int32_t, 1> ids_flat(ids.data(), {kBatch * kTextTokens});
  model.forward_backward(pixels.view(), ids.view(), ids_flat, Stage1Weights{});

  const std::int64_t forward = vision_flops() + bottleneck_flops() + decoder_flops() + text_flops();
  EXPECT_EQ(trace.cost("linear").flops, forward);
  // Every linear's backward computes dx and dw, except the patch embedding's (pixels get no gradient).
  EXPECT_EQ(trace.cost("linear_backward").flops, 2 * forward - patch_embed_flops());
  const std::int64_t layers = kC.vision.stack.layers + kC.decoder.stack.layers + kC.text.stack.layers;
  EXPECT_EQ(trace.cost("attention_train").calls, layers);
  EXPECT_EQ(trace.cost("attention_backward").calls, layers);
  for (const char* loss : {"contrastive_loss", "mse_loss", "bsq_loss"}) EXPECT_EQ(trace.cost(loss).calls, 1) << loss;
  EXPECT_GT(trace.cost("attention_train").flops, 0);
  EXPECT_EQ(trace.total_flops(), trace.cost("linear").flops + trace.cost("linear_backward").flops +
                                     trace.cost("attention_train").flops + trace.cost("attention_backward").flops);
}

// Stage 2 with LPIPS: no text tower, E_v forward only, VGG16 on both images forward and on the
// reconstruction backward (input gradients only: the network is frozen).
TEST(TraceBackend, QlipTrainableStage2StepWithLpips) {
  OpTrace trace;
  QlipTrainable<TrainTinyQlip, trace_backend> model(tiny_runtime(), BsqLossConfig{.group_size = 7},
                                                    trace_backend{&trace});
  BoundParameters params(model);
  model.prepare(kBatch, kTextTokens);
  using Net = nn::Lpips<64, trace_backend>;
  Net lpips(trace_backend{&trace});
  LpipsWeights<Net> weights(lpips);
  const std::int64_t s = kC.vision.image_size;
  lpips.prepare(kBatch, s, s);
  Tensor<float, 4> pixels({kBatch, kC.vision.channels, s, s});
  model.forward_backward_stage2(pixels.view(), Stage2Weights{}, &lpips);

  EXPECT_EQ(trace.cost("linear").flops, vision_flops() + bottleneck_flops() + decoder_flops());
  EXPECT_EQ(trace.cost("linear_backward").flops, 2 * (bottleneck_flops() + decoder_flops()));
  EXPECT_EQ(trace.cost("contrastive_loss").calls, 0);
  EXPECT_EQ(trace.cost("attention_backward").calls, kC.decoder.stack.layers);
  // VGG16's convolutions: 15,346,630,656 multiply-adds per 224×224 image, (224/s)² fewer at s×s.
  ASSERT_EQ(224 % s, 0);
  const std::int64_t macs = std::int64_t{15346630656} / ((224 / s) * (224 / s));
  EXPECT_EQ(trace.cost("conv2d").calls, 2 * Net::kConvs);
  EXPECT_EQ(trace.cost("conv2d").flops, 2 * 2 * kBatch * macs);          // two images
  EXPECT_EQ(trace.cost("conv2d_backward").flops, 2 * kBatch * macs);     // dx only
  EXPECT_EQ(trace.cost("max_pool2x2").calls, 2 * 4);
  EXPECT_EQ(trace.cost("lpips_layer_distance").calls, Net::kTaps);
  EXPECT_EQ(trace.cost("channel_normalize_backward").calls, Net::kTaps);
}

// The StyleGAN2 discriminator (nn/discriminator.hpp): a forward counts every layer's convolution
// (multiply-adds from the config by hand), a backward one conv2d_backward per layer with dx and dw,
// and R1 the forward-over-reverse passes (one backward, one tangent forward, two tangent backwards
// per layer) with the minibatch statistic's tangent ops once each.
TEST(TraceBackend, DiscriminatorForwardBackwardAndR1) {
  constexpr nn::DiscriminatorConfig kD{16, 3, 64, 8, 2};  // widths 4 at 16², 8 at 8² and 4²
  static_assert(kD.channels(16) == 4 && kD.channels(8) == 8 && kD.channels(4) == 8);
  OpTrace trace;
  nn::Discriminator<kD, trace_backend> d(trace_backend{&trace});
  BoundParameters params(d);
  d.prepare(kBatch);
  Tensor<float, 4> x({kBatch, 3, 16, 16}), dx(x.shape());
  Tensor<float, 1> logits({kBatch}), dlogits({kBatch});
  d.forward(x.view(), logits.view());

  const auto ch = [&](std::int64_t r) { return kD.channels(r); };
  std::int64_t macs = 3 * ch(16) * 16 * 16;  // fromrgb
  for (std::int64_t r = 16; r > 4; r /= 2)
    macs += ch(r) * ch(r) * 9 * r * r + ch(r / 2) * ch(r) * 9 * (r / 2) * (r / 2) + ch(r / 2) * ch(r) * (r / 2) * (r / 2);
  macs += (ch(4) + 1) * ch(4) * 9 * 16 + ch(4) * 16 * ch(4) + ch(4);  // epilogue conv, fc, out
  const std::int64_t layers = 1 + 3 * kD.blocks() + 3;
  EXPECT_EQ(trace.cost("conv2d").calls, layers);
  EXPECT_EQ(trace.cost("conv2d").flops, 2 * kBatch * macs);
  EXPECT_EQ(trace.cost("blur2d").calls, 2 * kD.blocks());
  EXPECT_EQ(trace.cost("minibatch_std").calls, 1);

  trace.clear();
  d.backward(HostView<const float, 1>(dlogits.view()), dx.view(), 1.0);
  EXPECT_EQ(trace.cost("conv2d_backward").calls, layers);
  EXPECT_EQ(trace.cost("conv2d_backward").flops, 2 * 2 * kBatch * macs);  // dx and dw of every layer
  EXPECT_EQ(trace.cost("blur2d_backward").calls, 2 * kD.blocks());
  EXPECT_EQ(trace.cost("minibatch_std_backward").calls, 1);

  trace.clear();
  (void)d.r1(5.0);
  EXPECT_EQ(trace.cost("conv2d").calls, layers);               // the tangent forward
  EXPECT_EQ(trace.cost("conv2d_backward").calls, 3 * layers);  // ∇ₓ, then two per layer for its tangent
  EXPECT_EQ(trace.cost("minibatch_std_tangent").calls, 1);
  EXPECT_EQ(trace.cost("minibatch_std_backward_tangent").calls, 1);
  EXPECT_GT(trace.cost("axpy").calls, 0);
}

TEST(TraceBackend, AnOpWithoutATraceIsAnError) {
  Tensor<float, 2> x({2, 3}), w({4, 3}), y({2, 4});
  EXPECT_THROW(ops::linear(trace_backend{}, x.view(), w.view(), HostView<const float, 1>(), y.view()), Error);
}

}  // namespace
}  // namespace qlip
