/// @file embedding.cuh
/// @brief Token embedding lookup and the broadcast row add of learned position tables on the CUDA
///        backend, forward and backward (reference/embedding.hpp).
///
/// The ids are checked on the host before anything is launched (every id in [0, V), the same
/// message as the other backends), so a bad id is a one-line error and nothing is written: the
/// launchers take the host ids for the check beside the device ids the kernels read. The backward
/// is deterministic without atomics: one thread per column walks the positions in increasing order
/// and adds into dtable, so each element is summed in the reference's order (in float, where the
/// reference sums in double and rounds once).
#pragma once

#include <cstdint>

#include "common.cuh"
#include "qlip/reference/embedding.hpp"

namespace qlip {
namespace cuda::detail {

/// The shared checks of embedding/embedding_backward with device rows and table.
template <class T, class U>
void check_device_embedding_args(const DeviceView<const T, 2>& table, HostView<const std::int32_t, 1> ids_host,
                                 const DeviceView<const std::int32_t, 1>& ids, const DeviceView<U, 2>& rows,
                                 const char* op, const char* table_name, const char* rows_name) {
  QLIP_CHECK(ids.size(0) == ids_host.size(0), op, ": the device ids have ", ids.size(0), " entries, the host ids ",
             ids_host.size(0));
  qlip::detail::check_embedding_args(sizes_only(table), ids_host, sizes_only(rows), op, table_name, rows_name);
}

QLIP_KERNEL void embedding_kernel(DeviceView<const float, 2> table, DeviceView<const std::int32_t, 1> ids,
                                  DeviceView<float, 2> out) {
  const std::int64_t n = out.numel(), dim = out.size(1);
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t m = i / dim, d = i % dim;
    out(m, d) = table(ids(m), d);
  }
}

QLIP_KERNEL void embedding_backward_kernel(DeviceView<const std::int32_t, 1> ids, DeviceView<const float, 2> dout,
                                           DeviceView<float, 2> dtable) {
  const std::int64_t d = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (d >= dtable.size(1)) return;
  for (std::int64_t m = 0; m < ids.size(0); ++m) dtable(ids(m), d) += dout(m, d);
}

/// x[b, n, d] += table[n, d], in double and rounded once.
QLIP_KERNEL void add_rows_broadcast_kernel(DeviceView<float, 3> x, DeviceView<const float, 2> table) {
  const std::int64_t n_tok = x.size(1), dim = x.size(2), total = x.numel();
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t d = i % dim, n = (i / dim) % n_tok, b = i / (dim * n_tok);
    x(b, n, d) = static_cast<float>(static_cast<double>(x(b, n, d)) + static_cast<double>(table(n, d)));
  }
}

/// dtable[n, d] += Σ_b dx[b, n, d]: one thread per table element, batch in order, in double.
QLIP_KERNEL void add_rows_broadcast_backward_kernel(DeviceView<const float, 3> dx, DeviceView<float, 2> dtable) {
  const std::int64_t dim = dtable.size(1), total = dtable.numel();
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t n = i / dim, d = i % dim;
    double acc = dtable(n, d);
    for (std::int64_t b = 0; b < dx.size(0); ++b) acc += static_cast<double>(dx(b, n, d));
    dtable(n, d) = static_cast<float>(acc);
  }
}

}  // namespace cuda::detail

namespace ops {

/// x[b, n, :] += table[n, :] in place on the device (a learned position table over the batch).
inline void add_rows_broadcast(cuda_backend, DeviceView<float, 3> x, DeviceView<const float, 2> table,
                               cudaStream_t stream = 0) {
  detail::check_add_rows_broadcast_args(cuda::sizes_only(x), cuda::sizes_only(table), "add_rows_broadcast", "x",
                                        "table");
  if (x.numel() == 0) return;
  constexpr int kThreads = 256;
  cuda::detail::add_rows_broadcast_kernel<<<cuda::grid_for(x.numel(), kThreads), kThreads, 0, stream>>>(x, table);
  QLIP_CUDA_CHECK_LAUNCH();
}

/// dtable[n, :] += Σ_b dx[b, n, :] on the device (a parameter gradient, +=).
inline void add_rows_broadcast_backward(cuda_backend, DeviceView<const float, 3> dx, DeviceView<float, 2> dtable,
                                        cudaStream_t stream = 0) {
  detail::check_add_rows_broadcast_args(cuda::sizes_only(dx), cuda::sizes_only(dtable), "add_rows_broadcast_backward",
                                        "dx", "dtable");
  if (dtable.numel() == 0) return;
  constexpr int kThreads = 256;
  cuda::detail::add_rows_broadcast_backward_kernel<<<cuda::grid_for(dtable.numel(), kThreads), kThreads, 0, stream>>>(
      dx, dtable);
  QLIP_CUDA_CHECK_LAUNCH();
}

/// out[m, :] = table[ids[m], :] (torch.nn.functional.embedding) on the device.
/// @param table    [V, D] device
/// @param ids_host [M] the ids on the host (checked: each in [0, V))
/// @param ids      [M] the same ids on the device
/// @param out      [M, D] device output
/// @throws qlip::Error naming the id and V, or the argument whose shape is wrong, before any launch
inline void embedding(cuda_backend, DeviceView<const float, 2> table, HostView<const std::int32_t, 1> ids_host,
                      DeviceView<const std::int32_t, 1> ids, DeviceView<float, 2> out, cudaStream_t stream = 0) {
  cuda::detail::check_device_embedding_args(table, ids_host, ids, out, "embedding", "table", "out");
  if (out.numel() == 0) return;
  constexpr int kThreads = 256;
  cuda::detail::embedding_kernel<<<cuda::grid_for(out.numel(), kThreads), kThreads, 0, stream>>>(table, ids, out);
  QLIP_CUDA_CHECK_LAUNCH();
}

/// dtable[v, :] += Σ_{m : ids[m] = v} dout[m, :] on the device (a parameter gradient, +=); rows no
/// id names are untouched.
inline void embedding_backward(cuda_backend, HostView<const std::int32_t, 1> ids_host,
                               DeviceView<const std::int32_t, 1> ids, DeviceView<const float, 2> dout,
                               DeviceView<float, 2> dtable, cudaStream_t stream = 0) {
  cuda::detail::check_device_embedding_args(DeviceView<const float, 2>(dtable), ids_host, ids, dout,
                                            "embedding_backward", "dtable", "dout");
  if (dout.numel() == 0) return;
  constexpr int kThreads = 128;
  cuda::detail::embedding_backward_kernel<<<cuda::grid_for(dtable.size(1), kThreads), kThreads, 0, stream>>>(ids, dout,
                                                                                                             dtable);
  QLIP_CUDA_CHECK_LAUNCH();
}

}  // namespace ops
}  // namespace qlip
