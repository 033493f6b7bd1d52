/// @file rope_table.hpp
/// @brief The 2-D RoPE table of a vision tower: loaded from the checkpoint's `*.rope.freqs_cos/sin`
///        buffers when present (bit-exact with PyTorch's float32 table), recomputed otherwise.
///
/// MODEL.md §5.2: the official code registers one rotary module under several names, so the stored key
/// may be `<tower>.rope.freqs_cos` or `<tower>.encoder.layers.0.self_attn.rope.freqs_cos` depending
/// on how the file was written. Any key under the tower's prefix that ends in `rope.freqs_cos` is
/// accepted; its shape must be [S², Dh], otherwise the table is recomputed and a warning recorded.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "qlip/core/allocator.hpp"
#include "qlip/reference/rope.hpp"
#include "qlip/nn/parameters.hpp"

namespace qlip::nn {

/// Where a tower's RoPE table came from.
enum class RopeSource : std::uint8_t { none, checkpoint, computed };

/// The shortest key under `prefix` ending in `suffix` (shortest: `vision_model.rope.freqs_cos`
/// before the per-layer aliases), or "" when there is none.
inline std::string find_buffer_key(const WeightSource& src, const std::string& prefix, const std::string& suffix) {
  std::string best;
  for (const auto& n : src.names()) {
    if (n.size() < prefix.size() + suffix.size() || n.compare(0, prefix.size(), prefix) != 0) continue;
    if (n.compare(n.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
    if (best.empty() || n.size() < best.size() || (n.size() == best.size() && n < best)) best = n;
  }
  return best;
}

/// Fills `table` with the RoPE of a grid×grid patch grid and head_dim, preferring stored buffers.
/// @param prefix tower prefix with trailing dot ("vision_model.")
inline RopeSource load_rope_table(WeightSource& src, const std::string& prefix, int grid, int head_dim,
                                  RopeTable& table) {
  const std::int64_t rows = static_cast<std::int64_t>(grid) * grid;
  table = reference::rope2d_table(grid, head_dim);  // also the cross-check for stored buffers
  const std::string kc = find_buffer_key(src, prefix, "rope.freqs_cos");
  const std::string ks = find_buffer_key(src, prefix, "rope.freqs_sin");
  if (kc.empty() || ks.empty()) return RopeSource::computed;
  const std::vector<std::int64_t> expected{rows, head_dim};
  if (src.shape_of(kc) != expected || src.shape_of(ks) != expected) {
    src.warn("RoPE buffers " + kc + " / " + ks + " do not have shape [" + std::to_string(rows) + ", " +
             std::to_string(head_dim) + "] (grid " + std::to_string(grid) + ", head_dim " + std::to_string(head_dim) +
             "); recomputing the table");
    return RopeSource::computed;
  }
  RopeTable stored{load_tensor<2>(src, kc, {rows, head_dim}), load_tensor<2>(src, ks, {rows, head_dim})};
  // The stored table must be the MODEL.md §2.4 table up to float rounding of cos/sin of angles ≤ ~16 rad.
  float worst = 0.0f;
  for (std::int64_t i = 0; i < stored.cos.numel(); ++i) {
    worst = std::max(worst, std::fabs(stored.cos.data()[i] - table.cos.data()[i]));
    worst = std::max(worst, std::fabs(stored.sin.data()[i] - table.sin.data()[i]));
  }
  if (!(worst <= 1e-5f))
    src.warn("RoPE buffers " + kc + " differ from the MODEL.md §2.4 table by up to " + std::to_string(worst) +
             " (pt_seq_len / theta differ?); using the stored buffers");
  table = std::move(stored);
  return RopeSource::checkpoint;
}

}  // namespace qlip::nn
