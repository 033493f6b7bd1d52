/// @file cross_entropy.hpp
/// @brief Reference token cross-entropy, the language-model loss of the Llama / UM³ model
///        (MODEL.md §8): the mean over the rows with a target of −log softmax(z_i)[t_i].
///
///   L = (1/C)·Σ_{i: t_i ≥ 0} (logsumexp(z_i) − z_i[t_i]),   C = #{i: t_i ≥ 0}
///   ∂L/∂z_i = (softmax(z_i) − onehot(t_i)) / C  for a row with a target, 0 for the others
///
/// A negative target marks a row without a loss (HF's ignore_index; here any negative value): the
/// per-task loss masks of UM³ training (a prompt's tokens, padding) are negative targets. A batch
/// whose rows are all masked has C = 0 and L = 0, with a zero gradient. The backward writes dlogits
/// (=) scaled by the upstream scalar dloss.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip {

/// The loss and how many rows it averaged.
struct CrossEntropyResult {
  double loss = 0.0;       ///< mean over the rows with a target (0 when there are none)
  std::int64_t count = 0;  ///< rows with a target (t_i ≥ 0)
};

namespace detail {

/// Checks logits [N, V] (V ≥ 1) against targets [N], each target < V (negatives are masks).
/// Targets are read here, so they must be host-readable; `op` names the caller.
template <class T, class M>
void check_cross_entropy_args(const TensorView<const T, 2, M>& logits, const HostView<const std::int32_t, 1>& targets,
                              const char* op) {
  QLIP_CHECK(logits.size(1) >= 1, op, ": logits have no classes (", shape_string<2>(logits.shape()), ")");
  QLIP_CHECK(targets.size(0) == logits.size(0), op, ": targets have ", targets.size(0), " entries, logits ",
             logits.size(0), " rows");
  for (std::int64_t i = 0; i < targets.size(0); ++i)
    QLIP_CHECK(targets(i) < logits.size(1), op, ": target ", targets(i), " of row ", i,
               " is outside the vocabulary of ", logits.size(1));
}

/// Checks the backward's arguments: as the forward, and dlogits empty or of the logits' shape.
template <class T, class M>
void check_cross_entropy_backward_args(const TensorView<const T, 2, M>& logits,
                                       const HostView<const std::int32_t, 1>& targets,
                                       const TensorView<T, 2, M>& dlogits) {
  check_cross_entropy_args(logits, targets, "cross_entropy_backward");
  if (!dlogits.empty()) check_shape(dlogits, logits.shape(), "cross_entropy_backward: dlogits");
}

/// Rows with a target.
inline std::int64_t cross_entropy_count(const HostView<const std::int32_t, 1>& targets) {
  std::int64_t c = 0;
  for (std::int64_t i = 0; i < targets.size(0); ++i) c += targets(i) >= 0 ? 1 : 0;
  return c;
}

}  // namespace detail

namespace reference {

/// log Σ_j exp(z_j) of one row, max-subtracted, in double.
template <class T>
double row_logsumexp(const HostView<const T, 2>& z, std::int64_t i) {
  double mx = -std::numeric_limits<double>::infinity();
  for (std::int64_t j = 0; j < z.size(1); ++j) mx = std::max(mx, static_cast<double>(z(i, j)));
  double sum = 0.0;
  for (std::int64_t j = 0; j < z.size(1); ++j) sum += std::exp(static_cast<double>(z(i, j)) - mx);
  return mx + std::log(sum);
}

/// L and C of the file comment, in double, rows in order.
/// @tparam T float (the oracle) or double (what finite differences differentiate)
template <class T>
CrossEntropyResult cross_entropy(HostView<const T, 2> logits,               // [N, V]
                                 HostView<const std::int32_t, 1> targets) {  // [N], negative = no loss
  detail::check_cross_entropy_args(logits, targets, "cross_entropy");
  CrossEntropyResult r;
  double sum = 0.0;
  for (std::int64_t i = 0; i < logits.size(0); ++i) {
    if (targets(i) < 0) continue;
    sum += row_logsumexp(logits, i) - static_cast<double>(logits(i, targets(i)));
    ++r.count;
  }
  r.loss = r.count > 0 ? sum / static_cast<double>(r.count) : 0.0;
  return r;
}

/// dlogits = dloss·(softmax − onehot)/C on rows with a target, 0 elsewhere (=); empty: skipped.
template <class T>
void cross_entropy_backward(HostView<const T, 2> logits, HostView<const std::int32_t, 1> targets, double dloss,
                            HostView<T, 2> dlogits) {
  detail::check_cross_entropy_backward_args(logits, targets, dlogits);
  if (dlogits.empty()) return;
  const std::int64_t c = detail::cross_entropy_count(targets);
  for (std::int64_t i = 0; i < logits.size(0); ++i) {
    if (targets(i) < 0) {
      for (std::int64_t j = 0; j < logits.size(1); ++j) dlogits(i, j) = T(0);
      continue;
    }
    const double lse = row_logsumexp(logits, i), k = dloss / static_cast<double>(c);
    for (std::int64_t j = 0; j < logits.size(1); ++j) {
      const double p = std::exp(static_cast<double>(logits(i, j)) - lse);
      dlogits(i, j) = static_cast<T>(k * (p - (j == targets(i) ? 1.0 : 0.0)));
    }
  }
}

}  // namespace reference
}  // namespace qlip
