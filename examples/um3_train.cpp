/// @file um3_train.cpp
/// @brief `um3-train`: trains the UM³ Llama (docs/UM3.md) on mixed batches of text-only rows
///        (Debian's fortunes), image → text rows and text → image rows (Fashion-MNIST as codes of the
///        demo QLIP, captions from the class names), with a ratio of the three that moves from
///        --ratio-start to --ratio-end over the run (the paper: 60:1:3 → 12:1:3, its Table 9).
///
///   um3_train --qlip QLIP_CHECKPOINT | --codes CODES.safetensors  --out DIR
///             [--config um3-demo|um3-tiny] [--steps N] [--batch ROWS] [--text-length T]
///             [--ratio-start A:B:C] [--ratio-end A:B:C] [--lr LR] [--min-lr-ratio R] [--warmup W]
///             [--weight-decay WD] [--clip C] [--cfg-drop P] [--seed S] [--threads T]
///             [--max-minutes M] [--resume] [--save-every N] [--log-every N] [--corpus DIR]
///
/// Writes into --out: codes_train.safetensors (the split's codes and labels, encoded once by --qlip
/// and reused while it names the same QLIP), checkpoint/ (a Hugging Face Llama folder + byte_bpe.json
/// + um3.json + training_state.safetensors, committed atomically), log.csv (one row per step),
/// loss.png and train_summary.json. A batch is a pure function of (--seed, step) (um3/task_mix.hpp),
/// so --resume continues bit-exactly. Errors: one line on stderr, "um3-train: error: <message>".

#include <omp.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "cli/program.hpp"
#include "cli/util.hpp"
#include "qlip/data/text_corpus.hpp"
#include "qlip/train/init.hpp"
#include "qlip/train/optimizer.hpp"
#include "qlip/train/trainer.hpp"
#include "qlip/um3/task_mix.hpp"
#include "train/plot.hpp"
#include "train/run_log.hpp"
#include "train/run_state.hpp"
#include "um3/um3_files.hpp"

namespace {

using namespace qlip;
using namespace qlip::um3_cli;
using train_cli::RunSettings;
using train_cli::setting_text;

struct Options {
  std::string qlip, codes, out = "out/um3", config = Um3DemoModel::name, corpus;
  std::int64_t steps = 2000, batch = 32, text_length = 128, warmup = 100, save_every = 500, log_every = 20;
  std::string ratio_start = "60:1:3", ratio_end = "12:1:3";
  double lr = 3e-3, min_lr_ratio = 0.1, weight_decay = 0.1, clip = 1.0, cfg_drop = 0.1, max_minutes = 0;
  std::uint64_t seed = 0;
  int threads = 0;
  bool resume = false;
};

RunSettings run_settings(const Options& o) {
  return {{"--config", o.config},
          {"--steps", std::to_string(o.steps)},
          {"--batch", std::to_string(o.batch)},
          {"--text-length", std::to_string(o.text_length)},
          {"--warmup", std::to_string(o.warmup)},
          {"--ratio-start", um3::parse_task_ratio(o.ratio_start).text()},
          {"--ratio-end", um3::parse_task_ratio(o.ratio_end).text()},
          {"--lr", setting_text(o.lr)},
          {"--min-lr-ratio", setting_text(o.min_lr_ratio)},
          {"--weight-decay", setting_text(o.weight_decay)},
          {"--clip", setting_text(o.clip)},
          {"--cfg-drop", setting_text(o.cfg_drop)},
          {"--seed", std::to_string(o.seed)}};
}

/// The training fortunes as one token stream, <bos> entry <eos> per entry, entries in an order
/// shuffled by the seed (Fisher–Yates on Philox draws).
std::vector<std::int32_t> text_stream(const Um3Text& t, std::vector<std::string> entries, std::uint64_t seed) {
  const Philox rng(seed ^ 0x7465787473747265ull);
  for (std::size_t i = entries.size(); i > 1; --i) {
    const Philox::Block b = rng.draw(i);
    const std::size_t j = static_cast<std::size_t>(((static_cast<std::uint64_t>(b[0]) << 32) | b[1]) % i);
    std::swap(entries[i - 1], entries[j]);
  }
  return t.entry_stream(entries);
}

/// "<path> (<bytes> bytes, modified <time>)" of the QLIP's weights: what the cached codes were made from.
std::string qlip_identity(const std::string& dir) {
  namespace fs = std::filesystem;
  const fs::path w = fs::path(dir) / "model.safetensors";
  QLIP_CHECK(fs::exists(w), "--qlip '", dir, "' has no model.safetensors");
  const auto t = fs::last_write_time(w).time_since_epoch().count();
  return fs::absolute(dir).lexically_normal().string() + " (" + std::to_string(fs::file_size(w)) + " bytes, mtime " +
         std::to_string(static_cast<long long>(t)) + ")";
}

/// The training codes: --codes as given, or OUT/codes_train.safetensors, encoded by --qlip unless the
/// cached file was made from the same QLIP weights.
LabelledCodes training_codes(const Options& o, const um3::VisualTokenLayout& layout) {
  if (!o.codes.empty()) return read_labelled_codes(o.codes, layout);
  const std::string cache = o.out + "/codes_train.safetensors";
  const std::string id = qlip_identity(o.qlip);
  if (std::filesystem::exists(cache)) {
    const SafetensorsFile f = SafetensorsFile::open(cache);
    const auto it = f.metadata().find("source");
    if (it != f.metadata().end() && it->second == id) {
      std::fprintf(stderr, "um3-train: codes of the training split from %s\n", cache.c_str());
      return read_labelled_codes(cache, layout);
    }
    std::fprintf(stderr, "um3-train: %s was made from another QLIP; encoding again\n", cache.c_str());
  }
  const DemoQlip qlip = DemoQlip::load(o.qlip);
  std::string note;
  const ClipPreprocessConfig pre = cli::load_preprocess_config(o.qlip, DemoQlip::image_size(), note);
  const auto t0 = std::chrono::steady_clock::now();
  LabelledCodes c = encode_split(qlip, pre, data::FashionMnistSplit::train, data::default_fashion_mnist_dirs(),
                                 data::kFashionMnistTrainSize, cli::ProgressMode::automatic);
  write_labelled_codes(cache, c, id);
  std::fprintf(stderr, "um3-train: encoded %lld training images in %.1f s into %s\n", static_cast<long long>(c.images),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), cache.c_str());
  return c;
}

/// One task's rows of a step, as the model reads them.
struct TaskRows {
  std::int64_t rows = 0, length = 0;
  std::vector<std::int32_t> ids, targets;
  void start(std::int64_t len) {
    rows = 0;
    length = len;
    ids.clear();
    targets.clear();
  }
  std::pair<std::span<std::int32_t>, std::span<std::int32_t>> add() {
    ids.resize(static_cast<std::size_t>((rows + 1) * length));
    targets.resize(ids.size());
    const auto at = static_cast<std::size_t>(rows * length);
    ++rows;
    return {{ids.data() + at, static_cast<std::size_t>(length)}, {targets.data() + at, static_cast<std::size_t>(length)}};
  }
};

/// Builds the rows of step `step` (a pure function of the seed and the step).
class BatchBuilder {
 public:
  BatchBuilder(const Options& o, const Um3Text& text, const LabelledCodes& codes, std::vector<std::int32_t> stream)
      : o_(o), text_(text), codes_(codes), stream_(std::move(stream)), draws_(o.seed),
        schedule_{um3::parse_task_ratio(o.ratio_start), um3::parse_task_ratio(o.ratio_end), o.steps},
        image_len_(um3::image_row_length(text.vocab.layout.image_tokens(kPatches), kUm3DemoMaxCaption)) {
    QLIP_CHECK(static_cast<std::int64_t>(stream_.size()) > o.text_length + 1, "the text corpus has ", stream_.size(),
               " tokens, fewer than one row of --text-length ", o.text_length);
  }
  std::int64_t image_length() const { return image_len_; }
  std::size_t stream_tokens() const { return stream_.size(); }
  const um3::TaskSchedule& schedule() const { return schedule_; }

  void build(std::int64_t step, std::array<TaskRows, um3::kTaskCount>& rows) const {
    rows[0].start(o_.text_length);
    rows[1].start(image_len_);
    rows[2].start(image_len_);
    std::vector<std::int32_t> image(static_cast<std::size_t>(text_.vocab.layout.image_tokens(kPatches)));
    for (std::int64_t r = 0; r < o_.batch; ++r) {
      const um3::Task task = draws_.task(schedule_, step, r);
      auto [ids, targets] = rows[static_cast<std::size_t>(task)].add();
      if (task == um3::Task::text) {
        const std::uint64_t windows = stream_.size() - static_cast<std::size_t>(o_.text_length);
        const auto at = static_cast<std::size_t>(draws_.index(step, r, um3::Draw::text_window, windows));
        um3::text_row({stream_.data() + at, static_cast<std::size_t>(o_.text_length + 1)}, ids, targets);
        continue;
      }
      const auto img = static_cast<std::int64_t>(draws_.index(step, r, um3::Draw::image, static_cast<std::uint64_t>(codes_.images)));
      const auto tpl = static_cast<std::size_t>(draws_.index(step, r, um3::Draw::template_index, text_.templates.size()));
      const std::vector<std::int32_t> caption = text_.caption(codes_.labels[static_cast<std::size_t>(img)], tpl);
      text_.vocab.layout.tokens_from_codes(codes_.image(img), image);
      if (task == um3::Task::caption) {
        um3::caption_row(text_.vocab, image, caption, ids, targets);
      } else {
        const bool drop = draws_.uniform(step, r, um3::Draw::drop_caption) < o_.cfg_drop;
        um3::generation_row(text_.vocab, caption, image, drop, ids, targets);
      }
    }
  }

 private:
  const Options& o_;
  const Um3Text& text_;
  const LabelledCodes& codes_;
  std::vector<std::int32_t> stream_;
  um3::RowDraws draws_;
  um3::TaskSchedule schedule_;
  std::int64_t image_len_;
};

const char* kCsvHeader =
    "step,loss,text_loss,caption_loss,generation_loss,text_rows,caption_rows,generation_rows,p_text,p_caption,"
    "p_generation,grad_norm,lr_factor,tokens_per_second,applied";

void plot_um3_log(const std::string& csv, const std::string& png) {
  std::vector<train_cli::Curve> curves = {{"all", {}, {}}, {"text", {}, {}}, {"image to text", {}, {}}, {"text to image", {}, {}}};
  for (const std::vector<double>& v : train_cli::read_csv_numbers(csv)) {
    if (v.size() < 15 || v[14] == 0) continue;
    for (int k = 0; k < 4; ++k) {
      if (k > 0 && v[static_cast<std::size_t>(4 + k)] == 0) continue;  // no row of the task in this step
      curves[static_cast<std::size_t>(k)].x.push_back(v[0]);
      curves[static_cast<std::size_t>(k)].y.push_back(v[static_cast<std::size_t>(1 + k)]);
    }
  }
  train_cli::write_loss_plot(png, curves, "um3-train: cross-entropy per task");
}

template <class Tag>
int train_run(const Options& o) {
  constexpr LlamaConfig C = Tag::config;
  using Model = nn::LlamaModel<C, cpu_backend>;
  namespace fs = std::filesystem;
  fs::create_directories(o.out);
  const std::string ckpt = o.out + "/checkpoint";
  const RunSettings settings = run_settings(o);
  QLIP_CHECK(o.cfg_drop >= 0 && o.cfg_drop <= 1, "--cfg-drop ", o.cfg_drop, " is not a probability");

  // Text: the corpus, its held-out split and the tokenizer (trained here, or the resumed run's).
  const data::TextSplit corpus = data::split_held_out(o.corpus.empty() ? data::read_fortunes() : data::read_fortunes(o.corpus));
  std::optional<LoadedUm3<Tag>> resumed;
  if (o.resume) resumed.emplace(load_um3_folder<Tag>(ckpt, train::Gradients::allocate));
  const Um3Text text = resumed ? resumed->files.text : build_demo_text(corpus.train);
  std::unique_ptr<Model> model;
  train::ParameterStore store;
  if (resumed) {
    store = std::move(resumed->llama.store);
    model = std::move(resumed->llama.model);
  } else {
    model = std::make_unique<Model>(demo_runtime(text.vocab));
    bind_llama(*model, store, train::Gradients::allocate);
    train::initialize_parameters(store, o.seed);
  }
  const LabelledCodes codes = training_codes(o, text.vocab.layout);
  const BatchBuilder batches(o, text, codes, text_stream(text, corpus.train, o.seed));

  train::OptimizerOptions oo;
  oo.kind = train::OptimizerKind::adamw;
  oo.schedule = {o.warmup, o.steps, o.min_lr_ratio};
  train::Optimizer opt(store, {{"llama", o.lr, o.weight_decay}}, oo);
  train::Trainer trainer(store, opt, {o.clip, 5});
  std::int64_t start = 0;
  if (o.resume) {
    const train::TrainStateInfo info = train::read_train_state(ckpt + "/" + train::kTrainStateFileName, Tag::name, opt);
    train_cli::check_resume_settings(ckpt, info.user, settings);
    start = info.step;
    std::fprintf(stderr, "um3-train: resumed at step %lld from %s\n", static_cast<long long>(start), ckpt.c_str());
  }
  std::fprintf(stderr,
               "um3-train: %s, %lld parameters; %lld training images, %zu text tokens; rows of %lld (text) and %lld "
               "(image) tokens; ratio %s -> %s\n",
               Tag::name, static_cast<long long>(store.parameter_count()), static_cast<long long>(codes.images),
               batches.stream_tokens(),
               static_cast<long long>(o.text_length), static_cast<long long>(batches.image_length()),
               o.ratio_start.c_str(), o.ratio_end.c_str());

  const std::int64_t max_len = std::max(o.text_length, batches.image_length());
  std::vector<float> saved(static_cast<std::size_t>(Model::activation_elements(o.batch, max_len)));
  std::vector<float> work(static_cast<std::size_t>(Model::workspace_elements(o.batch, max_len)));
  Arena arena(Model::kOpScratchBytes);
  std::array<TaskRows, um3::kTaskCount> rows;

  if (!o.resume) train_cli::truncate_csv_after(o.out + "/log.csv", -1);
  if (start > 0) train_cli::truncate_csv_after(o.out + "/log.csv", start);
  std::ofstream csv = train_cli::open_csv_for_append(o.out + "/log.csv", kCsvHeader, "training log");
  const auto t0 = std::chrono::steady_clock::now();
  const auto seconds = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  std::int64_t done = start, tokens_seen = 0;
  for (std::int64_t step = start; step < o.steps; ++step) {
    batches.build(step, rows);
    store.zero_grad();
    std::int64_t count = 0;
    for (const TaskRows& t : rows) count += std::count_if(t.targets.begin(), t.targets.end(), [](std::int32_t v) { return v >= 0; });
    std::array<double, um3::kTaskCount> loss{};
    double total = 0;
    for (std::size_t k = 0; k < rows.size(); ++k) {
      const TaskRows& t = rows[k];
      if (t.rows == 0) continue;
      const HostView<const std::int32_t, 1> ids(t.ids.data(), {static_cast<std::int64_t>(t.ids.size())});
      const HostView<const std::int32_t, 1> targets(t.targets.data(), {static_cast<std::int64_t>(t.targets.size())});
      const CrossEntropyResult r = model->forward_train(arena, ids, targets, saved.data(),
                                                        static_cast<std::int64_t>(saved.size()), t.rows, t.length);
      // The step's loss is the mean over every target token of the batch: each task's mean
      // weighted by its share of the targets.
      const double share = count > 0 ? static_cast<double>(r.count) / static_cast<double>(count) : 0.0;
      loss[k] = r.loss;
      total += share * r.loss;
      if (r.count > 0)
        model->backward(arena, ids, targets, share, saved.data(), static_cast<std::int64_t>(saved.size()), work.data(),
                        static_cast<std::int64_t>(work.size()), t.rows, t.length);
      tokens_seen += t.rows * t.length;
    }
    const train::StepOutcome out = trainer.apply(total);
    done = step + 1;
    const std::array<double, um3::kTaskCount> p = batches.schedule().probabilities(step);
    const double tps = static_cast<double>(tokens_seen) / std::max(seconds(), 1e-9);
    csv.precision(9);
    csv << done << ',' << total << ',' << loss[0] << ',' << loss[1] << ',' << loss[2] << ',' << rows[0].rows << ','
        << rows[1].rows << ',' << rows[2].rows << ',' << p[0] << ',' << p[1] << ',' << p[2] << ',' << out.grad_norm
        << ',' << out.lr_factor << ',' << tps << ',' << (out.applied ? 1 : 0) << '\n';
    csv.flush();
    QLIP_CHECK(csv.good(), "writing the training log ", o.out, "/log.csv failed (disk full?)");
    const bool out_of_time = o.max_minutes > 0 && seconds() >= 60.0 * o.max_minutes;
    const bool last = done == o.steps || out_of_time;
    if (done % o.log_every == 0 || last || !out.applied) {
      const double per_step = seconds() / static_cast<double>(done - start);
      const double eta = per_step * static_cast<double>(o.steps - done);
      std::fprintf(stderr,
                   "step %lld/%lld  loss %.4f  text %.3f  i2t %.3f  t2i %.3f  rows %lld/%lld/%lld  |g| %.3g  lr %.3g  "
                   "%.0f tok/s  ETA %dm%02ds%s\n",
                   static_cast<long long>(done), static_cast<long long>(o.steps), total, loss[0], loss[1], loss[2],
                   static_cast<long long>(rows[0].rows), static_cast<long long>(rows[1].rows),
                   static_cast<long long>(rows[2].rows), out.grad_norm, o.lr * out.lr_factor, tps,
                   static_cast<int>(eta) / 60, static_cast<int>(eta) % 60, out.applied ? "" : "  (skipped: non-finite)");
    }
    if (done % o.save_every == 0 || last) {
      std::map<std::string, std::string> user(settings.begin(), settings.end());
      save_um3_folder<Tag>(ckpt, *model, text, o.qlip.empty() ? "(codes " + o.codes + ")" : o.qlip, &opt,
                           train::TrainProgress{0, 0, o.seed, 0}, user);
      plot_um3_log(o.out + "/log.csv", o.out + "/loss.png");
    }
    if (out_of_time && done < o.steps) {
      std::fprintf(stderr, "um3-train: --max-minutes %g reached: stopped after step %lld of %lld (saved; --resume continues)\n",
                   o.max_minutes, static_cast<long long>(done), static_cast<long long>(o.steps));
      break;
    }
  }
  train_cli::write_train_summary(o.out + "/train_summary.json", done - start, tokens_seen, seconds(),
                                 {{"config", Tag::name}, {"tokens", tokens_seen}, {"parameters", store.parameter_count()}});
  std::fprintf(stderr, "um3-train: %lld steps in %.1f s, checkpoint in %s\n", static_cast<long long>(done - start),
               seconds(), ckpt.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"um3-train: the UM3 Llama on text, image-to-text and text-to-image rows (Fashion-MNIST codes, fortunes)"};
  Options o;
  CLI::Option* qlip_opt = app.add_option("--qlip", o.qlip, "the QLIP checkpoint whose codes the images become (encoded once)");
  app.add_option("--codes", o.codes, "a codes file with labels instead of --qlip (indices [N, 64] u32, labels [N] i32)")
      ->excludes(qlip_opt);
  app.add_option("--out", o.out, "output folder (checkpoint/, log.csv, loss.png, codes_train.safetensors)");
  app.add_option("--config", o.config, "compiled model: um3-demo (3.8M parameters) or um3-tiny (for tests)")
      ->check(CLI::IsMember({Um3DemoModel::name, Um3TinyModel::name}));
  app.add_option("--corpus", o.corpus, "folder of fortune files (default: the Debian package's)");
  app.add_option("--steps", o.steps, "optimiser steps in total (the schedules end here)")->check(CLI::PositiveNumber);
  app.add_option("--batch", o.batch, "rows per step, each drawn to one of the three tasks")->check(CLI::PositiveNumber);
  app.add_option("--text-length", o.text_length, "tokens per text-only row")->check(CLI::PositiveNumber);
  app.add_option("--ratio-start", o.ratio_start, "text : image-to-text : text-to-image rows at the first step");
  app.add_option("--ratio-end", o.ratio_end, "the same at the last step (linear in between)");
  app.add_option("--lr", o.lr, "peak AdamW learning rate")->check(CLI::PositiveNumber);
  app.add_option("--min-lr-ratio", o.min_lr_ratio, "final rate of the cosine as a fraction of the peak")->check(CLI::Range(0.0, 1.0));
  app.add_option("--warmup", o.warmup, "linear warm-up steps")->check(CLI::NonNegativeNumber);
  app.add_option("--weight-decay", o.weight_decay, "AdamW weight decay (matrices only)")->check(CLI::NonNegativeNumber);
  app.add_option("--clip", o.clip, "global gradient-norm clip")->check(CLI::PositiveNumber);
  app.add_option("--cfg-drop", o.cfg_drop, "probability that a text-to-image row gets the null caption (guidance)");
  app.add_option("--seed", o.seed, "initialisation and data seed");
  cli::add_threads_option(app, o.threads);
  app.add_option("--max-minutes", o.max_minutes, "stop and save after this many minutes (0: no limit)")->check(CLI::NonNegativeNumber);
  app.add_flag("--resume", o.resume, "continue the run in --out exactly where its last save left it");
  app.add_option("--save-every", o.save_every, "checkpoint every N steps")->check(CLI::PositiveNumber);
  app.add_option("--log-every", o.log_every, "progress line every N steps")->check(CLI::PositiveNumber);
  return cli::run_program(app, argc, argv, "um3-train", o.threads, [&] {
    QLIP_CHECK(!o.qlip.empty() || !o.codes.empty(), "give --qlip (a QLIP checkpoint to encode Fashion-MNIST with) or --codes");
    return with_um3_model(o.config, [&](auto tag) { return train_run<decltype(tag)>(o); });
  });
}
