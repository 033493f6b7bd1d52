/// @file attention.hpp
/// @brief Reference (oracle) scaled-dot-product attention: plain loops, double accumulation.
///
/// out[b,i,h,:] = Σ_j softmax_j(scale·q[b,i,h,:]·k[b,j,g,:] + mask(i,j)) · v[b,j,g,:],
/// with g = h / (Hq / Hkv) (grouped-query attention; Hkv == Hq is plain multi-head attention).
/// The causal mask aligns the query block to the END of the keys: query i sees keys j ≤ i + S − T,
/// so T == S is the usual lower-triangular mask and T < S is KV-cache decoding (the T new queries
/// are the last T positions). The shape checks shared by every backend live here (qlip::detail).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip {

/// Which keys each query may attend to.
enum class AttentionMask {
  none,    ///< bidirectional: every query sees every key (vision encoder, decoder)
  causal,  ///< query i sees keys j ≤ i + S − T (text tower; KV-cache decode when T < S)
};

namespace detail {

/// Checks q[B,T,Hq,Dh], k/v[B,S,Hkv,Dh], out[B,T,Hq,Dh], Hq % Hkv == 0, and T ≤ S for causal.
template <class M>
void check_attention_shapes(const TensorView<const float, 4, M>& q, const TensorView<const float, 4, M>& k,
                            const TensorView<const float, 4, M>& v, const TensorView<float, 4, M>& out,
                            AttentionMask mask) {
  const std::int64_t batch = q.size(0), t = q.size(1), hq = q.size(2), dh = q.size(3);
  const std::int64_t s = k.size(1), hkv = k.size(2);
  QLIP_CHECK(k.size(0) == batch && k.size(3) == dh, "attention: k has shape ", shape_string<4>(k.shape()),
             ", expected [", batch, ", S, Hkv, ", dh, "] to match q ", shape_string<4>(q.shape()));
  check_shape<const float, 4, M>(v, k.shape(), "attention: v");  // explicit: Extents<4> alone does not deduce R
  check_shape<float, 4, M>(out, q.shape(), "attention: out");
  QLIP_CHECK(hkv >= 1 && hq % hkv == 0, "attention: q heads (", hq, ") must be a multiple of k/v heads (",
             hkv, ")");
  QLIP_CHECK(mask != AttentionMask::causal || t <= s, "attention: causal mask needs T ≤ S (queries are the last T ",
             "of the S keys), got T = ", t, ", S = ", s);
  QLIP_CHECK(s >= 1 || t == 0, "attention: k has no keys (S = 0)");
}

}  // namespace detail

namespace reference {

/// softmax(scale·q·kᵀ + mask)·v per (batch, head), in double with max subtraction.
/// @param q   [B, T, Hq, Dh]
/// @param k   [B, S, Hkv, Dh]
/// @param v   [B, S, Hkv, Dh]
/// @param out [B, T, Hq, Dh] output (never read)
/// @param scale multiplies q·k (usually Dh^-1/2)
/// @param mask  none or causal (see the file comment for the T < S alignment)
inline void attention(HostView<const float, 4> q, HostView<const float, 4> k, HostView<const float, 4> v,
                      HostView<float, 4> out, float scale, AttentionMask mask) {
  detail::check_attention_shapes(q, k, v, out, mask);
  const std::int64_t batch = q.size(0), t = q.size(1), hq = q.size(2), dh = q.size(3);
  const std::int64_t s = k.size(1), group = hq / k.size(2);
  std::vector<double> p(static_cast<std::size_t>(s));  // the oracle may allocate; ops take an Arena
  std::vector<double> acc(static_cast<std::size_t>(dh));
  for (std::int64_t b = 0; b < batch; ++b) {
    for (std::int64_t h = 0; h < hq; ++h) {
      const std::int64_t g = h / group;
      for (std::int64_t i = 0; i < t; ++i) {
        // keys [0, limit) are visible to query i
        const std::int64_t limit = mask == AttentionMask::causal ? i + s - t + 1 : s;
        double max_score = -INFINITY;
        for (std::int64_t j = 0; j < limit; ++j) {
          double dot = 0.0;
          for (std::int64_t d = 0; d < dh; ++d)
            dot += static_cast<double>(q(b, i, h, d)) * static_cast<double>(k(b, j, g, d));
          p[j] = static_cast<double>(scale) * dot;
          max_score = std::max(max_score, p[j]);
        }
        double sum = 0.0;
        for (std::int64_t j = 0; j < limit; ++j) {
          p[j] = std::exp(p[j] - max_score);
          sum += p[j];
        }
        for (std::int64_t d = 0; d < dh; ++d) acc[d] = 0.0;
        for (std::int64_t j = 0; j < limit; ++j)
          for (std::int64_t d = 0; d < dh; ++d) acc[d] += p[j] * static_cast<double>(v(b, j, g, d));
        for (std::int64_t d = 0; d < dh; ++d) out(b, i, h, d) = static_cast<float>(acc[d] / sum);
      }
    }
  }
}

}  // namespace reference
}  // namespace qlip
