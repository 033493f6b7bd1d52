/// @file threading.hpp
/// @brief One knob for the CPU backend's threads: OpenMP (our parallel loops) and Eigen (its GEMM).
///
/// Eigen's GEMM parallelises with OpenMP but keeps its own thread count (Eigen::setNbThreads), so
/// setting only OMP_NUM_THREADS or only Eigen's count leaves the two disagreeing. Eigen runs single-
/// threaded when called from inside an OpenMP parallel region, so nesting never oversubscribes.
#pragma once

#include "qlip/cpu/build_check.hpp"

#include <omp.h>

#include <Eigen/Core>

#include <algorithm>
#include <cstdint>
#include <utility>

#include "qlip/core/error.hpp"

namespace qlip {

/// Sets the number of threads used by qlip's CPU ops (OpenMP loops and Eigen GEMM).
/// @param threads ≥ 1
inline void set_num_threads(int threads) {
  QLIP_CHECK(threads >= 1, "set_num_threads: threads must be ≥ 1, got ", threads);
  omp_set_num_threads(threads);
  Eigen::setNbThreads(threads);
}

/// The number of threads a CPU op started now will use.
inline int num_threads() { return omp_get_max_threads(); }

namespace detail::cpu {

/// [begin, end) of part `i` of `parts` equal parts of [0, n), boundaries rounded to `align`.
inline std::pair<std::int64_t, std::int64_t> split_range(std::int64_t n, int i, int parts, std::int64_t align = 1) {
  auto at = [&](int j) {
    if (j >= parts) return n;
    const std::int64_t b = n * j / parts;
    return std::min(n, (b + align / 2) / align * align);
  };
  return {at(i), at(i + 1)};
}

}  // namespace detail::cpu

}  // namespace qlip
