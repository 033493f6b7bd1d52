/// @file test_sampler_kernels.cu
/// @brief The CUDA sampler (kernels/sampler.cuh) against the CPU sampler (sample/sampler.hpp) on the
///        same logits, seeds, rows and steps: greedy, plain, temperature, top-k, top-p, both, and
///        guidance, with −inf entries and ties. The CPU sampler's own distribution tests
///        (tests/sample) define correctness; here the tokens must be the same. GPU tests skip
///        without a device; a bad config is refused everywhere.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "cuda_test_util.hpp"
#include "qlip/core/allocator.hpp"
#include "qlip/sample/sampler.hpp"

#include "common.cuh"
#include "sampler.cuh"

namespace qlip {
namespace {

using test::random_matrix;
using test::upload;

constexpr std::int64_t kRows = 48, kVocab = 5003;

/// Logits with structure a sampler must handle: a few −inf (a vocabulary mask), exact ties.
Tensor<float, 2> test_logits(std::uint64_t seed) {
  Tensor<float, 2> z = random_matrix(kRows, kVocab, seed, 3.0f);
  for (std::int64_t r = 0; r < kRows; ++r) {
    for (std::int64_t i = r % 7; i < kVocab; i += 97) z(r, i) = -std::numeric_limits<float>::infinity();
    z(r, 11) = z(r, 12) = 9.0f;  // tied maxima: the lower id wins
  }
  return z;
}

void check_same_tokens(const sample::SamplerConfig& config, bool guided) {
  SCOPED_TRACE(::testing::Message() << "T " << config.temperature << " k " << config.top_k << " p " << config.top_p
                                    << " cfg " << config.cfg_scale << (guided ? " guided" : ""));
  const Tensor<float, 2> cond = test_logits(1), uncond = test_logits(2);
  auto d_cond = upload(cond), d_uncond = upload(uncond);
  cuda::DeviceBuffer<std::int32_t> d_tokens(kRows);
  const cuda::SamplerWorkspace ws(kRows, kVocab);
  sample::Sampler cpu(config);
  constexpr std::uint64_t kSeed = 1234, kFirstRow = 5;
  std::int64_t differ = 0;
  for (std::uint64_t step = 0; step < 4; ++step) {
    const DeviceView<const float, 2> u =
        guided ? DeviceView<const float, 2>(d_uncond.view<2>({kRows, kVocab})) : DeviceView<const float, 2>();
    ops::sample(cuda_backend{}, config, d_cond.view<2>({kRows, kVocab}), u, kSeed, step, d_tokens.view<1>({kRows}), ws,
                kFirstRow);
    std::vector<std::int32_t> got(kRows), want(kRows);
    cuda::copy_to_host(got.data(), d_tokens.data(), kRows);
    if (guided)
      cpu.sample_guided(cond.view(), uncond.view(), kSeed, step, want, kFirstRow);
    else
      cpu.sample(cond.view(), kSeed, step, want, kFirstRow);
    for (std::int64_t r = 0; r < kRows; ++r) differ += got[r] != want[r] ? 1 : 0;
  }
  // A token may differ only if u falls within an ulp of exp of a CDF boundary (~1e-15 per draw).
  EXPECT_EQ(differ, 0) << "of " << 4 * kRows << " draws";
}

TEST(CudaSampler, DrawsTheCpuSamplersTokens) {
  QLIP_REQUIRE_GPU();
  check_same_tokens({.temperature = 0.0f}, false);
  check_same_tokens({}, false);
  check_same_tokens({.temperature = 0.7f}, false);
  check_same_tokens({.top_k = 50}, false);
  check_same_tokens({.top_p = 0.9f}, false);
  check_same_tokens({.temperature = 1.3f, .top_k = 200, .top_p = 0.8f}, false);
  check_same_tokens({.top_k = 1}, false);
  check_same_tokens({.top_p = 0.9f, .cfg_scale = 3.0f}, true);
}

TEST(CudaSampler, BadRowThrowsBeforeAnyTokenIsWritten) {
  QLIP_REQUIRE_GPU();
  Tensor<float, 2> z = test_logits(3);
  z(7, 100) = std::numeric_limits<float>::quiet_NaN();
  auto d_z = upload(z);
  std::vector<std::int32_t> sentinel(kRows, -7);
  cuda::DeviceBuffer<std::int32_t> d_tokens(kRows);
  cuda::copy_to_device(d_tokens.data(), sentinel.data(), kRows);
  const cuda::SamplerWorkspace ws(kRows, kVocab);
  EXPECT_THROW(ops::sample(cuda_backend{}, {}, d_z.view<2>({kRows, kVocab}), {}, 1, 0, d_tokens.view<1>({kRows}), ws),
               Error);
  std::vector<std::int32_t> after(kRows);
  cuda::copy_to_host(after.data(), d_tokens.data(), kRows);
  EXPECT_EQ(after, sentinel);
}

TEST(CudaSamplerErrors, BadConfigThrowsBeforeAnyLaunch) {
  DeviceView<const float, 2> z(nullptr, {2, 10}, {10, 1});
  DeviceView<std::int32_t, 1> tokens(nullptr, {2}, {1});
  const cuda::SamplerWorkspace empty;
  EXPECT_THROW(ops::sample(cuda_backend{}, {.top_p = 0.0f}, z, {}, 1, 0, tokens, empty), Error);
  EXPECT_THROW(ops::sample(cuda_backend{}, {}, z, {}, 1, 0, tokens, empty), Error);  // workspace for 0 × 0
}

}  // namespace
}  // namespace qlip
