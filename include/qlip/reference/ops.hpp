/// @file ops.hpp
/// @brief The reference backend: every op of the vocabulary overloaded on reference_backend<T>
///        (T = float: the oracle; T = double: what finite differences differentiate), forwarding to
///        the plain-loop functions of reference/. Modules call ops unqualified, so instantiating a
///        module with reference_backend<double> checks a whole module's backward, and a module that
///        used anything but the op vocabulary would not compile with this backend.
///
/// View parameters use HostArg (not deduced), so the backend alone fixes T and mutable views
/// convert to read-only ones as at any other call. Workspace arenas are accepted and unused.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "qlip/core/allocator.hpp"
#include "qlip/core/backend.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/reference/activation.hpp"
#include "qlip/reference/add.hpp"
#include "qlip/reference/attention.hpp"
#include "qlip/reference/bsq.hpp"
#include "qlip/reference/bsq_loss.hpp"
#include "qlip/reference/contrastive_loss.hpp"
#include "qlip/reference/conv2d.hpp"
#include "qlip/reference/copy.hpp"
#include "qlip/reference/cross_entropy.hpp"
#include "qlip/reference/embedding.hpp"
#include "qlip/reference/gan.hpp"
#include "qlip/reference/encoder_layer.hpp"
#include "qlip/reference/gemm.hpp"
#include "qlip/reference/l2_norm.hpp"
#include "qlip/reference/layer_norm.hpp"
#include "qlip/reference/mse_loss.hpp"
#include "qlip/reference/patchify.hpp"
#include "qlip/reference/perceptual.hpp"
#include "qlip/reference/rms_norm.hpp"
#include "qlip/reference/rope.hpp"

namespace qlip::ops {

template <class T>
using ref = reference_backend<T>;

// ---- linear ----
template <class T>
void linear(ref<T>, HostArg<const T, 2> x, HostArg<const T, 2> w, HostArg<const T, 1> bias, HostArg<T, 2> y) {
  reference::linear<T>(x, w, bias, y);
}
/// bf16 weights (decoding), float activations.
inline void linear(ref<float>, HostView<const float, 2> x, HostView<const bf16, 2> w, HostView<const float, 1> bias,
                   HostView<float, 2> y) {
  reference::linear(x, w, bias, y);
}
template <class T>
void linear_backward(ref<T>, HostArg<const T, 2> x, HostArg<const T, 2> w, HostArg<const T, 2> dy, HostArg<T, 2> dx,
                     HostArg<T, 2> dw, HostArg<T, 1> db) {
  reference::linear_backward<T>(x, w, dy, dx, dw, db);
}

// ---- normalisation ----
template <class T>
void layer_norm(ref<T>, HostArg<const T, 2> x, HostArg<const T, 1> gamma, HostArg<const T, 1> beta, float eps,
                HostArg<T, 2> y) {
  reference::layer_norm<T>(x, gamma, beta, eps, y);
}
template <class T>
void layer_norm_train(ref<T>, HostArg<const T, 2> x, HostArg<const T, 1> gamma, HostArg<const T, 1> beta, float eps,
                      HostArg<T, 2> y, HostArg<T, 1> mean, HostArg<T, 1> rstd) {
  reference::layer_norm_train<T>(x, gamma, beta, eps, y, mean, rstd);
}
template <class T>
void layer_norm_backward(ref<T>, HostArg<const T, 2> x, HostArg<const T, 1> gamma, HostArg<const T, 1> mean,
                         HostArg<const T, 1> rstd, HostArg<const T, 2> dy, HostArg<T, 2> dx, HostArg<T, 1> dgamma,
                         HostArg<T, 1> dbeta) {
  reference::layer_norm_backward<T>(x, gamma, mean, rstd, dy, dx, dgamma, dbeta);
}
template <class T>
void rms_norm(ref<T>, HostArg<const T, 2> x, HostArg<const T, 1> weight, float eps, HostArg<T, 2> y) {
  reference::rms_norm<T>(x, weight, eps, y);
}
template <class T>
void rms_norm_train(ref<T>, HostArg<const T, 2> x, HostArg<const T, 1> weight, float eps, HostArg<T, 2> y,
                    HostArg<T, 1> rstd) {
  reference::rms_norm_train<T>(x, weight, eps, y, rstd);
}
template <class T>
void rms_norm_backward(ref<T>, HostArg<const T, 2> x, HostArg<const T, 1> weight, HostArg<const T, 1> rstd,
                       HostArg<const T, 2> dy, HostArg<T, 2> dx, HostArg<T, 1> dweight) {
  reference::rms_norm_backward<T>(x, weight, rstd, dy, dx, dweight);
}
template <class T>
void l2_normalize_rows(ref<T>, HostArg<const T, 2> x, HostArg<T, 2> y, std::type_identity_t<T> eps) {
  reference::l2_normalize_rows<T>(x, y, static_cast<float>(eps));
}
template <class T>
void l2_normalize_rows_backward(ref<T>, HostArg<const T, 2> x, HostArg<const T, 2> dy, HostArg<T, 2> dx,
                                std::type_identity_t<T> eps) {
  reference::l2_normalize_rows_backward<T>(x, dy, dx, static_cast<float>(eps));
}

// ---- activations ----
template <class T>
void gelu(ref<T>, HostArg<const T, 2> x, HostArg<T, 2> y) {
  reference::gelu<T>(x, y);
}
template <class T>
void gelu_backward(ref<T>, HostArg<const T, 2> x, HostArg<const T, 2> dy, HostArg<T, 2> dx) {
  reference::gelu_backward<T>(x, dy, dx);
}
template <class T>
void quick_gelu(ref<T>, HostArg<const T, 2> x, HostArg<T, 2> y) {
  reference::quick_gelu<T>(x, y);
}
template <class T>
void quick_gelu_backward(ref<T>, HostArg<const T, 2> x, HostArg<const T, 2> dy, HostArg<T, 2> dx) {
  reference::quick_gelu_backward<T>(x, dy, dx);
}
template <class T>
void tanh_act(ref<T>, HostArg<const T, 2> x, HostArg<T, 2> y) {
  reference::tanh_act<T>(x, y);
}
template <class T>
void tanh_act_backward(ref<T>, HostArg<const T, 2> x, HostArg<const T, 2> dy, HostArg<T, 2> dx) {
  reference::tanh_act_backward<T>(x, dy, dx);
}
template <class T>
void swiglu(ref<T>, HostArg<const T, 2> gate, HostArg<const T, 2> lin, HostArg<T, 2> y) {
  reference::swiglu<T>(gate, lin, y);
}
template <class T>
void swiglu_backward(ref<T>, HostArg<const T, 2> gate, HostArg<const T, 2> lin, HostArg<const T, 2> dy,
                     HostArg<T, 2> dgate, HostArg<T, 2> dlin) {
  reference::swiglu_backward<T>(gate, lin, dy, dgate, dlin);
}

template <class T>
void leaky_relu(ref<T>, HostArg<const T, 2> x, HostArg<T, 2> y, double slope, double gain) {
  reference::leaky_relu<T>(x, y, slope, gain);
}
template <class T>
void leaky_relu_backward(ref<T>, HostArg<const T, 2> x, HostArg<const T, 2> dy, HostArg<T, 2> dx, double slope,
                         double gain) {
  reference::leaky_relu_backward<T>(x, dy, dx, slope, gain);
}

// ---- convolutional layers (perceptual network, discriminator) ----
template <class T>
std::size_t conv2d_workspace_bytes(ref<T>, const Extents<4>&, const Extents<4>&, Conv2dGeometry) {
  return 0;
}
template <class T>
void conv2d(ref<T>, Arena&, HostArg<const T, 4> x, HostArg<const T, 4> w, HostArg<const T, 1> bias, HostArg<T, 4> y,
            Conv2dGeometry g) {
  reference::conv2d<T>(x, w, bias, y, g);
}
template <class T>
void conv2d_backward(ref<T>, Arena&, HostArg<const T, 4> x, HostArg<const T, 4> w, HostArg<const T, 4> dy,
                     HostArg<T, 4> dx, HostArg<T, 4> dw, HostArg<T, 1> db, Conv2dGeometry g) {
  reference::conv2d_backward<T>(x, w, dy, dx, dw, db, g);
}
template <class T>
void max_pool2x2(ref<T>, HostArg<const T, 4> x, HostArg<T, 4> y) {
  reference::max_pool2x2<T>(x, y);
}
template <class T>
void max_pool2x2_backward(ref<T>, HostArg<const T, 4> x, HostArg<const T, 4> dy, HostArg<T, 4> dx) {
  reference::max_pool2x2_backward<T>(x, dy, dx);
}
template <class T>
void channel_affine(ref<T>, HostArg<const T, 4> x, HostArg<const T, 1> a, HostArg<const T, 1> t, HostArg<T, 4> y) {
  reference::channel_affine<T>(x, a, t, y);
}
template <class T>
void channel_affine_backward(ref<T>, HostArg<const T, 4> dy, HostArg<const T, 1> a, HostArg<T, 4> dx) {
  reference::channel_affine_backward<T>(dy, a, dx);
}
template <class T>
void channel_normalize(ref<T>, HostArg<const T, 4> x, HostArg<T, 4> y) {
  reference::channel_normalize<T>(x, y);
}
template <class T>
void channel_normalize_backward(ref<T>, HostArg<const T, 4> x, HostArg<const T, 4> dy, HostArg<T, 4> dx) {
  reference::channel_normalize_backward<T>(x, dy, dx);
}
template <class T>
void lpips_layer_distance(ref<T>, HostArg<const T, 4> f0, HostArg<const T, 4> f1, HostArg<const T, 1> lin,
                          HostArg<T, 1> d) {
  reference::lpips_layer_distance<T>(f0, f1, lin, d);
}
template <class T>
void lpips_layer_distance_backward(ref<T>, HostArg<const T, 4> f0, HostArg<const T, 4> f1, HostArg<const T, 1> lin,
                                   HostArg<const T, 1> dd, HostArg<T, 4> df0, HostArg<T, 4> df1) {
  reference::lpips_layer_distance_backward<T>(f0, f1, lin, dd, df0, df1);
}

// ---- the discriminator's blur and minibatch statistic ----
template <class T>
void blur2d(ref<T>, HostArg<const T, 4> x, HostArg<T, 4> y, BlurGeometry g) {
  reference::blur2d<T>(x, y, g);
}
template <class T>
void blur2d_backward(ref<T>, HostArg<const T, 4> dy, HostArg<T, 4> dx, BlurGeometry g) {
  reference::blur2d_backward<T>(dy, dx, g);
}
template <class T>
void minibatch_std(ref<T>, HostArg<const T, 4> x, HostArg<T, 4> y, std::int64_t group) {
  reference::minibatch_std<T>(x, y, group);
}
template <class T>
void minibatch_std_backward(ref<T>, HostArg<const T, 4> x, HostArg<const T, 4> dy, HostArg<T, 4> dx,
                            std::int64_t group) {
  reference::minibatch_std_backward<T>(x, dy, dx, group);
}
template <class T>
void minibatch_std_tangent(ref<T>, HostArg<const T, 4> x, HostArg<const T, 4> xdot, HostArg<T, 4> ydot,
                           std::int64_t group) {
  reference::minibatch_std_tangent<T>(x, xdot, ydot, group);
}
template <class T>
void minibatch_std_backward_tangent(ref<T>, HostArg<const T, 4> x, HostArg<const T, 4> xdot, HostArg<const T, 4> dy,
                                    HostArg<const T, 4> dydot, HostArg<T, 4> dxdot, std::int64_t group) {
  reference::minibatch_std_backward_tangent<T>(x, xdot, dy, dydot, dxdot, group);
}

// ---- attention and RoPE ----
template <class T>
void attention(ref<T>, Arena&, HostArg<const T, 4> q, HostArg<const T, 4> k, HostArg<const T, 4> v, HostArg<T, 4> out,
               float scale, AttentionMask mask) {
  reference::attention<T>(q, k, v, out, scale, mask);
}
template <class T>
void attention_train(ref<T>, Arena&, HostArg<const T, 4> q, HostArg<const T, 4> k, HostArg<const T, 4> v,
                     HostArg<T, 4> out, HostArg<T, 3> lse, float scale, AttentionMask mask) {
  reference::attention_train<T>(q, k, v, out, lse, scale, mask);
}
template <class T>
void attention_backward(ref<T>, Arena&, HostArg<const T, 4> q, HostArg<const T, 4> k, HostArg<const T, 4> v,
                        HostArg<const T, 4> out, HostArg<const T, 3> lse, HostArg<const T, 4> dout, HostArg<T, 4> dq,
                        HostArg<T, 4> dk, HostArg<T, 4> dv, float scale, AttentionMask mask) {
  reference::attention_backward<T>(q, k, v, out, lse, dout, dq, dk, dv, scale, mask);
}
template <class T>
void apply_rope_interleaved(ref<T>, HostArg<T, 4> x, HostView<const float, 2> cos, HostView<const float, 2> sin,
                            std::int64_t first_token) {
  reference::apply_rope_interleaved<T>(x, cos, sin, first_token);
}
template <class T>
void apply_rope_interleaved_backward(ref<T>, HostArg<T, 4> dx, HostView<const float, 2> cos,
                                     HostView<const float, 2> sin, std::int64_t first_token) {
  reference::apply_rope_interleaved_backward<T>(dx, cos, sin, first_token);
}
template <class T>
void apply_rope_half(ref<T>, HostArg<T, 4> x, HostView<const float, 2> cos, HostView<const float, 2> sin,
                     const std::int64_t* positions) {
  reference::apply_rope_half<T>(x, cos, sin, positions);
}
template <class T>
void apply_rope_half_backward(ref<T>, HostArg<T, 4> dx, HostView<const float, 2> cos, HostView<const float, 2> sin,
                              const std::int64_t* positions) {
  reference::apply_rope_half_backward<T>(dx, cos, sin, positions);
}

// ---- patches, embeddings, data movement ----
template <class T>
void patchify(ref<T>, HostArg<const T, 4> img, int p, HostArg<T, 3> out) {
  reference::patchify<T>(img, p, out);
}
template <class T>
void patchify_backward(ref<T>, HostArg<const T, 3> dpatches, int p, HostArg<T, 4> dimg) {
  reference::patchify_backward<T>(dpatches, p, dimg);
}
template <class T>
void unpatchify(ref<T>, HostArg<const T, 3> patches, int p, HostArg<T, 4> img) {
  reference::unpatchify<T>(patches, p, img);
}
template <class T>
void unpatchify_backward(ref<T>, HostArg<const T, 4> dimg, int p, HostArg<T, 3> dpatches) {
  reference::unpatchify_backward<T>(dimg, p, dpatches);
}
template <class T>
void embedding(ref<T>, HostArg<const T, 2> table, HostView<const std::int32_t, 1> ids, HostArg<T, 2> out) {
  reference::embedding<T>(table, ids, out);
}
template <class T>
void embedding_backward(ref<T>, HostView<const std::int32_t, 1> ids, HostArg<const T, 2> dout, HostArg<T, 2> dtable) {
  reference::embedding_backward<T>(ids, dout, dtable);
}
template <class T>
void add_rows_broadcast(ref<T>, HostArg<T, 3> x, HostArg<const T, 2> table) {
  reference::add_rows_broadcast<T>(x, table);
}
template <class T>
void add_rows_broadcast_backward(ref<T>, HostArg<const T, 3> dx, HostArg<T, 2> dtable) {
  reference::add_rows_broadcast_backward<T>(dx, dtable);
}
template <class T>
void add_inplace(ref<T>, HostArg<const T, 2> x, HostArg<T, 2> y) {
  reference::add_inplace<T>(x, y);
}
template <class T>
void axpy(ref<T>, double a, HostArg<const T, 2> x, HostArg<T, 2> y) {
  reference::axpy<T>(a, x, y);
}
// Rank and constness of x are deduced from the views; the element type must be the backend's.
template <class T, class U, int R>
  requires std::is_same_v<std::remove_const_t<U>, T>
void copy(ref<T>, HostView<U, R> x, HostView<T, R> y) {
  reference::copy<T, R>(x, y);
}
template <class T, int R>
void fill(ref<T>, HostView<T, R> y, std::type_identity_t<T> value) {
  reference::fill<T, R>(y, value);
}
template <class T>
void gather_rows(ref<T>, HostArg<const T, 2> x, HostView<const std::int64_t, 1> rows, HostArg<T, 2> y) {
  reference::gather_rows<T>(x, rows, y);
}
template <class T>
void gather_rows_backward(ref<T>, HostView<const std::int64_t, 1> rows, HostArg<const T, 2> dy, HostArg<T, 2> dx) {
  reference::gather_rows_backward<T>(rows, dy, dx);
}

// ---- the fused encoder layer (inference) ----
// The reference layer is the composition of the ops above (it allocates its own temporaries).
template <class T>
std::size_t encoder_layer_workspace_bytes(ref<T>, std::int64_t, std::int64_t, const EncoderLayerDims&) {
  return 0;
}
template <class T>
void encoder_layer_forward(ref<T> be, Arena& ws, const EncoderLayerWeights<T>& w, HostArg<T, 3> x,
                           const EncoderLayerArgs<host_memory>& args) {
  detail::encoder_layer_composed(be, ws, w, x, args);
}

// ---- quantiser and losses ----
// Sign quantisation and codes are float32 (the inference bottleneck's).
inline void bsq_quantize(ref<float>, HostView<const float, 2> u, HostView<std::uint8_t, 2> bits,
                         HostView<float, 2> codes, float scale) {
  reference::bsq_quantize(u, bits, codes, scale);
}
inline void bits_to_codes(ref<float>, HostView<const std::uint8_t, 2> bits, float scale, HostView<float, 2> codes) {
  reference::bits_to_codes(bits, scale, codes);
}
template <class T>
void bsq_straight_through(ref<T>, HostArg<const T, 2> z, std::type_identity_t<T> q_scale, HostArg<T, 2> zq) {
  reference::bsq_straight_through<T>(z, q_scale, zq);
}
template <class T>
void bsq_straight_through_backward(ref<T>, HostArg<const T, 2> dzq, std::type_identity_t<T> q_scale, HostArg<T, 2> dz) {
  reference::bsq_straight_through_backward<T>(dzq, q_scale, dz);
}
template <class T>
BsqLossResult bsq_loss(ref<T>, Arena&, HostArg<const T, 2> z, const BsqLossConfig& cfg) {
  return reference::bsq_loss<T>(z, cfg);
}
template <class T>
void bsq_loss_backward(ref<T>, Arena&, HostArg<const T, 2> z, const BsqLossConfig& cfg, double dloss,
                       HostArg<const T, 2> dz_q, HostArg<T, 2> dz) {
  reference::bsq_loss_backward<T>(z, cfg, dloss, dz_q, dz);
}
template <class T>
ContrastiveLossResult contrastive_loss(ref<T>, Arena&, HostArg<const T, 2> image, HostArg<const T, 2> text,
                                       HostArg<const T, 1> logit_scale, ContrastiveRows rows = {}) {
  return reference::contrastive_loss<T>(image, text, logit_scale, rows);
}
template <class T>
void contrastive_loss_backward(ref<T>, Arena&, HostArg<const T, 2> image, HostArg<const T, 2> text,
                               HostArg<const T, 1> logit_scale, double dloss, HostArg<T, 2> d_image, HostArg<T, 2> d_text,
                               HostArg<T, 1> d_logit_scale, ContrastiveRows rows = {}) {
  reference::contrastive_loss_backward<T>(image, text, logit_scale, dloss, d_image, d_text, d_logit_scale, rows);
}
template <class T>
double mse_loss(ref<T>, HostArg<const T, 2> x_hat, HostArg<const T, 2> x) {
  return reference::mse_loss<T>(x_hat, x);
}
template <class T>
void mse_loss_backward(ref<T>, HostArg<const T, 2> x_hat, HostArg<const T, 2> x, double dloss, HostArg<T, 2> dx_hat) {
  reference::mse_loss_backward<T>(x_hat, x, dloss, dx_hat);
}
template <class T>
CrossEntropyResult cross_entropy(ref<T>, HostArg<const T, 2> logits, HostView<const std::int32_t, 1> targets) {
  return reference::cross_entropy<T>(logits, targets);
}
template <class T>
void cross_entropy_backward(ref<T>, HostArg<const T, 2> logits, HostView<const std::int32_t, 1> targets, double dloss,
                            HostArg<T, 2> dlogits) {
  reference::cross_entropy_backward<T>(logits, targets, dloss, dlogits);
}

}  // namespace qlip::ops
