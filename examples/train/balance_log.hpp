/// @file balance_log.hpp
/// @brief What qlip-train reports about the loss balance (qlip/train/loss_balance.hpp): the gradient
///        magnitudes of both losses at the probed encoder weight, as `grad_balance.csv` and the plot
///        `grad_balance.png` (the paper's Fig. 5 at this scale), and the measurements of the balance
///        window as training-state metadata, so a resumed run derives the same α_r.
#pragma once

#include <charconv>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "qlip/core/error.hpp"
#include "qlip/train/loss_balance.hpp"
#include "train/plot.hpp"
#include "train/run_log.hpp"
#include "train/run_state.hpp"

namespace qlip::train_cli {

inline const char* kBalanceCsvHeader = "step,align_grad_norm,recon_grad_norm,ratio";

/// Appends measurements to `<out>/grad_balance.csv`. Rows are keyed by the step a measurement was
/// taken before, so a run starting at `first_step` (0 for a fresh run) first drops the rows from
/// that step on: they belong to steps a killed run measured after its last save.
class BalanceCsv {
 public:
  BalanceCsv(std::string path, std::int64_t first_step) : path_(std::move(path)) {
    truncate_csv_after(path_, first_step - 1);
    out_ = open_csv_for_append(path_, kBalanceCsvHeader, "gradient-balance log");
  }
  void write(const train::LossGradientSample& s) {
    out_.precision(9);
    out_ << s.step << ',' << s.align_norm << ',' << s.recon_norm << ',' << s.ratio() << '\n';
    out_.flush();
    QLIP_CHECK(out_.good(), "writing the gradient-balance log ", path_, " failed (disk full?)");
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::ofstream out_;
};

/// Plots ‖∂L_align/∂w‖, ‖∂L_recon/∂w‖ and their ratio against the step (log10 axis).
inline void plot_balance(const std::string& csv, const std::string& png, const std::string& title) {
  std::vector<Curve> curves = {{"|dL_align/dw|", {}, {}}, {"|dL_recon/dw|", {}, {}}, {"ratio", {}, {}}};
  for (const std::vector<double>& v : read_csv_numbers(csv)) {
    if (v.size() < 4) continue;
    for (int k = 0; k < 3; ++k) {
      curves[static_cast<std::size_t>(k)].x.push_back(v[0]);
      curves[static_cast<std::size_t>(k)].y.push_back(v[static_cast<std::size_t>(k) + 1]);
    }
  }
  write_loss_plot(png, curves, title);
}

/// The balance window's measurements as one metadata value: "step:align:recon" joined by ';', each
/// number in its shortest exact form (so a resumed run recomputes the same median).
inline std::string balance_samples_text(const std::vector<train::LossGradientSample>& samples) {
  std::string s;
  for (const train::LossGradientSample& m : samples) {
    if (!s.empty()) s += ';';
    s += std::to_string(m.step) + ':' + setting_text(m.align_norm) + ':' + setting_text(m.recon_norm);
  }
  return s;
}

/// Parses balance_samples_text's form back.
/// @throws qlip::Error naming the entry that is not "step:align:recon"
inline std::vector<train::LossGradientSample> parse_balance_samples(const std::string& text) {
  std::vector<train::LossGradientSample> out;
  std::stringstream ss(text);
  std::string entry;
  while (std::getline(ss, entry, ';')) {
    train::LossGradientSample m;
    const char* p = entry.data();
    const char* end = entry.data() + entry.size();
    auto r1 = std::from_chars(p, end, m.step);
    bool ok = r1.ec == std::errc() && r1.ptr != end && *r1.ptr == ':';
    if (ok) {
      auto r2 = std::from_chars(r1.ptr + 1, end, m.align_norm);
      ok = r2.ec == std::errc() && r2.ptr != end && *r2.ptr == ':';
      if (ok) {
        auto r3 = std::from_chars(r2.ptr + 1, end, m.recon_norm);
        ok = r3.ec == std::errc() && r3.ptr == end;
      }
    }
    QLIP_CHECK(ok, "training state: loss-balance measurement '", entry, "' is not step:align:recon");
    out.push_back(m);
  }
  return out;
}

}  // namespace qlip::train_cli
