/// @file qlip_eval.cpp
/// @brief `qlip-eval`: what a trained QLIP checkpoint understands and reconstructs (MODEL.md §7),
///        on Fashion-MNIST and on a folder of photos.
///
///   qlip_eval CHECKPOINT [--data-dir DIR] [--photos DIR] [--json metrics.json] [--grid test.png]
///             [--test N] [--probe-train N] [--batch B] [--threads T] [--train-summary FILE]...
///             [--stage1-metrics FILE]
///
/// Measures, on the Fashion-MNIST test split at the model's resolution:
///   - zero-shot top-1: class embeddings from every class name through the caption templates
///     (template ensemble), each image assigned the class of highest cosine similarity;
///   - linear-probe top-1: logistic regression on post-LayerNorm CLS features, fit on the train split;
///   - PSNR / SSIM of encode → 28-bit codes → decode, on 8-bit images;
///   - code usage: distinct codes, per-bit balance, entropy of each group of g bits;
/// and PSNR / SSIM on every image of --photos (resized and centre-cropped as the checkpoint's
/// preprocessor_config.json says). No FID-like number is computed. Prints a table; --json writes the
/// metrics (atomically). Errors: one line on stderr, "qlip-eval: error: <message>", exit 1.

#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "cli/inputs.hpp"
#include "cli/program.hpp"
#include "cli/progress.hpp"
#include "cli/util.hpp"
#include "configs/small_qlip_configs.hpp"
#include "eval/metrics_json.hpp"
#include "qlip/data.hpp"
#include "qlip/eval/code_usage.hpp"
#include "qlip/eval/linear_probe.hpp"
#include "qlip/eval/zero_shot.hpp"
#include "qlip/qlip.hpp"

namespace {

using namespace qlip;
using cli::ProgressBar;
using cli::ProgressMode;

struct Options {
  std::string checkpoint, data_dir, photos, json, grid, vocab, stage1_metrics;
  std::vector<std::string> train_summaries;  // one per training stage: their train_seconds add up
  std::int64_t test = 10000, probe_train = 60000, batch = 250;
  int threads = 0;
  int group_size = 4;
  eval::LinearProbeOptions probe;
  bool quiet = false;
};

/// What one pass over a split collects.
struct SplitPass {
  Tensor<float, 2> embeds;  // [N, P] L2-normalised image embeddings
  Tensor<float, 2> cls;     // [N, D] post-LayerNorm CLS (the probe's features)
  std::vector<int> labels;
  std::vector<std::uint8_t> bits;  // [N·tokens, L] when reconstructing
  double psnr_sum = 0, ssim_sum = 0;
  std::vector<Image> originals, recons;  // the first few, for the grid
};

/// Encodes the first `count` images of `source` (and, when `reconstruct`, decodes their codes and
/// scores the reconstructions against the 8-bit inputs).
template <class Model>
SplitPass run_split(const Model& model, const data::FashionMnistSource& source, std::int64_t count, bool reconstruct,
                    std::int64_t batch_size, const ClipPreprocessConfig& pre, const char* label, ProgressMode progress) {
  constexpr std::int64_t N = Model::kPatches;
  const int s = Model::image_size(), L = Model::bits_per_token();
  const std::int64_t batch = std::min(batch_size, count);
  ImageEncodeOptions opt;
  opt.quantize = reconstruct;
  Arena ws(Model::encode_image_workspace_bytes(batch, opt) + (reconstruct ? Model::decode_workspace_bytes(batch) : 0));
  Tensor<float, 4> pixels({batch, 3, s, s});
  SplitPass r;
  r.embeds = Tensor<float, 2>({count, Model::projection_dim()});
  r.cls = Tensor<float, 2>({count, Model::kVisionWidth});
  if (reconstruct) r.bits.resize(static_cast<std::size_t>(count * N * L));
  ProgressBar bar(label, count, progress);
  for (std::int64_t first = 0; first < count; first += batch) {
    const std::int64_t n = std::min(batch, count - first);
    for (std::int64_t b = 0; b < n; ++b) r.labels.push_back(source.load(first + b, 0, pixels.view().select(0, b)).label);
    ArenaScope scope(ws);
    const HostView<const float, 4> in = pixels.view().slice(0, 0, n);
    const ImageEncoding enc = model.encode_image(ws, in, opt);
    std::copy_n(enc.image_embeds_normalized.data(), enc.image_embeds_normalized.numel(),
                r.embeds.data() + first * Model::projection_dim());
    std::copy_n(enc.cls.data(), enc.cls.numel(), r.cls.data() + first * Model::kVisionWidth);
    if (reconstruct) {
      std::copy_n(enc.bits.data(), enc.bits.numel(), r.bits.data() + first * N * L);
      const Decoding dec = model.decode(ws, HostView<const std::uint32_t, 2>(enc.indices));
      for (std::int64_t b = 0; b < n; ++b) {
        Image original = postprocess_clip(in.select(0, b), pre.mean, pre.std);
        Image recon = postprocess_clip(HostView<const float, 4>(dec.pixels).select(0, b), pre.mean, pre.std);
        r.psnr_sum += psnr(original, recon);
        r.ssim_sum += ssim(original, recon);
        if (r.originals.size() < 32) {
          r.originals.push_back(std::move(original));
          r.recons.push_back(std::move(recon));
        }
      }
    }
    bar.advance(n);
  }
  bar.finish();
  return r;
}

/// L2-normalised text embeddings of `texts` [T, P].
template <class Model>
Tensor<float, 2> text_embeddings(const Model& model, const text::ClipTokenizer& tok, const std::vector<std::string>& texts) {
  const std::int64_t count = static_cast<std::int64_t>(texts.size());
  const Tensor<std::int32_t, 2> ids = tok.tokenize_batch(texts, Model::context_length());
  const std::int64_t chunk = std::min<std::int64_t>(64, count);
  Arena ws(Model::encode_text_workspace_bytes(chunk, Model::context_length()));
  Tensor<float, 2> out({count, Model::projection_dim()});
  for (std::int64_t first = 0; first < count; first += chunk) {
    const std::int64_t n = std::min(chunk, count - first);
    ArenaScope scope(ws);
    const TextEncoding enc = model.encode_text(ws, ids.view().slice(0, first, first + n));
    std::copy_n(enc.text_embeds_normalized.data(), enc.text_embeds_normalized.numel(), out.data() + first * Model::projection_dim());
  }
  return out;
}

/// The photos of a folder (png / jpg / jpeg, sorted by name).
std::vector<std::string> photo_paths(const std::string& dir) {
  namespace fs = std::filesystem;
  QLIP_CHECK(fs::is_directory(dir), "--photos '", dir, "' is not a folder");
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    std::string ext = e.path().extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (e.is_regular_file() && (ext == ".png" || ext == ".jpg" || ext == ".jpeg")) out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  QLIP_CHECK(!out.empty(), "--photos '", dir, "' has no .png or .jpg files");
  return out;
}

/// Mean PSNR / SSIM of the round trip of every photo; unreadable ones are skipped with a warning.
template <class Model>
std::pair<double, double> photo_round_trip(const Model& model, const std::vector<std::string>& paths,
                                           const ClipPreprocessConfig& pre, std::int64_t& scored) {
  const int s = Model::image_size();
  Arena ws(Model::encode_image_workspace_bytes(1) + Model::decode_workspace_bytes(1));
  Tensor<float, 4> storage({1, 3, s, s});
  double p = 0, q = 0;
  scored = 0;
  for (std::size_t i = 0; i < paths.size(); ++i) {
    try {
      cli::ImageBatch ib = cli::load_image_batch(paths, static_cast<std::int64_t>(i), 1, Model::patch_size(), pre, storage, true);
      ArenaScope scope(ws);
      const ImageEncoding enc = model.encode_image(ws, ib.pixels);
      const Decoding dec = model.decode(ws, HostView<const std::uint32_t, 2>(enc.indices));
      const Image recon = postprocess_clip(HostView<const float, 4>(dec.pixels).select(0, 0), pre.mean, pre.std);
      p += psnr(ib.cropped[0], recon);
      q += ssim(ib.cropped[0], recon);
      ++scored;
    } catch (const Error& e) {
      std::fprintf(stderr, "qlip-eval: warning: skipped photo: %s\n", cli::one_line_message(e.what(), false).c_str());
    }
  }
  QLIP_CHECK(scored > 0, "none of the ", paths.size(), " photos could be read");
  return {p / static_cast<double>(scored), q / static_cast<double>(scored)};
}

/// psnr_db of an earlier qlip-eval metrics file (the stage-1 checkpoint's, beside the final one).
double read_psnr(const std::string& path) {
  const nlohmann::json j = read_json(path);
  QLIP_CHECK(j.is_object() && j.contains("psnr_db") && j["psnr_db"].is_number(), path,
             ": no numeric \"psnr_db\" (expected a metrics file written by qlip-eval --json)");
  return j["psnr_db"].get<double>();
}

/// train_seconds from qlip-train's summary file (train_summary.json in its --out folder).
double read_train_seconds(const std::string& path) {
  const nlohmann::json j = read_json(path);
  QLIP_CHECK(j.is_object() && j.contains("train_seconds") && j["train_seconds"].is_number(), path,
             ": no numeric \"train_seconds\" (expected qlip-train's train_summary.json)");
  return j["train_seconds"].get<double>();
}

template <class Model>
int evaluate(const Model& model, const Options& o) {
  std::string note;
  const ClipPreprocessConfig pre = cli::load_preprocess_config(o.checkpoint, Model::image_size(), note);
  if (!note.empty() && !o.quiet) std::fprintf(stderr, "qlip-eval: note: %s\n", note.c_str());
  const text::ClipTokenizer tok = cli::load_tokenizer(o.vocab, o.checkpoint);
  const ProgressMode progress = o.quiet ? ProgressMode::never : ProgressMode::automatic;
  const std::vector<std::string> dirs = o.data_dir.empty() ? data::default_fashion_mnist_dirs() : std::vector<std::string>{o.data_dir};
  data::FashionMnistSourceOptions so;
  so.resolution = Model::image_size();
  so.norm = pre;
  const data::FashionMnistSource test(data::FashionMnist::load(data::FashionMnistSplit::test, dirs), so);
  const data::FashionMnistSource train(data::FashionMnist::load(data::FashionMnistSplit::train, dirs), so);
  const std::int64_t n_test = std::min(o.test, test.size()), n_train = std::min(o.probe_train, train.size());

  eval_cli::Metrics m;
  m.model = Model::name();
  m.test_images = n_test;
  m.probe_train_images = n_train;
  SplitPass t = run_split(model, test, n_test, true, o.batch, pre, "test split", progress);

  // Zero-shot (MODEL.md §7.1).
  const data::PromptSet prompts = data::zero_shot_prompts(data::fashion_mnist_class_names());
  const Tensor<float, 2> text = text_embeddings(model, tok, prompts.prompts);
  const Tensor<float, 2> classes = eval::class_embeddings(text.view(), prompts.classes);
  m.zero_shot_top1 = eval::top1(eval::zero_shot_predict(t.embeds.view(), classes.view()), t.labels);
  m.zero_shot_templates = prompts.templates;

  // Linear probe on CLS features, train split → test split.
  SplitPass tr = run_split(model, train, n_train, false, o.batch, pre, "train split", progress);
  const eval::LinearProbeResult probe = eval::linear_probe(tr.cls.view(), tr.labels, t.cls.view(), t.labels, prompts.classes, o.probe);
  m.linear_probe_top1 = probe.test_top1;
  m.linear_probe_train_top1 = probe.train_top1;

  // Reconstruction and code usage.
  m.psnr_db = t.psnr_sum / static_cast<double>(n_test);
  m.ssim = t.ssim_sum / static_cast<double>(n_test);
  const eval::CodeUsage usage = eval::code_usage(
      HostView<const std::uint8_t, 2>(t.bits.data(), {n_test * Model::kPatches, Model::bits_per_token()}), o.group_size);
  m.set_code_usage(usage, o.group_size);
  if (!o.photos.empty()) {
    const std::vector<std::string> paths = photo_paths(o.photos);
    const auto [p, s] = photo_round_trip(model, paths, pre, m.photos);
    m.psnr_db_photos = p;
    m.ssim_photos = s;
  }
  if (!o.train_summaries.empty()) {
    m.train_seconds = 0;
    for (const std::string& f : o.train_summaries) m.train_seconds += read_train_seconds(f);
  }
  if (!o.stage1_metrics.empty()) m.psnr_db_stage1 = read_psnr(o.stage1_metrics);

  if (!o.grid.empty()) {
    const int zoom = std::max(1, 128 / Model::image_size());  // small images are looked at enlarged
    for (auto* v : {&t.originals, &t.recons})
      for (Image& im : *v) im = upscale_nearest(im, zoom);
    write_png(o.grid, comparison_grid(t.originals, t.recons, 8, 2));
  }
  std::fputs(m.table().c_str(), stdout);
  if (!o.json.empty()) m.write_json(o.json);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"qlip-eval: zero-shot, linear probe, reconstruction and code usage of a QLIP checkpoint"};
  Options o;
  app.add_option("checkpoint", o.checkpoint, "checkpoint folder (config.json, model.safetensors, ...)")->required();
  app.add_option("--data-dir", o.data_dir, "folder with the Fashion-MNIST idx files (default: the Debian package's)");
  app.add_option("--photos", o.photos, "also score the round trip of every .png/.jpg in this folder");
  app.add_option("--json", o.json, "write the metrics to this JSON file");
  app.add_option("--grid", o.grid, "write test images above their reconstructions to this PNG");
  app.add_option("--vocab", o.vocab, "CLIP BPE vocabulary, when the checkpoint has none");
  app.add_option("--train-summary", o.train_summaries,
                 "qlip-train's train_summary.json (once per stage): their train_seconds, summed, go into the metrics");
  app.add_option("--stage1-metrics", o.stage1_metrics,
                 "the stage-1 checkpoint's metrics (qlip-eval --json): its psnr_db goes in as psnr_db_stage1");
  app.add_option("--test", o.test, "test images scored (the first N of the 10,000)")->check(CLI::PositiveNumber);
  app.add_option("--probe-train", o.probe_train, "training images the linear probe is fit on (the first N of 60,000)")
      ->check(CLI::PositiveNumber);
  app.add_option("--probe-iterations", o.probe.iterations, "gradient steps of the logistic regression")
      ->check(CLI::PositiveNumber);
  app.add_option("--probe-l2", o.probe.l2, "L2 penalty of the logistic regression")->check(CLI::NonNegativeNumber);
  app.add_option("--batch", o.batch, "images per forward pass")->check(CLI::PositiveNumber);
  app.add_option("--group-size", o.group_size, "bits per group for the codebook entropy")->check(CLI::Range(1, 16));
  cli::add_threads_option(app, o.threads);
  app.add_flag("-q,--quiet", o.quiet, "no progress bars or notes");
  return cli::run_program(app, argc, argv, "qlip-eval", o.threads, [&] {
    cli::check_checkpoint_folder(o.checkpoint);
    int rc = 0;
    with_qlip_model<ExampleQlipConfigs>(o.checkpoint, [&](auto& model) { rc = evaluate(model, o); });
    return rc;
  });
}
