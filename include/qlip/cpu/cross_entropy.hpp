/// @file cross_entropy.hpp
/// @brief CPU token cross-entropy (formula, mask rule and checks as reference/cross_entropy.hpp):
///        L = mean over rows with a target of logsumexp(z_i) − z_i[t_i]; dz = dloss·(p − onehot)/C.
///
/// A row's log-sum-exp is taken in float (max-subtracted, as PyTorch's CPU kernel) and the row
/// losses are added in double over a fixed number of row chunks, then the chunks in order: the
/// result does not depend on the thread count, and nothing is allocated.
#pragma once

#include "qlip/cpu/build_check.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "qlip/core/backend.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/reference/cross_entropy.hpp"

namespace qlip {
namespace detail::cpu {
/// Row chunks summed independently (fixed, so the order of the double sum is too).
inline constexpr int kCrossEntropyChunks = 64;

/// max and log Σ exp(z − max) of one row of n logits with column stride s.
inline float row_logsumexp(const float* z, std::int64_t s, std::int64_t n) {
  float mx = -std::numeric_limits<float>::infinity();
  for (std::int64_t j = 0; j < n; ++j) mx = std::max(mx, z[j * s]);
  float sum = 0.0f;
  for (std::int64_t j = 0; j < n; ++j) sum += std::exp(z[j * s] - mx);
  return mx + std::log(sum);
}
}  // namespace detail::cpu

namespace ops {

/// L and C of reference/cross_entropy.hpp. Rows of a large vocabulary run on all threads.
/// @param logits  [N, V] (any strides)
/// @param targets [N] class per row; negative: the row has no loss
inline CrossEntropyResult cross_entropy(cpu_backend, HostView<const float, 2> logits,
                                        HostView<const std::int32_t, 1> targets) {
  detail::check_cross_entropy_args(logits, targets, "cross_entropy");
  constexpr int kChunks = detail::cpu::kCrossEntropyChunks;
  const std::int64_t n = logits.size(0), v = logits.size(1);
  double partial[kChunks];
#pragma omp parallel for schedule(static) if (n * v >= 65536)
  for (int c = 0; c < kChunks; ++c) {
    double acc = 0.0;
    for (std::int64_t i = n * c / kChunks; i < n * (c + 1) / kChunks; ++i) {
      if (targets(i) < 0) continue;
      const float* z = logits.data() + i * logits.stride(0);
      acc += static_cast<double>(detail::cpu::row_logsumexp(z, logits.stride(1), v)) -
             static_cast<double>(z[targets(i) * logits.stride(1)]);
    }
    partial[c] = acc;
  }
  CrossEntropyResult r;
  r.count = detail::cross_entropy_count(targets);
  double sum = 0.0;
  for (double p : partial) sum += p;
  r.loss = r.count > 0 ? sum / static_cast<double>(r.count) : 0.0;
  return r;
}

/// dlogits = dloss·(softmax − onehot)/C on rows with a target, 0 elsewhere (=); empty: skipped.
/// dlogits may alias logits (same view): each row's log-sum-exp is taken before it is written.
inline void cross_entropy_backward(cpu_backend, HostView<const float, 2> logits,
                                   HostView<const std::int32_t, 1> targets, double dloss,
                                   HostView<float, 2> dlogits) {
  detail::check_cross_entropy_backward_args(logits, targets, dlogits);
  if (dlogits.empty()) return;
  const std::int64_t n = logits.size(0), v = logits.size(1);
  const std::int64_t count = detail::cross_entropy_count(targets);
  const float k = count > 0 ? static_cast<float>(dloss / static_cast<double>(count)) : 0.0f;
  const std::int64_t sz = logits.stride(1), sg = dlogits.stride(1);
#pragma omp parallel for schedule(static) if (n * v >= 65536)
  for (std::int64_t i = 0; i < n; ++i) {
    const float* z = logits.data() + i * logits.stride(0);
    float* g = dlogits.data() + i * dlogits.stride(0);
    const std::int32_t t = targets(i);
    if (t < 0) {
      for (std::int64_t j = 0; j < v; ++j) g[j * sg] = 0.0f;
      continue;
    }
    const float lse = detail::cpu::row_logsumexp(z, sz, v);
    for (std::int64_t j = 0; j < v; ++j) g[j * sg] = k * std::exp(z[j * sz] - lse);
    g[t * sg] -= k;
  }
}

}  // namespace ops
}  // namespace qlip
