/// @file backend.hpp
/// @brief Memory spaces and backend tags. A view's memory space is part of its type, so a host view
///        cannot be passed to a CUDA op (and vice versa): the mismatch is a compile error.
#pragma once

#include <concepts>

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

/// The Eigen/OpenMP CPU backend; the reference every other backend is tested against.
struct cpu_backend {
  using memory = host_memory;
  static constexpr const char* name = "cpu";
};
/// The CUDA backend (kernels/ only; compiled by nvcc).
struct cuda_backend {
  using memory = device_memory;
  static constexpr const char* name = "cuda";
};

/// A backend names its memory space; ops are overloaded on the backend tag (Thrust-style policy).
template <class B>
concept backend = requires {
  typename B::memory;
  { B::name } -> std::convertible_to<const char*>;
} && memory_space<typename B::memory>;

}  // namespace qlip
