/// @file loss_balance.hpp
/// @brief The loss balance of stage 1 from gradient magnitudes (QLIP_SPEC.md §4.1; the paper's Fig. 5
///        and Table 3a): the alignment loss's gradient at the last MLP linear of E_v is 10²–10³× the
///        reconstruction loss's, and α_a : α_r is set from that ratio so that both pull on the encoder
///        with comparable force.
///
/// One measurement takes two extra backward passes of the unweighted losses, L_align alone and
/// L_recon (the pixel MSE) alone, and reads the norm of one parameter's gradient after each. The
/// balance takes the median of the ratio over a window of measured steps (the ratio moves quickly
/// in the first steps of training from scratch; the median ignores single outliers) and sets
/// α_r = α_a · ratio, which makes the two weighted gradients equal in norm at that parameter.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "qlip/core/error.hpp"
#include "qlip/train/parameter_store.hpp"

namespace qlip::train {

/// The official name of the last MLP linear of a vision encoder of `layers` layers: the SwiGLU
/// down-projection `w3` (EVA-02) or the plain MLP's `fc2`.
inline std::string last_vision_mlp_weight(int layers, bool swiglu) {
  QLIP_CHECK(layers >= 1, "last_vision_mlp_weight: the encoder has no layers (", layers, ")");
  return "vision_model.encoder.layers." + std::to_string(layers - 1) + ".mlp." + (swiglu ? "w3" : "fc2") + ".weight";
}

/// One measurement: the gradient norms of the unweighted losses at the probed parameter.
struct LossGradientSample {
  std::int64_t step = 0;     ///< optimiser steps taken before the measured batch
  double align_norm = 0.0;   ///< ‖∂L_align/∂w‖
  double recon_norm = 0.0;   ///< ‖∂L_recon/∂w‖
  /// ‖∂L_align/∂w‖ / ‖∂L_recon/∂w‖ (infinite when the reconstruction gradient vanishes).
  double ratio() const { return recon_norm > 0.0 ? align_norm / recon_norm : INFINITY; }
};

/// The L2 norm of one parameter's gradient, summed in double.
inline double parameter_grad_norm(const ParameterStore& store, int index) {
  const ParameterInfo& info = store.info(index);
  const float* g = store.grads().data() + info.offset;
  double s = 0.0;
  for (std::int64_t i = 0; i < info.numel; ++i) s += static_cast<double>(g[i]) * static_cast<double>(g[i]);
  return std::sqrt(s);
}

/// Measures both norms on the batch that `backward_with` sees. `backward_with(align, recon)` must
/// zero nothing and run one forward + backward of align·L_align + recon·L_recon (every other loss
/// weight 0) into the store's gradients. The gradients are zeroed before each pass and after the
/// second, so the caller's step starts from zero as usual.
/// @param index the probed parameter (ParameterStore::index_of)
template <class BackwardWith>
LossGradientSample measure_loss_gradients(ParameterStore& store, int index, std::int64_t step,
                                          BackwardWith&& backward_with) {
  LossGradientSample s;
  s.step = step;
  store.zero_grad();
  backward_with(1.0, 0.0);
  s.align_norm = parameter_grad_norm(store, index);
  store.zero_grad();
  backward_with(0.0, 1.0);
  s.recon_norm = parameter_grad_norm(store, index);
  store.zero_grad();
  return s;
}

/// Collects the first `window` measurements and derives α_r / α_a from the median of their ratios.
class LossBalance {
 public:
  explicit LossBalance(std::int64_t window) : window_(window) {
    QLIP_CHECK(window >= 1, "loss balance: the window must hold at least one step, got ", window);
  }

  /// Adds one measurement (ignored once the window is full). Non-finite ratios are kept: the median
  /// decides, and ratio() refuses a window whose median is not finite.
  void add(const LossGradientSample& s) {
    if (!ready()) samples_.push_back(s);
  }
  bool ready() const { return static_cast<std::int64_t>(samples_.size()) >= window_; }
  std::int64_t window() const { return window_; }
  const std::vector<LossGradientSample>& samples() const { return samples_; }

  /// The median of ‖∂L_align/∂w‖ / ‖∂L_recon/∂w‖ over the window (the mean of the middle two for
  /// an even count).
  /// @throws qlip::Error before the window is full, or when the median is not a finite positive number
  double ratio() const {
    QLIP_CHECK(ready(), "loss balance: ", samples_.size(), " of ", window_, " measurements taken");
    std::vector<double> r;
    r.reserve(samples_.size());
    for (const LossGradientSample& s : samples_) r.push_back(s.ratio());
    std::sort(r.begin(), r.end());
    const std::size_t n = r.size();
    const double m = n % 2 ? r[n / 2] : 0.5 * (r[n / 2 - 1] + r[n / 2]);
    QLIP_CHECK(std::isfinite(m) && m > 0.0, "loss balance: the median gradient ratio over ", n,
               " steps is ", m, " (the reconstruction or alignment gradient vanished); use --balance fixed");
    return m;
  }

 private:
  std::int64_t window_;
  std::vector<LossGradientSample> samples_;
};

}  // namespace qlip::train
