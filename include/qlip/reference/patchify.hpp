/// @file patchify.hpp
/// @brief Reference patchify / unpatchify between images [B, C, H, W] and patch tokens
///        [B, N, C·p·p] (plain loops; pure data movement, so every backend must match exactly).
///
/// Token n = row·(W/p) + col (row-major over the patch grid, MODEL.md §2.2). Within a token, element
/// j = c·p² + kh·p + kw holds pixel (c, row·p + kh, col·p + kw): the flattening order of a Conv2d
/// weight [D, C, p, p], so patchify followed by linear() with that weight reshaped to [D, C·p·p] is
/// the stride-p patch-embedding convolution. unpatchify is the exact inverse, the decoder's
/// "b (hh ww) (c sh sw) -> b c (hh sh) (ww sw)" (MODEL.md §2.7). Each is a permutation, so the
/// backward of one is the other (patchify_backward, unpatchify_backward).
#pragma once

#include <cstdint>

#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip::detail {
/// Validates p against the image and the patch tensor; returns the patch-grid width W/p.
inline std::int64_t check_patch_shapes(const Extents<4>& img, std::int64_t p, const Extents<3>& patches,
                                       const char* what) {
  QLIP_CHECK(p >= 1, what, ": patch size must be positive, got ", p);
  QLIP_CHECK(img[2] % p == 0 && img[3] % p == 0, what, ": image ", shape_string<4>(img),
             " is not divisible into ", p, "x", p, " patches");
  const std::int64_t grid_h = img[2] / p, grid_w = img[3] / p;
  const Extents<3> expected{img[0], grid_h * grid_w, img[1] * p * p};
  QLIP_CHECK(patches == expected, what, ": patches have shape ", shape_string<3>(patches), ", expected ",
             shape_string<3>(expected), " for image ", shape_string<4>(img), " and p = ", p);
  return grid_w;
}

/// The reference element order, written once for both directions: calls
/// f(b, n, j, c, y, x) for every token element out[b, n, j] ↔ pixel img[b, c, y, x], with
/// n = row·grid_w + col, j = c·p² + kh·p + kw, y = row·p + kh, x = col·p + kw.
template <class F>
void for_each_patch_element(std::int64_t b_n, std::int64_t c_n, std::int64_t n_tok, std::int64_t grid_w,
                            std::int64_t p, F&& f) {
  for (std::int64_t b = 0; b < b_n; ++b)
    for (std::int64_t n = 0; n < n_tok; ++n) {
      const std::int64_t row = n / grid_w, col = n % grid_w;
      for (std::int64_t c = 0; c < c_n; ++c)
        for (std::int64_t kh = 0; kh < p; ++kh)
          for (std::int64_t kw = 0; kw < p; ++kw) f(b, n, (c * p + kh) * p + kw, c, row * p + kh, col * p + kw);
    }
}
}  // namespace qlip::detail

namespace qlip::reference {

/// out[b, row·Sw + col, c·p² + kh·p + kw] = img[b, c, row·p + kh, col·p + kw].
/// T = float is the oracle; T = double serves the finite-difference tests.
template <class T>
void patchify(HostView<const T, 4> img,  // [B, C, H, W]
              int p,
              HostView<T, 3> out) {      // [B, (H/p)·(W/p), C·p·p]
  const std::int64_t pp = p;
  const std::int64_t grid_w = detail::check_patch_shapes(img.shape(), pp, out.shape(), "patchify");
  detail::for_each_patch_element(img.size(0), img.size(1), out.size(1), grid_w, pp,
                                 [&](std::int64_t b, std::int64_t n, std::int64_t j, std::int64_t c, std::int64_t y,
                                     std::int64_t x) { out(b, n, j) = img(b, c, y, x); });
}

/// The float oracle, callable with mutable views (template deduction does not convert them).
inline void patchify(HostView<const float, 4> img, int p, HostView<float, 3> out) { patchify<float>(img, p, out); }

/// The inverse of patchify: img[b, c, row·p + kh, col·p + kw] = patches[b, row·Sw + col, c·p² + kh·p + kw].
template <class T>
void unpatchify(HostView<const T, 3> patches,  // [B, (H/p)·(W/p), C·p·p]
                int p,
                HostView<T, 4> img) {          // [B, C, H, W]
  const std::int64_t pp = p;
  const std::int64_t grid_w = detail::check_patch_shapes(img.shape(), pp, patches.shape(), "unpatchify");
  detail::for_each_patch_element(img.size(0), img.size(1), patches.size(1), grid_w, pp,
                                 [&](std::int64_t b, std::int64_t n, std::int64_t j, std::int64_t c, std::int64_t y,
                                     std::int64_t x) { img(b, c, y, x) = patches(b, n, j); });
}

/// The float oracle, callable with mutable views.
inline void unpatchify(HostView<const float, 3> patches, int p, HostView<float, 4> img) {
  unpatchify<float>(patches, p, img);
}

/// Backward of patchify: a permutation, so its transpose is the inverse permutation,
/// dimg[b, c, row·p + kh, col·p + kw] = dpatches[b, row·Sw + col, c·p² + kh·p + kw] (unpatchify).
/// Contract: dimg is an input gradient, written (=); every element is written exactly once.
template <class T>
void patchify_backward(HostView<const T, 3> dpatches,  // [B, (H/p)·(W/p), C·p·p]
                       int p,
                       HostView<T, 4> dimg) {          // [B, C, H, W]
  const std::int64_t pp = p;
  const std::int64_t grid_w = detail::check_patch_shapes(dimg.shape(), pp, dpatches.shape(), "patchify_backward");
  detail::for_each_patch_element(dimg.size(0), dimg.size(1), dpatches.size(1), grid_w, pp,
                                 [&](std::int64_t b, std::int64_t n, std::int64_t j, std::int64_t c, std::int64_t y,
                                     std::int64_t x) { dimg(b, c, y, x) = dpatches(b, n, j); });
}

/// The float oracle of patchify_backward, callable with mutable views.
inline void patchify_backward(HostView<const float, 3> dpatches, int p, HostView<float, 4> dimg) {
  patchify_backward<float>(dpatches, p, dimg);
}

/// Backward of unpatchify: dpatches[b, row·Sw + col, c·p² + kh·p + kw] = dimg[b, c, row·p + kh, col·p + kw]
/// (patchify). Contract: dpatches is written (=).
template <class T>
void unpatchify_backward(HostView<const T, 4> dimg,  // [B, C, H, W]
                         int p,
                         HostView<T, 3> dpatches) {  // [B, (H/p)·(W/p), C·p·p]
  const std::int64_t pp = p;
  const std::int64_t grid_w = detail::check_patch_shapes(dimg.shape(), pp, dpatches.shape(), "unpatchify_backward");
  detail::for_each_patch_element(dimg.size(0), dimg.size(1), dpatches.size(1), grid_w, pp,
                                 [&](std::int64_t b, std::int64_t n, std::int64_t j, std::int64_t c, std::int64_t y,
                                     std::int64_t x) { dpatches(b, n, j) = dimg(b, c, y, x); });
}

/// The float oracle of unpatchify_backward, callable with mutable views.
inline void unpatchify_backward(HostView<const float, 4> dimg, int p, HostView<float, 3> dpatches) {
  unpatchify_backward<float>(dimg, p, dpatches);
}

}  // namespace qlip::reference
