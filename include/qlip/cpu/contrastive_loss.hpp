/// @file contrastive_loss.hpp
/// @brief CPU CLIP contrastive loss (formulas, local-block semantics, contract and checks as
///        reference/contrastive_loss.hpp; MODEL.md §4.3).
///
/// The two logit blocks of the local rows, S_it = s·I_loc·Tᵀ [b, B] (image→text) and
/// S_ti = s·T_loc·Iᵀ [b, B] (text→image), are float GEMMs into the workspace arena
/// (contrastive_loss_workspace_bytes). Every log-sum-exp, softmax and the batch reductions are in
/// double: one value per row is stored and the rows are added in order afterwards, so the result is
/// deterministic and independent of the thread count. The backward recomputes the logits (the
/// forward saves nothing), turns them in place into ∂L/∂S and finishes with four GEMMs.
///
/// Preconditions (not checked): d_image and d_text overlap neither image nor text.
#pragma once

#include "qlip/cpu/build_check.hpp"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "qlip/core/allocator.hpp"
#include "qlip/core/backend.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/cpu/gemm.hpp"
#include "qlip/reference/contrastive_loss.hpp"

namespace qlip {

/// Arena bytes contrastive_loss / contrastive_loss_backward need for `local_rows` rows of a global
/// batch of `global_batch`: the two [b, B] float logit blocks and 2b doubles, each allocation
/// rounded up to the arena's alignment. (For the whole batch the second block is the transpose of
/// the first; it is kept separate so that a local block needs no [B, B] matrix.)
inline std::size_t contrastive_loss_workspace_bytes(std::int64_t local_rows, std::int64_t global_batch) {
  const auto bytes = [](std::int64_t n, std::size_t size) {
    return detail::round_up(static_cast<std::size_t>(n) * size, kHostAlignment);
  };
  return 2 * bytes(local_rows * global_batch, sizeof(float)) + bytes(2 * local_rows, sizeof(double)) +
         bytes(2 * local_rows, sizeof(double));
}

/// The whole-batch case: contrastive_loss_workspace_bytes(B, B).
inline std::size_t contrastive_loss_workspace_bytes(std::int64_t batch) {
  return contrastive_loss_workspace_bytes(batch, batch);
}

namespace detail::cpu {

/// Fills the local logit blocks: s_it[i, k] = s·⟨I[o+i], T[k]⟩ and s_ti[i, k] = s·⟨T[o+i], I[k]⟩.
inline void contrastive_logits(cpu_backend be, HostView<const float, 2> image, HostView<const float, 2> text,
                               std::int64_t o, std::int64_t b, float s, HostView<float, 2> s_it,
                               HostView<float, 2> s_ti) {
  ops::gemm(be, image.slice(0, o, o + b), text.transpose(0, 1), s_it, s);
  ops::gemm(be, text.slice(0, o, o + b), image.transpose(0, 1), s_ti, s);
}

/// lse of a contiguous line of n logits in double; `argmax` gets the first index of the maximum.
inline double lse_line(const float* x, std::int64_t n, std::int64_t& argmax) {
  double mx = -std::numeric_limits<double>::infinity();
  argmax = 0;
  for (std::int64_t k = 0; k < n; ++k)
    if (static_cast<double>(x[k]) > mx) {
      mx = static_cast<double>(x[k]);
      argmax = k;
    }
  double sum = 0.0;
  for (std::int64_t k = 0; k < n; ++k) sum += std::exp(static_cast<double>(x[k]) - mx);
  return mx + std::log(sum);
}

}  // namespace detail::cpu

namespace ops {

/// The contrastive loss of the local rows (default: the whole batch) and the two top-1 accuracies.
/// @param ws          arena with contrastive_loss_workspace_bytes(b, B) free; rewound on return
/// @param image       [B, E] image features (L2-normalised rows), any strides
/// @param text        [B, E] text features
/// @param logit_scale [1] ln s
/// @param rows        the local block [offset, offset + count) (default {0, −1}: all B rows)
inline ContrastiveLossResult contrastive_loss(cpu_backend be, Arena& ws, HostView<const float, 2> image,
                                              HostView<const float, 2> text, HostView<const float, 1> logit_scale,
                                              ContrastiveRows rows = {}) {
  const std::int64_t b = detail::check_contrastive_loss_args(image, text, logit_scale, rows, "contrastive_loss");
  const std::int64_t n = image.size(0), o = rows.offset;
  ArenaScope scope(ws);
  HostView<float, 2> s_it = ws.tensor<float, 2>({b, n}), s_ti = ws.tensor<float, 2>({b, n});
  double* loss_rows = ws.allocate<double>(2 * b);  // [2b]: image→text rows, then text→image rows
  double* hit_rows = ws.allocate<double>(2 * b);
  const auto s = static_cast<float>(std::exp(static_cast<double>(logit_scale(0))));
  detail::cpu::contrastive_logits(be, image, text, o, b, s, s_it, s_ti);
#pragma omp parallel for schedule(static) if (b * n >= 16384)
  for (std::int64_t r = 0; r < 2 * b; ++r) {
    const std::int64_t i = r % b;
    const float* line = (r < b ? s_it : s_ti).data() + i * n;
    std::int64_t am = 0;
    loss_rows[r] = detail::cpu::lse_line(line, n, am) - static_cast<double>(line[o + i]);
    hit_rows[r] = am == o + i ? 1.0 : 0.0;
  }
  double loss = 0.0, hits_it = 0.0, hits_ti = 0.0;
  for (std::int64_t r = 0; r < 2 * b; ++r) {
    loss += loss_rows[r];
    (r < b ? hits_it : hits_ti) += hit_rows[r];
  }
  ContrastiveLossResult out;
  out.loss = 0.5 * loss / static_cast<double>(b);
  out.image_to_text_accuracy = hits_it / static_cast<double>(b);
  out.text_to_image_accuracy = hits_ti / static_cast<double>(b);
  return out;
}

/// Backward of contrastive_loss (formulas as reference::contrastive_loss_backward):
/// d_image = s·G·T (=), d_text = s·Gᵀ·I (=), d_logit_scale += Σ G ⊙ S; empty views are skipped.
/// @param ws            arena with contrastive_loss_workspace_bytes(b, B) free; rewound on return
/// @param dloss         upstream gradient of the scalar loss
/// @param d_image       [B, E] written, or empty
/// @param d_text        [B, E] written, or empty
/// @param d_logit_scale [1] accumulated, or empty
inline void contrastive_loss_backward(cpu_backend be, Arena& ws, HostView<const float, 2> image,
                                      HostView<const float, 2> text, HostView<const float, 1> logit_scale,
                                      double dloss, HostView<float, 2> d_image, HostView<float, 2> d_text,
                                      HostView<float, 1> d_logit_scale, ContrastiveRows rows = {}) {
  const std::int64_t b =
      detail::check_contrastive_loss_backward_args(image, text, logit_scale, rows, d_image, d_text, d_logit_scale);
  const std::int64_t n = image.size(0), o = rows.offset;
  ArenaScope scope(ws);
  HostView<float, 2> g_it = ws.tensor<float, 2>({b, n}), g_ti = ws.tensor<float, 2>({b, n});
  double* scale_rows = ws.allocate<double>(2 * b);  // Σ_k G ⊙ S per row, for d_logit_scale
  const auto s = static_cast<float>(std::exp(static_cast<double>(logit_scale(0))));
  detail::cpu::contrastive_logits(be, image, text, o, b, s, g_it, g_ti);
  const double w = dloss / (2.0 * static_cast<double>(b));
  // Each line of logits becomes w·(softmax − one-hot) in place: row i of g_it is ∂L/∂S[o+i, ·],
  // row i of g_ti is ∂L/∂S[·, o+i] (the text→image logits are the columns of S).
#pragma omp parallel for schedule(static) if (b * n >= 16384)
  for (std::int64_t r = 0; r < 2 * b; ++r) {
    const std::int64_t i = r % b;
    float* line = (r < b ? g_it : g_ti).data() + i * n;
    std::int64_t am = 0;
    const double lse = detail::cpu::lse_line(line, n, am);
    double acc = 0.0;
    for (std::int64_t k = 0; k < n; ++k) {
      const double x = static_cast<double>(line[k]);
      const double g = w * (std::exp(x - lse) - (k == o + i ? 1.0 : 0.0));
      acc += g * x;
      line[k] = static_cast<float>(g);
    }
    scale_rows[r] = acc;
  }
  if (!d_logit_scale.empty()) {
    double acc = static_cast<double>(d_logit_scale(0));
    for (std::int64_t r = 0; r < 2 * b; ++r) acc += scale_rows[r];
    d_logit_scale(0) = static_cast<float>(acc);
  }
  const HostView<const float, 2> git = g_it, gti = g_ti;
  // S[o+i, k] = s·⟨I[o+i], T[k]⟩ and S[k, o+i] = s·⟨I[k], T[o+i]⟩:
  //   d_image = s·g_tiᵀ·T_loc (every row) + s·g_it·T (local rows)
  //   d_text  = s·g_itᵀ·I_loc (every row) + s·g_ti·I (local rows)
  if (!d_image.empty()) {
    gemm(be, gti.transpose(0, 1), text.slice(0, o, o + b), d_image, s);
    gemm(be, git, text, d_image.slice(0, o, o + b), s, 1.0f);
  }
  if (!d_text.empty()) {
    gemm(be, git.transpose(0, 1), image.slice(0, o, o + b), d_text, s);
    gemm(be, gti, image, d_text.slice(0, o, o + b), s, 1.0f);
  }
}

}  // namespace ops
}  // namespace qlip
