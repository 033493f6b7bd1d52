/// @file embedding.hpp
/// @brief CPU embedding lookup and broadcast row add (learned position embeddings), forward and
///        backward, OpenMP without atomics: every output element is owned by one thread and summed
///        in a fixed order, so results do not depend on the thread count.
///
/// Formulas and contracts are those of reference/embedding.hpp: out[m] = table[ids[m]];
/// dtable[v] += Σ_{ids[m] = v} dout[m]; x[b, n] += table[n]; dtable[n] += Σ_b dx[b, n].
#pragma once

#include "qlip/cpu/build_check.hpp"

#include <algorithm>
#include <cstdint>

#include "qlip/core/backend.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/reference/embedding.hpp"

namespace qlip {
namespace detail::cpu {
/// Columns per task of embedding_backward: 64 floats, four 64-byte lines of a row, so with aligned
/// rows no two threads write the same cache line (no false sharing).
inline constexpr std::int64_t kEmbeddingColumnBlock = 64;
}  // namespace detail::cpu

namespace ops {

/// out[m, :] = table[ids[m], :]. Parallel over rows of out.
/// @param table [V, D]
/// @param ids   [M], each in [0, V) (checked before any row is written)
/// @param out   [M, D] output, any strides
/// @throws qlip::Error naming the id and V when an id is out of range, or the argument whose shape is wrong
inline void embedding(cpu_backend, HostView<const float, 2> table, HostView<const std::int32_t, 1> ids,
                      HostView<float, 2> out) {
  detail::check_embedding_args(table, ids, out, "embedding", "table", "out");
  const std::int64_t m_n = ids.size(0), dim = table.size(1);
  const std::int64_t ts = table.stride(1), os = out.stride(1);
#pragma omp parallel for schedule(static) if (m_n * dim >= 16384)
  for (std::int64_t m = 0; m < m_n; ++m) {
    const float* src = table.data() + static_cast<std::int64_t>(ids(m)) * table.stride(0);
    float* dst = out.data() + m * out.stride(0);
    for (std::int64_t d = 0; d < dim; ++d) dst[d * os] = src[d * ts];
  }
}

/// Backward of embedding: dtable[ids[m], :] += dout[m, :] (a parameter gradient, +=). Parallel over
/// column blocks of D: a thread owns its columns of every row, and adds the rows of dout in
/// increasing m, so repeated ids are summed in the same order for any thread count (fp32 sums).
/// @param ids    [M], each in [0, V)
/// @param dout   [M, D]
/// @param dtable [V, D], accumulated; must not overlap dout
inline void embedding_backward(cpu_backend, HostView<const std::int32_t, 1> ids, HostView<const float, 2> dout,
                               HostView<float, 2> dtable) {
  detail::check_embedding_args(HostView<const float, 2>(dtable), ids, dout, "embedding_backward", "dtable", "dout");
  const std::int64_t m_n = ids.size(0), dim = dtable.size(1);
  const std::int64_t blocks = (dim + detail::cpu::kEmbeddingColumnBlock - 1) / detail::cpu::kEmbeddingColumnBlock;
  const std::int64_t gs = dtable.stride(1), ds = dout.stride(1);
#pragma omp parallel for schedule(static) if (m_n * dim >= 16384)
  for (std::int64_t blk = 0; blk < blocks; ++blk) {
    const std::int64_t d0 = blk * detail::cpu::kEmbeddingColumnBlock;
    const std::int64_t d1 = std::min(dim, d0 + detail::cpu::kEmbeddingColumnBlock);
    for (std::int64_t m = 0; m < m_n; ++m) {
      float* dst = dtable.data() + static_cast<std::int64_t>(ids(m)) * dtable.stride(0);
      const float* src = dout.data() + m * dout.stride(0);
      for (std::int64_t d = d0; d < d1; ++d) dst[d * gs] += src[d * ds];
    }
  }
}

/// x[b, n, :] += table[n, :] in place (learned position embeddings). Parallel over (batch, row).
/// @param x     [B, N, D], in place, any strides
/// @param table [N, D]; must not overlap x
inline void add_rows_broadcast(cpu_backend, HostView<float, 3> x, HostView<const float, 2> table) {
  detail::check_add_rows_broadcast_args(x, table, "add_rows_broadcast", "x", "table");
  const std::int64_t b_n = x.size(0), n_n = x.size(1), dim = x.size(2);
  const std::int64_t xs = x.stride(2), ts = table.stride(1);
#pragma omp parallel for schedule(static) if (x.numel() >= 16384)
  for (std::int64_t bn = 0; bn < b_n * n_n; ++bn) {
    const std::int64_t b = bn / n_n, n = bn % n_n;
    float* row = x.data() + b * x.stride(0) + n * x.stride(1);
    const float* add = table.data() + n * table.stride(0);
    for (std::int64_t d = 0; d < dim; ++d) row[d * xs] += add[d * ts];
  }
}

/// Backward of add_rows_broadcast: dtable[n, :] += Σ_b dx[b, n, :] (a parameter gradient, +=),
/// summed in fp32 over b in order into a register row, then added once. Parallel over rows n.
/// The gradient with respect to x is dx itself.
/// @param dx     [B, N, D]
/// @param dtable [N, D], accumulated; must not overlap dx
inline void add_rows_broadcast_backward(cpu_backend, HostView<const float, 3> dx, HostView<float, 2> dtable) {
  detail::check_add_rows_broadcast_args(dx, dtable, "add_rows_broadcast_backward", "dx", "dtable");
  const std::int64_t b_n = dx.size(0), n_n = dx.size(1), dim = dx.size(2);
  const std::int64_t xs = dx.stride(2), gs = dtable.stride(1);
#pragma omp parallel for schedule(static) if (dx.numel() >= 16384)
  for (std::int64_t n = 0; n < n_n; ++n) {
    float* dst = dtable.data() + n * dtable.stride(0);
    for (std::int64_t d = 0; d < dim; ++d) {
      float acc = 0.0f;
      for (std::int64_t b = 0; b < b_n; ++b) acc += dx.data()[b * dx.stride(0) + n * dx.stride(1) + d * xs];
      dst[d * gs] += acc;
    }
  }
}

}  // namespace ops
}  // namespace qlip
