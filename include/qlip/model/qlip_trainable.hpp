/// @file qlip_trainable.hpp
/// @brief A whole QLIP model in trainable form (E_v, Q, G, E_t and the logit scale) and its
///        stage-1 objective (MODEL.md §4.1–4.3): α_a·contrastive + α_r·MSE + α_q·(entropy penalty)/T
///        + α_z·commitment, one forward and one backward per batch.
///
/// The modules are the backend-generic ones of nn/; this class only wires them and the loss ops.
/// Parameters are listed in the official state_dict order (logit_scale, text_model, vision_model
/// with its quantizer, vision_decoder, visual_projection, text_projection) with the official names,
/// so a flat store built from visit_parameters lays them out in checkpoint order. `logit_scale` is a
/// 0-d tensor in the checkpoint and a 1-element parameter here.
///
/// Buffers (saved activations, scratch) are sized for one batch shape by prepare() and reused;
/// they are host vectors for the host backends.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "qlip/core/allocator.hpp"
#include "qlip/core/backend.hpp"
#include "qlip/model/config.hpp"
#include "qlip/nn/decoder_tower.hpp"
#include "qlip/nn/quantizer.hpp"
#include "qlip/nn/text_tower.hpp"
#include "qlip/nn/vision_tower.hpp"
#include "qlip/reference/ops.hpp"

namespace qlip {

/// Loss weights (MODEL.md §4.2; stage 1: α_a = 1, α_r = 1e3, α_q = 1, α_z = 1).
struct Stage1Weights {
  double contrastive = 1.0;      ///< α_a
  double reconstruction = 1e3;   ///< α_r (pixel MSE in the CLIP-normalised space)
  double quantization = 1.0;     ///< α_q, on entropy_penalty / T
  double commitment = 1.0;       ///< α_z, on β·commitment
};

/// Stage-2 loss weights (MODEL.md §4.2, Table 8): α_r = 1, α_p = 0.1, α_q = 1, α_z = 0 (the GAN term's
/// α_g = 0.1 is the adversary's, train/adversary.hpp, which owns the discriminator).
struct Stage2Weights {
  double reconstruction = 1.0;   ///< α_r (pixel MSE)
  double perceptual = 0.1;       ///< α_p (LPIPS; 0 without a perceptual network)
  double quantization = 1.0;     ///< α_q, on entropy_penalty / T
  double commitment = 0.0;       ///< α_z
};

/// Every term of one step, unweighted, and the weighted total (stage 2 has no contrastive term and
/// reports the perceptual one).
struct Stage1Losses {
  double total = 0.0;
  double contrastive = 0.0;
  double perceptual = 0.0;       ///< LPIPS (stage 2)
  double adversarial = 0.0;      ///< the generator's GAN loss L_G (stage 2, unweighted)
  double mse = 0.0;
  double entropy_penalty = 0.0;  ///< (γ0·H_ps − γ1·H_cb) / T
  double per_sample_entropy = 0.0;
  double codebook_entropy = 0.0;
  double commitment = 0.0;       ///< β·mean Σ (q − u)²
  double image_to_text_accuracy = 0.0;
  double text_to_image_accuracy = 0.0;
};

/// The trainable model for config tag Tag on backend B.
template <qlip_config_tag Tag, backend B = cpu_backend>
class QlipTrainable {
 public:
  static constexpr QlipConfig C = Tag::config;
  using T = typename B::scalar;
  using Mem = typename B::memory;
  template <int R>
  using View = TensorView<T, R, Mem>;
  template <int R>
  using CView = TensorView<const T, R, Mem>;
  using Vision = nn::VisionTower<C.vision, B>;
  using Quant = nn::Quantizer<C.vision.stack.hidden, C.quantizer, B>;
  using Decoder = nn::DecoderTower<C.decoder, B>;
  using Text = nn::TextTower<C.text, B>;
  static constexpr std::int64_t kN = C.vision.patches();
  static constexpr std::int64_t kTv = kN + 1;
  static constexpr std::int64_t kD = C.vision.stack.hidden;
  static constexpr std::int64_t kL = C.quantizer.bits;
  static constexpr std::int64_t kDq = C.quantizer.hidden_post_q;
  static constexpr std::int64_t kP = C.projection_dim;

  QlipTrainable(const QlipRuntimeConfig& rt, const BsqLossConfig& bsq, B be = {})
      : vision(kP, C.vision_projection_bias, be),
        quantizer(be),
        decoder(be),
        text(kP, C.text_projection_bias, rt.eos_token_id, be),
        be_(be),
        rt_(rt),
        bsq_(bsq) {
    logit_scale.shape = {1};
    if (rt.vision.rope) vision_rope_ = reference::rope2d_table(C.vision.grid(), C.vision.stack.head_dim());
    if (rt.decoder.rope) decoder_rope_ = reference::rope2d_table(C.decoder.grid(), C.decoder.stack.head_dim());
  }

  /// Every parameter, official names, state_dict order.
  template <class V>
  void visit_parameters(V&& v) {
    v(std::string("logit_scale"), logit_scale);
    text.visit_parameters(v, "text_model");
    vision.visit_parameters(v, "vision_model");
    quantizer.visit_parameters(v, "vision_model");
    decoder.visit_parameters(v, "vision_decoder");
    vision.visit_projection(v, "visual_projection");
    text.visit_projection(v, "text_projection");
  }

  /// Sizes every buffer for batches of `batch` images and `tokens` text tokens.
  void prepare(std::int64_t batch, std::int64_t tokens) {
    batch_ = batch;
    tokens_ = tokens;
    const std::int64_t m = batch * kN;
    auto resize = [](std::vector<T>& v, std::int64_t n) { v.assign(static_cast<std::size_t>(n), T(0)); };
    resize(vision_saved_, Vision::activation_elements(batch));
    resize(vision_work_, Vision::workspace_elements(batch));
    resize(quant_saved_, Quant::activation_elements(m));
    resize(quant_work_, Quant::workspace_elements(m));
    resize(decoder_saved_, Decoder::activation_elements(batch));
    resize(decoder_work_, Decoder::workspace_elements(batch));
    resize(text_saved_, Text::activation_elements(batch, tokens));
    resize(text_work_, Text::workspace_elements(batch, tokens));
    h_ = Tensor<T, 2>({batch * kTv, kD});
    z_ = Tensor<T, 2>({m, kD});
    dz_ = Tensor<T, 2>({m, kD});
    u_ = Tensor<T, 2>({m, kL});
    du_ = Tensor<T, 2>({m, kL});
    q_ = Tensor<T, 2>({m, kL});
    zhat_ = Tensor<T, 2>({m, kDq});
    dzhat_ = Tensor<T, 2>({m, kDq});
    recon_ = Tensor<T, 4>({batch, C.vision.channels, C.vision.image_size, C.vision.image_size});
    drecon_ = Tensor<T, 4>(recon_.shape());
    dpercept_ = Tensor<T, 4>(recon_.shape());
    lpips_d_ = Tensor<T, 1>({batch});
    for (Tensor<T, 2>* t : {&img_, &txt_, &img_n_, &txt_n_, &d_img_n_, &d_txt_n_, &d_img_, &d_txt_})
      *t = Tensor<T, 2>({batch, kP});
    // Attention scratch of the widest tower (forward and backward share it; rewound per op).
    arena_ = Arena(std::size_t{64} << 20);
  }

  /// The stage-1 losses of one batch (forward only; fills the saved activations).
  /// pixels [B, C, H, W] CLIP-normalised; ids [B, T] host token ids and the same ids flat in the
  /// backend's memory.
  Stage1Losses forward(CView<4> pixels, HostView<const std::int32_t, 2> ids,
                       TensorView<const std::int32_t, 1, Mem> ids_flat, const Stage1Weights& w) {
    QLIP_CHECK(pixels.size(0) == batch_ && ids.size(0) == batch_ && ids.size(1) == tokens_,
               "stage 1: batch of ", pixels.size(0), " images and ", ids.size(0), "x", ids.size(1),
               " tokens, but buffers were prepared for ", batch_, " and ", batch_, "x", tokens_);
    const Args a = args();
    image_forward(pixels, a);
    text.forward_train(arena_, ids, ids_flat, txt_.view(), text_saved_.data(), size(text_saved_), a.text);
    l2_normalize_rows(be_, CView<2>(img_.view()), img_n_.view(), T(1e-12));
    l2_normalize_rows(be_, CView<2>(txt_.view()), txt_n_.view(), T(1e-12));

    Stage1Losses out;
    const ContrastiveLossResult c = contrastive_loss(be_, arena_, img_n_.view(), txt_n_.view(), logit_scale.value);
    out.contrastive = c.loss;
    out.image_to_text_accuracy = c.image_to_text_accuracy;
    out.text_to_image_accuracy = c.text_to_image_accuracy;
    out.mse = mse_loss(be_, pixel_rows(recon_.view()), pixel_rows(pixels));
    add_bsq_terms(out);
    out.total = w.contrastive * out.contrastive + w.reconstruction * out.mse + w.quantization * out.entropy_penalty +
                w.commitment * out.commitment;
    return out;
  }

  /// One stage-1 forward and backward: parameter gradients += (the caller zeroes them per step).
  Stage1Losses forward_backward(CView<4> pixels, HostView<const std::int32_t, 2> ids,
                                TensorView<const std::int32_t, 1, Mem> ids_flat, const Stage1Weights& w) {
    const Stage1Losses out = forward(pixels, ids, ids_flat, w);
    const std::int64_t batch = batch_;
    const Args a = args();
    mse_loss_backward(be_, pixel_rows(recon_.view()), pixel_rows(pixels), w.reconstruction, pixel_rows(drecon_.view()));
    decoder.backward(arena_, drecon_.view(), dzhat_.view(), decoder_saved_.data(), size(decoder_saved_),
                     decoder_work_.data(), size(decoder_work_), a.decoder);
    bsq_backward(w.quantization, w.commitment);
    quantizer.backward(q_.view(), dzhat_.view(), du_.view(), dz_.view(), quant_saved_.data(), size(quant_saved_),
                       quant_work_.data(), size(quant_work_), rt_.code_scale_l2);
    contrastive_loss_backward(be_, arena_, img_n_.view(), txt_n_.view(), logit_scale.value, w.contrastive,
                              d_img_n_.view(), d_txt_n_.view(), logit_scale.grad);
    l2_normalize_rows_backward(be_, CView<2>(img_.view()), CView<2>(d_img_n_.view()), d_img_.view(), T(1e-12));
    l2_normalize_rows_backward(be_, CView<2>(txt_.view()), CView<2>(d_txt_n_.view()), d_txt_.view(), T(1e-12));
    vision.backward(arena_, dz_.view(), d_img_.view(), h_.view(), vision_saved_.data(), size(vision_saved_),
                    vision_work_.data(), size(vision_work_), batch, a.vision);
    text.backward(arena_, ids_flat, d_txt_.view(), text_saved_.data(), size(text_saved_), text_work_.data(),
                  size(text_work_), batch, tokens_, a.text);
    return out;
  }

  /// One stage-2 forward and backward (MODEL.md §4.1, "Finetune G"): the text tower is not run, E_v
  /// runs forward only (frozen: no gradient reaches its parameters), and the quantizer MLPs and the
  /// decoder get the gradients of α_r·MSE + α_p·LPIPS + α_q·penalty/T + α_z·commitment (+=).
  /// @param perceptual an nn::Lpips prepared for this batch whose input affine maps the model's
  ///        CLIP-normalised pixels to its [−1, 1] input, or nullptr (then α_p must be 0)
  /// @param adversary  a train::Adversary prepared for this batch (its generator term α_g·L_G is added;
  ///        the discriminator's own step is the caller's, after the optimiser's), or nullptr
  template <class Perceptual, class Adversarial = std::nullptr_t>
  Stage1Losses forward_backward_stage2(CView<4> pixels, const Stage2Weights& w, Perceptual* perceptual,
                                       Adversarial* adversary = nullptr) {
    QLIP_CHECK(pixels.size(0) == batch_, "stage 2: batch of ", pixels.size(0), " images, but buffers were prepared for ",
               batch_);
    QLIP_CHECK(perceptual != nullptr || w.perceptual == 0.0,
               "stage 2: the perceptual weight is ", w.perceptual, " but there is no perceptual network");
    const Args a = args();
    image_forward(pixels, a);
    Stage1Losses out;  // contrastive stays 0
    out.mse = mse_loss(be_, pixel_rows(recon_.view()), pixel_rows(pixels));
    if (perceptual != nullptr) {
      out.perceptual = perceptual->forward(CView<4>(recon_.view()), pixels, lpips_d_.view());
    }
    add_bsq_terms(out);
    out.total = w.reconstruction * out.mse + w.perceptual * out.perceptual + w.quantization * out.entropy_penalty +
                w.commitment * out.commitment;

    mse_loss_backward(be_, pixel_rows(recon_.view()), pixel_rows(pixels), w.reconstruction, pixel_rows(drecon_.view()));
    if (perceptual != nullptr && w.perceptual != 0.0) {
      perceptual->backward(w.perceptual, dpercept_.view());
      add_inplace(be_, CView<2>(pixel_rows(dpercept_.view())), pixel_rows(drecon_.view()));
    }
    if constexpr (!std::is_same_v<Adversarial, std::nullptr_t>) {
      if (adversary != nullptr) {
        out.adversarial = adversary->generator_gradient(CView<4>(recon_.view()), drecon_.view());
        out.total += adversary->options().weight * out.adversarial;
      }
    }
    decoder.backward(arena_, drecon_.view(), dzhat_.view(), decoder_saved_.data(), size(decoder_saved_),
                     decoder_work_.data(), size(decoder_work_), a.decoder);
    bsq_backward(w.quantization, w.commitment);
    // dz (the gradient at E_v's output) is computed by the last linear and dropped: E_v is frozen.
    quantizer.backward(q_.view(), dzhat_.view(), du_.view(), dz_.view(), quant_saved_.data(), size(quant_saved_),
                       quant_work_.data(), size(quant_work_), rt_.code_scale_l2);
    return out;
  }

  /// The reconstruction of the last forward_backward, [B, C, H, W] (CLIP-normalised).
  HostView<const T, 4> reconstruction() const { return recon_.view(); }
  /// The L2-normalised pre-quantisation vectors u of the last step, [B·N, L].
  HostView<const T, 2> codes_input() const { return u_.view(); }

  nn::Param<T, 1, Mem> logit_scale;
  Vision vision;
  Quant quantizer;
  Decoder decoder;
  Text text;

 private:
  struct Args {
    nn::BlockArgs<T, Mem> vision, decoder, text;
  };
  /// E_v, the quantizer and the decoder forward on one batch (each fills its saved activations).
  void image_forward(CView<4> pixels, const Args& a) {
    const std::int64_t batch = batch_;
    vision.forward_train(arena_, pixels, h_.view(), img_.view(), vision_saved_.data(), size(vision_saved_),
                         vision_work_.data(), size(vision_work_), a.vision);
    copy(be_, CView<3>(h_.view().reshape(Extents<3>{batch, kTv, kD}).slice(1, 1, kTv)),
         z_.view().reshape(Extents<3>{batch, kN, kD}));
    quantizer.forward_train(z_.view(), u_.view(), q_.view(), zhat_.view(), quant_saved_.data(), size(quant_saved_),
                            rt_.code_scale_l2);
    decoder.forward_train(arena_, zhat_.view(), recon_.view(), decoder_saved_.data(), size(decoder_saved_),
                          decoder_work_.data(), size(decoder_work_), a.decoder);
  }
  /// The BSQ loss terms (unweighted) of the last image_forward.
  void add_bsq_terms(Stage1Losses& out) {
    const BsqLossResult q = bsq_loss(be_, arena_, CView<2>(u_.view()), bsq_);
    out.entropy_penalty = q.entropy_penalty / bsq_.inv_temperature;
    out.per_sample_entropy = q.per_sample_entropy;
    out.codebook_entropy = q.codebook_entropy;
    out.commitment = q.commitment;
  }
  /// du = ∂(α_q·penalty/T + α_z·commitment)/∂u (=), as one loss_q with γ0, γ1 scaled by α_q and β by α_z.
  void bsq_backward(double quantization, double commitment) {
    BsqLossConfig weighted = bsq_;
    weighted.gamma0 *= quantization;
    weighted.gamma1 *= quantization;
    weighted.beta *= commitment;
    bsq_loss_backward(be_, arena_, CView<2>(u_.view()), weighted, 1.0, CView<2>(), du_.view());
  }
  /// Per-tower block arguments; the RoPE views point into this object's tables.
  Args args() const {
    Args a;
    vrope_ = {vision_rope_.cos.view(), vision_rope_.sin.view(), 1};  // CLS (token 0) not rotated
    drope_ = {decoder_rope_.cos.view(), decoder_rope_.sin.view(), 0};
    a.vision = {rt_.vision.layer_norm_eps, rt_.vision.act, AttentionMask::none, rt_.vision.rope ? &vrope_ : nullptr};
    a.decoder = {rt_.decoder.layer_norm_eps, rt_.decoder.act, AttentionMask::none, rt_.decoder.rope ? &drope_ : nullptr};
    a.text = {rt_.text.layer_norm_eps, rt_.text.act, AttentionMask::causal, nullptr};
    return a;
  }
  static std::int64_t size(const std::vector<T>& v) { return static_cast<std::int64_t>(v.size()); }
  /// [B, C, H, W] as [B, C·H·W] rows (the MSE is a mean over every element either way).
  template <class U>
  static TensorView<U, 2, Mem> pixel_rows(const TensorView<U, 4, Mem>& x) {
    return x.reshape(Extents<2>{x.size(0), x.size(1) * x.size(2) * x.size(3)});
  }

  B be_;
  QlipRuntimeConfig rt_;
  BsqLossConfig bsq_;
  RopeTable vision_rope_, decoder_rope_;
  mutable RopeTableView<Mem> vrope_{}, drope_{};
  std::int64_t batch_ = 0, tokens_ = 0;
  std::vector<T> vision_saved_, vision_work_, quant_saved_, quant_work_, decoder_saved_, decoder_work_, text_saved_,
      text_work_;
  Tensor<T, 2> h_, z_, dz_, u_, du_, q_, zhat_, dzhat_, img_, txt_, img_n_, txt_n_, d_img_n_, d_txt_n_, d_img_, d_txt_;
  Tensor<T, 4> recon_, drecon_, dpercept_;
  Tensor<T, 1> lpips_d_;
  Arena arena_;
};

}  // namespace qlip
