/// @file patchify.cuh
/// @brief Patchify / unpatchify between images [B, C, H, W] and patch tokens [B, N, C·p·p] on the
///        CUDA backend, with their backwards (reference/patchify.hpp: the same element order; pure
///        data movement, so the results equal the reference exactly).
///
/// Two permutation kernels serve the four ops: patchify and unpatchify_backward copy pixels into
/// tokens, unpatchify and patchify_backward copy tokens into pixels. One thread per element, indexed
/// over the token tensor, so each output element is written exactly once.
#pragma once

#include <cstdint>

#include "common.cuh"
#include "qlip/reference/patchify.hpp"

namespace qlip {
namespace cuda::detail {

/// Token element i of [B, N, C·p²] and its pixel: n = row·grid_w + col, j = c·p² + kh·p + kw,
/// y = row·p + kh, x = col·p + kw.
struct PatchElement {
  std::int64_t b, tok, j, c, y, x;
};
__device__ inline PatchElement patch_element(std::int64_t i, std::int64_t n_tok, std::int64_t width, std::int64_t p,
                                             std::int64_t grid_w) {
  const std::int64_t j = i % width, tok = (i / width) % n_tok, b = i / (width * n_tok);
  const std::int64_t kh = (j / p) % p, kw = j % p;
  return {b, tok, j, j / (p * p), (tok / grid_w) * p + kh, (tok % grid_w) * p + kw};
}

QLIP_KERNEL void image_to_tokens_kernel(DeviceView<const float, 4> img, DeviceView<float, 3> tokens, std::int64_t p,
                                        std::int64_t grid_w) {
  const std::int64_t n = tokens.numel();
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const PatchElement e = patch_element(i, tokens.size(1), tokens.size(2), p, grid_w);
    tokens(e.b, e.tok, e.j) = img(e.b, e.c, e.y, e.x);
  }
}

QLIP_KERNEL void tokens_to_image_kernel(DeviceView<const float, 3> tokens, DeviceView<float, 4> img, std::int64_t p,
                                        std::int64_t grid_w) {
  const std::int64_t n = tokens.numel();
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const PatchElement e = patch_element(i, tokens.size(1), tokens.size(2), p, grid_w);
    img(e.b, e.c, e.y, e.x) = tokens(e.b, e.tok, e.j);
  }
}

inline void image_to_tokens(DeviceView<const float, 4> img, DeviceView<float, 3> tokens, int p, const char* op,
                            cudaStream_t stream) {
  const std::int64_t grid_w = qlip::detail::check_patch_shapes(img.shape(), p, tokens.shape(), op);
  if (tokens.numel() == 0) return;
  constexpr int kThreads = 256;
  image_to_tokens_kernel<<<grid_for(tokens.numel(), kThreads), kThreads, 0, stream>>>(img, tokens, p, grid_w);
  QLIP_CUDA_CHECK_LAUNCH();
}

inline void tokens_to_image(DeviceView<const float, 3> tokens, DeviceView<float, 4> img, int p, const char* op,
                            cudaStream_t stream) {
  const std::int64_t grid_w = qlip::detail::check_patch_shapes(img.shape(), p, tokens.shape(), op);
  if (tokens.numel() == 0) return;
  constexpr int kThreads = 256;
  tokens_to_image_kernel<<<grid_for(tokens.numel(), kThreads), kThreads, 0, stream>>>(tokens, img, p, grid_w);
  QLIP_CUDA_CHECK_LAUNCH();
}

}  // namespace cuda::detail

namespace ops {

/// out[b, row·(W/p) + col, c·p² + kh·p + kw] = img[b, c, row·p + kh, col·p + kw].
inline void patchify(cuda_backend, DeviceView<const float, 4> img, int p, DeviceView<float, 3> out,
                     cudaStream_t stream = 0) {
  cuda::detail::image_to_tokens(img, out, p, "patchify", stream);
}
/// The inverse of patchify.
inline void unpatchify(cuda_backend, DeviceView<const float, 3> patches, int p, DeviceView<float, 4> img,
                       cudaStream_t stream = 0) {
  cuda::detail::tokens_to_image(patches, img, p, "unpatchify", stream);
}
/// Backward of patchify (dimg written: every element once).
inline void patchify_backward(cuda_backend, DeviceView<const float, 3> dpatches, int p, DeviceView<float, 4> dimg,
                              cudaStream_t stream = 0) {
  cuda::detail::tokens_to_image(dpatches, dimg, p, "patchify_backward", stream);
}
/// Backward of unpatchify (dpatches written).
inline void unpatchify_backward(cuda_backend, DeviceView<const float, 4> dimg, int p, DeviceView<float, 3> dpatches,
                                cudaStream_t stream = 0) {
  cuda::detail::image_to_tokens(dimg, dpatches, p, "unpatchify_backward", stream);
}

}  // namespace ops
}  // namespace qlip
