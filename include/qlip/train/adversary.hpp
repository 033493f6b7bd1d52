/// @file adversary.hpp
/// @brief Stage 2's adversarial loss (QLIP_SPEC.md §4.2–4.3): a StyleGAN2 discriminator with its own
///        parameter store and AdamW, the generator's non-saturating term and the discriminator step
///        with the lazy R1 penalty.
///
/// Per training step t ≥ start (before it neither side runs, as taming's disc_start):
///   generator:     L_G = mean softplus(−D(x̂)); the caller adds α_g·∂L_G/∂x̂ to the reconstruction's
///                  gradient (generator_gradient) before the decoder's backward
///   discriminator: L_D = ½[mean softplus(−D(x)) + mean softplus(D(x̂))] on the same reconstruction
///                  (detached) after the generator's update, + (γ/2)·k·R1 on every k-th
///                  discriminator step (the first included), R1 = mean_b ‖∇ₓ Σ D(x)‖²_b on the real
///                  images; one AdamW step, no clipping; a non-finite loss or gradient skips it.
/// The discriminator is frozen during the generator's part (only the input gradient is computed).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "qlip/core/error.hpp"
#include "qlip/core/philox.hpp"
#include "qlip/cpu/add.hpp"  // the generator term's add_inplace on cpu_backend (not a dependent call)
#include "qlip/io/safetensors.hpp"
#include "qlip/model/checkpoint.hpp"
#include "qlip/nn/discriminator.hpp"
#include "qlip/nn/gan_loss.hpp"
#include "qlip/train/clip_grad.hpp"
#include "qlip/train/optimizer.hpp"
#include "qlip/train/parameter_store.hpp"

namespace qlip::train {

/// The adversarial settings (QLIP_SPEC §4.2–4.3 defaults).
struct AdversaryOptions {
  double weight = 0.1;          ///< α_g (fixed, not adaptive)
  std::int64_t start = 0;       ///< first training step with the GAN terms (disc_start)
  double r1_gamma = 10.0;       ///< γ
  std::int64_t r1_every = 16;   ///< k: R1 on every k-th discriminator step; 0: never
  double lr = 1e-4;             ///< the discriminator's peak AdamW rate
  double weight_decay = 0.05;   ///< on its weights (rank ≥ 2), as the generator's recipe
  double beta1 = 0.9, beta2 = 0.95;
  std::int64_t warmup = 0, steps = 1;  ///< its warm-up + cosine schedule, in discriminator steps
};

/// One discriminator step's numbers.
struct DiscriminatorStep {
  double loss = 0.0;         ///< L_D
  double r1 = NAN;           ///< R1 when this step had it, NaN otherwise
  double real_logit = 0.0;   ///< mean D(x)
  double fake_logit = 0.0;   ///< mean D(x̂)
  double grad_norm = 0.0;    ///< ‖∂(L_D + R1 term)/∂θ_D‖ before the update
  bool applied = false;
};

/// Parameters of a discriminator laid out in a store (one group, StyleGAN2's names), bound to it.
template <class Net>
void bind_discriminator(Net& net, ParameterStore& store) {
  bind_parameters(net, store, [](const std::string&, std::size_t rank) { return std::pair{0, rank >= 2}; });
}

/// StyleGAN2's initialisation: every weight N(0, 1) (the equalised learning rate scales it at use),
/// every bias 0. Philox(seed), element i of tensor j from stream j.
inline void initialize_discriminator(ParameterStore& store, std::uint64_t seed) {
  const Philox rng(seed);
  for (int j = 0; j < store.size(); ++j) {
    const ParameterInfo& info = store.info(j);
    float* v = store.values().data() + info.offset;
    const bool weight = info.shape.size() >= 2;
    for (std::int64_t i = 0; i < info.numel; ++i)
      v[i] = weight ? rng.normal(static_cast<std::uint64_t>(i), static_cast<std::uint64_t>(j)) : 0.0f;
  }
}

/// The discriminator's weights file inside a run's checkpoint folder (beside model.safetensors).
inline constexpr const char* kDiscriminatorFileName = "discriminator.safetensors";
/// Its optimiser state (a training-state file of the discriminator's store).
inline constexpr const char* kDiscriminatorStateFileName = "discriminator_state.safetensors";

/// Writes every tensor of the store to `path` by name (F32), with `metadata`.
inline void write_discriminator_weights(const std::string& path, const ParameterStore& store,
                                        const std::map<std::string, std::string>& metadata) {
  std::vector<SafetensorsEntry> entries;
  for (const ParameterInfo& info : store.infos())
    entries.push_back({info.name, DType::f32, info.shape, store.values().data() + info.offset});
  write_safetensors(path, entries, metadata);
}

/// Loads every tensor of the store from `path` by name; nothing changes unless all are there with
/// their shapes.
/// @throws qlip::Error naming the file and the first missing or misshapen tensor
inline void load_discriminator_weights(const std::string& path, ParameterStore& store) {
  const SafetensorsFile f = SafetensorsFile::open(path);
  for (const ParameterInfo& info : store.infos()) {
    QLIP_CHECK(f.contains(info.name), path, ": missing tensor '", info.name, "' (a parameter of the discriminator)");
    QLIP_CHECK(f.info(info.name).shape == info.shape, path, ": tensor '", info.name, "' has shape ",
               qlip::detail::vec_string(f.info(info.name).shape), ", the discriminator expects ",
               qlip::detail::vec_string(info.shape));
  }
  for (const ParameterInfo& info : store.infos()) {
    const std::vector<float> v = f.to_float_vector(info.name);
    std::copy(v.begin(), v.end(), store.values().data() + info.offset);
  }
}

template <nn::DiscriminatorConfig C>
class Adversary {
 public:
  using Net = nn::Discriminator<C, cpu_backend>;
  static constexpr const char* kGroupName = "discriminator";

  Adversary(const AdversaryOptions& o, cpu_backend be = {}) : net(be), be_(be), options_(o) {
    QLIP_CHECK(o.weight >= 0 && o.start >= 0 && o.r1_gamma >= 0 && o.r1_every >= 0 && o.lr >= 0,
               "adversary: the GAN weight, start step, R1 gamma, R1 interval and rate must be ≥ 0");
    bind_discriminator(net, store);
    OptimizerOptions oo;
    oo.kind = OptimizerKind::adamw;
    oo.beta1 = o.beta1;
    oo.beta2 = o.beta2;
    oo.schedule = {o.warmup, std::max<std::int64_t>(o.steps, 1), 0.0};
    opt_.emplace(store, std::vector<ParamGroup>{{kGroupName, o.lr, o.weight_decay}}, oo);
  }

  void prepare(std::int64_t batch) {
    net.prepare(batch);
    logits_real_ = Tensor<float, 1>({batch});
    logits_fake_ = Tensor<float, 1>({batch});
    d_real_ = Tensor<float, 1>({batch});
    d_fake_ = Tensor<float, 1>({batch});
    dx_ = Tensor<float, 4>({batch, C.image_channels, C.resolution, C.resolution});
  }

  /// Whether training step `step` has the GAN terms.
  bool active(std::int64_t step) const { return options_.weight > 0 && step >= options_.start; }

  /// L_G of the reconstruction x̂, with α_g·∂L_G/∂x̂ added to dx (+=). The discriminator is frozen.
  double generator_gradient(HostView<const float, 4> recon, HostView<float, 4> dx) {
    net.forward(recon, logits_fake_.view());
    const double loss = nn::generator_loss<float>(logits_fake_.view(), d_fake_.view(), options_.weight);
    net.backward(d_fake_.view(), dx_.view(), 0.0);
    add_inplace(be_, rows(HostView<const float, 4>(dx_.view())), rows(dx));
    return loss;
  }

  /// One discriminator step on real images x and the (detached) reconstruction x̂.
  DiscriminatorStep step(HostView<const float, 4> real, HostView<const float, 4> recon) {
    DiscriminatorStep out;
    store.zero_grad();
    net.forward(recon, logits_fake_.view());
    const double fake = nn::discriminator_loss_half<float>(logits_fake_.view(), false, d_fake_.view());
    out.fake_logit = mean(logits_fake_);
    net.backward(d_fake_.view(), HostView<float, 4>(), 1.0);
    net.forward(real, logits_real_.view());
    const double real_half = nn::discriminator_loss_half<float>(logits_real_.view(), true, d_real_.view());
    out.real_logit = mean(logits_real_);
    net.backward(d_real_.view(), HostView<float, 4>(), 1.0);
    out.loss = 0.5 * (real_half + fake);
    double total = out.loss;
    if (options_.r1_every > 0 && options_.r1_gamma > 0 && d_steps_ % options_.r1_every == 0) {
      const double w = 0.5 * options_.r1_gamma * static_cast<double>(options_.r1_every);
      out.r1 = net.r1(w);
      total += w * out.r1;
    }
    ++d_steps_;
    out.grad_norm = grad_norm(store);
    out.applied = std::isfinite(total) && std::isfinite(out.grad_norm);
    if (out.applied) (void)opt_->step();
    return out;
  }

  /// The logits of the last step's real images and reconstructions.
  HostView<const float, 1> real_logits() const { return logits_real_.view(); }
  HostView<const float, 1> fake_logits() const { return logits_fake_.view(); }

  /// Discriminator steps taken so far (R1's schedule counts them); restored on resume.
  std::int64_t steps_taken() const { return d_steps_; }
  void set_steps_taken(std::int64_t n) { d_steps_ = n; }
  Optimizer& optimizer() { return *opt_; }
  const AdversaryOptions& options() const { return options_; }

  Net net;
  ParameterStore store;

 private:
  static double mean(const Tensor<float, 1>& t) {
    double s = 0.0;
    for (std::int64_t i = 0; i < t.numel(); ++i) s += t.data()[i];
    return s / static_cast<double>(t.numel());
  }
  template <class U>
  static HostView<U, 2> rows(const HostView<U, 4>& t) {
    return t.reshape(Extents<2>{t.size(0), t.size(1) * t.size(2) * t.size(3)});
  }

  cpu_backend be_;
  AdversaryOptions options_;
  std::optional<Optimizer> opt_;
  std::int64_t d_steps_ = 0;
  Tensor<float, 1> logits_real_, logits_fake_, d_real_, d_fake_;
  Tensor<float, 4> dx_;
};

}  // namespace qlip::train
