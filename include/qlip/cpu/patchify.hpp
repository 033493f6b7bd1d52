/// @file patchify.hpp
/// @brief CPU patchify / unpatchify between images [B, C, H, W] and patch tokens [B, N, C·p·p]:
///        OpenMP over (batch, token), pointer walks with int64 strides. Pure data movement, so the
///        result equals reference/patchify.hpp exactly (see there for the element order).
#pragma once

#include "qlip/cpu/build_check.hpp"

#include <cstdint>

#include "qlip/core/backend.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/reference/patchify.hpp"

namespace qlip::detail::cpu {
/// Copies one patch between the image and a token row; kToTokens picks the direction.
template <bool kToTokens>
inline void copy_patch(float* img_patch, const Extents<4>& is, float* tok, std::int64_t ts, std::int64_t c_n,
                       std::int64_t p) {
  for (std::int64_t c = 0; c < c_n; ++c)
    for (std::int64_t kh = 0; kh < p; ++kh) {
      float* src = img_patch + c * is[1] + kh * is[2];
      float* dst = tok + ((c * p + kh) * p) * ts;
      for (std::int64_t kw = 0; kw < p; ++kw) {
        if constexpr (kToTokens)
          dst[kw * ts] = src[kw * is[3]];
        else
          src[kw * is[3]] = dst[kw * ts];
      }
    }
}
}  // namespace qlip::detail::cpu

namespace qlip::ops {

/// out[b, row·Sw + col, c·p² + kh·p + kw] = img[b, c, row·p + kh, col·p + kw] (Conv2d weight order).
inline void patchify(cpu_backend,
                     HostView<const float, 4> img,  // [B, C, H, W]
                     int p,
                     HostView<float, 3> out) {      // [B, (H/p)·(W/p), C·p·p]
  const std::int64_t pp = p;
  const std::int64_t grid_w = detail::check_patch_shapes(img.shape(), pp, out.shape(), "patchify");
  const std::int64_t b_n = img.size(0), c_n = img.size(1), n_tok = out.size(1);
  // The image is only read; the const_cast lets one copy routine serve both directions.
  float* img_base = const_cast<float*>(img.data());
#pragma omp parallel for schedule(static) if (out.numel() >= 16384)
  for (std::int64_t bn = 0; bn < b_n * n_tok; ++bn) {
    const std::int64_t b = bn / n_tok, n = bn % n_tok, row = n / grid_w, col = n % grid_w;
    float* patch = img_base + b * img.stride(0) + row * pp * img.stride(2) + col * pp * img.stride(3);
    float* tok = out.data() + b * out.stride(0) + n * out.stride(1);
    detail::cpu::copy_patch<true>(patch, img.strides(), tok, out.stride(2), c_n, pp);
  }
}

/// The inverse: img[b, c, row·p + kh, col·p + kw] = patches[b, row·Sw + col, c·p² + kh·p + kw].
inline void unpatchify(cpu_backend,
                       HostView<const float, 3> patches,  // [B, (H/p)·(W/p), C·p·p]
                       int p,
                       HostView<float, 4> img) {          // [B, C, H, W]
  const std::int64_t pp = p;
  const std::int64_t grid_w = detail::check_patch_shapes(img.shape(), pp, patches.shape(), "unpatchify");
  const std::int64_t b_n = img.size(0), c_n = img.size(1), n_tok = patches.size(1);
  float* tok_base = const_cast<float*>(patches.data());  // only read (see patchify)
#pragma omp parallel for schedule(static) if (patches.numel() >= 16384)
  for (std::int64_t bn = 0; bn < b_n * n_tok; ++bn) {
    const std::int64_t b = bn / n_tok, n = bn % n_tok, row = n / grid_w, col = n % grid_w;
    float* patch = img.data() + b * img.stride(0) + row * pp * img.stride(2) + col * pp * img.stride(3);
    float* tok = tok_base + b * patches.stride(0) + n * patches.stride(1);
    detail::cpu::copy_patch<false>(patch, img.strides(), tok, patches.stride(2), c_n, pp);
  }
}

/// Backward of patchify (a permutation): dimg = unpatchify(dpatches). Contract: dimg is written (=).
/// Exact: pure data movement.
inline void patchify_backward(cpu_backend,
                              HostView<const float, 3> dpatches,  // [B, (H/p)·(W/p), C·p·p]
                              int p,
                              HostView<float, 4> dimg) {          // [B, C, H, W]
  // Checked here first so that a bad argument is reported under the backward's name.
  detail::check_patch_shapes(dimg.shape(), p, dpatches.shape(), "patchify_backward");
  unpatchify(cpu_backend{}, dpatches, p, dimg);
}

/// Backward of unpatchify: dpatches = patchify(dimg). Contract: dpatches is written (=). Exact.
inline void unpatchify_backward(cpu_backend,
                                HostView<const float, 4> dimg,  // [B, C, H, W]
                                int p,
                                HostView<float, 3> dpatches) {  // [B, (H/p)·(W/p), C·p·p]
  detail::check_patch_shapes(dimg.shape(), p, dpatches.shape(), "unpatchify_backward");
  patchify(cpu_backend{}, dimg, p, dpatches);
}

}  // namespace qlip::ops
