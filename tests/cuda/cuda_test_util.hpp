/// @file cuda_test_util.hpp
/// @brief Helpers shared by the CUDA test files: the skip-without-device macro, Philox-filled host
///        tensors, and host↔device round trips of whole tensors.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>

#include "qlip/core/allocator.hpp"
#include "qlip/core/philox.hpp"

#include "common.cuh"

/// Skips the current test (GTEST_SKIP) on machines without a CUDA device.
#define QLIP_REQUIRE_GPU()                                                   \
  do {                                                                       \
    if (!::qlip::cuda::device_available()) GTEST_SKIP() << "no CUDA device"; \
  } while (0)

namespace qlip::test {

/// Host tensor filled with N(0, scale²) from Philox (same numbers on every machine).
inline Tensor<float, 2> random_matrix(std::int64_t m, std::int64_t n, std::uint64_t seed, float scale = 1.0f) {
  Tensor<float, 2> t({m, n});
  Philox rng(seed);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.data()[i] = scale * rng.normal(i);
  return t;
}

/// Host vector filled with offset + N(0, scale²) from Philox.
inline Tensor<float, 1> random_vector(std::int64_t n, std::uint64_t seed, float scale = 1.0f, float offset = 0.0f) {
  Tensor<float, 1> t({n});
  Philox rng(seed);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.data()[i] = offset + scale * rng.normal(i);
  return t;
}

/// Host tensor of any rank filled with N(0, scale²) from Philox.
template <int R>
Tensor<float, R> random_tensor(const Extents<R>& shape, std::uint64_t seed, float scale = 1.0f) {
  Tensor<float, R> t(shape);
  Philox rng(seed);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.data()[i] = scale * rng.normal(i);
  return t;
}

/// A device copy of a contiguous host tensor.
template <class T, int R>
cuda::DeviceBuffer<T> upload(const Tensor<T, R>& t) {
  cuda::DeviceBuffer<T> d(t.numel());
  cuda::copy_to_device(d.data(), t.data(), t.numel());
  return d;
}

/// A host copy of the first numel(shape) elements of a device buffer.
template <class T, int R>
Tensor<T, R> download(const cuda::DeviceBuffer<T>& d, const Extents<R>& shape) {
  Tensor<T, R> t(shape);
  cuda::copy_to_host(t.data(), d.data(), t.numel());
  return t;
}

}  // namespace qlip::test
