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

}  // namespace qlip
