/// @file recon_grid.hpp
/// @brief The reconstruction grid written during training: each input image beside what the model
///        reconstructs from its 28-bit codes (pairs left | right), back in 8-bit RGB.
#pragma once

#include <algorithm>
#include <array>
#include <string>
#include <vector>

#include "qlip/io/image.hpp"
#include "qlip/io/preprocess.hpp"

namespace qlip::train_cli {

/// Pixels are CLIP-normalised [B, 3, S, S] (inputs and reconstructions alike); at most `max_pairs`
/// pairs, 4 pairs per row, each image upscaled ×`zoom` (nearest) so small images can be looked at.
inline void write_reconstruction_grid(const std::string& path, HostView<const float, 4> inputs,
                                      HostView<const float, 4> recon, int max_pairs = 16, int zoom = 4) {
  const ClipPreprocessConfig clip;  // the CLIP mean/std every qlip model normalises with (MODEL.md §2.1)
  const std::array<float, 3> mean = clip.mean, std = clip.std;
  std::vector<Image> cells;
  const std::int64_t n = std::min<std::int64_t>(inputs.size(0), max_pairs);
  for (std::int64_t i = 0; i < n; ++i) {
    cells.push_back(upscale_nearest(postprocess_clip(inputs.select(0, i), mean, std), zoom));
    cells.push_back(upscale_nearest(postprocess_clip(recon.select(0, i), mean, std), zoom));
  }
  write_png(path, make_grid(cells, 8, 2));
}

}  // namespace qlip::train_cli
