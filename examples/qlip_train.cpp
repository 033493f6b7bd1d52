/// @file qlip_train.cpp
/// @brief `qlip-train`: QLIP training on Fashion-MNIST or a user's images and captions, on the CPU.
///        Stage 1 (MODEL.md §4.1: text + vision encoders, BSQ quantizer and decoder jointly;
///        contrastive + MSE + BSQ entropy/commitment; LAMB). Stage 2 (--stage 2 --init STAGE1: text
///        tower dropped, E_v frozen; quantizer MLPs + decoder with MSE + LPIPS + GAN + BSQ losses; AdamW;
///        the StyleGAN2 discriminator with R1 and its own AdamW).
///
///   qlip_train --out out/run [--stage 1|2 | --stages 1,2 [--stage2-steps N]]
///              [--data fashion-mnist | --manifest captions.tsv|DIR]
///              [--lpips LPIPS.safetensors] [--alpha-perceptual P]
///              [--alpha-gan G] [--gan-start N] [--r1-gamma γ] [--r1-every K] [--lr-disc LR]
///              [--steps N] [--batch B] [--optimizer lamb|adamw] [--warmup W] [--seed S] [--threads T]
///              [--alpha-align A] [--alpha-recon R] [--lr-vision|--lr-text|--lr-decoder|--lr-base LR]
///              [--balance fixed|auto] [--balance-steps K] [--grad-probe-every N]
///              [--init CHECKPOINT] [--resume] [--save-every N] [--grid-every N] [--log-every N]
///
/// Writes into --out: checkpoint/ (the official layout: config.json, model.safetensors,
/// preprocessor_config.json, the CLIP vocabulary, and training_state.safetensors with the optimiser
/// moments, step and data position; in stage 2 with the GAN also discriminator.safetensors and
/// discriminator_state.safetensors), log.csv (one row per step), loss.png, recon.png
/// (inputs | reconstructions), and with --balance auto or --grad-probe-every: grad_balance.csv and
/// grad_balance.png (the gradient magnitudes of both losses at E_v's last MLP linear). docs/TRAINING.md is
/// the manual. Errors: one line on stderr, "qlip-train: error: <message>", exit 1 (2 for a bad
/// command line).

#include <omp.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "configs/demo_qlip_config.hpp"
#include "qlip/cpu.hpp"
#include "qlip/model/lpips_weights.hpp"
#include "qlip/model/qlip_trainable.hpp"
#include "qlip/nn/lpips.hpp"
#include "qlip/train/init.hpp"
#include "qlip/train/loss_balance.hpp"
#include "qlip/train/optimizer.hpp"
#include "qlip/train/adversary.hpp"
#include "qlip/train/recipe.hpp"
#include "qlip/train/scratch_model.hpp"
#include "qlip/train/trainer.hpp"
#include "train/balance_log.hpp"
#include "train/data_source.hpp"
#include "train/recon_grid.hpp"
#include "train/run_log.hpp"
#include "train/run_state.hpp"
#include "cli/util.hpp"

namespace {

using namespace qlip;
using namespace qlip::train_cli;
using Model = QlipTrainable<QlipDemoFashion, cpu_backend>;
using Perceptual = nn::Lpips<64, cpu_backend>;
using Adversary = train::Adversary<kDemoDiscriminator>;

struct Options {
  std::string out = "out/train";
  std::string data = "fashion-mnist";
  std::string data_dir;  // where the Fashion-MNIST files are (default: the Debian package's folder)
  std::string manifest, init, vocab;
  std::int64_t steps = 1000, batch = 64, warmup = 100, save_every = 200, grid_every = 200, log_every = 10;
  std::uint64_t seed = 0;
  int threads = 0;
  int stage = 1;
  std::string optimizer;  // empty: the stage's recipe (LAMB in stage 1, AdamW in stage 2)
  std::string lpips;      // stage 2: full LPIPS weights (tools/make_lpips_weights.py); empty: α_p = 0
  Stage2Weights alpha2{};
  train::AdversaryOptions gan{};  // stage 2: α_g, start, R1, the discriminator's rate
  double lr_scale = 1.0;
  double lr_vision = -1, lr_text = -1, lr_decoder = -1, lr_base = -1;  // < 0: the recipe's peak
  Stage1Weights alpha{};  // the stage-1 loss weights (α_a : α_r = 1 : 1000)
  double max_minutes = 0;  // > 0: stop (and save) once this much wall time has passed
  std::string balance = "fixed";  // auto: α_r from the gradient ratio over the first balance_steps steps
  std::int64_t balance_steps = 20, grad_probe_every = 0;
  bool resume = false;
};

/// What this run computes with (train/run_state.hpp): the flags a resume must repeat. The rates
/// are the effective peaks, so --lr-scale 2 and a doubled --lr-vision compare as what they are.
RunSettings run_settings(const Options& o, const train::StageRecipe& recipe) {
  const bool gan = o.stage == 2 && o.gan.weight > 0;  // the GAN flags mean nothing otherwise
  RunSettings s = {{"--stage", std::to_string(o.stage)},
                   {"--steps", std::to_string(o.steps)},
                   {"--batch", std::to_string(o.batch)},
                   {"--warmup", std::to_string(o.warmup)},
                   {"--optimizer", recipe.options.kind == train::OptimizerKind::lamb ? "lamb" : "adamw"},
                   {"--seed", std::to_string(o.seed)},
                   {"--alpha-align", setting_text(o.alpha.contrastive)},
                   {"--alpha-recon", setting_text(o.stage == 2 ? o.alpha2.reconstruction : o.alpha.reconstruction)},
                   {"--alpha-perceptual", setting_text(o.alpha2.perceptual)},
                   {"--lpips", o.lpips.empty() ? "none" : "given"},
                   {"--balance", o.balance},
                   {"--alpha-gan", gan ? setting_text(o.gan.weight) : "none"},
                   {"--gan-start", gan ? std::to_string(o.gan.start) : "none"},
                   {"--r1-gamma", gan ? setting_text(o.gan.r1_gamma) : "none"},
                   {"--r1-every", gan ? std::to_string(o.gan.r1_every) : "none"},
                   {"--lr-disc", gan ? setting_text(o.gan.lr * o.lr_scale) : "none"},
                   {"--balance-steps", std::to_string(o.balance_steps)},
                   {"--data", o.manifest.empty() ? o.data : "manifest " + o.manifest}};
  const char* lr_flags[] = {"--lr-vision", "--lr-text", "--lr-decoder", "--lr-base"};  // QlipGroup order
  for (std::size_t g = 0; g < recipe.groups.size() && g < std::size(lr_flags); ++g)
    s.emplace_back(lr_flags[g], setting_text(recipe.groups[g].peak_lr));
  return s;
}

using FileList = std::vector<train::GeneratedFile>;

/// The discriminator's weights and optimiser state as files of the run's checkpoint folder, committed
/// with the generator's (the adversary must outlive the save).
FileList discriminator_files(Adversary& adversary, const TrainData& data, std::uint64_t seed) {
  const data::LoaderPosition pos = data.loader->position();
  const train::TrainProgress progress{static_cast<std::int64_t>(pos.epoch), pos.batch, seed, 0};
  return {{train::kDiscriminatorFileName,
           [&adversary](const std::string& path) {
             train::write_discriminator_weights(path, adversary.store, {{"format", "pt"}});
           }},
          {train::kDiscriminatorStateFileName, [&adversary, progress](const std::string& path) {
             train::write_train_state(path, "discriminator", adversary.optimizer(), progress);
           }}};
}

int run(const Options& o) {
  if (o.threads > 0) omp_set_num_threads(o.threads);
  std::filesystem::create_directories(o.out);
  const std::string ckpt_dir = o.out + "/checkpoint";
  const std::string vocab = find_vocab(o.vocab);

  Model model(train::scratch_runtime(), train::scratch_bsq(), cpu_backend{o.threads});
  train::ParameterStore store;
  train::bind_to_store(model, store);

  QLIP_CHECK(o.stage == 2 || o.lpips.empty(), "--lpips is a stage-2 loss; add --stage 2");
  QLIP_CHECK(o.stage == 1 || o.resume || !o.init.empty(),
             "--stage 2 fine-tunes a stage-1 model: give its checkpoint with --init");
  train::StageRecipe recipe = o.stage == 2 ? train::qlip_stage2_recipe() : train::qlip_stage1_recipe();
  if (!o.optimizer.empty())
    recipe.options.kind = o.optimizer == "adamw" ? train::OptimizerKind::adamw : train::OptimizerKind::lamb;
  if (recipe.options.kind == train::OptimizerKind::lamb) recipe.options.eps = 1e-6;
  recipe.options.schedule = {o.warmup, o.steps, 0.0};
  const double overrides[] = {o.lr_vision, o.lr_text, o.lr_decoder, o.lr_base};  // QlipGroup order
  // Stage 2 freezes E_v and drops E_t: a rate for them would still apply weight decay to them.
  QLIP_CHECK(o.stage == 1 || (o.lr_vision <= 0 && o.lr_text <= 0),
             "--lr-vision and --lr-text do not apply to stage 2: E_v is frozen and the text tower dropped");
  for (std::size_t g = 0; g < recipe.groups.size(); ++g) {
    if (overrides[g] >= 0) recipe.groups[g].peak_lr = overrides[g];
    recipe.groups[g].peak_lr *= o.lr_scale;
  }
  const RunSettings settings = run_settings(o, recipe);
  train::Optimizer opt(store, recipe.groups, recipe.options);
  float* logit_scale = store.values().data() + store.infos()[static_cast<std::size_t>(store.index_of("logit_scale"))].offset;
  train::Trainer trainer(store, opt, {recipe.max_grad_norm, 5}, [&] { *logit_scale = clamp_logit_scale(*logit_scale); });

  TrainData data = open_train_data(o.data, o.data_dir, o.manifest, vocab, QlipDemoFashion::config, o.batch,
                                   o.seed, o.threads);
  std::int64_t start = 0;
  std::map<std::string, std::string> saved;
  if (o.resume) {
    start = restore_run(ckpt_dir, QlipDemoFashion::name, QlipDemoFashion::config, store, opt, data, settings, &saved);
    std::fprintf(stderr, "qlip-train: resumed at step %lld from %s\n", static_cast<long long>(start), o.out.c_str());
  } else if (!o.init.empty()) {
    (void)train::load_checkpoint(o.init, store, QlipDemoFashion::config, QlipDemoFashion::name);
  } else {
    train::initialize_parameters(store, o.seed);
  }

  // Stage 2's adversarial loss (QLIP_SPEC §4.3): its own store and AdamW; restored on resume.
  std::optional<Adversary> adversary;
  if (o.stage == 2 && o.gan.weight > 0) {
    train::AdversaryOptions ao = o.gan;
    ao.lr *= o.lr_scale;
    ao.warmup = o.warmup;
    ao.steps = std::max<std::int64_t>(o.steps - o.gan.start, 1);
    adversary.emplace(ao, cpu_backend{o.threads});
    adversary->prepare(o.batch);
    const std::string weights = ckpt_dir + "/" + train::kDiscriminatorFileName;
    if (o.resume) {
      QLIP_CHECK(std::filesystem::exists(weights), "--resume: ", ckpt_dir, " has no ", train::kDiscriminatorFileName,
                 " (the run was saved without the GAN loss; resume it with --alpha-gan 0)");
      train::load_discriminator_weights(weights, adversary->store);
      (void)train::read_train_state(ckpt_dir + "/" + train::kDiscriminatorStateFileName, "discriminator",
                                    adversary->optimizer());
      const auto it = saved.find("gan.discriminator_steps");
      QLIP_CHECK(it != saved.end(), "--resume: the training state in ", ckpt_dir, " has no gan.discriminator_steps");
      adversary->set_steps_taken(std::stoll(it->second));
    } else {
      train::initialize_discriminator(adversary->store, o.seed + 1);
    }
    std::fprintf(stderr, "qlip-train: GAN loss from step %lld: alpha_g %g, discriminator %lld parameters, R1 gamma %g every %lld steps\n",
                 static_cast<long long>(o.gan.start), o.gan.weight,
                 static_cast<long long>(adversary->store.parameter_count()), o.gan.r1_gamma,
                 static_cast<long long>(o.gan.r1_every));
  }

  model.prepare(o.batch, QlipDemoFashion::config.text.context_length);
  CsvLog csv(o.out + "/log.csv", o.resume ? start : 0);  // a fresh run starts a fresh log

  // Stage 2's perceptual network, in the model's pixel space (CLIP-normalised → LPIPS's [−1, 1]).
  Stage2Weights alpha2 = o.alpha2;
  Perceptual lpips;
  std::optional<LpipsWeights<Perceptual>> lpips_weights;
  if (o.stage == 2 && !o.lpips.empty()) {
    lpips_weights.emplace(lpips);
    lpips_weights->load(o.lpips);
    const ClipPreprocessConfig pre;
    std::array<double, 3> gain{}, offset{};
    for (int c = 0; c < 3; ++c) {
      gain[static_cast<std::size_t>(c)] = 2.0 * pre.std[static_cast<std::size_t>(c)];
      offset[static_cast<std::size_t>(c)] = 2.0 * pre.mean[static_cast<std::size_t>(c)] - 1.0;
    }
    lpips.set_input_affine(gain, offset);
    lpips.prepare(o.batch, QlipDemoFashion::config.vision.image_size, QlipDemoFashion::config.vision.image_size);
  } else if (o.stage == 2) {
    alpha2.perceptual = 0.0;
    std::fprintf(stderr, "qlip-train: stage 2 without --lpips weights: alpha_p = 0 (MSE + BSQ losses only)\n");
  }

  // Loss balance (QLIP_SPEC §4.1, the paper's Fig. 5): gradient norms of L_align and L_recon alone
  // at E_v's last MLP linear; in auto mode α_r = α_a · their median ratio over the first steps.
  const bool auto_balance = o.balance == "auto";
  QLIP_CHECK(!auto_balance || o.stage == 1, "--balance auto balances stage 1's contrastive and MSE losses; stage 2 has no contrastive loss");
  QLIP_CHECK(!auto_balance || o.alpha.contrastive > 0, "--balance auto sets α_r relative to α_a, but --alpha-align is 0");
  QLIP_CHECK(!auto_balance || o.balance_steps <= o.steps, "--balance-steps ", o.balance_steps, " is more than --steps ",
             o.steps, ": the balance would never be set");
  const int probe = store.index_of(train::last_vision_mlp_weight(
      QlipDemoFashion::config.vision.stack.layers, QlipDemoFashion::config.vision.stack.mlp == MlpKind::swiglu));
  Stage1Weights alpha = o.alpha;
  train::LossBalance balance(o.balance_steps);
  if (const auto it = saved.find("balance.samples"); auto_balance && it != saved.end())
    for (const train::LossGradientSample& m : parse_balance_samples(it->second)) balance.add(m);
  const auto report_balance = [&] {
    alpha.reconstruction = alpha.contrastive * balance.ratio();
    std::fprintf(stderr,
                 "qlip-train: loss balance: median |dL_align/dw| / |dL_recon/dw| at %s over %lld steps = %.4g: "
                 "alpha_a : alpha_r = 1 : %.4g\n",
                 store.info(probe).name.c_str(), static_cast<long long>(balance.window()), balance.ratio(),
                 alpha.reconstruction / alpha.contrastive);
  };
  if (auto_balance && balance.ready()) report_balance();
  std::optional<BalanceCsv> balance_csv;
  if (o.stage == 1 && (auto_balance || o.grad_probe_every > 0)) balance_csv.emplace(o.out + "/grad_balance.csv", start);
  const auto balance_state = [&] {  // what the training state keeps besides the flags
    RunSettings extra;
    if (adversary) extra.emplace_back("gan.discriminator_steps", std::to_string(adversary->steps_taken()));
    if (!auto_balance) return extra;
    extra.emplace_back("balance.samples", balance_samples_text(balance.samples()));
    if (balance.ready()) extra.emplace_back("balance.alpha_recon", setting_text(alpha.reconstruction));
    return extra;
  };

  ProgressLine progress(start, o.steps);
  std::int64_t images = 0, done = start;
  for (std::int64_t step = start; step < o.steps; ++step) {
    const data::Batch& b = data.next();
    const HostView<const std::int32_t, 1> ids_flat(b.tokens.data(), {b.tokens.numel()});
    const bool in_window = auto_balance && !balance.ready();
    if (o.stage == 1 && (in_window || (o.grad_probe_every > 0 && step % o.grad_probe_every == 0))) {
      const train::LossGradientSample m = train::measure_loss_gradients(store, probe, step, [&](double a, double r) {
        (void)model.forward_backward(b.pixels.view(), b.tokens.view(), ids_flat, Stage1Weights{a, r, 0.0, 0.0});
      });
      balance_csv->write(m);
      if (in_window) {
        balance.add(m);
        if (balance.ready()) report_balance();
      }
    }
    store.zero_grad();
    Adversary* gan = adversary && adversary->active(step) ? &*adversary : nullptr;
    const Stage1Losses losses =
        o.stage == 2 ? model.forward_backward_stage2(b.pixels.view(), alpha2, lpips_weights ? &lpips : nullptr, gan)
                     : model.forward_backward(b.pixels.view(), b.tokens.view(), ids_flat, alpha);
    const train::StepOutcome out = trainer.apply(losses.total);
    // The discriminator learns from the same reconstruction, after the generator's update.
    const train::DiscriminatorStep disc = gan != nullptr ? gan->step(b.pixels.view(), model.reconstruction()) : train::DiscriminatorStep{};
    images += o.batch;
    done = step + 1;
    const bool out_of_time = o.max_minutes > 0 && progress.seconds() >= 60.0 * o.max_minutes;
    const bool last = done == o.steps || out_of_time;
    const LogRow row{done, losses, out.grad_norm, out.lr_factor, images / std::max(progress.seconds(), 1e-9), out.applied,
                     gan != nullptr, disc};
    csv.write(row);
    if (done % o.log_every == 0 || last || !out.applied) progress.print(row, images);
    if (done % o.grid_every == 0 || last) write_reconstruction_grid(o.out + "/recon.png", b.pixels.view(), model.reconstruction());
    if (done % o.save_every == 0 || last) {
      save_run(ckpt_dir, vocab, QlipDemoFashion::name, QlipDemoFashion::config, train::scratch_runtime(), store, opt, data,
               o.seed, settings, balance_state(), adversary ? discriminator_files(*adversary, data, o.seed) : FileList{});
      plot_log(csv.path(), o.out + "/loss.png", std::string("qlip-train ") + QlipDemoFashion::name);
      if (balance_csv)
        plot_balance(balance_csv->path(), o.out + "/grad_balance.png",
                     "gradient norms at " + store.info(probe).name);
    }
    if (out_of_time && done < o.steps) {
      std::fprintf(stderr, "qlip-train: --max-minutes %g reached: stopped after step %lld of %lld (saved; --resume continues)\n",
                   o.max_minutes, static_cast<long long>(done), static_cast<long long>(o.steps));
      break;
    }
  }
  write_train_summary(o.out + "/train_summary.json", done - start, images, progress.seconds(),
                      o.stage == 2 ? nlohmann::ordered_json{{"stage", 2},
                                                            {"alpha_recon", alpha2.reconstruction},
                                                            {"alpha_perceptual", alpha2.perceptual},
                                                            {"alpha_gan", adversary ? o.gan.weight : 0.0}}
                                   : nlohmann::ordered_json{{"stage", 1},
                                                            {"balance", o.balance},
                                                            {"alpha_align", alpha.contrastive},
                                                            {"alpha_recon", alpha.reconstruction}});
  std::fprintf(stderr, "qlip-train: %lld steps in %.1f s, checkpoint in %s\n", static_cast<long long>(done - start),
               progress.seconds(), ckpt_dir.c_str());
  return 0;
}

/// --stages 1,2: stage 1 into OUT/stage1, then stage 2 from its checkpoint into OUT/stage2. The
/// flags of one stage apply to it alone (rates, --alpha-recon, --optimizer and the balance to stage
/// 1; --lpips, --alpha-perceptual and the GAN flags to stage 2, whose rates and α_r are its
/// recipe's); the others to both, --steps to stage 1 and --stage2-steps to stage 2. With --resume
/// each stage continues where its own save left it; a complete stage 1 is not run again.
int run_stages(const Options& o, std::int64_t stage2_steps) {
  const auto saved_step = [](const Options& s) -> std::int64_t {
    const std::string state = s.out + "/checkpoint/" + train::kTrainStateFileName;
    return std::filesystem::exists(state) ? train::read_train_state_info(state).step : -1;
  };
  Options s1 = o;
  s1.stage = 1;
  s1.out = o.out + "/stage1";
  s1.lpips.clear();
  s1.resume = o.resume && saved_step(s1) >= 0;
  if (s1.resume && saved_step(s1) >= s1.steps) {
    std::fprintf(stderr, "qlip-train: stage 1 in %s is complete (%lld steps); going on with stage 2\n", s1.out.c_str(),
                 static_cast<long long>(s1.steps));
  } else {
    if (const int rc = run(s1); rc != 0) return rc;
    if (const std::int64_t done = saved_step(s1); done < s1.steps) {
      std::fprintf(stderr, "qlip-train: stage 1 stopped at step %lld of %lld; stage 2 waits for it (--resume continues)\n",
                   static_cast<long long>(done), static_cast<long long>(s1.steps));
      return 0;
    }
  }
  Options s2 = o;
  s2.stage = 2;
  s2.out = o.out + "/stage2";
  s2.init = s1.out + "/checkpoint";
  s2.steps = stage2_steps;
  s2.optimizer.clear();
  s2.lr_vision = s2.lr_text = s2.lr_decoder = s2.lr_base = -1;  // stage 2's recipe
  s2.alpha2.reconstruction = 1.0;                                 // the recipe's α_r (Table 8)
  s2.balance = "fixed";
  s2.grad_probe_every = 0;
  s2.resume = o.resume && saved_step(s2) >= 0;
  std::fprintf(stderr, "qlip-train: stage 2 from %s into %s\n", s2.init.c_str(), s2.out.c_str());
  return run(s2);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"qlip-train: QLIP training on the CPU: stage 1 (contrastive + MSE + BSQ, LAMB) or stage 2 "
               "(E_v frozen; quantizer + decoder with MSE + LPIPS + GAN + BSQ, AdamW)"};
  Options o;
  CLI::Option* stage = app.add_option("--stage", o.stage, "1: everything from scratch or --init; 2: fine-tune the quantizer and decoder of --init")
      ->check(CLI::Range(1, 2));
  std::string stages;
  std::int64_t stage2_steps = 0;
  CLI::Option* both = app.add_option("--stages", stages,
                                     "1,2: stage 1 into OUT/stage1, then stage 2 from its checkpoint into OUT/stage2 "
                                     "(rate, balance and --alpha-recon flags go to stage 1, LPIPS and GAN flags to stage 2)")
                          ->check(CLI::IsMember({"1,2"}))
                          ->excludes(stage);
  app.add_option("--stage2-steps", stage2_steps, "with --stages 1,2: stage 2's steps (default: --steps)")
      ->check(CLI::PositiveNumber)
      ->needs(both);
  app.add_option("--lpips", o.lpips, "stage 2: LPIPS VGG16 weights (tools/make_lpips_weights.py); without: alpha_p = 0");
  app.add_option("--alpha-perceptual", o.alpha2.perceptual, "stage 2: alpha_p, weight of LPIPS (recipe: 0.1)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--alpha-gan", o.gan.weight, "stage 2: alpha_g, weight of the generator's GAN loss (recipe: 0.1; 0: no discriminator)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--gan-start", o.gan.start, "stage 2: first step with the GAN losses (before it, neither side trains)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--r1-gamma", o.gan.r1_gamma, "stage 2: gamma of the discriminator's R1 penalty (10)")->check(CLI::NonNegativeNumber);
  app.add_option("--r1-every", o.gan.r1_every, "stage 2: R1 on every N-th discriminator step, weighted by N (16; 0: off)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--lr-disc", o.gan.lr, "stage 2: the discriminator's peak AdamW rate (recipe: 1e-4)")->check(CLI::NonNegativeNumber);
  app.add_option("--out", o.out, "output folder (checkpoint/, log.csv, loss.png, recon.png)");
  app.add_option("--data", o.data, "fashion-mnist (or give --manifest)");
  app.add_option("--data-dir", o.data_dir, "folder with the Fashion-MNIST idx files (default: the Debian package's)");
  app.add_option("--manifest", o.manifest, "TSV of image path <TAB> caption, or a folder of images with same-named .txt captions");
  app.add_option("--vocab", o.vocab, "CLIP BPE vocabulary (bpe_simple_vocab_16e6.txt.gz)");
  app.add_option("--steps", o.steps, "optimiser steps in total")->check(CLI::PositiveNumber);
  app.add_option("--batch", o.batch, "images per step")->check(CLI::PositiveNumber);
  app.add_option("--warmup", o.warmup, "linear warm-up steps")->check(CLI::NonNegativeNumber);
  app.add_option("--optimizer", o.optimizer, "lamb or adamw (default: the stage's recipe, lamb in 1, adamw in 2)")->check(CLI::IsMember({"lamb", "adamw"}));
  app.add_option("--lr-scale", o.lr_scale, "multiplies every group's peak learning rate")->check(CLI::PositiveNumber);
  app.add_option("--lr-vision", o.lr_vision, "peak lr of E_v and visual_projection (recipe: 2e-4)")->check(CLI::NonNegativeNumber);
  app.add_option("--lr-text", o.lr_text, "peak lr of E_t and text_projection (recipe: 2e-5, for a pretrained tower)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--lr-decoder", o.lr_decoder, "peak lr of the decoder G (recipe: 2e-3)")->check(CLI::NonNegativeNumber);
  app.add_option("--lr-base", o.lr_base, "peak lr of the quantizer MLPs and logit_scale (recipe: 5e-4)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--alpha-align", o.alpha.contrastive, "α_a, weight of the contrastive loss (recipe: 1)")
      ->check(CLI::NonNegativeNumber);
  CLI::Option* alpha_recon = app.add_option("--alpha-recon", o.alpha.reconstruction, "α_r, weight of the pixel MSE (recipe: 1000 in stage 1, 1 in stage 2)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--balance", o.balance,
                 "fixed: use --alpha-recon throughout; auto: after --balance-steps steps, set alpha_r = alpha_a x the median "
                 "ratio of the two losses' gradient norms at E_v's last MLP linear")
      ->check(CLI::IsMember({"fixed", "auto"}));
  app.add_option("--balance-steps", o.balance_steps, "steps measured before --balance auto sets alpha_r")
      ->check(CLI::PositiveNumber);
  app.add_option("--grad-probe-every", o.grad_probe_every,
                 "also measure both gradient norms every N steps into grad_balance.csv/.png (0: off; costs 2 passes)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--seed", o.seed, "initialisation and data-order seed");
  app.add_option("--threads", o.threads, "CPU threads (0: all)")->check(CLI::NonNegativeNumber);
  app.add_option("--init", o.init, "start from this checkpoint instead of random initialisation");
  app.add_option("--max-minutes", o.max_minutes, "stop and save after this many minutes of training (0: no limit)")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--resume", o.resume, "continue the run in --out exactly where its last save left it");
  app.add_option("--save-every", o.save_every, "checkpoint + training state every N steps")->check(CLI::PositiveNumber);
  app.add_option("--grid-every", o.grid_every, "reconstruction grid every N steps")->check(CLI::PositiveNumber);
  app.add_option("--log-every", o.log_every, "progress line every N steps")->check(CLI::PositiveNumber);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (o.stage == 2) o.alpha2.reconstruction = alpha_recon->count() ? o.alpha.reconstruction : 1.0;  // recipe: 1
  for (const char* flag : {"--alpha-gan", "--gan-start", "--r1-gamma", "--r1-every", "--lr-disc"})
    if (o.stage == 1 && stages.empty() && app.get_option(flag)->count() > 0) {
      std::fprintf(stderr, "qlip-train: error: %s belongs to stage 2's GAN loss; add --stage 2\n", flag);
      return 1;
    }
  try {
    return stages.empty() ? run(o) : run_stages(o, stage2_steps > 0 ? stage2_steps : o.steps);
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "qlip-train: error: %s\n", qlip::cli::one_line_message(e.what(), false).c_str());
    return 1;
  }
}
