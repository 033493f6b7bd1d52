/// @file test_attention.cpp
/// @brief CPU attention against the double-precision reference: causal and bidirectional, GQA,
///        KV-cache alignment (T < S), views into a fused qkv buffer, strided head dims, query
///        blocking (T > 256), guard regions, workspace sizing, thread counts and shape errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "common/compare.hpp"
#include "qlip/core/allocator.hpp"
#include "qlip/core/philox.hpp"
#include "qlip/cpu/attention.hpp"
#include "qlip/cpu/threading.hpp"
#include "qlip/reference/attention.hpp"

namespace qlip {
namespace {

using test::all_close;
using test::kF32Reduction;

constexpr float kSentinel = -12345.25f;
constexpr std::int64_t kGuard = 41;

/// Fills every element of a view with seeded normals.
void fill_normal(HostView<float, 4> v, std::uint64_t seed) {
  Philox rng(seed);
  std::uint64_t e = 0;
  for (std::int64_t a = 0; a < v.size(0); ++a)
    for (std::int64_t b = 0; b < v.size(1); ++b)
      for (std::int64_t c = 0; c < v.size(2); ++c)
        for (std::int64_t d = 0; d < v.size(3); ++d) v(a, b, c, d) = rng.normal(e++);
}

/// A contiguous [B,T,H,Dh] output with sentinel guards before and after it.
struct GuardedOut {
  AlignedBuffer<float> storage;
  HostView<float, 4> view;
  explicit GuardedOut(const Extents<4>& shape) {
    std::int64_t n = shape[0] * shape[1] * shape[2] * shape[3];
    storage = AlignedBuffer<float>(n + 2 * kGuard, false);
    for (std::int64_t i = 0; i < storage.size(); ++i) storage.data()[i] = kSentinel;
    view = HostView<float, 4>(storage.data() + kGuard, shape);
  }
  bool guards_intact() const {
    const std::int64_t n = storage.size();
    for (std::int64_t i = 0; i < kGuard; ++i)
      if (storage.data()[i] != kSentinel || storage.data()[n - 1 - i] != kSentinel) return false;
    return true;
  }
};

/// Runs cpu attention (arena sized from attention_workspace_bytes) and the reference; compares
/// every element and checks the guards and that the arena was rewound.
void check_attention(HostView<const float, 4> q, HostView<const float, 4> k, HostView<const float, 4> v,
                     AttentionMask mask, const std::string& what) {
  SCOPED_TRACE(what + (mask == AttentionMask::causal ? " causal" : " bidirectional"));
  const float scale = 1.0f / std::sqrt(static_cast<float>(q.size(3)));
  GuardedOut out(q.shape());
  Tensor<float, 4> ref(q.shape());
  Arena ws(ops::attention_workspace_bytes(q.size(0), q.size(1), k.size(1), q.size(2), num_threads()));
  ops::attention(cpu_backend{}, ws, q, k, v, out.view, scale, mask);
  reference::attention(q, k, v, ref.view(), scale, mask);
  EXPECT_TRUE(all_close(out.view, ref.view(), kF32Reduction));
  EXPECT_TRUE(out.guards_intact()) << "attention wrote outside out";
  EXPECT_EQ(ws.used(), 0u) << "attention did not rewind the arena";
}

/// Contiguous q [B,T,Hq,Dh], k and v [B,S,Hkv,Dh].
void check_contiguous(std::int64_t batch, std::int64_t t, std::int64_t s, std::int64_t hq, std::int64_t hkv,
                      std::int64_t dh, AttentionMask mask) {
  Tensor<float, 4> q({batch, t, hq, dh}), k({batch, s, hkv, dh}), v({batch, s, hkv, dh});
  fill_normal(q.view(), 1);
  fill_normal(k.view(), 2);
  fill_normal(v.view(), 3);
  check_attention(q.view(), k.view(), v.view(), mask,
                  "B" + std::to_string(batch) + " T" + std::to_string(t) + " S" + std::to_string(s) + " Hq" +
                      std::to_string(hq) + " Hkv" + std::to_string(hkv) + " Dh" + std::to_string(dh));
}

TEST(CpuAttention, OddSizesBothMasks) {
  for (AttentionMask mask : {AttentionMask::none, AttentionMask::causal})
    for (std::int64_t t : {1, 7, 65, 111}) {
      check_contiguous(2, t, t, 3, 3, 64, mask);
      check_contiguous(1, t, t, 2, 2, 7, mask);
    }
}

TEST(CpuAttention, VitShape) {
  check_contiguous(2, 257, 257, 12, 12, 64, AttentionMask::none);
}

TEST(CpuAttention, GroupedQueryHeads) {
  for (AttentionMask mask : {AttentionMask::none, AttentionMask::causal}) {
    check_contiguous(2, 33, 33, 8, 2, 16, mask);
    check_contiguous(1, 7, 7, 8, 1, 64, mask);  // multi-query
  }
}

TEST(CpuAttention, FewerQueriesThanKeys) {
  for (AttentionMask mask : {AttentionMask::none, AttentionMask::causal}) {
    check_contiguous(2, 5, 17, 4, 2, 16, mask);
    check_contiguous(1, 1, 40, 3, 3, 64, mask);  // one-token decode against a KV cache
  }
}

TEST(CpuAttention, QueryBlocksBeyond256Rows) {
  // T = 300 splits into two blocks of 150; T = 513 into three of 171.
  for (AttentionMask mask : {AttentionMask::none, AttentionMask::causal}) {
    check_contiguous(1, 300, 300, 2, 1, 16, mask);
    check_contiguous(1, 513, 600, 1, 1, 8, mask);
  }
}

TEST(CpuAttention, ViewsIntoFusedQkv) {
  // [B, T, 3, H, Dh]: q/k/v are select(2, i) views with row stride 3·H·Dh.
  const std::int64_t batch = 2, t = 65, heads = 4, dh = 32;
  Tensor<float, 5> qkv({batch, t, 3, heads, dh});
  Philox rng(7);
  for (std::int64_t i = 0; i < qkv.numel(); ++i) qkv.data()[i] = rng.normal(static_cast<std::uint64_t>(i));
  HostView<const float, 5> fused = qkv.view();
  for (AttentionMask mask : {AttentionMask::none, AttentionMask::causal})
    check_attention(fused.select(2, 0), fused.select(2, 1), fused.select(2, 2), mask, "fused qkv");
}

TEST(CpuAttention, StridedHeadDimTakesLoopPath) {
  // q and k stored [B, T, Dh, H] and viewed as [B, T, H, Dh]: the head dim has stride H.
  const std::int64_t batch = 2, t = 19, heads = 3, dh = 16;
  Tensor<float, 4> q_store({batch, t, dh, heads}), k_store({batch, t, dh, heads}), v({batch, t, heads, dh});
  fill_normal(q_store.view(), 1);
  fill_normal(k_store.view(), 2);
  fill_normal(v.view(), 3);
  HostView<const float, 4> q = q_store.view().transpose(2, 3), k = k_store.view().transpose(2, 3);
  for (AttentionMask mask : {AttentionMask::none, AttentionMask::causal})
    check_attention(q, k, v.view(), mask, "strided Dh");
}

TEST(CpuAttention, DecodeMatchesFullCausalRows) {
  // KV-cache invariant: the last 3 queries of a causal T = S = 20 pass equal a T = 3 pass against
  // the same 20 keys.
  const std::int64_t batch = 1, s = 20, heads = 2, dh = 16, t_new = 3;
  Tensor<float, 4> q({batch, s, heads, dh}), k({batch, s, heads, dh}), v({batch, s, heads, dh});
  fill_normal(q.view(), 1);
  fill_normal(k.view(), 2);
  fill_normal(v.view(), 3);
  const float scale = 0.25f;
  Arena ws(ops::attention_workspace_bytes(batch, s, s, heads, num_threads()));
  Tensor<float, 4> full({batch, s, heads, dh}), last({batch, t_new, heads, dh});
  ops::attention(cpu_backend{}, ws, q.view(), k.view(), v.view(), full.view(), scale, AttentionMask::causal);
  HostView<const float, 4> q_last = q.view().slice(1, s - t_new, s);
  ops::attention(cpu_backend{}, ws, q_last, k.view(), v.view(), last.view(), scale, AttentionMask::causal);
  HostView<const float, 4> full_last = full.view().slice(1, s - t_new, s);
  EXPECT_TRUE(all_close(last.view(), full_last, kF32Reduction));
}

TEST(CpuAttention, ThreadCountsAgree) {
  const int before = num_threads();
  Tensor<float, 4> q({2, 65, 4, 32}), k({2, 65, 4, 32}), v({2, 65, 4, 32}), o1({2, 65, 4, 32}), o2({2, 65, 4, 32});
  fill_normal(q.view(), 1);
  fill_normal(k.view(), 2);
  fill_normal(v.view(), 3);
  Arena ws(ops::attention_workspace_bytes(2, 65, 65, 4, 2));
  set_num_threads(1);
  ops::attention(cpu_backend{}, ws, q.view(), k.view(), v.view(), o1.view(), 0.2f, AttentionMask::causal);
  set_num_threads(2);
  ops::attention(cpu_backend{}, ws, q.view(), k.view(), v.view(), o2.view(), 0.2f, AttentionMask::causal);
  set_num_threads(before);
  EXPECT_TRUE(all_close(o2.view(), o1.view(), kF32Reduction));
}

TEST(CpuAttention, WorkspaceSizing) {
  EXPECT_EQ(ops::attention_workspace_bytes(0, 7, 7, 3, 2), 0u);
  // One thread, one block of 7 rows: scores 7·9 + 7 row sums = 70 floats, padded to 80.
  EXPECT_EQ(ops::attention_workspace_bytes(1, 7, 9, 1, 1), 80u * sizeof(float));
  // Never more slots than tasks: 1 task with 8 threads still needs one slot.
  EXPECT_EQ(ops::attention_workspace_bytes(1, 7, 9, 1, 8), 80u * sizeof(float));
  Tensor<float, 4> q({1, 7, 2, 8}), out({1, 7, 2, 8});
  Arena too_small(64);
  EXPECT_THROW(ops::attention(cpu_backend{}, too_small, q.view(), q.view(), q.view(), out.view(), 1.0f,
                              AttentionMask::none),
               Error);
}

using test::expect_error_naming;

TEST(CpuAttention, BadShapesNameTheArgument) {
  Tensor<float, 4> q({2, 5, 4, 8}), k({2, 6, 2, 8}), v({2, 6, 2, 8}), out({2, 5, 4, 8});
  Tensor<float, 4> k_bad_dh({2, 6, 2, 4}), v_bad({2, 7, 2, 8}), out_bad({2, 5, 4, 4}), k_bad_heads({2, 6, 3, 8});
  Tensor<float, 4> k_short({2, 3, 2, 8});
  Arena ws(1 << 20);
  auto run = [&](const Tensor<float, 4>& kk, const Tensor<float, 4>& vv, Tensor<float, 4>& oo, AttentionMask m) {
    ops::attention(cpu_backend{}, ws, q.view(), kk.view(), vv.view(), oo.view(), 1.0f, m);
  };
  expect_error_naming([&] { run(k_bad_dh, v, out, AttentionMask::none); }, "k has shape [2, 6, 2, 4]");
  expect_error_naming([&] { run(k, v_bad, out, AttentionMask::none); }, "v has shape [2, 7, 2, 8]");
  expect_error_naming([&] { run(k, v, out_bad, AttentionMask::none); }, "out has shape [2, 5, 4, 4]");
  expect_error_naming([&] { run(k_bad_heads, k_bad_heads, out, AttentionMask::none); }, "multiple of k/v heads");
  expect_error_naming([&] { run(k_short, k_short, out, AttentionMask::causal); }, "T ≤ S");
  expect_error_naming(
      [&] { reference::attention(q.view(), k_bad_dh.view(), v.view(), out.view(), 1.0f, AttentionMask::none); },
      "k has shape");
}

}  // namespace
}  // namespace qlip
