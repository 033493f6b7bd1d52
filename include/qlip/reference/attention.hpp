/// @file attention.hpp
/// @brief Reference (oracle) scaled-dot-product attention: plain loops, double accumulation.
///
/// out[b,i,h,:] = Σ_j softmax_j(scale·q[b,i,h,:]·k[b,j,g,:] + mask(i,j)) · v[b,j,g,:],
/// with g = h / (Hq / Hkv) (grouped-query attention; Hkv == Hq is plain multi-head attention).
/// The causal mask aligns the query block to the END of the keys: query i sees keys j ≤ i + S − T,
/// so T == S is the usual lower-triangular mask and T < S is KV-cache decoding (the T new queries
/// are the last T positions). The shape checks shared by every backend live here (qlip::detail).
///
/// Training: attention_train() is the same forward that also saves the per-row log-sum-exp of the
/// scaled logits, lse [B, Hq, T]; attention_backward() recomputes the probabilities from it
/// (P = exp(scale·q·kᵀ − lse)) instead of storing them, as FlashAttention's backward does.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
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
/// `op` prefixes every message (the training forward and the backward name themselves).
template <class T, class M>
void check_attention_shapes(const TensorView<const T, 4, M>& q, const TensorView<const T, 4, M>& k,
                            const TensorView<const T, 4, M>& v,
                            const TensorView<const std::type_identity_t<T>, 4, M>& out, AttentionMask mask,
                            const char* op = "attention") {
  const std::int64_t batch = q.size(0), t = q.size(1), hq = q.size(2), dh = q.size(3);
  const std::int64_t s = k.size(1), hkv = k.size(2);
  QLIP_CHECK(k.size(0) == batch && k.size(3) == dh, op, ": k has shape ", shape_string<4>(k.shape()),
             ", expected [", batch, ", S, Hkv, ", dh, "] to match q ", shape_string<4>(q.shape()));
  const std::string v_name = std::string(op) + ": v", out_name = std::string(op) + ": out";
  check_shape<const T, 4, M>(v, k.shape(), v_name.c_str());  // explicit: Extents<4> alone does not deduce R
  check_shape<const T, 4, M>(out, q.shape(), out_name.c_str());
  QLIP_CHECK(hkv >= 1 && hq % hkv == 0, op, ": q heads (", hq, ") must be a multiple of k/v heads (", hkv, ")");
  QLIP_CHECK(mask != AttentionMask::causal || t <= s, op, ": causal mask needs T ≤ S (queries are the last T ",
             "of the S keys), got T = ", t, ", S = ", s);
  QLIP_CHECK(s >= 1 || t == 0, op, ": k has no keys (S = 0)");
}

/// The forward's checks plus lse [B, Hq, T] (the per-row log-sum-exp a training forward saves).
template <class T, class M>
void check_attention_train_shapes(const TensorView<const T, 4, M>& q, const TensorView<const T, 4, M>& k,
                                  const TensorView<const T, 4, M>& v,
                                  const TensorView<const std::type_identity_t<T>, 4, M>& out,
                                  const TensorView<const std::type_identity_t<T>, 3, M>& lse, AttentionMask mask,
                                  const char* op = "attention_train") {
  check_attention_shapes(q, k, v, out, mask, op);
  const std::string lse_name = std::string(op) + ": lse";
  check_shape<const T, 3, M>(lse, {q.size(0), q.size(2), q.size(1)}, lse_name.c_str());
}

/// Checks the backward's arguments: the training forward's tensors, dout [B,T,Hq,Dh], and dq
/// [B,T,Hq,Dh], dk/dv [B,S,Hkv,Dh], each either empty (gradient not wanted) or of that shape.
template <class T, class M>
void check_attention_backward_shapes(const TensorView<const T, 4, M>& q, const TensorView<const T, 4, M>& k,
                                     const TensorView<const T, 4, M>& v, const TensorView<const T, 4, M>& out,
                                     const TensorView<const T, 3, M>& lse, const TensorView<const T, 4, M>& dout,
                                     const TensorView<T, 4, M>& dq, const TensorView<T, 4, M>& dk,
                                     const TensorView<T, 4, M>& dv, AttentionMask mask) {
  check_attention_train_shapes(q, k, v, out, lse, mask, "attention_backward");
  check_shape(dout, q.shape(), "attention_backward: dout");
  if (!dq.empty()) check_shape(dq, q.shape(), "attention_backward: dq");
  if (!dk.empty()) check_shape(dk, k.shape(), "attention_backward: dk");
  if (!dv.empty()) check_shape(dv, k.shape(), "attention_backward: dv");
}

namespace reference_impl {

/// The reference forward, with the log-sum-exp of each row's scaled logits written to lse when it
/// is not empty. One body for attention and attention_train, so their outputs are identical.
template <class T>
void attention_rows(HostView<const T, 4> q, HostView<const T, 4> k, HostView<const T, 4> v, HostView<T, 4> out,
                    HostView<T, 3> lse, float scale, AttentionMask mask) {
  const std::int64_t batch = q.size(0), t = q.size(1), hq = q.size(2), dh = q.size(3);
  const std::int64_t s = k.size(1), group = hq / k.size(2);
  const bool want_lse = !lse.empty();
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
        for (std::int64_t d = 0; d < dh; ++d) out(b, i, h, d) = static_cast<T>(acc[d] / sum);
        // log Σ_j exp(l_j) = m + log Σ_j exp(l_j − m), with m the row maximum (no overflow).
        if (want_lse) lse(b, h, i) = static_cast<T>(max_score + std::log(sum));
      }
    }
  }
}

}  // namespace reference_impl
}  // namespace detail

namespace reference {

/// softmax(scale·q·kᵀ + mask)·v per (batch, head), in double with max subtraction.
/// T = float is the oracle of every backend's attention; T = double is what finite differences
/// differentiate (tests/common/gradcheck.hpp). The model passes scale = 1: its q is pre-scaled by
/// Dh^-1/2 before RoPE (docs/MODEL.md §2.3).
/// @param q   [B, T, Hq, Dh]
/// @param k   [B, S, Hkv, Dh]
/// @param v   [B, S, Hkv, Dh]
/// @param out [B, T, Hq, Dh] output (never read)
/// @param scale multiplies q·k (usually Dh^-1/2)
/// @param mask  none or causal (see the file comment for the T < S alignment)
template <class T>
void attention(HostView<const T, 4> q, HostView<const T, 4> k, HostView<const T, 4> v, HostView<T, 4> out,
               float scale, AttentionMask mask) {
  detail::check_attention_shapes<T, host_memory>(q, k, v, out, mask);
  detail::reference_impl::attention_rows<T>(q, k, v, out, HostView<T, 3>(), scale, mask);
}

/// The float oracle, callable with mutable views (template deduction does not convert them).
inline void attention(HostView<const float, 4> q, HostView<const float, 4> k, HostView<const float, 4> v,
                      HostView<float, 4> out, float scale, AttentionMask mask) {
  attention<float>(q, k, v, out, scale, mask);
}

/// The training forward: attention() (same out, same arithmetic) that also saves what the
/// backward needs, lse[b, h, i] = log Σ_{j visible} exp(scale·q[b,i,h,:]·k[b,j,g,:]).
/// @param lse [B, Hq, T] output
template <class T>
void attention_train(HostView<const T, 4> q, HostView<const T, 4> k, HostView<const T, 4> v, HostView<T, 4> out,
                     HostView<T, 3> lse, float scale, AttentionMask mask) {
  detail::check_attention_train_shapes<T, host_memory>(q, k, v, out, lse, mask);
  detail::reference_impl::attention_rows<T>(q, k, v, out, lse, scale, mask);
}

/// The float training forward, callable with mutable views.
inline void attention_train(HostView<const float, 4> q, HostView<const float, 4> k, HostView<const float, 4> v,
                            HostView<float, 4> out, HostView<float, 3> lse, float scale, AttentionMask mask) {
  attention_train<float>(q, k, v, out, lse, scale, mask);
}

/// Backward of out = softmax(scale·q·kᵀ + mask)·v for the upstream gradient dout, from the
/// training forward's out and lse. With P_ij = exp(scale·q_i·k_j − lse_i) over visible keys (0
/// for masked ones) and D_i = Σ_d dout_i·out_i:
///   dv_j = Σ_i P_ij·dout_i            dP_ij = dout_i·v_j       dS_ij = P_ij·(dP_ij − D_i)
///   dq_i = scale·Σ_j dS_ij·k_j        dk_j  = scale·Σ_i dS_ij·q_i
/// GQA: dk and dv of kv head g sum over the Hq/Hkv query heads that read it.
/// Contract: dq, dk, dv are gradients of inputs and are written (=); an empty view skips that
/// gradient. Accumulates in double; each output element is rounded once.
/// @param q, k, v, out, lse  as in attention_train ([B,T,Hq,Dh], [B,S,Hkv,Dh] ×2, [B,T,Hq,Dh], [B,Hq,T])
/// @param dout [B, T, Hq, Dh]
/// @param dq   [B, T, Hq, Dh] or empty
/// @param dk   [B, S, Hkv, Dh] or empty
/// @param dv   [B, S, Hkv, Dh] or empty
template <class T>
void attention_backward(HostView<const T, 4> q, HostView<const T, 4> k, HostView<const T, 4> v,
                        HostView<const T, 4> out, HostView<const T, 3> lse, HostView<const T, 4> dout,
                        HostView<T, 4> dq, HostView<T, 4> dk, HostView<T, 4> dv, float scale, AttentionMask mask) {
  detail::check_attention_backward_shapes<T, host_memory>(q, k, v, out, lse, dout, dq, dk, dv, mask);
  const std::int64_t batch = q.size(0), t = q.size(1), hq = q.size(2), dh = q.size(3);
  const std::int64_t s = k.size(1), hkv = k.size(2), group = hq / hkv;
  const double sc = static_cast<double>(scale);
  std::vector<double> p(static_cast<std::size_t>(s)), ds(static_cast<std::size_t>(s));
  std::vector<double> dk_acc(static_cast<std::size_t>(s * dh)), dv_acc(static_cast<std::size_t>(s * dh));
  for (std::int64_t b = 0; b < batch; ++b) {
    for (std::int64_t g = 0; g < hkv; ++g) {
      std::fill(dk_acc.begin(), dk_acc.end(), 0.0);
      std::fill(dv_acc.begin(), dv_acc.end(), 0.0);
      for (std::int64_t h = g * group; h < (g + 1) * group; ++h) {
        for (std::int64_t i = 0; i < t; ++i) {
          const std::int64_t limit = mask == AttentionMask::causal ? i + s - t + 1 : s;
          double d_i = 0.0;
          for (std::int64_t d = 0; d < dh; ++d)
            d_i += static_cast<double>(dout(b, i, h, d)) * static_cast<double>(out(b, i, h, d));
          const double lse_i = static_cast<double>(lse(b, h, i));
          for (std::int64_t j = 0; j < limit; ++j) {
            double qk = 0.0, dp = 0.0;
            for (std::int64_t d = 0; d < dh; ++d) {
              qk += static_cast<double>(q(b, i, h, d)) * static_cast<double>(k(b, j, g, d));
              dp += static_cast<double>(dout(b, i, h, d)) * static_cast<double>(v(b, j, g, d));
            }
            p[j] = std::exp(sc * qk - lse_i);
            ds[j] = p[j] * (dp - d_i);
          }
          if (!dq.empty()) {
            for (std::int64_t d = 0; d < dh; ++d) {
              double acc = 0.0;
              for (std::int64_t j = 0; j < limit; ++j) acc += ds[j] * static_cast<double>(k(b, j, g, d));
              dq(b, i, h, d) = static_cast<T>(sc * acc);
            }
          }
          for (std::int64_t j = 0; j < limit; ++j)
            for (std::int64_t d = 0; d < dh; ++d) {
              dv_acc[j * dh + d] += p[j] * static_cast<double>(dout(b, i, h, d));
              dk_acc[j * dh + d] += sc * ds[j] * static_cast<double>(q(b, i, h, d));
            }
        }
      }
      for (std::int64_t j = 0; j < s; ++j)
        for (std::int64_t d = 0; d < dh; ++d) {
          if (!dk.empty()) dk(b, j, g, d) = static_cast<T>(dk_acc[j * dh + d]);
          if (!dv.empty()) dv(b, j, g, d) = static_cast<T>(dv_acc[j * dh + d]);
        }
    }
  }
}

/// The float backward oracle, callable with mutable views.
inline void attention_backward(HostView<const float, 4> q, HostView<const float, 4> k, HostView<const float, 4> v,
                               HostView<const float, 4> out, HostView<const float, 3> lse,
                               HostView<const float, 4> dout, HostView<float, 4> dq, HostView<float, 4> dk,
                               HostView<float, 4> dv, float scale, AttentionMask mask) {
  attention_backward<float>(q, k, v, out, lse, dout, dq, dk, dv, scale, mask);
}

}  // namespace reference
}  // namespace qlip
