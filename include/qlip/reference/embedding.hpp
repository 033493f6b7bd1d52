/// @file embedding.hpp
/// @brief Reference (oracle) embedding lookup and broadcast row add (learned position embeddings),
///        forward and backward: plain loops, double accumulation.
///
///   embedding:           out[m, :] = table[ids[m], :]                  (token embeddings, MODEL.md §2.8)
///   add_rows_broadcast:  x[b, n, :] += table[n, :]                     (position embeddings, §2.2, §2.7, §2.8)
/// Backward contract: the tables are parameters, so their gradients are accumulated (+=);
/// add_rows_broadcast's gradient with respect to x is the upstream gradient itself (nothing to
/// compute). The argument checks shared by every backend live here (qlip::detail).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip {
namespace detail {

/// Checks ids[M] against rows[M, D] (out or dout) and table[V, D], and that every id is in [0, V).
/// Reads ids on the host, serially: an exception must not escape an OpenMP region.
template <class T, class U, class M>
void check_embedding_args(const TensorView<const T, 2, M>& table, const TensorView<const std::int32_t, 1, M>& ids,
                          const TensorView<U, 2, M>& rows, const char* op, const char* table_name,
                          const char* rows_name) {
  const std::int64_t vocab = table.size(0), dim = table.size(1), m = ids.size(0);
  QLIP_CHECK(rows.size(0) == m && rows.size(1) == dim, op, ": ", rows_name, " has shape ",
             shape_string<2>(rows.shape()), ", expected [", m, ", ", dim, "] (ids [", m, "], ", table_name, " ",
             shape_string<2>(table.shape()), ")");
  for (std::int64_t i = 0; i < m; ++i) {
    const std::int32_t id = ids(i);
    QLIP_CHECK(id >= 0 && id < vocab, op, ": id ", id, " at position ", i, " is outside the table of V = ", vocab,
               " rows");
  }
}

/// Checks x[B, N, D] against table[N, D].
template <class T, class U, class M>
void check_add_rows_broadcast_args(const TensorView<T, 3, M>& x, const TensorView<U, 2, M>& table, const char* op,
                                   const char* x_name, const char* table_name) {
  QLIP_CHECK(table.size(0) == x.size(1) && table.size(1) == x.size(2), op, ": ", table_name, " has shape ",
             shape_string<2>(table.shape()), ", expected [", x.size(1), ", ", x.size(2), "] to match ", x_name, " ",
             shape_string<3>(x.shape()));
}

}  // namespace detail

namespace reference {

/// out[m, :] = table[ids[m], :] (torch.nn.functional.embedding).
/// T = float is the oracle; T = double serves the finite-difference tests.
/// @param table [V, D]
/// @param ids   [M], each in [0, V)
/// @param out   [M, D] output
/// @throws qlip::Error naming the id and V when an id is out of range, or the argument whose shape is wrong
template <class T>
void embedding(HostView<const T, 2> table, HostView<const std::int32_t, 1> ids, HostView<T, 2> out) {
  detail::check_embedding_args(table, ids, out, "embedding", "table", "out");
  for (std::int64_t m = 0; m < ids.size(0); ++m)
    for (std::int64_t d = 0; d < table.size(1); ++d) out(m, d) = table(ids(m), d);
}

/// The float oracle, callable with mutable views (template deduction does not convert them).
inline void embedding(HostView<const float, 2> table, HostView<const std::int32_t, 1> ids, HostView<float, 2> out) {
  embedding<float>(table, ids, out);
}

/// Backward of embedding: dtable[v, :] += Σ_{m : ids[m] = v} dout[m, :] (a parameter gradient, +=).
/// The rows of each id are summed in double in increasing m and added once, so each dtable
/// element is rounded once; rows no id names are untouched.
/// @param ids    [M]
/// @param dout   [M, D]
/// @param dtable [V, D], accumulated
template <class T>
void embedding_backward(HostView<const std::int32_t, 1> ids, HostView<const T, 2> dout, HostView<T, 2> dtable) {
  detail::check_embedding_args(HostView<const T, 2>(dtable), ids, dout, "embedding_backward", "dtable", "dout");
  const std::int64_t m_n = ids.size(0), dim = dtable.size(1);
  // Positions grouped by id (stable: increasing m inside a group): one double sum per touched row.
  std::vector<std::int64_t> order(static_cast<std::size_t>(m_n));
  for (std::int64_t m = 0; m < m_n; ++m) order[m] = m;
  std::stable_sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) { return ids(a) < ids(b); });
  std::vector<double> acc(static_cast<std::size_t>(dim));
  for (std::int64_t g0 = 0; g0 < m_n;) {
    const std::int32_t id = ids(order[g0]);
    std::int64_t g1 = g0;
    for (std::int64_t d = 0; d < dim; ++d) acc[d] = static_cast<double>(dtable(id, d));
    for (; g1 < m_n && ids(order[g1]) == id; ++g1)
      for (std::int64_t d = 0; d < dim; ++d) acc[d] += static_cast<double>(dout(order[g1], d));
    for (std::int64_t d = 0; d < dim; ++d) dtable(id, d) = static_cast<T>(acc[d]);
    g0 = g1;
  }
}

/// The float oracle of embedding_backward, callable with mutable views.
inline void embedding_backward(HostView<const std::int32_t, 1> ids, HostView<const float, 2> dout,
                               HostView<float, 2> dtable) {
  embedding_backward<float>(ids, dout, dtable);
}

/// x[b, n, :] += table[n, :] in place (a learned position table broadcast over the batch).
/// @param x     [B, N, D], in place
/// @param table [N, D]
template <class T>
void add_rows_broadcast(HostView<T, 3> x, HostView<const T, 2> table) {
  detail::check_add_rows_broadcast_args(x, table, "add_rows_broadcast", "x", "table");
  for (std::int64_t b = 0; b < x.size(0); ++b)
    for (std::int64_t n = 0; n < x.size(1); ++n)
      for (std::int64_t d = 0; d < x.size(2); ++d)
        x(b, n, d) = static_cast<T>(static_cast<double>(x(b, n, d)) + static_cast<double>(table(n, d)));
}

/// The float oracle, callable with mutable views.
inline void add_rows_broadcast(HostView<float, 3> x, HostView<const float, 2> table) {
  add_rows_broadcast<float>(x, table);
}

/// Backward of add_rows_broadcast: dtable[n, :] += Σ_b dx[b, n, :] (a parameter gradient, +=),
/// summed in double over b in order and rounded once. The gradient with respect to x is dx itself.
/// @param dx     [B, N, D] upstream gradient
/// @param dtable [N, D], accumulated
template <class T>
void add_rows_broadcast_backward(HostView<const T, 3> dx, HostView<T, 2> dtable) {
  detail::check_add_rows_broadcast_args(dx, dtable, "add_rows_broadcast_backward", "dx", "dtable");
  for (std::int64_t n = 0; n < dx.size(1); ++n)
    for (std::int64_t d = 0; d < dx.size(2); ++d) {
      double acc = static_cast<double>(dtable(n, d));
      for (std::int64_t b = 0; b < dx.size(0); ++b) acc += static_cast<double>(dx(b, n, d));
      dtable(n, d) = static_cast<T>(acc);
    }
}

/// The float oracle of add_rows_broadcast_backward, callable with mutable views.
inline void add_rows_broadcast_backward(HostView<const float, 3> dx, HostView<float, 2> dtable) {
  add_rows_broadcast_backward<float>(dx, dtable);
}

}  // namespace reference
}  // namespace qlip
