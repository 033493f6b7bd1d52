/// @file trace_backend.hpp
/// @brief A backend that computes nothing and records, per op name, how many times each op was
///        called, its floating-point operations and the bytes of its tensor arguments.
///
/// What it is for: (1) a second backend besides the CPU one, so that instantiating every nn/ module
/// with it proves the modules use nothing but the op vocabulary (a call to a CPU-only function does
/// not compile: tests/nn/test_trace_backend.cpp); (2) the analytic cost of a forward or a training
/// step of any config without running it (FLOP and traffic counts for docs/PERFORMANCE.md).
///
/// Every overload runs the op's shared argument checks (qlip::detail) and records; it writes no
/// output (outputs keep whatever the buffer held) and returns zero-valued loss results. The fused
/// encoder layer is traced as the composition of its ops (reference/encoder_layer.hpp), so its
/// GEMMs count under "linear".
///
/// Conventions: FLOPs count the matrix products only, two per multiply-add: linear 2·M·N·K (bias
/// not counted), its backward 2·M·N·K per wanted product (dx, dw); attention 2·Dh per (query, key)
/// pair a query sees, per product (forward: q·kᵀ and P·v; backward: the recomputed q·kᵀ plus each
/// wanted one of dv, dP, dq, dk). Element-wise ops, norms, losses and data movement count 0 FLOPs,
/// as bench/cpu_qlip_model.cpp's GFLOP counter does. Bytes: every tensor argument once (numel ·
/// element size), read or written, whatever the op does with it; of the table a gather indexes
/// (embedding, gather_rows and their backwards) only the rows it touches.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <type_traits>

#include "qlip/core/allocator.hpp"
#include "qlip/core/backend.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/reference/ops.hpp"

namespace qlip {

/// What one op name cost over the calls recorded.
struct OpCost {
  std::int64_t calls = 0;
  std::int64_t flops = 0;
  std::int64_t bytes = 0;
};

/// Per-op totals recorded by trace_backend.
class OpTrace {
 public:
  void record(const char* op, std::int64_t flops, std::int64_t bytes) {
    OpCost& c = ops_[op];
    c.calls += 1;
    c.flops += flops;
    c.bytes += bytes;
  }
  /// The totals of one op (all zero when it was never called).
  OpCost cost(const std::string& op) const {
    const auto it = ops_.find(op);
    return it == ops_.end() ? OpCost{} : it->second;
  }
  std::int64_t total_flops() const {
    std::int64_t n = 0;
    for (const auto& [name, c] : ops_) n += c.flops;
    return n;
  }
  const std::map<std::string, OpCost>& ops() const { return ops_; }
  void clear() { ops_.clear(); }

 private:
  std::map<std::string, OpCost> ops_;
};

namespace ops {

/// The counting backend (float32 on host memory, so modules size and carve their buffers as on the
/// CPU). It carries the OpTrace that its ops record into; a module that builds its own backend
/// instead of passing its context on reaches an op with none, which throws.
struct trace_backend {
  using memory = host_memory;
  using scalar = float;
  static constexpr const char* name = "trace";
  OpTrace* trace = nullptr;
};

}  // namespace ops

using ops::trace_backend;
static_assert(backend<trace_backend>);

namespace detail::trace {

template <class T, int R, class M>
std::int64_t bytes_of(const TensorView<T, R, M>& v) {
  return v.numel() * static_cast<std::int64_t>(sizeof(T));
}
template <class... V>
std::int64_t bytes_of(const V&... v) {
  return (std::int64_t{0} + ... + bytes_of(v));
}

inline void record(trace_backend be, const char* op, std::int64_t flops, std::int64_t bytes) {
  QLIP_CHECK(be.trace != nullptr, "trace backend: op ", op,
             " called on a backend with no OpTrace (a module built its own backend instead of passing its own on)");
  be.trace->record(op, flops, bytes);
}

/// (query, key) pairs attention scores: T·S, or Σ_i (i + S − T + 1) under the causal mask.
inline std::int64_t attention_pairs(std::int64_t t, std::int64_t s, AttentionMask mask) {
  return mask == AttentionMask::causal ? t * (s - t) + t * (t + 1) / 2 : t * s;
}

/// FLOPs of one q·kᵀ-shaped product over every (batch, head): 2·Dh per visible pair.
inline std::int64_t attention_product_flops(HostView<const float, 4> q, std::int64_t s, AttentionMask mask) {
  return 2 * q.size(0) * q.size(2) * q.size(3) * attention_pairs(q.size(1), s, mask);
}

/// Records an element-wise op x → y after checking y against x.
inline void elementwise(trace_backend be, const char* op, HostView<const float, 2> x, HostView<float, 2> y) {
  check_shape(y, {x.size(0), x.size(1)}, op);
  record(be, op, 0, bytes_of(x, y));
}
/// Records an element-wise backward (x, dy) → dx after the shared checks.
inline void elementwise_backward(trace_backend be, const char* op, HostView<const float, 2> x,
                                 HostView<const float, 2> dy, HostView<float, 2> dx) {
  check_activation_backward_args(x, dy, dx, op);
  record(be, op, 0, bytes_of(x, dy, dx));
}
/// Records a rearrangement between an image [B, C, H, W] and its patches [B, N, C·p²] (any direction).
inline void patch_op(trace_backend be, const char* op, const Extents<4>& img, int p, const Extents<3>& patches,
                     std::int64_t bytes) {
  check_patch_shapes(img, p, patches, op);
  record(be, op, 0, bytes);
}

}  // namespace detail::trace

namespace ops {

// ---- linear ----
inline void linear(trace_backend be, HostView<const float, 2> x, HostView<const float, 2> w,
                   HostView<const float, 1> bias, HostView<float, 2> y) {
  detail::check_linear_shapes(x, w, bias, y);
  detail::trace::record(be, "linear", 2 * x.size(0) * w.size(0) * x.size(1), detail::trace::bytes_of(x, w, bias, y));
}
/// bf16 weights (decoding): the same FLOPs, half the weight bytes.
inline void linear(trace_backend be, HostView<const float, 2> x, HostView<const bf16, 2> w,
                   HostView<const float, 1> bias, HostView<float, 2> y) {
  detail::check_linear_shapes(x, w, bias, y);
  detail::trace::record(be, "linear", 2 * x.size(0) * w.size(0) * x.size(1), detail::trace::bytes_of(x, w, bias, y));
}
inline void linear_backward(trace_backend be, HostView<const float, 2> x, HostView<const float, 2> w,
                            HostView<const float, 2> dy, HostView<float, 2> dx, HostView<float, 2> dw,
                            HostView<float, 1> db) {
  detail::check_linear_backward_shapes(x, w, dy, dx, dw, db);
  const std::int64_t product = 2 * x.size(0) * w.size(0) * x.size(1);
  const std::int64_t flops = (dx.empty() ? 0 : product) + (dw.empty() ? 0 : product);
  detail::trace::record(be, "linear_backward", flops, detail::trace::bytes_of(x, w, dy, dx, dw, db));
}

// ---- normalisation ----
inline void layer_norm(trace_backend be, HostView<const float, 2> x, HostView<const float, 1> gamma,
                       HostView<const float, 1> beta, float, HostView<float, 2> y) {
  detail::check_layer_norm_args(x, gamma, beta, y);
  detail::trace::record(be, "layer_norm", 0, detail::trace::bytes_of(x, gamma, beta, y));
}
inline void layer_norm_train(trace_backend be, HostView<const float, 2> x, HostView<const float, 1> gamma,
                             HostView<const float, 1> beta, float, HostView<float, 2> y, HostView<float, 1> mean,
                             HostView<float, 1> rstd) {
  detail::check_layer_norm_train_args(x, gamma, beta, y, mean, rstd);
  detail::trace::record(be, "layer_norm_train", 0, detail::trace::bytes_of(x, gamma, beta, y, mean, rstd));
}
inline void layer_norm_backward(trace_backend be, HostView<const float, 2> x, HostView<const float, 1> gamma,
                                HostView<const float, 1> mean, HostView<const float, 1> rstd,
                                HostView<const float, 2> dy, HostView<float, 2> dx, HostView<float, 1> dgamma,
                                HostView<float, 1> dbeta) {
  detail::check_layer_norm_backward_args(x, gamma, mean, rstd, dy, dx, dgamma, dbeta);
  detail::trace::record(be, "layer_norm_backward", 0,
                        detail::trace::bytes_of(x, gamma, mean, rstd, dy, dx, dgamma, dbeta));
}
inline void rms_norm(trace_backend be, HostView<const float, 2> x, HostView<const float, 1> weight, float,
                     HostView<float, 2> y) {
  detail::check_rms_norm_args(x, weight, y);
  detail::trace::record(be, "rms_norm", 0, detail::trace::bytes_of(x, weight, y));
}
inline void rms_norm_train(trace_backend be, HostView<const float, 2> x, HostView<const float, 1> weight, float,
                           HostView<float, 2> y, HostView<float, 1> rstd) {
  detail::check_rms_norm_train_args(x, weight, y, rstd);
  detail::trace::record(be, "rms_norm_train", 0, detail::trace::bytes_of(x, weight, y, rstd));
}
inline void rms_norm_backward(trace_backend be, HostView<const float, 2> x, HostView<const float, 1> weight,
                              HostView<const float, 1> rstd, HostView<const float, 2> dy, HostView<float, 2> dx,
                              HostView<float, 1> dweight) {
  detail::check_rms_norm_backward_args(x, weight, rstd, dy, dx, dweight);
  detail::trace::record(be, "rms_norm_backward", 0, detail::trace::bytes_of(x, weight, rstd, dy, dx, dweight));
}
inline void l2_normalize_rows(trace_backend be, HostView<const float, 2> x, HostView<float, 2> y, float = 1e-12f) {
  detail::check_l2_normalize_rows_args(x, y);
  detail::trace::record(be, "l2_normalize_rows", 0, detail::trace::bytes_of(x, y));
}
inline void l2_normalize_rows_backward(trace_backend be, HostView<const float, 2> x, HostView<const float, 2> dy,
                                       HostView<float, 2> dx, float = 1e-12f) {
  detail::check_l2_normalize_rows_backward_args(x, dy, dx);
  detail::trace::record(be, "l2_normalize_rows_backward", 0, detail::trace::bytes_of(x, dy, dx));
}

// ---- activations ----

inline void gelu(trace_backend be, HostView<const float, 2> x, HostView<float, 2> y) {
  detail::trace::elementwise(be, "gelu", x, y);
}
inline void gelu_backward(trace_backend be, HostView<const float, 2> x, HostView<const float, 2> dy,
                          HostView<float, 2> dx) {
  detail::trace::elementwise_backward(be, "gelu_backward", x, dy, dx);
}
inline void quick_gelu(trace_backend be, HostView<const float, 2> x, HostView<float, 2> y) {
  detail::trace::elementwise(be, "quick_gelu", x, y);
}
inline void quick_gelu_backward(trace_backend be, HostView<const float, 2> x, HostView<const float, 2> dy,
                                HostView<float, 2> dx) {
  detail::trace::elementwise_backward(be, "quick_gelu_backward", x, dy, dx);
}
inline void tanh_act(trace_backend be, HostView<const float, 2> x, HostView<float, 2> y) {
  detail::trace::elementwise(be, "tanh_act", x, y);
}
inline void tanh_act_backward(trace_backend be, HostView<const float, 2> x, HostView<const float, 2> dy,
                              HostView<float, 2> dx) {
  detail::trace::elementwise_backward(be, "tanh_act_backward", x, dy, dx);
}
inline void leaky_relu(trace_backend be, HostView<const float, 2> x, HostView<float, 2> y, double, double) {
  detail::trace::elementwise(be, "leaky_relu", x, y);
}
inline void leaky_relu_backward(trace_backend be, HostView<const float, 2> x, HostView<const float, 2> dy,
                                HostView<float, 2> dx, double, double) {
  detail::trace::elementwise_backward(be, "leaky_relu_backward", x, dy, dx);
}

// ---- convolutional layers: 2·B·Co·Ho·Wo·Ci·kh·kw FLOPs per product ----
inline std::size_t conv2d_workspace_bytes(trace_backend, const Extents<4>&, const Extents<4>&, Conv2dGeometry) {
  return 0;
}
inline void conv2d(trace_backend be, Arena&, HostView<const float, 4> x, HostView<const float, 4> w,
                   HostView<const float, 1> bias, HostView<float, 4> y, Conv2dGeometry g) {
  detail::check_conv2d_args(x, w, bias, y.shape(), g, "conv2d");
  const std::int64_t product = 2 * y.numel() * w.size(1) * w.size(2) * w.size(3);
  detail::trace::record(be, "conv2d", product, detail::trace::bytes_of(x, w, bias, y));
}
inline void conv2d_backward(trace_backend be, Arena&, HostView<const float, 4> x, HostView<const float, 4> w,
                            HostView<const float, 4> dy, HostView<float, 4> dx, HostView<float, 4> dw,
                            HostView<float, 1> db, Conv2dGeometry g) {
  detail::check_conv2d_backward_args(x, w, dy, dx, dw, db, g);
  const std::int64_t product = 2 * dy.numel() * w.size(1) * w.size(2) * w.size(3);
  const std::int64_t flops = (dx.empty() ? 0 : product) + (dw.empty() ? 0 : product);
  detail::trace::record(be, "conv2d_backward", flops, detail::trace::bytes_of(x, w, dy, dx, dw, db));
}
inline void max_pool2x2(trace_backend be, HostView<const float, 4> x, HostView<float, 4> y) {
  detail::check_max_pool2x2_args(x, y.shape(), "max_pool2x2");
  detail::trace::record(be, "max_pool2x2", 0, detail::trace::bytes_of(x, y));
}
inline void max_pool2x2_backward(trace_backend be, HostView<const float, 4> x, HostView<const float, 4> dy,
                                 HostView<float, 4> dx) {
  detail::check_max_pool2x2_args(x, dy.shape(), "max_pool2x2_backward");
  check_shape(dx, x.shape(), "max_pool2x2_backward: dx");
  detail::trace::record(be, "max_pool2x2_backward", 0, detail::trace::bytes_of(x, dy, dx));
}
// ---- the discriminator's blur (16 multiply-adds per output, counted as element-wise: 0) and
// minibatch statistic; their forward-mode tangents as their own ops ----
inline void blur2d(trace_backend be, HostView<const float, 4> x, HostView<float, 4> y, BlurGeometry g) {
  detail::check_blur2d_args(x.shape(), y.shape(), g, "blur2d");
  detail::trace::record(be, "blur2d", 0, detail::trace::bytes_of(x, y));
}
inline void blur2d_backward(trace_backend be, HostView<const float, 4> dy, HostView<float, 4> dx, BlurGeometry g) {
  detail::check_blur2d_args(dx.shape(), dy.shape(), g, "blur2d_backward");
  detail::trace::record(be, "blur2d_backward", 0, detail::trace::bytes_of(dy, dx));
}
inline void minibatch_std(trace_backend be, HostView<const float, 4> x, HostView<float, 4> y, std::int64_t group) {
  (void)detail::check_minibatch_std_args(x.shape(), y.shape(), group, "minibatch_std");
  detail::trace::record(be, "minibatch_std", 0, detail::trace::bytes_of(x, y));
}
inline void minibatch_std_backward(trace_backend be, HostView<const float, 4> x, HostView<const float, 4> dy,
                                   HostView<float, 4> dx, std::int64_t group) {
  (void)detail::check_minibatch_std_args(x.shape(), dy.shape(), group, "minibatch_std_backward");
  check_shape(dx, x.shape(), "minibatch_std_backward: dx");
  detail::trace::record(be, "minibatch_std_backward", 0, detail::trace::bytes_of(x, dy, dx));
}
inline void minibatch_std_tangent(trace_backend be, HostView<const float, 4> x, HostView<const float, 4> xdot,
                                  HostView<float, 4> ydot, std::int64_t group) {
  (void)detail::check_minibatch_std_args(x.shape(), ydot.shape(), group, "minibatch_std_tangent");
  check_shape(xdot, x.shape(), "minibatch_std_tangent: xdot");
  detail::trace::record(be, "minibatch_std_tangent", 0, detail::trace::bytes_of(x, xdot, ydot));
}
inline void minibatch_std_backward_tangent(trace_backend be, HostView<const float, 4> x, HostView<const float, 4> xdot,
                                           HostView<const float, 4> dy, HostView<const float, 4> dydot,
                                           HostView<float, 4> dxdot, std::int64_t group) {
  (void)detail::check_minibatch_std_args(x.shape(), dy.shape(), group, "minibatch_std_backward_tangent");
  check_shape(xdot, x.shape(), "minibatch_std_backward_tangent: xdot");
  check_shape(dydot, dy.shape(), "minibatch_std_backward_tangent: dydot");
  check_shape(dxdot, x.shape(), "minibatch_std_backward_tangent: dxdot");
  detail::trace::record(be, "minibatch_std_backward_tangent", 0, detail::trace::bytes_of(x, xdot, dy, dydot, dxdot));
}
inline void channel_affine(trace_backend be, HostView<const float, 4> x, HostView<const float, 1> a,
                           HostView<const float, 1> t, HostView<float, 4> y) {
  detail::check_channel_affine_args(x, a, t, y.shape(), "channel_affine");
  detail::trace::record(be, "channel_affine", 2 * x.numel(), detail::trace::bytes_of(x, y));
}
inline void channel_affine_backward(trace_backend be, HostView<const float, 4> dy, HostView<const float, 1> a,
                                    HostView<float, 4> dx) {
  detail::check_channel_affine_args(dy, a, a, dx.shape(), "channel_affine_backward");
  detail::trace::record(be, "channel_affine_backward", dy.numel(), detail::trace::bytes_of(dy, dx));
}
inline void channel_normalize(trace_backend be, HostView<const float, 4> x, HostView<float, 4> y) {
  check_shape(y, x.shape(), "channel_normalize: y");
  detail::trace::record(be, "channel_normalize", 3 * x.numel(), detail::trace::bytes_of(x, y));
}
inline void channel_normalize_backward(trace_backend be, HostView<const float, 4> x, HostView<const float, 4> dy,
                                       HostView<float, 4> dx) {
  check_shape(dy, x.shape(), "channel_normalize_backward: dy");
  check_shape(dx, x.shape(), "channel_normalize_backward: dx");
  detail::trace::record(be, "channel_normalize_backward", 6 * x.numel(), detail::trace::bytes_of(x, dy, dx));
}
inline void lpips_layer_distance(trace_backend be, HostView<const float, 4> f0, HostView<const float, 4> f1,
                                 HostView<const float, 1> lin, HostView<float, 1> d) {
  detail::check_lpips_layer_args(f0, f1, lin, d.size(0), "lpips_layer_distance");
  detail::trace::record(be, "lpips_layer_distance", 3 * f0.numel(), detail::trace::bytes_of(f0, f1, lin, d));
}
inline void lpips_layer_distance_backward(trace_backend be, HostView<const float, 4> f0, HostView<const float, 4> f1,
                                          HostView<const float, 1> lin, HostView<const float, 1> dd,
                                          HostView<float, 4> df0, HostView<float, 4> df1) {
  detail::check_lpips_layer_args(f0, f1, lin, dd.size(0), "lpips_layer_distance_backward");
  detail::trace::record(be, "lpips_layer_distance_backward", 4 * f0.numel(),
                        detail::trace::bytes_of(f0, f1, lin, dd, df0, df1));
}

inline void swiglu(trace_backend be, HostView<const float, 2> gate, HostView<const float, 2> lin,
                   HostView<float, 2> y) {
  check_shape(lin, {gate.size(0), gate.size(1)}, "swiglu linear branch lin");
  check_shape(y, {gate.size(0), gate.size(1)}, "swiglu output y");
  detail::trace::record(be, "swiglu", 0, detail::trace::bytes_of(gate, lin, y));
}
inline void swiglu_backward(trace_backend be, HostView<const float, 2> gate, HostView<const float, 2> lin,
                            HostView<const float, 2> dy, HostView<float, 2> dgate, HostView<float, 2> dlin) {
  detail::check_swiglu_backward_args(gate, lin, dy, dgate, dlin);
  detail::trace::record(be, "swiglu_backward", 0, detail::trace::bytes_of(gate, lin, dy, dgate, dlin));
}

// ---- attention and RoPE ----
inline void attention(trace_backend be, Arena&, HostView<const float, 4> q, HostView<const float, 4> k,
                      HostView<const float, 4> v, HostView<float, 4> out, float, AttentionMask mask) {
  detail::check_attention_shapes<float, host_memory>(q, k, v, out, mask);
  detail::trace::record(be, "attention", 2 * detail::trace::attention_product_flops(q, k.size(1), mask),
                        detail::trace::bytes_of(q, k, v, out));
}
inline void attention_train(trace_backend be, Arena&, HostView<const float, 4> q, HostView<const float, 4> k,
                            HostView<const float, 4> v, HostView<float, 4> out, HostView<float, 3> lse, float,
                            AttentionMask mask) {
  detail::check_attention_train_shapes<float, host_memory>(q, k, v, out, lse, mask);
  detail::trace::record(be, "attention_train", 2 * detail::trace::attention_product_flops(q, k.size(1), mask),
                        detail::trace::bytes_of(q, k, v, out, lse));
}
inline void attention_backward(trace_backend be, Arena&, HostView<const float, 4> q, HostView<const float, 4> k,
                               HostView<const float, 4> v, HostView<const float, 4> out, HostView<const float, 3> lse,
                               HostView<const float, 4> dout, HostView<float, 4> dq, HostView<float, 4> dk,
                               HostView<float, 4> dv, float, AttentionMask mask) {
  detail::check_attention_backward_shapes(q, k, v, out, lse, dout, dq, dk, dv, mask);
  const bool want_dp = !dq.empty() || !dk.empty();
  const int products = 1 + (dv.empty() ? 0 : 1) + (want_dp ? 1 : 0) + (dq.empty() ? 0 : 1) + (dk.empty() ? 0 : 1);
  detail::trace::record(be, "attention_backward", products * detail::trace::attention_product_flops(q, k.size(1), mask),
                        detail::trace::bytes_of(q, k, v, out, lse, dout, dq, dk, dv));
}
inline void apply_rope_interleaved(trace_backend be, HostView<float, 4> x, HostView<const float, 2> cos,
                                   HostView<const float, 2> sin, std::int64_t first_token) {
  detail::check_apply_rope_interleaved_args(x, cos, sin, first_token);
  detail::trace::record(be, "apply_rope_interleaved", 0, detail::trace::bytes_of(x, cos, sin));
}
inline void apply_rope_interleaved_backward(trace_backend be, HostView<float, 4> dx, HostView<const float, 2> cos,
                                            HostView<const float, 2> sin, std::int64_t first_token) {
  detail::check_apply_rope_interleaved_args(dx, cos, sin, first_token, "apply_rope_interleaved_backward");
  detail::trace::record(be, "apply_rope_interleaved_backward", 0, detail::trace::bytes_of(dx, cos, sin));
}
inline void apply_rope_half(trace_backend be, HostView<float, 4> x, HostView<const float, 2> cos,
                            HostView<const float, 2> sin, const std::int64_t* positions) {
  detail::check_apply_rope_half_args(x, cos, sin, positions);
  detail::trace::record(be, "apply_rope_half", 0, detail::trace::bytes_of(x, cos, sin));
}
inline void apply_rope_half_backward(trace_backend be, HostView<float, 4> dx, HostView<const float, 2> cos,
                                     HostView<const float, 2> sin, const std::int64_t* positions) {
  detail::check_apply_rope_half_args(dx, cos, sin, positions, "apply_rope_half_backward");
  detail::trace::record(be, "apply_rope_half_backward", 0, detail::trace::bytes_of(dx, cos, sin));
}

// ---- patches, embeddings, data movement ----
inline void patchify(trace_backend be, HostView<const float, 4> img, int p, HostView<float, 3> out) {
  detail::trace::patch_op(be, "patchify", img.shape(), p, out.shape(), detail::trace::bytes_of(img, out));
}
inline void patchify_backward(trace_backend be, HostView<const float, 3> dpatches, int p, HostView<float, 4> dimg) {
  detail::trace::patch_op(be, "patchify_backward", dimg.shape(), p, dpatches.shape(),
                          detail::trace::bytes_of(dpatches, dimg));
}
inline void unpatchify(trace_backend be, HostView<const float, 3> patches, int p, HostView<float, 4> img) {
  detail::trace::patch_op(be, "unpatchify", img.shape(), p, patches.shape(), detail::trace::bytes_of(patches, img));
}
inline void unpatchify_backward(trace_backend be, HostView<const float, 4> dimg, int p, HostView<float, 3> dpatches) {
  detail::trace::patch_op(be, "unpatchify_backward", dimg.shape(), p, dpatches.shape(),
                          detail::trace::bytes_of(dimg, dpatches));
}
inline void embedding(trace_backend be, HostView<const float, 2> table, HostView<const std::int32_t, 1> ids,
                      HostView<float, 2> out) {
  detail::check_embedding_args(table, ids, out, "embedding", "table", "out");
  detail::trace::record(be, "embedding", 0, detail::trace::bytes_of(ids, out, out));  // table: the rows read
}
inline void embedding_backward(trace_backend be, HostView<const std::int32_t, 1> ids, HostView<const float, 2> dout,
                               HostView<float, 2> dtable) {
  detail::check_embedding_args(HostView<const float, 2>(dtable), ids, dout, "embedding_backward", "dtable", "dout");
  detail::trace::record(be, "embedding_backward", 0, detail::trace::bytes_of(ids, dout, dout));  // dtable: rows written
}
inline void add_rows_broadcast(trace_backend be, HostView<float, 3> x, HostView<const float, 2> table) {
  detail::check_add_rows_broadcast_args(x, table, "add_rows_broadcast", "x", "table");
  detail::trace::record(be, "add_rows_broadcast", 0, detail::trace::bytes_of(x, table));
}
inline void add_rows_broadcast_backward(trace_backend be, HostView<const float, 3> dx, HostView<float, 2> dtable) {
  detail::check_add_rows_broadcast_args(dx, dtable, "add_rows_broadcast_backward", "dx", "dtable");
  detail::trace::record(be, "add_rows_broadcast_backward", 0, detail::trace::bytes_of(dx, dtable));
}
inline void add_inplace(trace_backend be, HostView<const float, 2> x, HostView<float, 2> y) {
  detail::check_add_args(x, y);
  detail::trace::record(be, "add_inplace", 0, detail::trace::bytes_of(x, y));
}
inline void axpy(trace_backend be, double, HostView<const float, 2> x, HostView<float, 2> y) {
  detail::check_add_args(x, y);
  detail::trace::record(be, "axpy", 0, detail::trace::bytes_of(x, y));
}
template <class U, int R>
  requires std::is_same_v<std::remove_const_t<U>, float>
void copy(trace_backend be, HostView<U, R> x, HostView<float, R> y) {
  detail::check_copy_args(HostView<const float, R>(x), y);
  detail::trace::record(be, "copy", 0, detail::trace::bytes_of(x, y));
}
template <int R>
void fill(trace_backend be, HostView<float, R> y, float) {
  detail::trace::record(be, "fill", 0, detail::trace::bytes_of(y));
}
inline void gather_rows(trace_backend be, HostView<const float, 2> x, HostView<const std::int64_t, 1> rows,
                        HostView<float, 2> y) {
  detail::check_gather_rows_args(x, rows, y, "gather_rows y");
  detail::trace::record(be, "gather_rows", 0, detail::trace::bytes_of(rows, y, y));  // x: the rows read
}
inline void gather_rows_backward(trace_backend be, HostView<const std::int64_t, 1> rows, HostView<const float, 2> dy,
                                 HostView<float, 2> dx) {
  detail::check_gather_rows_backward_args(rows, dy, HostView<const float, 2>(dx));
  detail::trace::record(be, "gather_rows_backward", 0, detail::trace::bytes_of(rows, dy, dy));  // dx: rows written
}

// ---- the fused encoder layer: its ops, as the reference composes them ----
inline std::size_t encoder_layer_workspace_bytes(trace_backend, std::int64_t, std::int64_t, const EncoderLayerDims&) {
  return 0;
}
inline void encoder_layer_forward(trace_backend be, Arena& ws, const EncoderLayerWeights<float>& w,
                                  HostView<float, 3> x, const EncoderLayerArgs<host_memory>& args) {
  detail::encoder_layer_composed(be, ws, w, x, args);
}

// ---- quantiser and losses ----
inline void bsq_quantize(trace_backend be, HostView<const float, 2> u, HostView<std::uint8_t, 2> bits,
                         HostView<float, 2> codes, float) {
  detail::check_bsq_quantize_args(u, bits, codes);
  detail::trace::record(be, "bsq_quantize", 0, detail::trace::bytes_of(u, bits, codes));
}
inline void bits_to_codes(trace_backend be, HostView<const std::uint8_t, 2> bits, float, HostView<float, 2> codes) {
  detail::check_bits_to_codes_args(bits, codes);
  detail::trace::record(be, "bits_to_codes", 0, detail::trace::bytes_of(bits, codes));
}
inline void bsq_straight_through(trace_backend be, HostView<const float, 2> z, float, HostView<float, 2> zq) {
  detail::check_bsq_straight_through_args(z, zq, "bsq_straight_through: zq");
  detail::trace::record(be, "bsq_straight_through", 0, detail::trace::bytes_of(z, zq));
}
inline void bsq_straight_through_backward(trace_backend be, HostView<const float, 2> dzq, float,
                                          HostView<float, 2> dz) {
  detail::check_bsq_straight_through_args(dzq, dz, "bsq_straight_through_backward: dz");
  detail::trace::record(be, "bsq_straight_through_backward", 0, detail::trace::bytes_of(dzq, dz));
}
inline BsqLossResult bsq_loss(trace_backend be, Arena&, HostView<const float, 2> z, const BsqLossConfig& cfg) {
  detail::check_bsq_loss_args(z, cfg, "bsq_loss");
  detail::trace::record(be, "bsq_loss", 0, detail::trace::bytes_of(z));
  return {};
}
inline void bsq_loss_backward(trace_backend be, Arena&, HostView<const float, 2> z, const BsqLossConfig& cfg, double,
                              HostView<const float, 2> dz_q, HostView<float, 2> dz) {
  detail::check_bsq_loss_backward_args(z, cfg, dz_q, dz);
  detail::trace::record(be, "bsq_loss_backward", 0, detail::trace::bytes_of(z, dz_q, dz));
}
inline ContrastiveLossResult contrastive_loss(trace_backend be, Arena&, HostView<const float, 2> image,
                                              HostView<const float, 2> text, HostView<const float, 1> logit_scale,
                                              ContrastiveRows rows = {}) {
  detail::check_contrastive_loss_args(image, text, logit_scale, rows, "contrastive_loss");
  detail::trace::record(be, "contrastive_loss", 0, detail::trace::bytes_of(image, text, logit_scale));
  return {};
}
inline void contrastive_loss_backward(trace_backend be, Arena&, HostView<const float, 2> image,
                                      HostView<const float, 2> text, HostView<const float, 1> logit_scale, double,
                                      HostView<float, 2> d_image, HostView<float, 2> d_text,
                                      HostView<float, 1> d_logit_scale, ContrastiveRows rows = {}) {
  detail::check_contrastive_loss_backward_args(image, text, logit_scale, rows, d_image, d_text, d_logit_scale);
  detail::trace::record(be, "contrastive_loss_backward", 0,
                        detail::trace::bytes_of(image, text, logit_scale, d_image, d_text, d_logit_scale));
}
inline double mse_loss(trace_backend be, HostView<const float, 2> x_hat, HostView<const float, 2> x) {
  detail::check_mse_loss_args(x_hat, x, "mse_loss");
  detail::trace::record(be, "mse_loss", 0, detail::trace::bytes_of(x_hat, x));
  return 0.0;
}
inline void mse_loss_backward(trace_backend be, HostView<const float, 2> x_hat, HostView<const float, 2> x, double,
                              HostView<float, 2> dx_hat) {
  detail::check_mse_loss_backward_args(x_hat, x, dx_hat);
  detail::trace::record(be, "mse_loss_backward", 0, detail::trace::bytes_of(x_hat, x, dx_hat));
}
inline CrossEntropyResult cross_entropy(trace_backend be, HostView<const float, 2> logits,
                                        HostView<const std::int32_t, 1> targets) {
  detail::check_cross_entropy_args(logits, targets, "cross_entropy");
  detail::trace::record(be, "cross_entropy", 0, detail::trace::bytes_of(logits));
  return {};
}
inline void cross_entropy_backward(trace_backend be, HostView<const float, 2> logits,
                                   HostView<const std::int32_t, 1> targets, double, HostView<float, 2> dlogits) {
  detail::check_cross_entropy_backward_args(logits, targets, dlogits);
  detail::trace::record(be, "cross_entropy_backward", 0, detail::trace::bytes_of(logits, dlogits));
}

}  // namespace ops
}  // namespace qlip
