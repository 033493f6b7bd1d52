/// @file backend.hpp
/// @brief Memory spaces and backends. A view's memory space is part of its type, so a host view
///        cannot be passed to a CUDA op (and vice versa): the mismatch is a compile error.
///
/// A backend is a small context object passed by value as the first argument of every op
/// (`ops::linear(be, x, w, b, y)`, Thrust-style): its type selects the overload, its members carry what
/// the ops of that backend need at run time. Modules in nn/ hold one and pass it on; they never look
/// inside. What each backend carries:
///  - cpu_backend: the thread budget (0 = qlip::num_threads()).
///  - reference_backend<T>: nothing; plain loops in T (float: the oracle of every backend; double: what
///    finite differences differentiate, so a whole module's backward can be checked).
///  - cuda_backend: stream and library handles (kernels/).
/// A data-parallel communicator (MPI ranks, NCCL) will be one more member of the context, so that the
/// ops which reduce over the global batch (the contrastive loss, gradient all-reduce) reach it
/// through the backend they already receive.
#pragma once

#include <concepts>
#include <type_traits>

namespace qlip {

/// Host (CPU) memory.
struct host_memory {
  static constexpr const char* name = "host";
};
/// CUDA device memory.
struct device_memory {
  static constexpr const char* name = "device";
};

template <class M>
concept memory_space = std::same_as<M, host_memory> || std::same_as<M, device_memory>;

// The backend types live in qlip::ops, where their ops are, so that an unqualified op call in a
// module template (`linear(be, x, w, b, y)`) is resolved by argument-dependent lookup when the module
// is instantiated: nn/ needs no backend's headers, only the op declarations of reference/, and a
// backend defined elsewhere (a tracing backend in a test, the CUDA one) brings its ops with it.
namespace ops {

/// The Eigen/OpenMP CPU backend (float32).
struct cpu_backend {
  using memory = host_memory;
  using scalar = float;
  static constexpr const char* name = "cpu";
  int threads = 0;  ///< threads an op may use; 0: qlip::num_threads()
};

/// Plain loops over named dimensions, accumulation in double (reference/): the oracle.
/// @tparam T float (the oracle every backend is tested against) or double (finite differences)
template <class T>
struct reference_backend {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "reference_backend<float or double>");
  using memory = host_memory;
  using scalar = T;
  static constexpr const char* name = std::is_same_v<T, float> ? "reference-f32" : "reference-f64";
};

/// The CUDA backend (kernels/ only; compiled by nvcc).
struct cuda_backend {
  using memory = device_memory;
  using scalar = float;
  static constexpr const char* name = "cuda";
};

}  // namespace ops

using ops::cpu_backend;
using ops::cuda_backend;
using ops::reference_backend;

/// A backend names its memory space and element type; ops are overloaded on the backend type.
template <class B>
concept backend = std::is_trivially_copyable_v<B> && requires {
  typename B::memory;
  typename B::scalar;
  { B::name } -> std::convertible_to<const char*>;
} && memory_space<typename B::memory>;

static_assert(backend<cpu_backend> && backend<reference_backend<float>> && backend<reference_backend<double>> &&
              backend<cuda_backend>);

}  // namespace qlip
