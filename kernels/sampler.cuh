/// @file sampler.cuh
/// @brief The token sampler on the CUDA backend: classifier-free guidance, temperature, top-k and
///        top-p, with the CPU sampler's distribution and its draw (sample/sampler.hpp: the same
///        kept set, the same fixed order of the inverse CDF, u from Philox keyed by (seed, row, step)).
///
/// Per step, for B rows of V logits:
///  1. one block per row applies the guidance (u + s·(c − u), −inf in either branch stays −inf),
///     checks the row (NaN / +inf / all −inf are errors), finds the first argmax and the number of
///     finite logits, and writes the sampler's rank key per token (logit descending, id ascending;
///     −inf last). The launcher reads the checks back and throws naming the first bad row before
///     anything else runs, so a bad row writes no token;
///  2. with top-k or top-p, CUB's segmented radix sort orders each row's keys;
///  3. one thread per row forms the kept set and draws, in double, walking the tokens in the CPU
///     sampler's order (id order without top-k/top-p, most probable first otherwise).
/// The weights exp(z − z_max) use the device's exp, which may differ from the host's by an ulp, so a
/// token can differ from the CPU sampler's only when u falls within rounding of a CDF boundary.
#pragma once

#include <cub/device/device_segmented_radix_sort.cuh>

#include <cstdint>
#include <limits>
#include <vector>

#include "common.cuh"
#include "qlip/core/philox.hpp"
#include "qlip/sample/sampler.hpp"

namespace qlip {
namespace cuda {

/// What step 1 finds per row.
struct SamplerRowScan {
  int bad;              ///< first token index + 1 of a NaN or +inf logit, 0 if none
  std::int32_t argmax;  ///< first maximum
  std::int32_t finite;  ///< logits that are not −inf
};

/// Caller-owned device workspace for `rows` rows of `vocab` logits, sized once.
class SamplerWorkspace {
 public:
  SamplerWorkspace() = default;
  SamplerWorkspace(std::int64_t rows, std::int64_t vocab)
      : rows_(rows),
        vocab_(vocab),
        guided_(rows * vocab),
        keys_(rows * vocab),
        sorted_(rows * vocab),
        offsets_(rows + 1),
        scans_(rows) {
    QLIP_CHECK(rows >= 0 && vocab >= 1 && rows * vocab <= std::numeric_limits<int>::max(),
               "cuda SamplerWorkspace: ", rows, " rows of ", vocab, " logits exceed the sort's 2^31 - 1 keys");
    std::vector<int> offsets(static_cast<std::size_t>(rows + 1));
    for (std::int64_t r = 0; r <= rows; ++r) offsets[r] = static_cast<int>(r * vocab);
    copy_to_device(offsets_.data(), offsets.data(), rows + 1);
    std::size_t bytes = 0;
    const int* begin = offsets_.data();
    QLIP_CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortKeys(nullptr, bytes, keys_.data(), sorted_.data(),
                                                            static_cast<int>(rows * vocab), static_cast<int>(rows),
                                                            begin, begin + 1));
    sort_temp_ = DeviceBuffer<std::uint8_t>(static_cast<std::int64_t>(bytes));
  }
  std::int64_t rows() const { return rows_; }
  std::int64_t vocab() const { return vocab_; }
  float* guided() const { return guided_.data(); }
  std::uint64_t* keys() const { return keys_.data(); }
  std::uint64_t* sorted() const { return sorted_.data(); }
  const int* offsets() const { return offsets_.data(); }
  SamplerRowScan* scans() const { return scans_.data(); }
  void* sort_temp() const { return sort_temp_.data(); }
  std::size_t sort_temp_bytes() const { return static_cast<std::size_t>(sort_temp_.size()); }

 private:
  std::int64_t rows_ = 0, vocab_ = 0;
  DeviceBuffer<float> guided_;
  DeviceBuffer<std::uint64_t> keys_, sorted_;
  DeviceBuffer<int> offsets_;
  DeviceBuffer<SamplerRowScan> scans_;
  DeviceBuffer<std::uint8_t> sort_temp_;
};

namespace detail {

inline constexpr int kSamplerThreads = 256;

/// sample/sampler.hpp's rank_key on the device: ascending keys = logit descending, id ascending.
__device__ inline std::uint64_t device_rank_key(float v, std::int32_t id) {
  const std::uint32_t bits = v == 0.0f ? 0u : __float_as_uint(v);
  const std::uint32_t ordered = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
  return (static_cast<std::uint64_t>(~ordered) << 32) | static_cast<std::uint32_t>(id);
}

/// Step 1 for row blockIdx.x. `logits` is the row source: cond (and uncond when guided).
QLIP_KERNEL void sampler_scan_kernel(DeviceView<const float, 2> cond, DeviceView<const float, 2> uncond, float scale,
                                     float* guided, std::uint64_t* keys, SamplerRowScan* scans) {
  __shared__ float best[kSamplerThreads];
  __shared__ std::int32_t best_at[kSamplerThreads], finite_n[kSamplerThreads], bad_at[kSamplerThreads];
  const std::int64_t r = blockIdx.x, v_n = cond.size(1);
  const bool guide = uncond.numel() > 0;
  float mx = -INFINITY;
  std::int32_t am = std::numeric_limits<std::int32_t>::max(), finite = 0,
               bad = std::numeric_limits<std::int32_t>::max();
  for (std::int64_t i = threadIdx.x; i < v_n; i += blockDim.x) {
    const float c = cond(r, i);
    float v = c;
    if (guide) {
      const float u = uncond(r, i);
      v = (c == -INFINITY || u == -INFINITY) ? -INFINITY : u + scale * (c - u);
    }
    guided[r * v_n + i] = v;
    const bool is_bad = isnan(v) || v == INFINITY;
    if (is_bad && i < bad) bad = static_cast<std::int32_t>(i);
    if (v != -INFINITY && !is_bad) {
      ++finite;
      if (v > mx) {  // strictly: the first index wins in a thread's ascending walk
        mx = v;
        am = static_cast<std::int32_t>(i);
      }
    }
    keys[r * v_n + i] = v == -INFINITY || is_bad ? ~std::uint64_t{0} : device_rank_key(v, static_cast<std::int32_t>(i));
  }
  best[threadIdx.x] = mx;
  best_at[threadIdx.x] = am;
  finite_n[threadIdx.x] = finite;
  bad_at[threadIdx.x] = bad;
  __syncthreads();
  for (int stride = kSamplerThreads / 2; stride > 0; stride >>= 1) {
    if (static_cast<int>(threadIdx.x) < stride) {
      const int o = threadIdx.x + stride;
      if (best[o] > best[threadIdx.x] || (best[o] == best[threadIdx.x] && best_at[o] < best_at[threadIdx.x])) {
        best[threadIdx.x] = best[o];
        best_at[threadIdx.x] = best_at[o];
      }
      finite_n[threadIdx.x] += finite_n[o];
      bad_at[threadIdx.x] = min(bad_at[threadIdx.x], bad_at[o]);
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const bool any_bad = bad_at[0] != std::numeric_limits<std::int32_t>::max();
    scans[r] = {any_bad ? bad_at[0] + 1 : 0, best_at[0], finite_n[0]};
  }
}

/// sample/sampler.hpp's uniform53 of Philox(seed).draw(step, row).
__device__ inline double device_sample_uniform(std::uint64_t seed, std::uint64_t row, std::uint64_t step) {
  const Philox::Block b = Philox(seed).draw(step, row);
  const std::uint64_t bits = ((static_cast<std::uint64_t>(b[0]) << 32) | b[1]) >> 11;
  return static_cast<double>(bits) * 0x1.0p-53;
}

struct SamplerDrawParams {
  double temperature, top_p;
  int top_k;
  std::uint64_t seed, step, first_row;
};

/// Step 3: one thread per row; the CPU sampler's select() and draw, in its orders.
QLIP_KERNEL void sampler_draw_kernel(const float* logits, std::int64_t rows, std::int64_t v_n,
                                     const std::uint64_t* sorted, const SamplerRowScan* scans, SamplerDrawParams p,
                                     DeviceView<std::int32_t, 1> tokens) {
  const std::int64_t r = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (r >= rows) return;
  const float* z = logits + r * v_n;
  const std::uint64_t* keys = sorted + r * v_n;
  const SamplerRowScan scan = scans[r];
  if (p.temperature == 0.0) {
    tokens(r) = scan.argmax;
    return;
  }
  const double z_max = static_cast<double>(z[scan.argmax]) / p.temperature;
  const auto weight_of = [&](std::int64_t id) { return exp(static_cast<double>(z[id]) / p.temperature - z_max); };
  const auto id_at = [&](std::int64_t j) { return static_cast<std::int32_t>(keys[j] & 0xFFFFFFFFu); };
  const bool top_k = p.top_k > 0 && p.top_k < scan.finite;
  const bool top_p = p.top_p < 1.0;
  const double u = device_sample_uniform(p.seed, p.first_row + static_cast<std::uint64_t>(r), p.step);
  if (!top_k && !top_p) {  // every finite token, in id order
    double total = 0.0;
    for (std::int64_t i = 0; i < v_n; ++i)
      if (z[i] != -INFINITY) total += weight_of(i);
    const double target = u * total;
    double acc = 0.0;
    std::int32_t last_positive = scan.argmax;
    for (std::int64_t i = 0; i < v_n; ++i) {
      if (z[i] == -INFINITY) continue;
      const double w = weight_of(i);
      acc += w;
      if (w > 0.0) last_positive = static_cast<std::int32_t>(i);
      if (target < acc) {
        tokens(r) = static_cast<std::int32_t>(i);
        return;
      }
    }
    tokens(r) = last_positive;
    return;
  }
  const std::int64_t n_keys = top_k ? p.top_k : scan.finite;
  // The kept prefix of the sorted keys: all n_keys, or the nucleus.
  std::int64_t n_kept = n_keys;
  if (top_p) {
    double norm = 0.0;  // summed in the CPU sampler's order: sorted with top-k, id order without
    if (top_k) {
      for (std::int64_t j = 0; j < n_keys; ++j) norm += weight_of(id_at(j));
    } else {
      for (std::int64_t i = 0; i < v_n; ++i)
        if (z[i] != -INFINITY) norm += weight_of(i);
    }
    double mass_before = 0.0;
    n_kept = 0;
    for (std::int64_t j = 0; j < n_keys && mass_before < p.top_p; ++j) {
      mass_before += weight_of(id_at(j)) / norm;
      ++n_kept;
    }
  }
  if (n_kept == 1) {
    tokens(r) = id_at(0);
    return;
  }
  double total = 0.0;
  for (std::int64_t j = 0; j < n_kept; ++j) total += weight_of(id_at(j));
  const double target = u * total;
  double acc = 0.0;
  std::int64_t last_positive = 0;
  for (std::int64_t j = 0; j < n_kept; ++j) {
    const double w = weight_of(id_at(j));
    acc += w;
    if (w > 0.0) last_positive = j;
    if (target < acc) {
      tokens(r) = id_at(j);
      return;
    }
  }
  tokens(r) = id_at(last_positive);
}

}  // namespace detail
}  // namespace cuda

namespace ops {

/// One token per row of logits [B, V] on the device (sample/sampler.hpp's distribution and draw);
/// guided by uncond [B, V] with config.cfg_scale when uncond is not empty. Row r draws as global
/// row first_row + r at `step`. Synchronises `stream` once (the row checks are read back).
/// @throws qlip::Error for a bad config, shapes, or a row with NaN / +inf / only −inf logits (before
///         any token is written)
inline void sample(cuda_backend, const sample::SamplerConfig& config, DeviceView<const float, 2> cond,
                   DeviceView<const float, 2> uncond, std::uint64_t seed, std::uint64_t step,
                   DeviceView<std::int32_t, 1> tokens, const cuda::SamplerWorkspace& ws, std::uint64_t first_row = 0,
                   cudaStream_t stream = 0) {
  sample::validate(config);
  const std::int64_t rows = cond.size(0), v_n = cond.size(1);
  QLIP_CHECK(uncond.empty() || uncond.shape() == cond.shape(), "cuda sample: uncond has shape ",
             shape_string<2>(uncond.shape()), ", cond ", shape_string<2>(cond.shape()), "; they must match");
  check_shape(cuda::sizes_only(tokens), {rows}, "cuda sample: tokens");
  QLIP_CHECK(v_n >= 1 && v_n <= std::numeric_limits<std::int32_t>::max(), "cuda sample: vocabulary of ", v_n,
             " tokens (needs 1 to 2^31 - 1)");
  QLIP_CHECK(ws.rows() == rows && ws.vocab() == v_n, "cuda sample: the workspace is for ", ws.rows(), " rows of ",
             ws.vocab(), " logits, the step has ", rows, " of ", v_n, " (SamplerWorkspace(B, V))");
  if (rows == 0) return;
  using cuda::detail::kSamplerThreads;
  cuda::detail::sampler_scan_kernel<<<static_cast<unsigned>(rows), kSamplerThreads, 0, stream>>>(
      cond, uncond, config.cfg_scale, ws.guided(), ws.keys(), ws.scans());
  QLIP_CUDA_CHECK_LAUNCH();
  std::vector<cuda::SamplerRowScan> scans(static_cast<std::size_t>(rows));
  QLIP_CUDA_CHECK(cudaMemcpyAsync(scans.data(), ws.scans(), sizeof(cuda::SamplerRowScan) * scans.size(),
                                  cudaMemcpyDeviceToHost, stream));
  QLIP_CUDA_CHECK(cudaStreamSynchronize(stream));
  for (std::int64_t r = 0; r < rows; ++r) {
    QLIP_CHECK(scans[r].bad == 0, "sampler: row ", r, ": logit of token ", scans[r].bad - 1,
               " is NaN or +inf (logits must be finite or -inf)");
    QLIP_CHECK(scans[r].finite > 0, "sampler: row ", r, ": all ", v_n, " logits are -inf: nothing to sample");
  }
  const bool sorted_needed = config.temperature > 0.0f && (config.top_k > 0 || config.top_p < 1.0f);
  if (sorted_needed) {
    std::size_t bytes = ws.sort_temp_bytes();
    QLIP_CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortKeys(ws.sort_temp(), bytes, ws.keys(), ws.sorted(),
                                                            static_cast<int>(rows * v_n), static_cast<int>(rows),
                                                            ws.offsets(), ws.offsets() + 1, 0, 64, stream));
  }
  const cuda::detail::SamplerDrawParams p{config.temperature, config.top_p, config.top_k, seed, step, first_row};
  constexpr int kThreads = 64;
  cuda::detail::sampler_draw_kernel<<<cuda::grid_for(rows, kThreads), kThreads, 0, stream>>>(
      ws.guided(), rows, v_n, ws.sorted(), ws.scans(), p, tokens);
  QLIP_CUDA_CHECK_LAUNCH();
}

}  // namespace ops
}  // namespace qlip
