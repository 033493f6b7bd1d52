/// @file gan_loss.hpp
/// @brief The non-saturating ("vanilla") GAN losses of stage 2 (QLIP_SPEC.md §4.3) on a batch of
///        discriminator logits, and their gradients with respect to the logits:
///   discriminator: L_D = ½·[mean_n softplus(−D(x_n)) + mean_n softplus(D(x̂_n))]
///   generator:     L_G = mean_n softplus(−D(x̂_n))
/// softplus(t) = ln(1 + eᵗ), evaluated as max(t, 0) + ln1p(e^−|t|) (finite for any t); its
/// derivative is the logistic σ(t). In double; the logits are a handful of numbers per batch.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip::nn {

inline double softplus(double t) { return std::max(t, 0.0) + std::log1p(std::exp(-std::abs(t))); }
inline double logistic(double t) { return t >= 0 ? 1.0 / (1.0 + std::exp(-t)) : std::exp(t) / (1.0 + std::exp(t)); }

/// One half of L_D: mean softplus(−l) for real logits, mean softplus(l) for fake ones (returned,
/// before the ½); d (empty or written) gets ∂(½·half)/∂l, this half's share of ∂L_D/∂l.
template <class T>
double discriminator_loss_half(HostView<const T, 1> logits, bool real, HostView<T, 1> d) {
  QLIP_CHECK(logits.size(0) >= 1, "discriminator_loss: empty batch of logits");
  QLIP_CHECK(d.empty() || d.size(0) == logits.size(0), "discriminator_loss: the gradient has ", d.size(0),
             " elements, expected ", logits.size(0));
  const double n = static_cast<double>(logits.size(0)), sign = real ? -1.0 : 1.0;
  double sum = 0.0;
  for (std::int64_t i = 0; i < logits.size(0); ++i) {
    const double t = sign * static_cast<double>(logits(i));
    sum += softplus(t);
    if (!d.empty()) d(i) = static_cast<T>(sign * 0.5 * logistic(t) / n);
  }
  return sum / n;
}

/// L_D of real logits lr and fake logits lf; d_real and d_fake (each empty or written) get ∂L_D/∂logit.
template <class T>
double discriminator_loss(HostView<const T, 1> lr, HostView<const T, 1> lf, HostView<T, 1> d_real,
                          HostView<T, 1> d_fake) {
  return 0.5 * (discriminator_loss_half<T>(lr, true, d_real) + discriminator_loss_half<T>(lf, false, d_fake));
}

/// L_G of fake logits lf; d_fake (empty or written) gets scale·∂L_G/∂logit.
template <class T>
double generator_loss(HostView<const T, 1> lf, HostView<T, 1> d_fake, double scale = 1.0) {
  QLIP_CHECK(lf.size(0) >= 1, "generator_loss: empty batch of logits");
  QLIP_CHECK(d_fake.empty() || d_fake.size(0) == lf.size(0), "generator_loss: d_fake has ", d_fake.size(0),
             " elements, expected ", lf.size(0));
  const double n = static_cast<double>(lf.size(0));
  double loss = 0.0;
  for (std::int64_t i = 0; i < lf.size(0); ++i) {
    const double t = static_cast<double>(lf(i));
    loss += softplus(-t);
    if (!d_fake.empty()) d_fake(i) = static_cast<T>(-scale * logistic(-t) / n);
  }
  return loss / n;
}

}  // namespace qlip::nn
