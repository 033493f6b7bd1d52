/// @file discriminator.hpp
/// @brief The StyleGAN2 "resnet" discriminator of stage 2's GAN loss (QLIP_SPEC.md §4.3), forward,
///        backward and the R1 penalty's parameter gradient, on any host backend.
///
/// For an input of resolution R, blocks run at r = R, R/2, …, 8 and the epilogue at 4×4; widths are
/// ch(r) = min(channel_base / r, channel_max). Every layer has an equalised learning rate: its stored
/// weight w ~ N(0, 1) is used as w/√fan_in, biases start at 0. φ is leaky ReLU(0.2)·√2.
///   block r:   (first block only) x = φ(conv1×1(image) + b)                       fromrgb
///              y = √½·conv1×1(blur(x, pad 1, down 2))                              skip, no bias
///              t = φ(conv3×3(x, pad 1) + b)                                        conv0
///              x' = √½·φ(conv3×3(blur(t, pad 2), stride 2) + b) + y                 conv1 + residual
///   epilogue:  m = minibatch_std(x, group 4);  e = φ(conv3×3(m, pad 1) + b)
///              f = φ(fc(flatten e) + b);  logit = out(f) + b                        [N, 1]
/// Parameter names are StyleGAN2-ADA's (b{r}.fromrgb/conv0/conv1/skip, b4.conv/fc/out), so the
/// PyTorch trainer of tools/ (and StyleGAN2 code) maps one to one.
///
/// R1 (§4.3): R1 = mean_b ‖∇ₓ Σ_n D(x_n)‖²_b on real images. Its parameter gradient is the
/// derivative of the input gradient g with respect to θ along g itself:
///   ∇_θ ½‖g‖² = ∂/∂ε ∇_θ S(x + ε·g; θ)|_{ε=0},  S = Σ_n D(x_n)
/// computed exactly in forward mode over the forward and the backward pass (every layer's tangent:
/// convolutions and blurs are linear, leaky ReLU's derivative is piecewise constant, the minibatch
/// statistic has its own tangent ops). This is the double backward PyTorch does with
/// create_graph=True, without a second graph.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "qlip/core/allocator.hpp"
#include "qlip/core/backend.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/nn/param.hpp"
#include "qlip/reference/ops.hpp"

namespace qlip::nn {

/// Sizes of a StyleGAN2 discriminator (QLIP_SPEC §4.3: channel_base 32768, channel_max 512 at 256²).
struct DiscriminatorConfig {
  std::int64_t resolution = 256;
  std::int64_t image_channels = 3;
  std::int64_t channel_base = 32768;
  std::int64_t channel_max = 512;
  std::int64_t mbstd_group = 4;

  constexpr std::int64_t channels(std::int64_t res) const {
    return std::min(channel_base / res, channel_max);
  }
  /// Blocks at R, R/2, …, 8.
  constexpr int blocks() const {
    int n = 0;
    for (std::int64_t r = resolution; r > 4; r /= 2) ++n;
    return n;
  }
  constexpr bool valid() const {
    if (resolution < 8 || (resolution & (resolution - 1)) != 0) return false;
    if (image_channels < 1 || channel_base < 1 || channel_max < 1 || mbstd_group < 1) return false;
    for (std::int64_t r = resolution; r >= 4; r /= 2)
      if (channels(r) < 1) return false;
    return true;
  }
};

/// A discriminator config: a power-of-two resolution ≥ 8 and at least one channel everywhere.
template <DiscriminatorConfig C>
concept discriminator_config = C.valid();

template <DiscriminatorConfig C, backend B = cpu_backend>
  requires discriminator_config<C>
class Discriminator {
 public:
  using T = typename B::scalar;
  using Mem = typename B::memory;
  static_assert(std::is_same_v<Mem, host_memory>, "Discriminator keeps its activations in host tensors");
  template <int R>
  using View = TensorView<T, R, Mem>;
  template <int R>
  using CView = TensorView<const T, R, Mem>;

  static constexpr int kBlocks = C.blocks();
  static constexpr double kLreluSlope = 0.2;
  static constexpr double kSqrt2 = 1.4142135623730951;
  static constexpr double kSqrtHalf = 0.7071067811865476;
  static constexpr std::int64_t kC4 = C.channels(4);

  /// One equalised-LR layer: y = act_gain·φ₀(conv(x, weight·weight_gain) + bias), φ₀ = leaky ReLU or
  /// identity. Fully connected layers are 1×1 convolutions of [N, K, 1, 1] (weight stored [N, K]).
  struct Layer {
    std::string name;
    Param<T, 4, Mem> conv_weight;  ///< convolutions
    Param<T, 2, Mem> fc_weight;    ///< fully connected layers
    Param<T, 1, Mem> bias;         ///< empty shape for none
    bool fc = false, has_bias = true, lrelu = true;
    double weight_gain = 1.0, act_gain = 1.0;
    Conv2dGeometry geometry{};
    Extents<4> weight_shape{};   ///< the 4-D shape the convolution uses
    Tensor<T, 4> w_eff, dw_tmp;  ///< weight·gain; a gradient before the gain
    Tensor<T, 1> db_tmp;

    TensorView<T, 4, Mem> raw_weight() const {
      return fc ? TensorView<T, 4, Mem>(fc_weight.value.data(), weight_shape)
                : conv_weight.value;
    }
    TensorView<T, 2, Mem> raw_grad2() const {  // the gradient as [Co, rest] rows (empty when frozen)
      const auto g = fc ? TensorView<T, 4, Mem>(fc_weight.grad.data(), weight_shape) : conv_weight.grad;
      if (g.empty()) return {};
      return TensorView<T, 2, Mem>(g.data(), {weight_shape[0], weight_shape[1] * weight_shape[2] * weight_shape[3]});
    }
  };

  /// Every activation of one pass (values, or their adjoints or tangents: the same shapes).
  struct Activations {
    Tensor<T, 4> rgb;                          // fromrgb output
    Tensor<T, 4> skip_blur[kBlocks], skip[kBlocks], conv0[kBlocks], conv0_blur[kBlocks], conv1[kBlocks],
        out[kBlocks];                          // out = skip + conv1 (the next block's input)
    Tensor<T, 4> mbstd, epi, fc, logit;        // logit [N, 1, 1, 1]
  };

  explicit Discriminator(B be = {}) : be_(be) {
    std::int64_t r = C.resolution;
    for (int k = 0; k < kBlocks; ++k, r /= 2) {
      const std::int64_t cin = C.channels(r), cout = C.channels(r / 2);
      std::string p = std::to_string(r);
      p.insert(p.begin(), 'b');  // not "b" + …: GCC 12 at -O3 warns falsely (-Wrestrict) on that
      if (k == 0) init_layer(fromrgb_, p + ".fromrgb", {cin, C.image_channels, 1, 1}, false, true, true, kSqrt2, {1, 0});
      init_layer(conv0_[k], p + ".conv0", {cin, cin, 3, 3}, false, true, true, kSqrt2, {1, 1});
      init_layer(conv1_[k], p + ".conv1", {cout, cin, 3, 3}, false, true, true, kSqrt2 * kSqrtHalf, {2, 0});
      init_layer(skip_[k], p + ".skip", {cout, cin, 1, 1}, false, false, false, kSqrtHalf, {1, 0});
    }
    init_layer(epi_conv_, "b4.conv", {kC4, kC4 + 1, 3, 3}, false, true, true, kSqrt2, {1, 1});
    init_layer(fc_, "b4.fc", {kC4, kC4 * 16, 1, 1}, true, true, true, kSqrt2, {1, 0});
    init_layer(out_, "b4.out", {1, kC4, 1, 1}, true, true, false, 1.0, {1, 0});
  }

  /// Every parameter, StyleGAN2-ADA's names and registration order.
  template <class V>
  void visit_parameters(V&& v) {
    for (int k = 0; k < kBlocks; ++k) {
      if (k == 0) visit_layer(v, fromrgb_);
      visit_layer(v, conv0_[k]);
      visit_layer(v, conv1_[k]);
      visit_layer(v, skip_[k]);
    }
    visit_layer(v, epi_conv_);
    visit_layer(v, fc_);
    visit_layer(v, out_);
  }

  /// Sizes every buffer for batches of `batch` images.
  void prepare(std::int64_t batch) {
    QLIP_CHECK(batch >= 1 && batch % std::min(C.mbstd_group, batch) == 0, "discriminator: a batch of ", batch,
               " is not a multiple of the minibatch-std group size ", std::min(C.mbstd_group, batch));
    batch_ = batch;
    for (Activations* a : {&val_, &adj_, &tan_, &adj_tan_}) size_activations(*a, batch);
    input_ = Tensor<T, 4>({batch, C.image_channels, C.resolution, C.resolution});
    tan_input_ = Tensor<T, 4>(input_.shape());
    scratch_ = Tensor<T, 1>({batch * C.channels(C.resolution) * C.resolution * C.resolution});
    scratch2_ = Tensor<T, 1>(scratch_.shape());
    std::size_t ws = 0;
    for_each_layer([&](Layer& l, const Extents<4>& in) {
      ws = std::max(ws, conv2d_workspace_bytes(be_, in, l.weight_shape, l.geometry));
    });
    arena_ = Arena(ws + 4096);
  }

  /// logits[n] = D(x_n) (written); keeps the activations backward and r1 need. Reads the current
  /// parameter values (the equalised weights are recomputed on every call).
  void forward(CView<4> x, View<1> logits) {
    QLIP_CHECK(x.shape() == input_.shape(), "discriminator: images ", shape_string<4>(x.shape()),
               ", but buffers were prepared for ", shape_string<4>(input_.shape()));
    check_shape(logits, Extents<1>{batch_}, "discriminator: logits");
    copy(be_, x, input_.view());
    for_each_layer([&](Layer& l, const Extents<4>&) { equalize(l); });
    Activations& a = val_;
    layer_forward(fromrgb_, CView<4>(input_.view()), a.rgb.view());
    for (int k = 0; k < kBlocks; ++k) {
      const CView<4> in = block_input(a, k);
      blur2d(be_, in, a.skip_blur[k].view(), kSkipBlur);
      layer_forward(skip_[k], CView<4>(a.skip_blur[k].view()), a.skip[k].view());
      layer_forward(conv0_[k], in, a.conv0[k].view());
      blur2d(be_, CView<4>(a.conv0[k].view()), a.conv0_blur[k].view(), kConvBlur);
      layer_forward(conv1_[k], CView<4>(a.conv0_blur[k].view()), a.conv1[k].view());
      copy(be_, CView<4>(a.conv1[k].view()), a.out[k].view());
      add_inplace(be_, rows(CView<4>(a.skip[k].view())), rows(a.out[k].view()));
    }
    minibatch_std(be_, CView<4>(a.out[kBlocks - 1].view()), a.mbstd.view(), C.mbstd_group);
    layer_forward(epi_conv_, CView<4>(a.mbstd.view()), a.epi.view());
    layer_forward(fc_, flat(CView<4>(a.epi.view())), a.fc.view());
    layer_forward(out_, CView<4>(a.fc.view()), a.logit.view());
    copy(be_, CView<1>(a.logit.view().reshape(Extents<1>{batch_})), logits);
  }

  /// Backward of the last forward for ∂loss/∂logits = dlogits: dx (=, or empty: not wanted) and
  /// param_scale·∂loss/∂θ added to the parameter gradients (param_scale 0: none).
  void backward(CView<1> dlogits, View<4> dx, double param_scale) {
    check_shape(dlogits, Extents<1>{batch_}, "discriminator: dlogits");
    if (!dx.empty()) check_shape(dx, input_.shape(), "discriminator: dx");
    copy(be_, dlogits, adj_.logit.view().reshape(Extents<1>{batch_}));
    backward_pass(dx, param_scale);
  }

  /// The R1 penalty of the last forward's images, mean_b ‖∇ₓ Σ D‖²_b, and `weight`·∂R1/∂θ added to
  /// the parameter gradients (the file comment). Leaves the value activations as they were.
  double r1(double weight) {
    fill(be_, adj_.logit.view(), T(1));
    const View<4> g = tan_input_.view();
    backward_pass(g, 0.0);  // g = ∇ₓ Σ_n D(x_n); adj_ holds every layer's adjoint
    double sum = 0.0;
    for (std::int64_t i = 0; i < g.numel(); ++i) {
      const double v = static_cast<double>(g.data()[i]);
      sum += v * v;
    }
    const double penalty = sum / static_cast<double>(batch_);
    if (weight != 0.0) {
      tangent_forward(CView<4>(g));
      tangent_backward(2.0 * weight / static_cast<double>(batch_));  // ∇θ mean_b ‖g_b‖² = (2/N)·Hg
    }
    return penalty;
  }

  /// ∇ₓ Σ_n D(x_n) of the last r1 call (what R1 penalises).
  HostView<const T, 4> r1_input_gradient() const { return tan_input_.view(); }

  Layer fromrgb_, conv0_[kBlocks], conv1_[kBlocks], skip_[kBlocks], epi_conv_, fc_, out_;

 private:
  static constexpr BlurGeometry kSkipBlur{1, 2};
  static constexpr BlurGeometry kConvBlur{2, 1};

  void init_layer(Layer& l, std::string name, Extents<4> shape, bool fc, bool has_bias, bool lrelu, double act_gain,
                  Conv2dGeometry g) {
    l.name = std::move(name);
    l.fc = fc;
    l.has_bias = has_bias;
    l.lrelu = lrelu;
    l.weight_shape = shape;
    l.geometry = g;
    const double fan_in = static_cast<double>(shape[1] * shape[2] * shape[3]);
    // A layer without activation takes its gain into the weight gain (StyleGAN2's bias_act gain is
    // linear there); with leaky ReLU the gain stays after it.
    l.weight_gain = (lrelu ? 1.0 : act_gain) / std::sqrt(fan_in);
    l.act_gain = lrelu ? act_gain : 1.0;
    if (fc) l.fc_weight.shape = {shape[0], shape[1]};
    else l.conv_weight.shape = shape;
    if (has_bias) l.bias.shape = {shape[0]};
    l.w_eff = Tensor<T, 4>(shape);
    l.dw_tmp = Tensor<T, 4>(shape);
    l.db_tmp = Tensor<T, 1>({shape[0]});
  }
  template <class V>
  static void visit_layer(V& v, Layer& l) {
    if (l.fc) v(l.name + ".weight", l.fc_weight);
    else v(l.name + ".weight", l.conv_weight);
    if (l.has_bias) v(l.name + ".bias", l.bias);
  }
  /// f(layer, its input's shape) for every layer, in forward order.
  template <class F>
  void for_each_layer(F&& f) {
    std::int64_t r = C.resolution;
    f(fromrgb_, Extents<4>{batch_, C.image_channels, r, r});
    for (int k = 0; k < kBlocks; ++k, r /= 2) {
      const std::int64_t cin = C.channels(r);
      f(skip_[k], Extents<4>{batch_, cin, r / 2, r / 2});
      f(conv0_[k], Extents<4>{batch_, cin, r, r});
      f(conv1_[k], Extents<4>{batch_, cin, r + 1, r + 1});
    }
    f(epi_conv_, Extents<4>{batch_, kC4 + 1, 4, 4});
    f(fc_, Extents<4>{batch_, kC4 * 16, 1, 1});
    f(out_, Extents<4>{batch_, kC4, 1, 1});
  }
  void size_activations(Activations& a, std::int64_t n) {
    std::int64_t r = C.resolution;
    a.rgb = Tensor<T, 4>({n, C.channels(r), r, r});
    for (int k = 0; k < kBlocks; ++k, r /= 2) {
      const std::int64_t cin = C.channels(r), cout = C.channels(r / 2);
      a.skip_blur[k] = Tensor<T, 4>({n, cin, r / 2, r / 2});
      a.skip[k] = Tensor<T, 4>({n, cout, r / 2, r / 2});
      a.conv0[k] = Tensor<T, 4>({n, cin, r, r});
      a.conv0_blur[k] = Tensor<T, 4>({n, cin, r + 1, r + 1});
      a.conv1[k] = Tensor<T, 4>({n, cout, r / 2, r / 2});
      a.out[k] = Tensor<T, 4>({n, cout, r / 2, r / 2});
    }
    a.mbstd = Tensor<T, 4>({n, kC4 + 1, 4, 4});
    a.epi = Tensor<T, 4>({n, kC4, 4, 4});
    a.fc = Tensor<T, 4>({n, kC4, 1, 1});
    a.logit = Tensor<T, 4>({n, 1, 1, 1});
  }
  static CView<4> block_input(const Activations& a, int k) {
    return k == 0 ? CView<4>(a.rgb.view()) : CView<4>(a.out[k - 1].view());
  }
  static View<4> block_input(Activations& a, int k) { return k == 0 ? a.rgb.view() : a.out[k - 1].view(); }
  /// [N, C, H, W] as [N, C·H·W, 1, 1] (the fully connected layer's input).
  template <class U>
  static TensorView<U, 4, Mem> flat(const TensorView<U, 4, Mem>& t) {
    return t.reshape(Extents<4>{t.size(0), t.size(1) * t.size(2) * t.size(3), 1, 1});
  }
  template <class U>
  static TensorView<U, 2, Mem> rows(const TensorView<U, 4, Mem>& t) {
    return t.reshape(Extents<2>{t.size(0), t.size(1) * t.size(2) * t.size(3)});
  }
  template <class U>
  static TensorView<U, 2, Mem> rows(const TensorView<U, 1, Mem>& t) {
    return t.reshape(Extents<2>{1, t.size(0)});
  }
  /// A scratch view shaped like y.
  View<4> scratch_like(Tensor<T, 1>& s, const Extents<4>& y) const {
    std::int64_t n = 1;
    for (auto e : y) n *= e;
    QLIP_CHECK(n <= s.numel(), "discriminator: scratch of ", s.numel(), " elements for ", n);
    return View<4>(s.data(), y);
  }

  void equalize(Layer& l) {
    fill(be_, l.w_eff.view(), T(0));
    axpy(be_, l.weight_gain, rows(CView<4>(l.raw_weight())), rows(l.w_eff.view()));
  }
  CView<1> bias_of(const Layer& l) const { return l.has_bias ? CView<1>(l.bias.value) : CView<1>(); }

  void layer_forward(Layer& l, CView<4> x, View<4> y) {
    conv2d(be_, arena_, x, CView<4>(l.w_eff.view()), bias_of(l), y, l.geometry);
    if (l.lrelu) leaky_relu(be_, rows(CView<4>(y)), rows(y), kLreluSlope, l.act_gain);
  }
  /// dz = ∂y/∂z·dy through the activation (the mask from y: sign(y) = sign(z)); dy itself without one.
  CView<4> through_activation(const Layer& l, CView<4> y, CView<4> dy, Tensor<T, 1>& scratch) {
    if (!l.lrelu) return dy;
    const View<4> dz = scratch_like(scratch, dy.shape());
    leaky_relu_backward(be_, rows(y), rows(dy), rows(dz), kLreluSlope, l.act_gain);
    return dz;
  }
  /// Adds scale·(the gradient in dw_tmp/db_tmp) to the layer's parameter gradients.
  void commit_param_grads(Layer& l, double scale) {
    if (const auto g = l.raw_grad2(); !g.empty())
      axpy(be_, scale * l.weight_gain, rows(CView<4>(l.dw_tmp.view())), g);
    if (l.has_bias && !l.bias.grad.empty())
      axpy(be_, scale, rows(CView<1>(l.db_tmp.view())), rows(l.bias.grad));
  }
  void layer_backward(Layer& l, CView<4> x, CView<4> y, CView<4> dy, View<4> dx, double param_scale) {
    const CView<4> dz = through_activation(l, y, dy, scratch_);
    const bool params = param_scale != 0.0;
    if (params) {
      fill(be_, l.dw_tmp.view(), T(0));
      fill(be_, l.db_tmp.view(), T(0));
    }
    conv2d_backward(be_, arena_, x, CView<4>(l.w_eff.view()), dz, dx, params ? l.dw_tmp.view() : View<4>(),
                    params && l.has_bias ? l.db_tmp.view() : View<1>(), l.geometry);
    if (params) commit_param_grads(l, param_scale);
  }

  void backward_pass(View<4> dx, double s) {
    Activations &a = val_, &d = adj_;
    layer_backward(out_, CView<4>(a.fc.view()), CView<4>(a.logit.view()), CView<4>(d.logit.view()), d.fc.view(), s);
    layer_backward(fc_, flat(CView<4>(a.epi.view())), CView<4>(a.fc.view()), CView<4>(d.fc.view()),
                   flat(d.epi.view()), s);
    layer_backward(epi_conv_, CView<4>(a.mbstd.view()), CView<4>(a.epi.view()), CView<4>(d.epi.view()),
                   d.mbstd.view(), s);
    minibatch_std_backward(be_, CView<4>(a.out[kBlocks - 1].view()), CView<4>(d.mbstd.view()),
                           d.out[kBlocks - 1].view(), C.mbstd_group);
    for (int k = kBlocks - 1; k >= 0; --k) {
      // out = skip + conv1: both receive d.out.
      const CView<4> dout(d.out[k].view());
      layer_backward(conv1_[k], CView<4>(a.conv0_blur[k].view()), CView<4>(a.conv1[k].view()), dout,
                     d.conv0_blur[k].view(), s);
      blur2d_backward(be_, CView<4>(d.conv0_blur[k].view()), d.conv0[k].view(), kConvBlur);
      const View<4> din = block_input(d, k);
      layer_backward(conv0_[k], block_input(static_cast<const Activations&>(a), k), CView<4>(a.conv0[k].view()),
                     CView<4>(d.conv0[k].view()), din, s);
      layer_backward(skip_[k], CView<4>(a.skip_blur[k].view()), CView<4>(a.skip[k].view()), dout,
                     d.skip_blur[k].view(), s);
      const View<4> dsk = scratch_like(scratch2_, din.shape());
      blur2d_backward(be_, CView<4>(d.skip_blur[k].view()), dsk, kSkipBlur);
      add_inplace(be_, rows(CView<4>(dsk)), rows(din));
    }
    layer_backward(fromrgb_, CView<4>(input_.view()), CView<4>(a.rgb.view()), CView<4>(d.rgb.view()), dx, s);
  }

  // ---- forward mode (R1) ----
  /// ẏ = ∂y/∂x·ẋ of one layer (no bias term: the parameters are not perturbed).
  void layer_tangent(Layer& l, CView<4> y, CView<4> xdot, View<4> ydot) {
    conv2d(be_, arena_, xdot, CView<4>(l.w_eff.view()), CView<1>(), ydot, l.geometry);
    if (l.lrelu) leaky_relu_backward(be_, rows(y), rows(CView<4>(ydot)), rows(ydot), kLreluSlope, l.act_gain);
  }
  void tangent_forward(CView<4> xdot) {
    Activations &a = val_, &t = tan_;
    layer_tangent(fromrgb_, CView<4>(a.rgb.view()), xdot, t.rgb.view());
    for (int k = 0; k < kBlocks; ++k) {
      const CView<4> in = block_input(static_cast<const Activations&>(t), k);
      blur2d(be_, in, t.skip_blur[k].view(), kSkipBlur);
      layer_tangent(skip_[k], CView<4>(a.skip[k].view()), CView<4>(t.skip_blur[k].view()), t.skip[k].view());
      layer_tangent(conv0_[k], CView<4>(a.conv0[k].view()), in, t.conv0[k].view());
      blur2d(be_, CView<4>(t.conv0[k].view()), t.conv0_blur[k].view(), kConvBlur);
      layer_tangent(conv1_[k], CView<4>(a.conv1[k].view()), CView<4>(t.conv0_blur[k].view()), t.conv1[k].view());
      copy(be_, CView<4>(t.conv1[k].view()), t.out[k].view());
      add_inplace(be_, rows(CView<4>(t.skip[k].view())), rows(t.out[k].view()));
    }
    minibatch_std_tangent(be_, CView<4>(a.out[kBlocks - 1].view()), CView<4>(t.out[kBlocks - 1].view()),
                          t.mbstd.view(), C.mbstd_group);
    layer_tangent(epi_conv_, CView<4>(a.epi.view()), CView<4>(t.mbstd.view()), t.epi.view());
    layer_tangent(fc_, CView<4>(a.fc.view()), flat(CView<4>(t.epi.view())), t.fc.view());
    layer_tangent(out_, CView<4>(a.logit.view()), CView<4>(t.fc.view()), t.logit.view());
  }
  /// The tangent of one layer's backward: ḋx (=, or empty) and scale·(ḋw, ḋb) into the gradients.
  ///   dz = φ'·dy, ḋz = φ'·ḋy (φ'' = 0);  ḋx = convᵀ(ḋz);  ḋw = corr(x, ḋz) + corr(ẋ, dz);  ḋb = Σ ḋz
  void layer_backward_tangent(Layer& l, CView<4> x, CView<4> xdot, CView<4> y, CView<4> dy, CView<4> dydot,
                              View<4> dxdot, double scale) {
    const CView<4> dz = through_activation(l, y, dy, scratch_);
    const CView<4> dzdot = through_activation(l, y, dydot, scratch2_);
    fill(be_, l.dw_tmp.view(), T(0));
    fill(be_, l.db_tmp.view(), T(0));
    conv2d_backward(be_, arena_, x, CView<4>(l.w_eff.view()), dzdot, dxdot, l.dw_tmp.view(),
                    l.has_bias ? l.db_tmp.view() : View<1>(), l.geometry);
    conv2d_backward(be_, arena_, xdot, CView<4>(l.w_eff.view()), dz, View<4>(), l.dw_tmp.view(), View<1>(),
                    l.geometry);
    commit_param_grads(l, scale);
  }
  void tangent_backward(double s) {
    Activations &a = val_, &d = adj_, &t = tan_, &dt = adj_tan_;
    fill(be_, dt.logit.view(), T(0));  // ∂S/∂logit = 1 is constant
    layer_backward_tangent(out_, CView<4>(a.fc.view()), CView<4>(t.fc.view()), CView<4>(a.logit.view()),
                           CView<4>(d.logit.view()), CView<4>(dt.logit.view()), dt.fc.view(), s);
    layer_backward_tangent(fc_, flat(CView<4>(a.epi.view())), flat(CView<4>(t.epi.view())), CView<4>(a.fc.view()),
                           CView<4>(d.fc.view()), CView<4>(dt.fc.view()), flat(dt.epi.view()), s);
    layer_backward_tangent(epi_conv_, CView<4>(a.mbstd.view()), CView<4>(t.mbstd.view()), CView<4>(a.epi.view()),
                           CView<4>(d.epi.view()), CView<4>(dt.epi.view()), dt.mbstd.view(), s);
    minibatch_std_backward_tangent(be_, CView<4>(a.out[kBlocks - 1].view()), CView<4>(t.out[kBlocks - 1].view()),
                                   CView<4>(d.mbstd.view()), CView<4>(dt.mbstd.view()), dt.out[kBlocks - 1].view(),
                                   C.mbstd_group);
    for (int k = kBlocks - 1; k >= 0; --k) {
      const CView<4> dout(d.out[k].view()), dtout(dt.out[k].view());
      layer_backward_tangent(conv1_[k], CView<4>(a.conv0_blur[k].view()), CView<4>(t.conv0_blur[k].view()),
                             CView<4>(a.conv1[k].view()), dout, dtout, dt.conv0_blur[k].view(), s);
      blur2d_backward(be_, CView<4>(dt.conv0_blur[k].view()), dt.conv0[k].view(), kConvBlur);
      const View<4> din = block_input(dt, k);
      layer_backward_tangent(conv0_[k], block_input(static_cast<const Activations&>(a), k),
                             block_input(static_cast<const Activations&>(t), k), CView<4>(a.conv0[k].view()),
                             CView<4>(d.conv0[k].view()), CView<4>(dt.conv0[k].view()), din, s);
      layer_backward_tangent(skip_[k], CView<4>(a.skip_blur[k].view()), CView<4>(t.skip_blur[k].view()),
                             CView<4>(a.skip[k].view()), dout, dtout, dt.skip_blur[k].view(), s);
      const View<4> dsk = scratch_like(scratch2_, din.shape());
      blur2d_backward(be_, CView<4>(dt.skip_blur[k].view()), dsk, kSkipBlur);
      add_inplace(be_, rows(CView<4>(dsk)), rows(din));
    }
    layer_backward_tangent(fromrgb_, CView<4>(input_.view()), CView<4>(tan_input_.view()), CView<4>(a.rgb.view()),
                           CView<4>(d.rgb.view()), CView<4>(dt.rgb.view()), View<4>(), s);
  }

  B be_;
  std::int64_t batch_ = 0;
  Activations val_, adj_, tan_, adj_tan_;
  Tensor<T, 4> input_, tan_input_;
  Tensor<T, 1> scratch_, scratch2_;  // activation-sized temporaries (dz, ḋz, a skip gradient)
  Arena arena_;
};

}  // namespace qlip::nn
