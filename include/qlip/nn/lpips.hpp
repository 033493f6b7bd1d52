/// @file lpips.hpp
/// @brief The LPIPS perceptual distance in its VGG16 form (QLIP_SPEC.md §4.3; the `lpips` package,
///        v0.1), forward and backward with respect to the first image, on any host backend:
///   x' = (x − shift)/scale per channel (the scaling layer, for inputs in [−1, 1]; an affine map
///        from the caller's pixel space can be folded in, set_input_affine)
///   VGG16 features: 13 3×3 convolutions with ReLU, 2×2 max pooling before conv 3, 5, 8 and 11,
///        tapped after conv 2, 4, 7, 10 and 13 (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3)
///   d(x0, x1)[b] = Σ_k (1/H_kW_k)·Σ_{h,w} Σ_c lin_k[c]·(n(f_k(x0)) − n(f_k(x1)))²,
///        n = channel_normalize (unit length over channels, ε = 1e-10)
/// The loss of a batch is the mean of d over its images. The network is frozen: backward gives
/// the gradient of the loss with respect to x0 only (the reconstruction; x1 is the target).
///
/// Parameters use the `lpips` package's state_dict names, so a file written from
/// `lpips.LPIPS(net="vgg").state_dict()` (tools/make_lpips_weights.py) loads by name:
///   net.slice{1..5}.{i}.weight/bias  (i = the index in torchvision's vgg16().features)
///   lin{0..4}.model.1.weight         [1, C, 1, 1]
/// kBase scales every width (64 is VGG16: 64, 128, 256, 512, 512); smaller bases make a network of
/// the same structure small enough for finite differences on the double reference backend.
#pragma once

#include <array>
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

/// The scaling layer's constants (lpips.ScalingLayer), for inputs in [−1, 1].
inline constexpr std::array<double, 3> kLpipsShift = {-0.030, -0.088, -0.188};
inline constexpr std::array<double, 3> kLpipsScale = {0.458, 0.448, 0.450};

template <std::int64_t kBase = 64, backend B = cpu_backend>
class Lpips {
 public:
  using T = typename B::scalar;
  using Mem = typename B::memory;
  static_assert(std::is_same_v<Mem, host_memory>, "Lpips keeps its activations in host vectors");
  template <int R>
  using View = TensorView<T, R, Mem>;
  template <int R>
  using CView = TensorView<const T, R, Mem>;

  static constexpr int kConvs = 13;
  static constexpr int kTaps = 5;
  /// Output channels of each conv.
  static constexpr std::array<std::int64_t, kConvs> kWidth = {kBase,     kBase,     2 * kBase, 2 * kBase, 4 * kBase,
                                                              4 * kBase, 4 * kBase, 8 * kBase, 8 * kBase, 8 * kBase,
                                                              8 * kBase, 8 * kBase, 8 * kBase};
  /// Whether a 2×2 max pooling comes before conv j, and whether conv j's ReLU output is tapped.
  static constexpr bool pooled_before(int j) { return j == 2 || j == 4 || j == 7 || j == 10; }
  static constexpr bool tapped(int j) { return j == 1 || j == 3 || j == 6 || j == 9 || j == 12; }
  /// The state_dict name prefix of conv j (torchvision's feature index inside its lpips slice).
  static std::string conv_name(int j) {
    static constexpr int kSlice[kConvs] = {1, 1, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5};
    static constexpr int kIndex[kConvs] = {0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28};
    return "net.slice" + std::to_string(kSlice[j]) + "." + std::to_string(kIndex[j]);
  }
  static std::int64_t in_width(int j) { return j == 0 ? 3 : kWidth[static_cast<std::size_t>(j - 1)]; }

  explicit Lpips(B be = {}) : be_(be) {
    for (int j = 0; j < kConvs; ++j) {
      conv_w[j].shape = {kWidth[static_cast<std::size_t>(j)], in_width(j), 3, 3};
      conv_b[j].shape = {kWidth[static_cast<std::size_t>(j)]};
    }
    int k = 0;
    for (int j = 0; j < kConvs; ++j)
      if (tapped(j)) lin[k++].shape = {1, kWidth[static_cast<std::size_t>(j)], 1, 1};
    set_input_affine({1.0, 1.0, 1.0}, {0.0, 0.0, 0.0});
  }

  /// Every parameter, the lpips package's names, its state_dict order.
  template <class V>
  void visit_parameters(V&& v) {
    for (int j = 0; j < kConvs; ++j) {
      v(conv_name(j) + ".weight", conv_w[j]);
      v(conv_name(j) + ".bias", conv_b[j]);
    }
    for (int k = 0; k < kTaps; ++k) v("lin" + std::to_string(k) + ".model.1.weight", lin[k]);
  }

  /// Inputs x_in = gain[c]·x + offset[c] are what the scaling layer receives (identity: x in
  /// [−1, 1]). For CLIP-normalised pixels p = (x01 − mean)/std: gain = 2·std, offset = 2·mean − 1.
  void set_input_affine(const std::array<double, 3>& gain, const std::array<double, 3>& offset) {
    for (int c = 0; c < 3; ++c) {
      a_[static_cast<std::size_t>(c)] = static_cast<T>(gain[static_cast<std::size_t>(c)] / kLpipsScale[static_cast<std::size_t>(c)]);
      t_[static_cast<std::size_t>(c)] = static_cast<T>((offset[static_cast<std::size_t>(c)] - kLpipsShift[static_cast<std::size_t>(c)]) /
                                                       kLpipsScale[static_cast<std::size_t>(c)]);
    }
  }

  /// Sizes every buffer for batches of `batch` images of h×w (both at least 16: four poolings).
  void prepare(std::int64_t batch, std::int64_t h, std::int64_t w) {
    QLIP_CHECK(batch >= 1 && h >= 16 && w >= 16, "LPIPS: images of ", h, "x", w,
               " (batch ", batch, ") are too small: VGG16 pools four times, so at least 16x16");
    batch_ = batch;
    std::int64_t hh = h, ww = w;
    input_ = Tensor<T, 4>({batch, 3, h, w});
    for (int j = 0; j < kConvs; ++j) {
      if (pooled_before(j)) {
        hh /= 2;
        ww /= 2;
        pooled_[j] = Tensor<T, 4>({batch, in_width(j), hh, ww});
        dpooled_[j] = Tensor<T, 4>(pooled_[j].shape());
      }
      act_[j] = Tensor<T, 4>({batch, kWidth[static_cast<std::size_t>(j)], hh, ww});
      dact_[j] = Tensor<T, 4>(act_[j].shape());
    }
    for (int k = 0, j = 0; j < kConvs; ++j)
      if (tapped(j)) {
        norm0_[k] = Tensor<T, 4>(act_[j].shape());
        norm1_[k] = Tensor<T, 4>(act_[j].shape());
        dnorm_[k] = Tensor<T, 4>(act_[j].shape());
        scratch_[k] = Tensor<T, 4>(act_[j].shape());
        ++k;
      }
    dinput_ = Tensor<T, 4>(input_.shape());
    part_ = Tensor<T, 1>({batch});
    std::size_t ws = 0;
    for (int j = 0; j < kConvs; ++j)
      ws = std::max(ws, conv2d_workspace_bytes(be_, conv_input(j).shape(), conv_w[j].shape, kGeometry));
    arena_ = Arena(ws + 4096);
  }

  /// The LPIPS distance of each image pair, d [B] (written), and the batch mean (returned). Keeps
  /// what backward needs about x0.
  /// @param x0 [B, 3, H, W] the image the gradient is for (the reconstruction)
  /// @param x1 [B, 3, H, W] the target
  double forward(CView<4> x0, CView<4> x1, View<1> d) {
    QLIP_CHECK(x0.shape() == input_.shape() && x1.shape() == input_.shape(), "LPIPS: images ",
               shape_string<4>(x0.shape()), " and ", shape_string<4>(x1.shape()), ", but buffers were prepared for ",
               shape_string<4>(input_.shape()));
    check_shape(d, Extents<1>{batch_}, "LPIPS: distances d");
    features(x1, norm1_);  // the target first: its activations are then overwritten by x0's
    features(x0, norm0_);
    fill(be_, d, T(0));
    for (int k = 0; k < kTaps; ++k) {
      lpips_layer_distance(be_, CView<4>(norm0_[k].view()), CView<4>(norm1_[k].view()), lin_weights(k), part_.view());
      add_inplace(be_, CView<2>(part_.view().reshape(Extents<2>{1, batch_})), d.reshape(Extents<2>{1, batch_}));
    }
    double mean = 0.0;
    for (std::int64_t b = 0; b < batch_; ++b) mean += static_cast<double>(d(b));
    return mean / static_cast<double>(batch_);
  }

  /// dx0 = ∂(dloss · mean_b d[b]) / ∂x0 (=), for the x0 of the last forward.
  void backward(double dloss, View<4> dx0) {
    check_shape(dx0, input_.shape(), "LPIPS: dx0");
    fill(be_, part_.view(), static_cast<T>(dloss / static_cast<double>(batch_)));  // ∂loss/∂d[b]
    int k = kTaps - 1;
    for (int j = kConvs - 1; j >= 0; --j) {
      View<4> da = dact_[j].view();
      if (j == kConvs - 1) fill(be_, da, T(0));  // nothing above the last conv
      if (tapped(j)) {
        const int tap = k--;
        lpips_layer_distance_backward(be_, CView<4>(norm0_[tap].view()), CView<4>(norm1_[tap].view()), lin_weights(tap),
                                      CView<1>(part_.view()), dnorm_[tap].view(), View<4>());
        channel_normalize_backward(be_, CView<4>(act_[j].view()), CView<4>(dnorm_[tap].view()), scratch_[tap].view());
        add_inplace(be_, flat(CView<4>(scratch_[tap].view())), flat(da));
      }
      // ReLU backward on its output (> 0 exactly where the input was), in place.
      leaky_relu_backward(be_, flat(CView<4>(act_[j].view())), flat(CView<4>(da)), flat(da), 0.0, 1.0);
      View<4> dx = j == 0 ? dinput_.view() : (pooled_before(j) ? dpooled_[j].view() : dact_[j - 1].view());
      conv2d_backward(be_, arena_, conv_input(j), CView<4>(conv_w[j].value), CView<4>(da), dx, View<4>(), View<1>(),
                      kGeometry);
      if (j > 0 && pooled_before(j))
        max_pool2x2_backward(be_, CView<4>(act_[j - 1].view()), CView<4>(dpooled_[j].view()), dact_[j - 1].view());
    }
    channel_affine_backward(be_, CView<4>(dinput_.view()), CView<1>(a_view()), dx0);
  }

  Param<T, 4, Mem> conv_w[kConvs];
  Param<T, 1, Mem> conv_b[kConvs];
  Param<T, 4, Mem> lin[kTaps];

 private:
  static constexpr Conv2dGeometry kGeometry{1, 1};

  /// Runs VGG16 on x and writes the normalised taps into `taps`.
  void features(CView<4> x, Tensor<T, 4> (&taps)[kTaps]) {
    channel_affine(be_, x, CView<1>(a_view()), CView<1>(t_view()), input_.view());
    int k = 0;
    for (int j = 0; j < kConvs; ++j) {
      if (pooled_before(j)) max_pool2x2(be_, CView<4>(act_[j - 1].view()), pooled_[j].view());
      conv2d(be_, arena_, conv_input(j), CView<4>(conv_w[j].value), CView<1>(conv_b[j].value), act_[j].view(), kGeometry);
      leaky_relu(be_, flat(CView<4>(act_[j].view())), flat(act_[j].view()), 0.0, 1.0);
      if (tapped(j)) channel_normalize(be_, CView<4>(act_[j].view()), taps[k++].view());
    }
  }
  CView<4> conv_input(int j) const {
    if (j == 0) return input_.view();
    return pooled_before(j) ? CView<4>(pooled_[j].view()) : CView<4>(act_[j - 1].view());
  }
  CView<1> lin_weights(int k) const { return CView<1>(lin[k].value.data(), {lin[k].shape[1]}); }
  template <class U>
  static TensorView<U, 2, Mem> flat(const TensorView<U, 4, Mem>& t) {
    return t.reshape(Extents<2>{t.size(0), t.size(1) * t.size(2) * t.size(3)});
  }
  View<1> a_view() { return View<1>(a_.data(), {3}); }
  View<1> t_view() { return View<1>(t_.data(), {3}); }

  B be_;
  std::array<T, 3> a_{}, t_{};
  std::int64_t batch_ = 0;
  Tensor<T, 4> input_, dinput_;
  Tensor<T, 4> act_[kConvs], dact_[kConvs], pooled_[kConvs], dpooled_[kConvs];
  Tensor<T, 4> norm0_[kTaps], norm1_[kTaps], dnorm_[kTaps], scratch_[kTaps];  // scratch_: a tap's ∂/∂act
  Tensor<T, 1> part_;  // one layer's distances (forward), ∂loss/∂d (backward)
  Arena arena_;
};

}  // namespace qlip::nn
