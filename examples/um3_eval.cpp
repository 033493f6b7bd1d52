/// @file um3_eval.cpp
/// @brief `um3-eval`: what a trained UM³ model does with the three tasks (docs/UM3.md, "Evaluation"):
///   - prompt following: --per-class images for each class's prompt ("a photo of a {class}."),
///     decoded by the QLIP, classified by a linear probe on the QLIP encoder's CLS features fit on
///     real training images: the share classified as the prompt's class (chance 10 %);
///   - caption accuracy: greedy captions of the first --captions test images (codes from the
///     QLIP): the share whose caption names the image's class (and no other first);
///   - text perplexity: of the held-out fortunes (every 20th entry, never trained on), windows of
///     --window tokens.
/// Writes --json (prompt_following, caption_accuracy, text_perplexity, train_seconds and the
/// details) and --grid (a PNG: one row of generated images per class).
///
///   um3_eval MODEL_DIR [--qlip DIR] [--json FILE] [--grid FILE] [--per-class N] [--cfg S]
///            [--temperature T] [--top-k K] [--top-p P] [--seed S] [--captions N] [--probe-train N]
///            [--window T] [--train-summary FILE] [--threads T]

#include <omp.h>

#include <chrono>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "cli/program.hpp"
#include "cli/util.hpp"
#include "qlip/data/text_corpus.hpp"
#include "qlip/io/detail/file.hpp"
#include "qlip/um3/generate.hpp"
#include "um3/um3_images.hpp"

namespace {

using namespace qlip;
using namespace qlip::um3_cli;

struct Options {
  std::string model, qlip, json, grid, corpus, train_summary;
  std::int64_t per_class = 20, captions = 500, probe_train = 10000, window = 128, grid_columns = 10;
  sample::SamplerConfig sampler{1.0f, 0, 1.0f, 3.0f};
  std::uint64_t seed = 0;
  int threads = 0;
  nn::DecodeWeights decode_weights = nn::DecodeWeights::f32;
};

/// Seconds since `t0`.
double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

template <class Tag>
int evaluate(const Options& o) {
  constexpr LlamaConfig C = Tag::config;
  LoadedUm3<Tag> um3 = load_um3_folder<Tag>(o.model);
  um3.llama.model->set_decode_weights(o.decode_weights);
  const Um3Text& text = um3.files.text;
  const std::string qlip_dir = o.qlip.empty() ? um3.files.qlip : o.qlip;
  const DemoQlip qlip = DemoQlip::load(qlip_dir);
  std::string note;
  const ClipPreprocessConfig pre = cli::load_preprocess_config(qlip_dir, DemoQlip::image_size(), note);
  nlohmann::ordered_json j;
  j["model"] = o.model;
  j["config"] = Tag::name;
  j["qlip"] = qlip_dir;
  j["decode_weights"] = o.decode_weights == nn::DecodeWeights::bf16 ? "bf16" : "f32";

  // The probe, fit on real training images; its accuracy on real test images is the ceiling.
  auto t0 = std::chrono::steady_clock::now();
  const auto [train_px, train_y] = split_pixels(pre, data::FashionMnistSplit::train, o.probe_train);
  const Tensor<float, 2> train_x = probe_features(qlip, HostView<const float, 4>(train_px.view()));
  const eval::LinearClassifier probe = eval::fit_linear_probe(HostView<const float, 2>(train_x.view()), train_y, 10);
  const auto [test_px, test_y] = split_pixels(pre, data::FashionMnistSplit::test, std::max(o.captions, std::int64_t{1000}));
  const Tensor<float, 2> test_x = probe_features(qlip, HostView<const float, 4>(test_px.view()));
  const double probe_real = probe.top1(HostView<const float, 2>(test_x.view()), test_y);
  std::fprintf(stderr, "um3-eval: linear probe on %lld training images: %.2f %% on %lld real test images (%.1f s)\n",
               static_cast<long long>(train_y.size()), 100 * probe_real, static_cast<long long>(test_y.size()), since(t0));

  // Prompt following.
  t0 = std::chrono::steady_clock::now();
  um3::Generator<C, cpu_backend> gen(*um3.llama.model, text.vocab, 2 * o.per_class, um3.llama.config.runtime.max_positions);
  std::vector<Image> grid;
  std::int64_t right = 0;
  nlohmann::ordered_json per_class = nlohmann::ordered_json::object();
  for (int c = 0; c < 10; ++c) {
    const std::vector<std::int32_t> caption = text.caption(c, 0);
    const std::vector<std::uint32_t> codes =
        gen.images(caption, o.per_class, kPatches, o.sampler, o.seed, static_cast<std::uint64_t>(c * o.per_class));
    std::vector<Image> images;
    const Tensor<float, 4> px = decode_codes(qlip, codes, o.per_class, pre, &images);
    const Tensor<float, 2> feats = probe_features(qlip, HostView<const float, 4>(px.view()));
    std::int64_t ok = 0;
    for (std::int64_t i = 0; i < o.per_class; ++i) ok += probe.predict(feats.data() + i * feats.size(1)) == c;
    right += ok;
    per_class[text.class_names[static_cast<std::size_t>(c)]] = static_cast<double>(ok) / static_cast<double>(o.per_class);
    for (std::int64_t i = 0; i < std::min(o.per_class, o.grid_columns); ++i) grid.push_back(upscale_nearest(images[static_cast<std::size_t>(i)], 3));
    std::fprintf(stderr, "um3-eval: \"%s\": %lld of %lld generated images classified as %s\n",
                 text.decode(caption).c_str(), static_cast<long long>(ok), static_cast<long long>(o.per_class),
                 text.class_names[static_cast<std::size_t>(c)].c_str());
  }
  const double prompt_following = static_cast<double>(right) / static_cast<double>(10 * o.per_class);
  const double gen_seconds = since(t0);

  // Captions of real test images.
  t0 = std::chrono::steady_clock::now();
  const std::int64_t n_cap = std::min<std::int64_t>(o.captions, static_cast<std::int64_t>(test_y.size()));
  const std::vector<std::uint32_t> test_codes = encode_codes(qlip, HostView<const float, 4>(test_px.view().slice(0, 0, n_cap)));
  um3::Generator<C, cpu_backend> capgen(*um3.llama.model, text.vocab, 50, um3.llama.config.runtime.max_positions);
  sample::SamplerConfig greedy;
  greedy.temperature = 0.0f;
  std::int64_t named = 0;
  nlohmann::ordered_json examples = nlohmann::ordered_json::array();
  for (std::int64_t first = 0; first < n_cap; first += 50) {
    const std::int64_t n = std::min<std::int64_t>(50, n_cap - first);
    const auto caps = capgen.captions(std::span<const std::uint32_t>(test_codes.data() + first * kPatches,
                                                                     static_cast<std::size_t>(n * kPatches)),
                                      n, kPatches, greedy, o.seed, kUm3DemoMaxCaption + 1);
    for (std::int64_t i = 0; i < n; ++i) {
      const std::string s = text.decode(caps[static_cast<std::size_t>(i)]);
      const int label = test_y[static_cast<std::size_t>(first + i)];
      named += text.class_named(s) == label;
      if (examples.size() < 10)
        examples.push_back({{"class", text.class_names[static_cast<std::size_t>(label)]}, {"caption", s}});
    }
  }
  const double caption_accuracy = static_cast<double>(named) / static_cast<double>(n_cap);
  const double cap_seconds = since(t0);

  // Held-out text.
  t0 = std::chrono::steady_clock::now();
  const data::TextSplit corpus = data::split_held_out(o.corpus.empty() ? data::read_fortunes() : data::read_fortunes(o.corpus));
  const std::vector<std::int32_t> stream = text.entry_stream(corpus.held_out);
  std::int64_t bytes = 0;
  for (const std::string& e : corpus.held_out) bytes += static_cast<std::int64_t>(e.size());
  um3::Generator<C, cpu_backend> lm(*um3.llama.model, text.vocab, 16, o.window);
  const um3::TextNll nll = lm.text_nll(stream, o.window);
  const double text_seconds = since(t0);

  j["prompt_following"] = prompt_following;
  j["caption_accuracy"] = caption_accuracy;
  j["text_perplexity"] = nll.perplexity();
  if (!o.train_summary.empty()) {
    const nlohmann::json s = read_json(o.train_summary);
    QLIP_CHECK(s.contains("train_seconds") && s["train_seconds"].is_number(), o.train_summary, ": no numeric train_seconds");
    j["train_seconds"] = s["train_seconds"];
  }
  j["prompt_following_per_class"] = per_class;
  j["images_per_class"] = o.per_class;
  j["prompt"] = text.templates[0];
  j["sampler"] = {{"temperature", o.sampler.temperature}, {"top_k", o.sampler.top_k}, {"top_p", o.sampler.top_p},
                  {"cfg_scale", o.sampler.cfg_scale}, {"seed", o.seed}};
  j["probe_real_test_top1"] = probe_real;
  j["probe_train_images"] = static_cast<std::int64_t>(train_y.size());
  j["captioned_test_images"] = n_cap;
  j["caption_examples"] = examples;
  j["text_nll_nats_per_token"] = nll.nll;
  j["text_tokens_scored"] = nll.tokens;
  j["text_bits_per_byte"] = nll.nll * static_cast<double>(nll.tokens) / std::log(2.0) / static_cast<double>(bytes);
  j["seconds"] = {{"generation", gen_seconds}, {"captions", cap_seconds}, {"perplexity", text_seconds}};
  std::printf("prompt following   %6.2f %%  (%lld images per class, cfg %g; probe on real test images %.2f %%)\n",
              100 * prompt_following, static_cast<long long>(o.per_class), o.sampler.cfg_scale, 100 * probe_real);
  std::printf("caption accuracy   %6.2f %%  (%lld test images, greedy)\n", 100 * caption_accuracy, static_cast<long long>(n_cap));
  std::printf("text perplexity    %8.2f  (%lld held-out tokens, %.3f bits/byte)\n", nll.perplexity(),
              static_cast<long long>(nll.tokens), j["text_bits_per_byte"].get<double>());
  if (!o.grid.empty()) {
    write_png(o.grid, make_grid(grid, static_cast<int>(std::min(o.per_class, o.grid_columns))));
    std::fprintf(stderr, "um3-eval: wrote %s (a row per class, %s first)\n", o.grid.c_str(), text.class_names[0].c_str());
  }
  if (!o.json.empty()) {
    const std::string s = j.dump(2) + "\n";
    qlip::detail::write_file_atomic(o.json, s.data(), s.size());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"um3-eval: prompt following, caption accuracy and held-out perplexity of a UM3 model"};
  Options o;
  app.add_option("model", o.model, "the UM3 folder (um3_train's --out/checkpoint)")->required();
  app.add_option("--qlip", o.qlip, "QLIP checkpoint for decoding and the probe (default: the one um3.json names)");
  app.add_option("--json", o.json, "write the metrics to this JSON file");
  app.add_option("--grid", o.grid, "write a PNG with a row of generated images per class");
  app.add_option("--per-class", o.per_class, "images generated per class prompt")->check(CLI::PositiveNumber);
  cli::add_sampler_options(app, o.sampler, o.seed);
  cli::add_decode_weights_option(app, o.decode_weights);
  app.add_option("--captions", o.captions, "test images captioned")->check(CLI::PositiveNumber);
  app.add_option("--probe-train", o.probe_train, "training images the probe is fit on")->check(CLI::PositiveNumber);
  app.add_option("--window", o.window, "tokens per perplexity window")->check(CLI::PositiveNumber);
  app.add_option("--corpus", o.corpus, "folder of fortune files (default: the Debian package's)");
  app.add_option("--train-summary", o.train_summary, "um3_train's train_summary.json: its train_seconds go into the metrics");
  cli::add_threads_option(app, o.threads);
  return cli::run_program(app, argc, argv, "um3-eval", o.threads, [&] {
    sample::validate(o.sampler);
    return with_um3_model(open_um3_folder(o.model).config, [&](auto tag) { return evaluate<decltype(tag)>(o); });
  });
}
