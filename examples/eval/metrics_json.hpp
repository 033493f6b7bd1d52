/// @file metrics_json.hpp
/// @brief The record qlip-eval prints and writes as metrics.json: the main job's keys
///        (zero_shot_top1, linear_probe_top1, psnr_db, ssim, distinct_codes, train_seconds) first,
///        then what explains them.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "qlip/eval/code_usage.hpp"
#include "qlip/io/detail/file.hpp"

namespace qlip::eval_cli {

struct Metrics {
  std::string model;
  double zero_shot_top1 = 0, linear_probe_top1 = 0, linear_probe_train_top1 = 0;
  double psnr_db = 0, ssim = 0;
  double psnr_db_stage1 = -1;  ///< < 0: not given (a stage-1-only run)
  std::int64_t distinct_codes = 0, tokens = 0;
  double train_seconds = -1;  ///< < 0: unknown (no --train-summary)
  std::int64_t test_images = 0, probe_train_images = 0, zero_shot_templates = 0;
  int group_size = 0;
  double ones_fraction_min = 0, ones_fraction_max = 0, group_entropy_ratio = 0;
  std::int64_t photos = 0;  ///< photos scored; 0: none asked for
  double psnr_db_photos = 0, ssim_photos = 0;

  void set_code_usage(const eval::CodeUsage& u, int g) {
    distinct_codes = u.distinct_codes;
    tokens = u.tokens;
    group_size = g;
    ones_fraction_min = *std::min_element(u.ones_fraction.begin(), u.ones_fraction.end());
    ones_fraction_max = *std::max_element(u.ones_fraction.begin(), u.ones_fraction.end());
    group_entropy_ratio = u.mean_group_entropy_ratio;
  }

  nlohmann::ordered_json json() const {
    nlohmann::ordered_json j;
    j["zero_shot_top1"] = zero_shot_top1;
    j["linear_probe_top1"] = linear_probe_top1;
    j["psnr_db"] = psnr_db;
    if (psnr_db_stage1 >= 0) j["psnr_db_stage1"] = psnr_db_stage1;
    j["ssim"] = ssim;
    j["distinct_codes"] = distinct_codes;
    j["train_seconds"] = train_seconds >= 0 ? nlohmann::ordered_json(train_seconds) : nlohmann::ordered_json(nullptr);
    j["model"] = model;
    j["data"] = "Fashion-MNIST test split (linear probe fit on the train split)";
    j["test_images"] = test_images;
    j["probe_train_images"] = probe_train_images;
    j["zero_shot_templates"] = zero_shot_templates;
    j["linear_probe_train_top1"] = linear_probe_train_top1;
    j["code_tokens"] = tokens;
    j["bit_ones_fraction_min"] = ones_fraction_min;
    j["bit_ones_fraction_max"] = ones_fraction_max;
    j["group_size"] = group_size;
    j["group_entropy_ratio"] = group_entropy_ratio;
    if (photos > 0) {
      j["photos"] = photos;
      j["psnr_db_photos"] = psnr_db_photos;
      j["ssim_photos"] = ssim_photos;
    }
    return j;
  }

  void write_json(const std::string& path) const {
    const std::string text = json().dump(2) + "\n";
    qlip::detail::write_file_atomic(path, text.data(), text.size());
  }

  /// The human-readable form: one metric per line.
  std::string table() const {
    std::string out;
    char line[256];
    const auto add = [&](const char* name, const std::string& value) {
      std::snprintf(line, sizeof line, "%-26s %s\n", name, value.c_str());
      out += line;
    };
    const auto num = [](double v, const char* fmt) {
      char b[64];
      std::snprintf(b, sizeof b, fmt, v);
      return std::string(b);
    };
    add("model", model);
    add("zero-shot top-1", num(100 * zero_shot_top1, "%.2f %%") + " (" + std::to_string(test_images) + " test images, " +
                               std::to_string(zero_shot_templates) + " templates)");
    add("linear-probe top-1", num(100 * linear_probe_top1, "%.2f %%") + " (fit on " + std::to_string(probe_train_images) +
                                  " train images: " + num(100 * linear_probe_train_top1, "%.2f %%") + ")");
    add("PSNR", num(psnr_db, "%.2f dB"));
    if (psnr_db_stage1 >= 0) add("PSNR after stage 1", num(psnr_db_stage1, "%.2f dB"));
    add("SSIM", num(ssim, "%.4f"));
    add("distinct codes", std::to_string(distinct_codes) + " of " + std::to_string(tokens) + " tokens");
    add("bit balance (ones)", num(ones_fraction_min, "%.3f") + " .. " + num(ones_fraction_max, "%.3f"));
    add("group entropy / max", num(group_entropy_ratio, "%.3f") + " (groups of " + std::to_string(group_size) + " bits)");
    if (photos > 0)
      add("photos PSNR / SSIM", num(psnr_db_photos, "%.2f dB") + " / " + num(ssim_photos, "%.4f") + " (" +
                                   std::to_string(photos) + " photos)");
    if (train_seconds >= 0) add("train seconds", num(train_seconds, "%.1f"));
    return out;
  }
};

}  // namespace qlip::eval_cli
