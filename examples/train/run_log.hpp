/// @file run_log.hpp
/// @brief What a training run reports: the progress line on stderr (step, each loss, images/s, ETA),
///        the CSV log (one row per step, appended so a resumed run continues the same file) and the
///        loss plot rendered from it.
#pragma once

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "qlip/core/error.hpp"
#include "qlip/io/detail/file.hpp"
#include "qlip/model/qlip_trainable.hpp"
#include "qlip/train/adversary.hpp"
#include "train/plot.hpp"

namespace qlip::train_cli {

/// One logged step.
struct LogRow {
  std::int64_t step = 0;
  Stage1Losses losses;
  double grad_norm = 0.0;
  double lr_factor = 0.0;
  double images_per_second = 0.0;
  bool applied = true;
  bool gan = false;                   ///< the step had the GAN terms (stage 2 from --gan-start)
  train::DiscriminatorStep disc{};    ///< its discriminator step
};

inline const char* kCsvHeader =
    "step,total,contrastive,mse,entropy_penalty,per_sample_entropy,codebook_entropy,commitment,"
    "i2t_acc,t2i_acc,grad_norm,lr_factor,images_per_second,applied,perceptual,adversarial,disc_loss,r1,"
    "disc_grad_norm,real_logit,fake_logit";

/// Drops the rows of the CSV at `path` whose first column (the step) is above `step`, keeping the
/// header: what a resumed run does to the logs of steps the killed run wrote after its last save.
/// A missing file is left missing.
inline void truncate_csv_after(const std::string& path, std::int64_t step) {
  std::ifstream in(path);
  if (!in.good()) return;
  std::string line, kept;
  bool header = true;
  while (std::getline(in, line)) {
    if (header || std::atoll(line.c_str()) <= step) kept += line + "\n";
    header = false;
  }
  in.close();
  std::ofstream out(path, std::ios::trunc);
  out << kept;
  QLIP_CHECK(out.good(), "rewriting the training log ", path, " failed");
}

/// Opens `path` for appending, writing `header` first when the file is new or empty.
/// @param what names the log in the error message
inline std::ofstream open_csv_for_append(const std::string& path, const char* header, const char* what) {
  std::ifstream probe(path);
  const bool fresh = !probe.good() || probe.peek() == std::ifstream::traits_type::eof();
  std::ofstream out(path, std::ios::app);
  QLIP_CHECK(out.good(), "cannot open the ", what, " ", path, " for writing");
  if (fresh) out << header << '\n';
  return out;
}

/// The rows of a CSV after its header, each cell as a number (atof).
inline std::vector<std::vector<double>> read_csv_numbers(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);  // header
  std::vector<std::vector<double>> rows;
  while (std::getline(in, line)) {
    std::vector<double> v;
    std::stringstream ss(line);
    std::string cell;
    while (std::getline(ss, cell, ',')) v.push_back(std::atof(cell.c_str()));
    rows.push_back(std::move(v));
  }
  return rows;
}

/// Appends rows to `<out>/log.csv` (header written when the file is new or empty). A resumed run
/// first drops the rows after the step it resumes from (steps the killed run logged after its last
/// save), so the file holds each step once and equals an uninterrupted run's.
class CsvLog {
 public:
  explicit CsvLog(std::string path, std::int64_t keep_up_to_step = -1) : path_(std::move(path)) {
    if (keep_up_to_step >= 0) truncate_csv_after(path_, keep_up_to_step);
    out_ = open_csv_for_append(path_, kCsvHeader, "training log");
  }
  void write(const LogRow& r) {
    const Stage1Losses& l = r.losses;
    out_.precision(9);
    out_ << r.step << ',' << l.total << ',' << l.contrastive << ',' << l.mse << ',' << l.entropy_penalty << ','
         << l.per_sample_entropy << ',' << l.codebook_entropy << ',' << l.commitment << ',' << l.image_to_text_accuracy
         << ',' << l.text_to_image_accuracy << ',' << r.grad_norm << ',' << r.lr_factor << ',' << r.images_per_second
         << ',' << (r.applied ? 1 : 0) << ',' << l.perceptual << ',' << l.adversarial << ',' << r.disc.loss << ','
         << r.disc.r1 << ',' << r.disc.grad_norm << ',' << r.disc.real_logit << ',' << r.disc.fake_logit << '\n';
    out_.flush();
    QLIP_CHECK(out_.good(), "writing the training log ", path_, " failed (disk full?)");
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::ofstream out_;
};

/// Reads the CSV back and plots total, contrastive, MSE, commitment and |entropy penalty| (and the
/// two GAN losses when the run has them).
inline void plot_log(const std::string& csv, const std::string& png, const std::string& title) {
  std::vector<Curve> curves = {{"total", {}, {}}, {"contrastive", {}, {}}, {"mse", {}, {}},
                               {"commitment", {}, {}}, {"-entropy pen.", {}, {}}};
  std::vector<Curve> gan = {{"GAN L_G", {}, {}}, {"GAN L_D", {}, {}}};
  for (const std::vector<double>& v : read_csv_numbers(csv)) {
    if (v.size() < 14 || v[13] == 0) continue;  // skipped steps are not plotted
    const double step = v[0];
    const double ys[5] = {v[1], v[2], v[3], v[7], -v[4]};
    for (int k = 0; k < 5; ++k) {
      curves[k].x.push_back(step);
      curves[k].y.push_back(ys[k]);
    }
    if (v.size() >= 17 && v[16] != 0) {  // a step with the GAN terms: L_G and L_D
      gan[0].x.push_back(step);
      gan[0].y.push_back(v[15]);
      gan[1].x.push_back(step);
      gan[1].y.push_back(v[16]);
    }
  }
  if (!gan[0].x.empty()) curves.insert(curves.end(), gan.begin(), gan.end());
  write_loss_plot(png, curves, title);
}

/// "  L_G 0.693  L_D 0.692  D(x) 0.01  D(x^) -0.02" (and "  R1 0.003" on its steps).
inline std::string gan_text(const LogRow& r) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "  L_G %.4g  L_D %.4g  D(x) %.3g  D(x^) %.3g", r.losses.adversarial, r.disc.loss,
                r.disc.real_logit, r.disc.fake_logit);
  std::string s = buf;
  if (!std::isnan(r.disc.r1)) {
    std::snprintf(buf, sizeof buf, "  R1 %.3g", r.disc.r1);
    s += buf;
  }
  return s;
}

/// "step 120/3000  total 812.3  clip 2.41  mse 0.81 ...  1650 img/s  ETA 4m12s" on stderr.
class ProgressLine {
 public:
  ProgressLine(std::int64_t first_step, std::int64_t last_step)
      : first_(first_step), last_(last_step), start_(std::chrono::steady_clock::now()) {}
  void print(const LogRow& r, std::int64_t images_done) const {
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double per_step = (r.step - first_) > 0 ? secs / static_cast<double>(r.step - first_) : 0.0;
    const double eta = per_step * static_cast<double>(last_ - r.step);
    const Stage1Losses& l = r.losses;
    std::fprintf(stderr,
                 "step %lld/%lld  total %.4g  contrastive %.4g  mse %.4g  entropy %.4g  commit %.4g  "
                 "i2t %.2f%s%s  |g| %.3g  %.0f img/s  ETA %dm%02ds%s\n",
                 static_cast<long long>(r.step), static_cast<long long>(last_), l.total, l.contrastive, l.mse,
                 l.entropy_penalty, l.commitment, l.image_to_text_accuracy,
                 l.perceptual != 0.0 ? ("  lpips " + std::to_string(l.perceptual)).c_str() : "",
                 r.gan ? gan_text(r).c_str() : "", r.grad_norm,
                 secs > 0 ? static_cast<double>(images_done) / secs : 0.0, static_cast<int>(eta) / 60,
                 static_cast<int>(eta) % 60, r.applied ? "" : "  (skipped: non-finite)");
  }
  double seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(); }

 private:
  std::int64_t first_, last_;
  std::chrono::steady_clock::time_point start_;
};

/// train_summary.json in the run folder: what this invocation trained and how long it took (a
/// resumed run reports its own segment) and the caller's `extra` entries (the loss weights used).
/// qlip-eval --train-summary copies train_seconds from it.
inline void write_train_summary(const std::string& path, std::int64_t steps, std::int64_t images, double seconds,
                                const nlohmann::ordered_json& extra = nlohmann::ordered_json::object()) {
  nlohmann::ordered_json j;
  j["steps"] = steps;
  j["images"] = images;
  j["train_seconds"] = seconds;
  j["images_per_second"] = seconds > 0 ? static_cast<double>(images) / seconds : 0.0;
  for (const auto& [k, v] : extra.items()) j[k] = v;
  const std::string text = j.dump(2) + "\n";
  qlip::detail::write_file_atomic(path, text.data(), text.size());
}

}  // namespace qlip::train_cli
