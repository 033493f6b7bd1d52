/// @file qlip_model.hpp
/// @brief QlipModel<Cfg, Backend>: the whole QLIP checkpoint for inference — encode_image (CLIP
///        embedding, hidden states, BSQ u / bits / indices / group indices), decode (bits, indices,
///        group indices or codes → pixels), encode_text — plus the similarity / zero-shot helpers and
///        the loader entry points `QlipModel<Cfg>::load(dir)` and `with_qlip_model(dir, f)`.
///
/// Memory: nothing is allocated per forward. Each call takes an Arena; the results are views into
/// that arena and stay valid until the caller rewinds it (ArenaScope) or reuses it. Size the arena
/// with the matching `*_workspace_bytes(batch, options)` (or `workspace_bytes(batch)` for the
/// defaults of every call); an arena that is too small throws, it never reallocates.
///
/// Example (any compiled config):
/// @code
///   qlip::with_qlip_model(dir, [&](auto& model) {
///     qlip::Arena ws(model.encode_image_workspace_bytes(batch));
///     auto enc = model.encode_image(ws, pixels);           // pixels [B, 3, H, W], CLIP-normalised
///     auto rec = model.decode(ws, enc.indices);            // [B, 3, H, W], CLIP-normalised, unclamped
///   });
/// @endcode
///
/// Accumulation contract: every output is written with `=`. Inference only for now; each tower's
/// forward returns a context (empty for inference) that a backward would consume.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "qlip/core/allocator.hpp"
#include "qlip/core/backend.hpp"
#include "qlip/core/dispatch.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"
// The CPU ops the towers call on the default backend (nn/ includes no backend).
#include "qlip/cpu/activation.hpp"
#include "qlip/cpu/bsq.hpp"
#include "qlip/cpu/copy.hpp"
#include "qlip/cpu/embedding.hpp"
#include "qlip/cpu/encoder_layer.hpp"
#include "qlip/cpu/gemm.hpp"
#include "qlip/cpu/l2_norm.hpp"
#include "qlip/cpu/layer_norm.hpp"
#include "qlip/cpu/patchify.hpp"
#include "qlip/cpu/softmax.hpp"
#include "qlip/model/checkpoint.hpp"
#include "qlip/model/config.hpp"
#include "qlip/nn/bsq_bottleneck.hpp"
#include "qlip/nn/pixel_decoder.hpp"
#include "qlip/nn/text_encoder.hpp"
#include "qlip/nn/vision_encoder.hpp"

namespace qlip {

// ---------------------------------------------------------------------------------------------
// Options and results
// ---------------------------------------------------------------------------------------------

/// What encode_image computes besides the CLIP embedding.
struct ImageEncodeOptions {
  /// HF hidden_states indices to keep: 0 = embeddings, k = output of layer k, negative counts from
  /// the end (−1 = last layer, −2 = penultimate: the LLaVA feature, MODEL.md §2.5). Each [B, N+1, D].
  std::vector<int> hidden_states{};
  /// Run the BSQ bottleneck (u, bits, indices). Off: only the CLIP path and hidden states.
  bool quantize = true;
  /// Keep the pre-normalisation quant_embed output h [B, N, L] as well.
  bool keep_pre_norm = false;
  /// Group sizes g (each dividing L) for which group indices [B, N, L/g] are produced.
  std::vector<int> group_sizes{};
};

/// A kept hidden state: resolved HF index (0..layers) and the tensor.
struct HiddenState {
  int index = 0;
  HostView<float, 3> value;  // [B, T, D]
};

/// Group indices for one group size.
struct GroupIndices {
  int group_size = 0;
  HostView<std::uint32_t, 3> value;  // [B, N, L/g]
};

/// encode_image results (views into the caller's arena).
struct ImageEncoding {
  HostView<float, 2> image_embeds;             // [B, P] visual_projection(post-LN CLS), raw
  HostView<float, 2> image_embeds_normalized;  // [B, P] L2-normalised (for similarity)
  HostView<float, 2> cls;                      // [B, D] post_layernorm(CLS)
  HostView<float, 3> last_hidden_state;        // [B, N+1, D]
  HostView<float, 3> patch_features;           // [B, N, D] tokens 1..N of the last layer (a view)
  std::vector<HiddenState> hidden_states;      // as requested
  HostView<float, 3> pre_norm;                 // [B, N, L] when keep_pre_norm
  HostView<float, 3> u;                        // [B, N, L] on the unit sphere
  HostView<std::uint8_t, 3> bits;              // [B, N, L] u > 0 (dim 0 = MSB)
  HostView<std::uint32_t, 2> indices;          // [B, N] Σ bit_i·2^(L−1−i), integer shifts
  std::vector<GroupIndices> group_indices;     // as requested

  /// The kept hidden state with this resolved index; throws if it was not requested.
  HostView<float, 3> hidden_state(int index) const {
    for (const auto& h : hidden_states)
      if (h.index == index) return h.value;
    QLIP_THROW("hidden state ", index, " was not requested (ImageEncodeOptions::hidden_states)");
  }
  /// Group indices for group size g; throws if g was not requested.
  HostView<std::uint32_t, 3> groups(int g) const {
    for (const auto& gi : group_indices)
      if (gi.group_size == g) return gi.value;
    QLIP_THROW("group indices for g = ", g, " were not requested (ImageEncodeOptions::group_sizes)");
  }
  /// Number of u components with |u| < eps: their bit may legitimately differ from another
  /// implementation's (MODEL.md §11.1).
  std::int64_t count_near_zero(float eps = 1e-6f) const {
    std::int64_t n = 0;
    const float* p = u.data();
    for (std::int64_t i = 0; i < u.numel(); ++i) n += std::fabs(p[i]) < eps ? 1 : 0;
    return n;
  }
};

/// What decode keeps besides the pixels.
struct DecodeOptions {
  /// Decoder hidden states to keep (0 = positions + zhat, k = after layer k; negative from the end).
  std::vector<int> hidden_states{};
  /// Keep zhat = quant_embed_post(codes) [B, N, Dq].
  bool keep_zhat = false;
};

/// decode results (views into the caller's arena).
struct Decoding {
  HostView<float, 4> pixels;               // [B, C, H, W] CLIP-normalised space, NOT clamped
  HostView<float, 3> zhat;                 // [B, N, Dq] when keep_zhat
  std::vector<HiddenState> hidden_states;  // [B, N, Dd] each
  HostView<float, 3> hidden_state(int index) const {
    for (const auto& h : hidden_states)
      if (h.index == index) return h.value;
    QLIP_THROW("decoder hidden state ", index, " was not requested (DecodeOptions::hidden_states)");
  }
};

/// What encode_text keeps besides the embedding.
struct TextEncodeOptions {
  std::vector<int> hidden_states{};  ///< 0 = embeddings, k = after layer k, negative from the end
  bool keep_final = false;           ///< final LayerNorm of every token [B, T, D]
};

/// encode_text results (views into the caller's arena).
struct TextEncoding {
  HostView<float, 2> text_embeds;             // [B, P] text_projection(pooled), raw
  HostView<float, 2> text_embeds_normalized;  // [B, P]
  HostView<float, 2> pooled;                  // [B, D] final-LN row of the first EOT
  HostView<std::int64_t, 1> eot_index;        // [B]
  HostView<float, 3> final;                   // [B, T, D] when keep_final
  std::vector<HiddenState> hidden_states;
  HostView<float, 3> hidden_state(int index) const {
    for (const auto& h : hidden_states)
      if (h.index == index) return h.value;
    QLIP_THROW("text hidden state ", index, " was not requested (TextEncodeOptions::hidden_states)");
  }
};

/// Model facts for `qlip info`.
struct ModelInfo {
  std::string name;  ///< compiled config name ("qlip-b-16-256")
  std::string dir;
  QlipConfig structure{};
  QlipRuntimeConfig runtime{};
  std::int64_t parameters = 0;        ///< learnable parameters loaded (no RoPE buffers, no logit_scale)
  std::int64_t vision_parameters = 0;
  std::int64_t quantizer_parameters = 0;
  std::int64_t decoder_parameters = 0;
  std::int64_t text_parameters = 0;
  std::int64_t file_tensors = 0;      ///< tensors in model.safetensors
  std::int64_t file_elements = 0;     ///< Σ numel over the file (incl. buffers, logit_scale)
  std::map<std::string, std::int64_t> file_dtypes;  ///< stored dtype → tensor count
  std::vector<std::string> defaulted_fields;  ///< config.json fields absent there: "field = default"
  nn::RopeSource vision_rope = nn::RopeSource::none;
  nn::RopeSource decoder_rope = nn::RopeSource::none;
};

namespace detail {

/// Resolves HF-style indices (negative from the end) against `layers` blocks → 0..layers.
inline std::vector<int> resolve_hidden_indices(const std::vector<int>& requested, int layers, const char* what) {
  std::vector<int> out;
  for (int k : requested) {
    const int r = k < 0 ? layers + 1 + k : k;
    QLIP_CHECK(r >= 0 && r <= layers, what, ": hidden state index ", k, " is out of range for ", layers,
               " layers (valid: 0..", layers, " or -", layers + 1, "..-1)");
    if (std::find(out.begin(), out.end(), r) == out.end()) out.push_back(r);
  }
  return out;
}

/// One line per differing field between two structures ("vision.hidden: 64 vs 768").
inline std::vector<std::string> diff_configs(const QlipConfig& a, const QlipConfig& b) {
  std::vector<std::string> d;
  auto f = [&](const std::string& name, auto x, auto y) {
    if (!(x == y)) d.push_back(name + " " + std::to_string(static_cast<long long>(x)) + " vs " +
                               std::to_string(static_cast<long long>(y)));
  };
  auto stack = [&](const std::string& p, const StackConfig& x, const StackConfig& y) {
    f(p + ".hidden_size", x.hidden, y.hidden);
    f(p + ".num_hidden_layers", x.layers, y.layers);
    f(p + ".num_attention_heads", x.heads, y.heads);
    f(p + ".intermediate_size", x.intermediate, y.intermediate);
    f(p + ".swiglu", x.mlp == MlpKind::swiglu, y.mlp == MlpKind::swiglu);
    f(p + ".subln", x.subln, y.subln);
    f(p + ".q_bias", x.q_bias, y.q_bias);
    f(p + ".k_bias", x.k_bias, y.k_bias);
    f(p + ".v_bias", x.v_bias, y.v_bias);
  };
  auto vit = [&](const std::string& p, const VisionConfig& x, const VisionConfig& y) {
    f(p + ".image_size", x.image_size, y.image_size);
    f(p + ".patch_size", x.patch_size, y.patch_size);
    f(p + ".num_channels", x.channels, y.channels);
    stack(p, x.stack, y.stack);
  };
  vit("vision_config", a.vision, b.vision);
  f("quantizer bits", a.quantizer.bits, b.quantizer.bits);
  f("vision_config.hidden_size_post_q", a.quantizer.hidden_post_q, b.quantizer.hidden_post_q);
  vit("decoder_config", a.decoder, b.decoder);
  f("text_config.vocab_size", a.text.vocab_size, b.text.vocab_size);
  f("text_config.max_position_embeddings", a.text.context_length, b.text.context_length);
  stack("text_config", a.text.stack, b.text.stack);
  f("projection_dim", a.projection_dim, b.projection_dim);
  f("vision_projection_bias", a.vision_projection_bias, b.vision_projection_bias);
  f("text_projection_bias", a.text_projection_bias, b.text_projection_bias);
  return d;
}

template <class... Ts>
std::string describe_no_match(TypeList<Ts...>, const QlipConfig& detected, const std::string& dir) {
  std::string msg = "no compiled QLIP config matches the checkpoint in '" + dir + "' (detected from its weights: vision " +
                    std::to_string(detected.vision.image_size) + "px/p" + std::to_string(detected.vision.patch_size) +
                    " width " + std::to_string(detected.vision.stack.hidden) + " x" +
                    std::to_string(detected.vision.stack.layers) + ", text width " +
                    std::to_string(detected.text.stack.hidden) + ")";
  auto one = [&](const char* name, const QlipConfig& c) {
    const auto d = diff_configs(detected, c);
    msg += "\n  vs " + std::string(name) + " (checkpoint vs compiled): ";
    for (std::size_t i = 0; i < d.size() && i < 6; ++i) msg += (i ? "; " : "") + d[i];
    if (d.size() > 6) msg += "; ... " + std::to_string(d.size() - 6) + " more";
  };
  (one(Ts::name, Ts::config), ...);
  msg += "\nsupported configs: " + join_names({Ts::name...});
  return msg;
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------------

/// A loaded QLIP checkpoint.
/// @tparam Cfg     a compiled config tag (QlipB16_256, ..., or a user's own), see ReleasedQlipConfigs
/// @tparam Backend backend tag (cpu_backend)
/// @tparam T       parameter/activation precision (float on the CPU backend)
template <qlip_config_tag Cfg, backend Backend = cpu_backend, class T = float>
class QlipModel {
  static_assert(std::is_same_v<T, float>, "the CPU backend computes in float32 (docs/PERFORMANCE.md, Machine facts: bf16 only saves memory)");

 public:
  static constexpr QlipConfig kConfig = Cfg::config;
  static constexpr int kBits = kConfig.quantizer.bits;                       // L
  static constexpr std::int64_t kPatches = kConfig.vision.patches();        // N
  static constexpr std::int64_t kTokens = kPatches + 1;                     // N + 1
  static constexpr int kVisionWidth = kConfig.vision.stack.hidden;          // D
  static constexpr int kDecoderWidth = kConfig.decoder.stack.hidden;        // Dq = Dd
  static constexpr int kTextWidth = kConfig.text.stack.hidden;
  static constexpr int kProjection = kConfig.projection_dim;                // P
  using config_type = Cfg;
  using backend_type = Backend;

  /// Loads a checkpoint folder whose structure must be exactly Cfg.
  /// @throws qlip::Error (missing/wrong-shaped tensors, config.json contradictions, other config)
  static QlipModel load(const std::string& dir) { return from_checkpoint(open_checkpoint(dir)); }

  /// Loads from an opened checkpoint (see open_checkpoint); the structure must be exactly Cfg.
  static QlipModel from_checkpoint(const Checkpoint& ck) {
    if (!(ck.structure == kConfig)) {
      std::string msg = "checkpoint '" + ck.dir + "' is not a " + Cfg::name + " checkpoint:";
      for (const auto& d : detail::diff_configs(ck.structure, kConfig)) msg += "\n  " + d + " (checkpoint vs compiled)";
      QLIP_THROW(msg);
    }
    QlipModel m;
    SafetensorsWeights src(*ck.file);
    m.load_weights(src, ck.runtime);
    m.warnings_ = ck.warnings;
    for (auto& w : src.warnings()) m.warnings_.push_back(w);
    for (const auto& t : ck.file->tensors()) {
      if (src.used().count(t.name) || t.name == "logit_scale") continue;
      const bool rope_alias = t.name.size() >= 14 && (t.name.ends_with("rope.freqs_cos") || t.name.ends_with("rope.freqs_sin"));
      if (rope_alias && (src.used().count(t.name) == 0)) {
        // Aliases of a loaded table (MODEL.md §5.2), or a table of a tower configured without RoPE.
        const bool vision = t.name.starts_with("vision_model.") && ck.runtime.vision.rope;
        const bool decoder = t.name.starts_with("vision_decoder.") && ck.runtime.decoder.rope;
        if (vision || decoder) continue;
      }
      m.warnings_.push_back(ck.weights_path + ": unexpected tensor '" + t.name + "' (ignored)");
    }
    m.info_.name = Cfg::name;
    m.info_.dir = ck.dir;
    m.info_.structure = ck.structure;
    m.info_.runtime = ck.runtime;
    m.info_.file_tensors = ck.tensor_count;
    m.info_.file_elements = ck.element_count;
    m.info_.file_dtypes = ck.dtype_counts;
    m.info_.defaulted_fields = ck.defaulted_fields;
    return m;
  }

  /// Loads every tower from any WeightSource (unit tests use an in-memory source).
  void load_weights(nn::WeightSource& src, const QlipRuntimeConfig& rt) {
    runtime_ = rt;
    vision_.load(src, "vision_model", rt.vision, "visual_projection", kProjection,
                 nn::bias_if(kConfig.vision_projection_bias));
    bsq_.load(src, "vision_model", rt.quantizer_l2_norm, rt.code_scale_l2);
    decoder_.load(src, "vision_decoder", rt.decoder);
    text_.load(src, "text_model", rt.text, rt.eos_token_id, "text_projection", kProjection,
               nn::bias_if(kConfig.text_projection_bias));
    info_.vision_parameters = vision_.parameter_count();
    info_.quantizer_parameters = bsq_.parameter_count();
    info_.decoder_parameters = decoder_.parameter_count();
    info_.text_parameters = text_.parameter_count();
    info_.parameters =
        info_.vision_parameters + info_.quantizer_parameters + info_.decoder_parameters + info_.text_parameters;
    info_.vision_rope = vision_.rope_source();
    info_.decoder_rope = decoder_.rope_source();
    info_.runtime = rt;
  }

  const ModelInfo& info() const { return info_; }
  const QlipRuntimeConfig& runtime() const { return runtime_; }
  /// Non-fatal findings of the loader (unexpected tensors, recomputed RoPE tables, ...).
  const std::vector<std::string>& warnings() const { return warnings_; }
  static constexpr const char* name() { return Cfg::name; }
  static constexpr int image_size() { return kConfig.vision.image_size; }
  static constexpr int patch_size() { return kConfig.vision.patch_size; }
  static constexpr int grid() { return kConfig.vision.grid(); }
  static constexpr int bits_per_token() { return kBits; }
  static constexpr int projection_dim() { return kProjection; }
  static constexpr int context_length() { return kConfig.text.context_length; }

  // ---- workspace sizes ----

  static std::size_t encode_image_workspace_bytes(std::int64_t batch, const ImageEncodeOptions& opt = {}) {
    const std::int64_t n = batch * kPatches;
    const std::size_t kept = (opt.hidden_states.size()) * arena_bytes<float>(batch * kTokens * kVisionWidth);
    std::size_t groups = 0;
    for (int g : opt.group_sizes) groups += arena_bytes<std::uint32_t>(n * (g > 0 ? kBits / g : 0));
    const std::size_t outputs = arena_bytes<float>(batch * kTokens * kVisionWidth) + kept +
                                arena_bytes<float>(batch * kVisionWidth) +
                                2 * arena_bytes<float>(batch * kProjection) +
                                (opt.quantize ? 2 * arena_bytes<float>(n * kBits) + arena_bytes<std::uint8_t>(n * kBits) +
                                                    arena_bytes<std::uint32_t>(n) + groups
                                              : 0);
    const std::size_t temps = std::max(Vision::workspace_bytes(batch),
                                       arena_bytes<float>(n * kVisionWidth) + Bottleneck::encode_workspace_bytes(n) +
                                           arena_bytes<float>(n * kBits));
    return outputs + temps + 64 * kHostAlignment;
  }

  static std::size_t decode_workspace_bytes(std::int64_t batch, const DecodeOptions& opt = {}) {
    const std::int64_t n = batch * kPatches;
    const auto& d = kConfig.decoder;
    const std::size_t outputs = arena_bytes<float>(batch * d.channels * d.image_size * d.image_size) +
                                arena_bytes<float>(n * kDecoderWidth) +
                                opt.hidden_states.size() * arena_bytes<float>(n * kDecoderWidth);
    const std::size_t prep = arena_bytes<std::uint32_t>(n) + arena_bytes<std::uint8_t>(n * kBits) +
                             arena_bytes<float>(n * kBits);
    return outputs + prep + std::max(Bottleneck::decode_workspace_bytes(n), Decoder::workspace_bytes(batch)) +
           64 * kHostAlignment;
  }

  static std::size_t encode_text_workspace_bytes(std::int64_t batch, std::int64_t tokens = kConfig.text.context_length,
                                                 const TextEncodeOptions& opt = {}) {
    const std::size_t hs = arena_bytes<float>(batch * tokens * kTextWidth);
    const std::size_t outputs = 2 * arena_bytes<float>(batch * kProjection) +
                                arena_bytes<float>(batch * kTextWidth) + arena_bytes<std::int64_t>(batch) +
                                (opt.keep_final ? hs : 0) + opt.hidden_states.size() * hs;
    return outputs + Text::workspace_bytes(batch, tokens) + 64 * kHostAlignment;
  }

  /// Enough for encode_image followed, while its results are still held, by decode of its codes or
  /// by encode_text (default options, this batch, text at full context length): the usual
  /// round-trip and zero-shot pipelines in one arena.
  static std::size_t workspace_bytes(std::int64_t batch) {
    return encode_image_workspace_bytes(batch) +
           std::max(decode_workspace_bytes(batch), encode_text_workspace_bytes(batch));
  }

  // ---- image → embedding, hidden states, codes ----

  /// pixels[B, C, H, W] (CLIP-normalised, e.g. preprocess_clip) → ImageEncoding (views into ws).
  ImageEncoding encode_image(Arena& ws, HostView<const float, 4> pixels, const ImageEncodeOptions& opt = {}) const {
    const std::int64_t batch = pixels.size(0), n = batch * kPatches;
    check_shape(pixels, {batch, kConfig.vision.channels, kConfig.vision.image_size, kConfig.vision.image_size},
                "encode_image: pixels");
    for (int g : opt.group_sizes)
      QLIP_CHECK(g >= 1 && kBits % g == 0, "encode_image: group size ", g, " does not divide ", kBits, " bits");
    ImageEncoding r;
    // Outputs first: they outlive the scopes of the temporaries below.
    r.last_hidden_state = ws.tensor<float, 3>({batch, kTokens, kVisionWidth});
    std::vector<HostView<float, 3>> keep(kConfig.vision.stack.layers + 1);
    for (int k : detail::resolve_hidden_indices(opt.hidden_states, kConfig.vision.stack.layers, "encode_image")) {
      keep[static_cast<std::size_t>(k)] = ws.tensor<float, 3>({batch, kTokens, kVisionWidth});
      r.hidden_states.push_back({k, keep[static_cast<std::size_t>(k)]});
    }
    r.cls = ws.tensor<float, 2>({batch, kVisionWidth});
    r.image_embeds = ws.tensor<float, 2>({batch, kProjection});
    r.image_embeds_normalized = ws.tensor<float, 2>({batch, kProjection});
    if (opt.quantize) {
      if (opt.keep_pre_norm) r.pre_norm = ws.tensor<float, 3>({batch, kPatches, kBits});
      r.u = ws.tensor<float, 3>({batch, kPatches, kBits});
      r.bits = ws.tensor<std::uint8_t, 3>({batch, kPatches, kBits});
      r.indices = ws.tensor<std::uint32_t, 2>({batch, kPatches});
      for (int g : opt.group_sizes) r.group_indices.push_back({g, ws.tensor<std::uint32_t, 3>({batch, kPatches, kBits / g})});
    }

    vision_.forward(ws, pixels, r.last_hidden_state, keep);
    r.patch_features = r.last_hidden_state.slice(1, 1, kTokens);
    vision_.project_cls(r.last_hidden_state, r.cls, r.image_embeds);
    ops::l2_normalize_rows(Backend{}, r.image_embeds, r.image_embeds_normalized, 1e-12f);
    if (!opt.quantize) return r;

    {
      ArenaScope scope(ws);
      HostView<float, 2> z = ws.tensor<float, 2>({n, kVisionWidth});  // [B·N, D] raw patch tokens
      for (std::int64_t b = 0; b < batch; ++b)
        std::copy_n(r.last_hidden_state.select(0, b).slice(0, 1, kTokens).data(), kPatches * kVisionWidth,
                    z.data() + b * kPatches * kVisionWidth);
      HostView<float, 2> pre = r.pre_norm.empty() ? HostView<float, 2>() : flat(r.pre_norm);
      bsq_.encode(ws, z, pre, flat(r.u), flat(r.bits));
    }
    HostView<std::uint32_t, 1> idx = r.indices.template reshape<1>({n});
    ops::bits_to_index(Backend{}, flat(r.bits), idx);
    for (auto& gi : r.group_indices)
      ops::index_to_group_indices(Backend{}, idx, kBits, gi.group_size, flat(gi.value));
    return r;
  }

  // ---- codes → pixels ----

  /// bits[B, N, L] (0/1; any non-zero byte is a 1) → pixels (CLIP-normalised, unclamped).
  Decoding decode(Arena& ws, HostView<const std::uint8_t, 3> bits, const DecodeOptions& opt = {}) const {
    const std::int64_t batch = bits.size(0), n = batch * kPatches;
    check_shape(bits, {batch, kPatches, kBits}, "decode: bits");
    Decoding r = alloc_decoding(ws, batch, opt);
    ArenaScope scope(ws);
    HostView<float, 2> codes = ws.tensor<float, 2>({n, kBits});  // [B·N, L] ±1/√L
    QLIP_CHECK(bits.is_contiguous(), "decode: bits must be contiguous");
    bsq_.codes_from_bits(bits.template reshape<2>({n, kBits}), codes);
    decode_codes_into(ws, codes, r, opt);
    return r;
  }

  /// indices[B, N] (each < 2^L) → pixels. Same path as decode(bits) after index → bits.
  Decoding decode(Arena& ws, HostView<const std::uint32_t, 2> indices, const DecodeOptions& opt = {}) const {
    const std::int64_t batch = indices.size(0), n = batch * kPatches;
    check_shape(indices, {batch, kPatches}, "decode: indices");
    QLIP_CHECK(indices.is_contiguous(), "decode: indices must be contiguous");
    Decoding r = alloc_decoding(ws, batch, opt);
    ArenaScope scope(ws);
    HostView<std::uint8_t, 2> bits = ws.tensor<std::uint8_t, 2>({n, kBits});
    HostView<float, 2> codes = ws.tensor<float, 2>({n, kBits});
    ops::index_to_bits(Backend{}, indices.template reshape<1>({n}), bits);
    bsq_.codes_from_bits(bits, codes);
    decode_codes_into(ws, codes, r, opt);
    return r;
  }

  /// group indices[B, N, L/g] (group 0 = most significant) → pixels.
  Decoding decode(Arena& ws, HostView<const std::uint32_t, 3> groups, int group_size,
                  const DecodeOptions& opt = {}) const {
    const std::int64_t batch = groups.size(0), n = batch * kPatches;
    QLIP_CHECK(group_size >= 1 && kBits % group_size == 0, "decode: group size ", group_size, " does not divide ",
               kBits, " bits");
    check_shape(groups, {batch, kPatches, kBits / group_size}, "decode: group indices");
    QLIP_CHECK(groups.is_contiguous(), "decode: group indices must be contiguous");
    Decoding r = alloc_decoding(ws, batch, opt);
    ArenaScope scope(ws);
    HostView<std::uint32_t, 1> idx = ws.tensor<std::uint32_t, 1>({n});
    HostView<std::uint8_t, 2> bits = ws.tensor<std::uint8_t, 2>({n, kBits});
    HostView<float, 2> codes = ws.tensor<float, 2>({n, kBits});
    ops::group_indices_to_index(Backend{}, groups.template reshape<2>({n, kBits / group_size}), group_size, idx);
    ops::index_to_bits(Backend{}, idx, bits);
    bsq_.codes_from_bits(bits, codes);
    decode_codes_into(ws, codes, r, opt);
    return r;
  }

  /// codes q[B, N, L] (e.g. ±1/√L, or any point of the sphere) → pixels.
  Decoding decode_codes(Arena& ws, HostView<const float, 3> codes, const DecodeOptions& opt = {}) const {
    const std::int64_t batch = codes.size(0), n = batch * kPatches;
    check_shape(codes, {batch, kPatches, kBits}, "decode_codes: codes");
    QLIP_CHECK(codes.is_contiguous(), "decode_codes: codes must be contiguous");
    Decoding r = alloc_decoding(ws, batch, opt);
    decode_codes_into(ws, codes.template reshape<2>({n, kBits}), r, opt);
    return r;
  }

  // ---- text ----

  /// ids[B, T] (SOT … EOT, padded; T ≤ 77) → TextEncoding (views into ws).
  TextEncoding encode_text(Arena& ws, HostView<const std::int32_t, 2> ids, const TextEncodeOptions& opt = {}) const {
    const std::int64_t batch = ids.size(0), tokens = ids.size(1);
    TextEncoding r;
    std::vector<HostView<float, 3>> keep(kConfig.text.stack.layers + 1);
    for (int k : detail::resolve_hidden_indices(opt.hidden_states, kConfig.text.stack.layers, "encode_text")) {
      keep[static_cast<std::size_t>(k)] = ws.tensor<float, 3>({batch, tokens, kTextWidth});
      r.hidden_states.push_back({k, keep[static_cast<std::size_t>(k)]});
    }
    if (opt.keep_final) r.final = ws.tensor<float, 3>({batch, tokens, kTextWidth});
    r.pooled = ws.tensor<float, 2>({batch, kTextWidth});
    r.eot_index = ws.tensor<std::int64_t, 1>({batch});
    r.text_embeds = ws.tensor<float, 2>({batch, kProjection});
    r.text_embeds_normalized = ws.tensor<float, 2>({batch, kProjection});
    text_.forward(ws, ids, r.text_embeds, keep, r.final, r.pooled, r.eot_index);
    ops::l2_normalize_rows(Backend{}, r.text_embeds, r.text_embeds_normalized, 1e-12f);
    return r;
  }

 private:
  using Vision = nn::VisionEncoder<kConfig.vision, Backend>;
  using Bottleneck = nn::BsqBottleneck<kConfig.vision.stack.hidden, kConfig.quantizer, Backend>;
  using Decoder = nn::PixelDecoder<kConfig.decoder, Backend>;
  using Text = nn::TextEncoder<kConfig.text, Backend>;

  template <class E>
  static HostView<E, 2> flat(HostView<E, 3> v) {
    return v.template reshape<2>({v.size(0) * v.size(1), v.size(2)});
  }

  Decoding alloc_decoding(Arena& ws, std::int64_t batch, const DecodeOptions& opt) const {
    const auto& d = kConfig.decoder;
    Decoding r;
    r.pixels = ws.tensor<float, 4>({batch, d.channels, d.image_size, d.image_size});
    if (opt.keep_zhat) r.zhat = ws.tensor<float, 3>({batch, kPatches, kDecoderWidth});
    for (int k : detail::resolve_hidden_indices(opt.hidden_states, d.stack.layers, "decode"))
      r.hidden_states.push_back({k, ws.tensor<float, 3>({batch, kPatches, kDecoderWidth})});
    return r;
  }

  void decode_codes_into(Arena& ws, HostView<const float, 2> codes, Decoding& r, const DecodeOptions& opt) const {
    (void)opt;
    const std::int64_t batch = r.pixels.size(0), n = batch * kPatches;
    ArenaScope scope(ws);
    HostView<float, 3> zhat = r.zhat.empty() ? ws.tensor<float, 3>({batch, kPatches, kDecoderWidth}) : r.zhat;
    bsq_.decode(ws, codes, zhat.template reshape<2>({n, kDecoderWidth}));
    std::vector<HostView<float, 3>> keep(kConfig.decoder.stack.layers + 1);
    for (const auto& h : r.hidden_states) keep[static_cast<std::size_t>(h.index)] = h.value;
    decoder_.forward(ws, zhat, r.pixels, keep);
  }

  QlipRuntimeConfig runtime_{};
  Vision vision_;
  Bottleneck bsq_;
  Decoder decoder_;
  Text text_;
  ModelInfo info_;
  std::vector<std::string> warnings_;
};

// ---------------------------------------------------------------------------------------------
// Loading any compiled config
// ---------------------------------------------------------------------------------------------

/// Opens `dir`, picks the config of `Configs` whose structure the weights have, loads it and calls
/// f(model) with a QlipModel<Tag, Backend>&. f is instantiated once per config in the list, so the
/// list decides compile time and binary size: pass only the configs a program needs, e.g.
/// `with_qlip_model<TypeList<QlipB16_256>>(dir, f)`, or a list with configs of your own.
/// @tparam Configs a TypeList of config tags (default: the released checkpoints)
/// @tparam Backend backend tag (cpu_backend)
/// @throws qlip::Error naming the differences to each listed config and the supported ones when
///         none matches; or any load error (missing tensor, shape, config.json contradiction)
template <qlip_config_list Configs = ReleasedQlipConfigs, backend Backend = cpu_backend, class F>
void with_qlip_model(const std::string& dir, F&& f) {
  const Checkpoint ck = open_checkpoint(dir);
  bool any = false;
  [&]<class... Ts>(TypeList<Ts...>) { any = ((Ts::config == ck.structure) || ...); }(Configs{});
  if (!any) QLIP_THROW(detail::describe_no_match(Configs{}, ck.structure, dir));
  dispatch_type(
      Configs{}, "QLIP config",
      [&](auto tag) { return decltype(tag)::type::config == ck.structure; },
      [&](auto tag) {
        using Tag = typename decltype(tag)::type;
        auto model = QlipModel<Tag, Backend>::from_checkpoint(ck);
        f(model);
      });
}

/// The name of the config of `Configs` matching the checkpoint in `dir` (throws like with_qlip_model).
/// @tparam Configs a TypeList of config tags (default: the released checkpoints)
template <qlip_config_list Configs = ReleasedQlipConfigs>
std::string detect_qlip_config(const std::string& dir) {
  const Checkpoint ck = open_checkpoint(dir);
  std::string name;
  [&]<class... Ts>(TypeList<Ts...>) {
    ((Ts::config == ck.structure && name.empty() ? (name = Ts::name, true) : false), ...);
  }(Configs{});
  if (name.empty()) QLIP_THROW(detail::describe_no_match(Configs{}, ck.structure, dir));
  return name;
}

// ---------------------------------------------------------------------------------------------
// Similarity and zero-shot (not model-specific)
// ---------------------------------------------------------------------------------------------

/// logits[Bi, Bt] = scale · cos(image_i, text_j); inputs raw or normalised (normalised here, F.normalize
/// with eps 1e-12). scale = 100 is the notebook / open_clip zero-shot convention (MODEL.md §2.9); pass
/// exp(model.runtime().logit_scale) for QLIPModel.forward's logits.
inline Tensor<float, 2> similarity(HostView<const float, 2> image_embeds, HostView<const float, 2> text_embeds,
                                   float scale = 100.0f) {
  const std::int64_t bi = image_embeds.size(0), bt = text_embeds.size(0), p = image_embeds.size(1);
  QLIP_CHECK(text_embeds.size(1) == p, "similarity: image embeddings have width ", p, ", text embeddings ",
             text_embeds.size(1));
  Tensor<float, 2> ni({bi, p}), nt({bt, p}), logits({bi, bt});
  ops::l2_normalize_rows(cpu_backend{}, image_embeds, ni.view(), 1e-12f);
  ops::l2_normalize_rows(cpu_backend{}, text_embeds, nt.view(), 1e-12f);
  ops::gemm(cpu_backend{}, ni.view(), nt.view().transpose(0, 1), logits.view());
  for (std::int64_t i = 0; i < logits.numel(); ++i) logits.data()[i] *= scale;  // as `100.0 * cos`
  return logits;
}

/// probs[Bi, Bt] = softmax over texts of similarity(image, text, scale) (zero-shot classification
/// when each text row is a class).
inline Tensor<float, 2> zero_shot_probs(HostView<const float, 2> image_embeds, HostView<const float, 2> text_embeds,
                                        float scale = 100.0f) {
  Tensor<float, 2> logits = similarity(image_embeds, text_embeds, scale);
  Tensor<float, 2> probs(logits.shape());
  ops::softmax_rows(cpu_backend{}, logits.view(), probs.view());
  return probs;
}

/// Prompt-template ensembling (MODEL.md §7.1): text_embeds holds classes × templates rows, class-major
/// (row c·K + k = class c, template k). Each row is L2-normalised, averaged per class, and the mean
/// re-normalised → classifier [classes, P].
inline Tensor<float, 2> ensemble_class_embeddings(HostView<const float, 2> text_embeds, std::int64_t templates) {
  const std::int64_t rows = text_embeds.size(0), p = text_embeds.size(1);
  QLIP_CHECK(templates >= 1 && rows % templates == 0, "ensemble_class_embeddings: ", rows,
             " rows are not a whole number of classes of ", templates, " templates");
  const std::int64_t classes = rows / templates;
  Tensor<float, 2> norm({rows, p}), out({classes, p});
  ops::l2_normalize_rows(cpu_backend{}, text_embeds, norm.view(), 1e-12f);
  for (std::int64_t c = 0; c < classes; ++c)
    for (std::int64_t j = 0; j < p; ++j) {
      double s = 0.0;
      for (std::int64_t k = 0; k < templates; ++k) s += norm(c * templates + k, j);
      out(c, j) = static_cast<float>(s / static_cast<double>(templates));
    }
  ops::l2_normalize_rows(cpu_backend{}, out.view(), out.view(), 1e-12f);
  return out;
}

}  // namespace qlip
