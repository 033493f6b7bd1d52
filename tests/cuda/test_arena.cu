/// @file test_arena.cu
/// @brief The device workspace arena (kernels/arena.cuh): alignment, mark/rewind, the scope, the
///        high-water mark and the one-line error when it is exhausted. An empty arena is tested
///        everywhere; allocations need a device.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "cuda_test_util.hpp"

#include "arena.cuh"
#include "common.cuh"

namespace qlip {
namespace {

TEST(CudaArena, EmptyArenaRefusesAnyBytesWithAOneLineError) {
  cuda::DeviceArena arena;  // no device memory: nothing to allocate from
  EXPECT_EQ(arena.capacity(), 0u);
  EXPECT_NO_THROW((void)arena.allocate<float>(0));
  try {
    (void)arena.allocate<float>(1);
    FAIL() << "allocate on an empty arena did not throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("device arena exhausted"), std::string::npos) << e.what();
  }
  EXPECT_EQ(arena.used(), 0u);  // a refused request allocates nothing
  EXPECT_THROW(arena.rewind(1), Error);
}

TEST(CudaArena, AlignedAllocationsScopesAndPeak) {
  QLIP_REQUIRE_GPU();
  cuda::DeviceArena arena(std::size_t{1} << 20);
  float* a = arena.allocate<float>(3);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(a) % cuda::kDeviceAlignment, 0u);
  EXPECT_EQ(arena.used(), cuda::kDeviceAlignment);
  {
    const cuda::DeviceArenaScope scope(arena);
    const DeviceView<float, 2> t = arena.tensor<float, 2>({100, 30});
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(t.data()) % cuda::kDeviceAlignment, 0u);
    EXPECT_EQ(t.stride(0), 30);
    QLIP_CUDA_CHECK(cudaMemset(t.data(), 0, sizeof(float) * 3000));  // the storage is real device memory
    EXPECT_GT(arena.used(), cuda::kDeviceAlignment);
  }
  EXPECT_EQ(arena.used(), cuda::kDeviceAlignment);  // the scope rewound
  EXPECT_GE(arena.peak(), cuda::kDeviceAlignment + 3000 * sizeof(float));
  EXPECT_THROW((void)arena.allocate<float>(std::int64_t{1} << 20), Error);  // 4 MiB > 1 MiB
}

}  // namespace
}  // namespace qlip
