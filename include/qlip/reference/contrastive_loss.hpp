/// @file contrastive_loss.hpp
/// @brief Reference CLIP contrastive (alignment) loss of stage 1 (MODEL.md §4.1, §4.3):
///        symmetric cross-entropy over the similarity logits with the diagonal as targets.
///
/// With image features I[B, E] and text features T[B, E] (each row already L2-normalised by the
/// caller) and s = exp(logit_scale):
///   S = s·I·Tᵀ                                     [B, B]   (S[i, k] = s·⟨I_i, T_k⟩)
///   L = ½·[CE(S, arange) + CE(Sᵀ, arange)]         CE = mean over rows of lse(row) − row[target]
/// Row i of S is image i against every text (image→text), row j of Sᵀ (column j of S) is text j
/// against every image (text→image).
///
/// Local block of a gathered global batch (for data parallelism, open_clip's `local_loss`): pass the
/// gathered features of all B rows and `ContrastiveRows{offset, count}` naming this process's rows
/// [o, o + b). The loss is then over the local rows only, against every row of the other modality,
/// with targets o + i:
///   L = (1/2b)·Σ_{i<b} [lse_k S[o+i, k] − S[o+i, o+i]] + (1/2b)·Σ_{i<b} [lse_k S[k, o+i] − S[o+i, o+i]]
/// and the backward writes the gradient of that local loss with respect to *all* B rows of I and T
/// (rows outside the block get their share through the other modality's logits); a data-parallel
/// caller sums these over processes (reduce-scatter) exactly as autograd through a gather would.
/// The default {0, −1} is the whole batch, i.e. the formula above with b = B.
///
/// By-products: the top-1 accuracy image→text (argmax_k S[o+i, k] == o+i) and text→image
/// (argmax_k S[k, o+i] == o+i) over the local rows; ties go to the lowest index (torch.argmax).
///
/// logit_scale is a parameter: it is passed as a 1-element view, and its gradient is accumulated.
/// open_clip clamps it to [0, ln 100] *after* the optimiser step, not inside the loss (whether QLIP
/// did is [UNKNOWN], MODEL.md §4.3): see clamp_logit_scale().
///
/// Backward contract: d_image and d_text are written (=); d_logit_scale is accumulated (+=); an
/// empty view is skipped. dloss is the upstream gradient of the scalar loss (its weight α_a).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip {

/// The local rows [offset, offset + count) of the global batch that the loss is taken over;
/// count = −1 means "to the end of the batch", so the default is the whole batch.
struct ContrastiveRows {
  std::int64_t offset = 0;
  std::int64_t count = -1;
};

/// What the contrastive forward returns: the loss and two by-products for logs.
struct ContrastiveLossResult {
  double loss = 0.0;                    ///< ½[CE(image→text) + CE(text→image)] over the local rows
  double image_to_text_accuracy = 0.0;  ///< fraction of local images whose best text is their own
  double text_to_image_accuracy = 0.0;  ///< fraction of local texts whose best image is their own
};

/// ln 100: the upper end of open_clip's logit_scale range (a temperature of at most 100).
inline constexpr double kMaxLogitScale = 4.6051701859880913680;

/// open_clip's `logit_scale.clamp_(0, ln 100)`, applied to the parameter after each optimiser step
/// (not inside the loss, which would stop its gradient): returns value clamped to [0, ln 100].
/// Whether QLIP's training clamps is [UNKNOWN] (MODEL.md §4.3); open_clip does.
template <class T>
T clamp_logit_scale(T value) {
  return std::clamp(value, T(0), static_cast<T>(kMaxLogitScale));
}

namespace detail {

/// Checks image[B, E], text[B, E], logit_scale[1] and the local rows; returns the local row count b.
/// `op` names the calling op in every message.
template <class T, class M>
std::int64_t check_contrastive_loss_args(const TensorView<const T, 2, M>& image, const TensorView<const T, 2, M>& text,
                                         const TensorView<const T, 1, M>& logit_scale, ContrastiveRows rows,
                                         const char* op) {
  QLIP_CHECK(image.size(0) >= 1, op, ": image features are empty (", shape_string<2>(image.shape()),
             "); the loss needs at least one row");
  QLIP_CHECK(text.shape() == image.shape(), op, ": text features have shape ", shape_string<2>(text.shape()),
             ", expected the image features' shape ", shape_string<2>(image.shape()));
  QLIP_CHECK(logit_scale.size(0) == 1, op, ": logit_scale must be a 1-element view, got ",
             shape_string<1>(logit_scale.shape()));
  const std::int64_t batch = image.size(0);
  const std::int64_t count = rows.count < 0 ? batch - rows.offset : rows.count;
  QLIP_CHECK(rows.offset >= 0 && rows.offset < batch && count >= 1 && rows.offset + count <= batch, op,
             ": local rows [", rows.offset, ", ", rows.offset + count, ") are not a non-empty block of the batch of ",
             batch);
  return count;
}

/// The forward's checks, plus d_image/d_text empty or [B, E] and d_logit_scale empty or [1].
template <class T, class M>
std::int64_t check_contrastive_loss_backward_args(const TensorView<const T, 2, M>& image,
                                                  const TensorView<const T, 2, M>& text,
                                                  const TensorView<const T, 1, M>& logit_scale, ContrastiveRows rows,
                                                  const TensorView<T, 2, M>& d_image, const TensorView<T, 2, M>& d_text,
                                                  const TensorView<T, 1, M>& d_logit_scale) {
  const std::int64_t count =
      check_contrastive_loss_args(image, text, logit_scale, rows, "contrastive_loss_backward");
  if (!d_image.empty()) check_shape(d_image, image.shape(), "contrastive_loss_backward: d_image");
  if (!d_text.empty()) check_shape(d_text, text.shape(), "contrastive_loss_backward: d_text");
  if (!d_logit_scale.empty()) check_shape(d_logit_scale, {1}, "contrastive_loss_backward: d_logit_scale");
  return count;
}

}  // namespace detail

namespace reference {
namespace contrastive_detail {

/// S = s·I·Tᵀ over the whole batch, in double. [B, B] row-major.
template <class T>
std::vector<double> logits(HostView<const T, 2> image, HostView<const T, 2> text, double s) {
  const std::int64_t n = image.size(0), e = image.size(1);
  std::vector<double> out(static_cast<std::size_t>(n * n));
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t k = 0; k < n; ++k) {
      double acc = 0.0;
      for (std::int64_t p = 0; p < e; ++p) acc += static_cast<double>(image(i, p)) * static_cast<double>(text(k, p));
      out[static_cast<std::size_t>(i * n + k)] = s * acc;
    }
  return out;
}

/// Softmax of a line of n logits read with a stride (a row: stride 1; a column: stride n) into p,
/// returning lse; `argmax` gets the first index of the maximum.
inline double softmax_line(const double* x, std::int64_t n, std::int64_t stride, double* p, std::int64_t& argmax) {
  double mx = -std::numeric_limits<double>::infinity();
  argmax = 0;
  for (std::int64_t k = 0; k < n; ++k)
    if (x[k * stride] > mx) {
      mx = x[k * stride];
      argmax = k;
    }
  double sum = 0.0;
  for (std::int64_t k = 0; k < n; ++k) sum += std::exp(x[k * stride] - mx);
  for (std::int64_t k = 0; k < n; ++k) p[k] = std::exp(x[k * stride] - mx) / sum;
  return mx + std::log(sum);
}

}  // namespace contrastive_detail

/// The contrastive loss of the local rows (the whole batch by default); see the file comment.
/// @tparam T float (the oracle of every backend) or double (what finite differences differentiate)
/// @param image       [B, E] image features (L2-normalised rows), all B rows of the (gathered) batch
/// @param text        [B, E] text features, same rows
/// @param logit_scale [1] ln s
/// @param rows        the local block (default: the whole batch)
template <class T>
ContrastiveLossResult contrastive_loss(HostView<const T, 2> image, HostView<const T, 2> text,
                                       HostView<const T, 1> logit_scale, ContrastiveRows rows = {}) {
  const std::int64_t b = detail::check_contrastive_loss_args(image, text, logit_scale, rows, "contrastive_loss");
  const std::int64_t n = image.size(0), o = rows.offset;
  const std::vector<double> s_mat =
      contrastive_detail::logits(image, text, std::exp(static_cast<double>(logit_scale(0))));
  std::vector<double> p(static_cast<std::size_t>(n));
  double row_sum = 0.0, col_sum = 0.0;
  std::int64_t row_hits = 0, col_hits = 0;
  for (std::int64_t i = 0; i < b; ++i) {
    const std::int64_t g = o + i;
    const double diag = s_mat[static_cast<std::size_t>(g * n + g)];
    std::int64_t am = 0;
    row_sum += contrastive_detail::softmax_line(s_mat.data() + g * n, n, 1, p.data(), am) - diag;
    row_hits += am == g;
    col_sum += contrastive_detail::softmax_line(s_mat.data() + g, n, n, p.data(), am) - diag;
    col_hits += am == g;
  }
  ContrastiveLossResult r;
  r.loss = 0.5 * (row_sum + col_sum) / static_cast<double>(b);
  r.image_to_text_accuracy = static_cast<double>(row_hits) / static_cast<double>(b);
  r.text_to_image_accuracy = static_cast<double>(col_hits) / static_cast<double>(b);
  return r;
}

/// The float oracle, callable with mutable views.
inline ContrastiveLossResult contrastive_loss(HostView<const float, 2> image, HostView<const float, 2> text,
                                              HostView<const float, 1> logit_scale, ContrastiveRows rows = {}) {
  return contrastive_loss<float>(image, text, logit_scale, rows);
}

/// Backward of contrastive_loss for the upstream gradient dloss. With G = ∂L/∂S (non-zero on the
/// local rows and columns only):
///   G[o+i, k] += (dloss/2b)·(softmax_k S[o+i, ·] − δ_{k, o+i})    (image→text term)
///   G[k, o+i] += (dloss/2b)·(softmax_k S[·, o+i] − δ_{k, o+i})    (text→image term)
///   d_image = s·G·T (=),  d_text = s·Gᵀ·I (=),  d_logit_scale += Σ G ⊙ S  (∂S/∂ln s = S)
/// Everything in double; each output is rounded once. The forward saves nothing: the logits are
/// recomputed here.
/// @param image, text, logit_scale, rows  as the forward
/// @param d_image       [B, E] written, or empty
/// @param d_text        [B, E] written, or empty
/// @param d_logit_scale [1] accumulated, or empty
template <class T>
void contrastive_loss_backward(HostView<const T, 2> image, HostView<const T, 2> text, HostView<const T, 1> logit_scale,
                               double dloss, HostView<T, 2> d_image, HostView<T, 2> d_text,
                               HostView<T, 1> d_logit_scale, ContrastiveRows rows = {}) {
  const std::int64_t b =
      detail::check_contrastive_loss_backward_args(image, text, logit_scale, rows, d_image, d_text, d_logit_scale);
  const std::int64_t n = image.size(0), e = image.size(1), o = rows.offset;
  const double s = std::exp(static_cast<double>(logit_scale(0)));
  const std::vector<double> s_mat = contrastive_detail::logits(image, text, s);
  std::vector<double> g_mat(static_cast<std::size_t>(n * n), 0.0), p(static_cast<std::size_t>(n));
  const double w = dloss / (2.0 * static_cast<double>(b));
  for (std::int64_t i = 0; i < b; ++i) {
    const std::int64_t g = o + i;
    std::int64_t am = 0;
    contrastive_detail::softmax_line(s_mat.data() + g * n, n, 1, p.data(), am);
    for (std::int64_t k = 0; k < n; ++k) g_mat[static_cast<std::size_t>(g * n + k)] += w * (p[k] - (k == g ? 1.0 : 0.0));
    contrastive_detail::softmax_line(s_mat.data() + g, n, n, p.data(), am);
    for (std::int64_t k = 0; k < n; ++k) g_mat[static_cast<std::size_t>(k * n + g)] += w * (p[k] - (k == g ? 1.0 : 0.0));
  }
  if (!d_image.empty())
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t q = 0; q < e; ++q) {
        double acc = 0.0;
        for (std::int64_t k = 0; k < n; ++k) acc += g_mat[static_cast<std::size_t>(i * n + k)] * static_cast<double>(text(k, q));
        d_image(i, q) = static_cast<T>(s * acc);
      }
  if (!d_text.empty())
    for (std::int64_t k = 0; k < n; ++k)
      for (std::int64_t q = 0; q < e; ++q) {
        double acc = 0.0;
        for (std::int64_t i = 0; i < n; ++i) acc += g_mat[static_cast<std::size_t>(i * n + k)] * static_cast<double>(image(i, q));
        d_text(k, q) = static_cast<T>(s * acc);
      }
  if (!d_logit_scale.empty()) {
    double acc = static_cast<double>(d_logit_scale(0));
    for (std::size_t x = 0; x < g_mat.size(); ++x) acc += g_mat[x] * s_mat[x];
    d_logit_scale(0) = static_cast<T>(acc);
  }
}

}  // namespace reference
}  // namespace qlip
