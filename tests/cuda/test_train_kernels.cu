/// @file test_train_kernels.cu
/// @brief The training kernels of the CUDA backend (optimiser steps, embedding, cross-entropy) vs
///        the plain-loop reference on the same inputs. GPU tests skip (GTEST_SKIP) without a
///        device; the argument checks, which run before any launch, are tested everywhere.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "common/compare.hpp"
#include "cuda_test_util.hpp"
#include "qlip/core/allocator.hpp"
#include "qlip/core/philox.hpp"
#include "qlip/reference/cross_entropy.hpp"
#include "qlip/reference/embedding.hpp"
#include "qlip/reference/optimizer.hpp"

#include "common.cuh"
#include "cross_entropy.cuh"
#include "embedding.cuh"
#include "optimizer.cuh"

namespace qlip {
namespace {

/// n values N(0, scale²) from Philox, plus `shift`.
std::vector<float> random_values(std::int64_t n, std::uint64_t seed, float scale = 1.0f, float shift = 0.0f) {
  std::vector<float> v(static_cast<std::size_t>(n));
  Philox rng(seed);
  for (std::int64_t i = 0; i < n; ++i) v[i] = shift + scale * rng.normal(i);
  return v;
}

template <class T>
cuda::DeviceBuffer<T> upload(const std::vector<T>& v) {
  cuda::DeviceBuffer<T> d(static_cast<std::int64_t>(v.size()));
  cuda::copy_to_device(d.data(), v.data(), d.size());
  return d;
}

template <class T>
std::vector<T> download(const cuda::DeviceBuffer<T>& d) {
  std::vector<T> v(static_cast<std::size_t>(d.size()));
  cuda::copy_to_host(v.data(), d.data(), d.size());
  return v;
}

template <class T>
HostView<const T, 1> host1(const std::vector<T>& v) {
  return HostView<const T, 1>(v.data(), {static_cast<std::int64_t>(v.size())});
}

/// Three segments with a gap between the first two and one of a single element, over the
/// kOptimizerChunk boundary; per-segment learning rates and decay.
std::vector<OptimizerSegment> test_segments() {
  return {{.offset = 0, .numel = 5000, .lr = 1e-3, .weight_decay = 0.05},
          {.offset = 5008, .numel = 1, .lr = 2e-3, .weight_decay = 0.0},
          {.offset = 5009, .numel = 9000, .lr = 5e-4, .weight_decay = 0.1}};
}
constexpr std::int64_t kFlat = 5009 + 9000;

/// The flat buffers of a step: p, g, m, v (v ≥ 0), as after a few earlier steps.
struct FlatState {
  std::vector<float> p = random_values(kFlat, 1, 0.5f), g = random_values(kFlat, 2, 0.1f),
                     m = random_values(kFlat, 3, 0.01f), v = random_values(kFlat, 4, 0.0f, 0.0f);
  FlatState() {
    const std::vector<float> r = random_values(kFlat, 5, 1e-3f);
    for (std::int64_t i = 0; i < kFlat; ++i) v[i] = r[i] * r[i];
  }
};

enum class Optimizer { adamw, lamb };

/// One step on the device and one by the reference, from the same state; every buffer compared.
void check_optimizer_step(Optimizer which, const AdamHyperParams& hp, test::Tolerance tol) {
  FlatState host;
  FlatState want = host;
  const std::vector<OptimizerSegment> segments = test_segments();
  auto dp = upload(host.p), dg = upload(host.g), dm = upload(host.m), dv = upload(host.v);
  const cuda::OptimizerWorkspace ws = cuda::OptimizerWorkspace::for_segments(segments);
  const auto dev = [](const cuda::DeviceBuffer<float>& b) { return b.view<1>({b.size()}); };
  const DeviceView<const float, 1> grad = dev(dg);
  if (which == Optimizer::adamw)
    ops::adamw_step(cuda_backend{}, dev(dp), grad, dev(dm), dev(dv), segments, hp, ws);
  else
    ops::lamb_step(cuda_backend{}, dev(dp), grad, dev(dm), dev(dv), segments, hp, ws);
  QLIP_CUDA_CHECK(cudaDeviceSynchronize());
  const auto view = [](std::vector<float>& v) { return HostView<float, 1>(v.data(), {kFlat}); };
  if (which == Optimizer::adamw)
    reference::adamw_step(view(want.p), view(want.g), view(want.m), view(want.v), segments, hp);
  else
    reference::lamb_step(view(want.p), view(want.g), view(want.m), view(want.v), segments, hp);
  const std::vector<float> p = download(dp), m = download(dm), v = download(dv);
  EXPECT_TRUE(test::all_close(host1(p), host1(want.p), tol)) << "param";
  EXPECT_TRUE(test::all_close(host1(m), host1(want.m), tol)) << "exp_avg";
  EXPECT_TRUE(test::all_close(host1(v), host1(want.v), tol)) << "exp_avg_sq";
  // The gap between segments is never written.
  for (std::int64_t i = 5000; i < 5008; ++i) EXPECT_EQ(p[i], host.p[i]) << "padding element " << i;
}

TEST(CudaOptimizer, AdamWMatchesReference) {
  QLIP_REQUIRE_GPU();
  // Element-wise in float vs double rounded once: kF32Op.
  check_optimizer_step(Optimizer::adamw, {.step = 1}, test::kF32Op);
  check_optimizer_step(Optimizer::adamw, {.beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .step = 7, .grad_scale = 0.5},
                       test::kF32Op);
}

TEST(CudaOptimizer, LambMatchesReference) {
  QLIP_REQUIRE_GPU();
  // The trust ratio comes from norms over 9000 elements in another order: kF32Reduction.
  check_optimizer_step(Optimizer::lamb, {.step = 1}, test::kF32Reduction);
  check_optimizer_step(Optimizer::lamb, {.step = 12, .grad_scale = 0.25}, test::kF32Reduction);
}

TEST(CudaOptimizer, BadArgumentsThrowBeforeAnyLaunch) {
  // No device needed: the shared checks run first, and an empty workspace allocates nothing.
  DeviceView<float, 1> buf(nullptr, {10}, {1});
  const cuda::OptimizerWorkspace ws;
  const std::vector<OptimizerSegment> outside{{.offset = 4, .numel = 7, .lr = 1e-3}};
  EXPECT_THROW(ops::adamw_step(cuda_backend{}, buf, buf, buf, buf, outside, {}, ws), Error);
  const std::vector<OptimizerSegment> ok{{.offset = 0, .numel = 10, .lr = 1e-3}};
  EXPECT_THROW(ops::lamb_step(cuda_backend{}, buf, buf, buf, buf, ok, {.step = 0}, ws), Error);
}

/// Ids with repeats (so the backward sums several rows into one) over a table of V rows.
std::vector<std::int32_t> test_ids(std::int64_t m, std::int32_t vocab) {
  std::vector<std::int32_t> ids(static_cast<std::size_t>(m));
  for (std::int64_t i = 0; i < m; ++i) ids[i] = static_cast<std::int32_t>((i * 7 + i / 3) % vocab);
  return ids;
}

TEST(CudaEmbedding, ForwardAndBackwardMatchReference) {
  QLIP_REQUIRE_GPU();
  constexpr std::int64_t kV = 50, kD = 77, kM = 301;
  const std::vector<std::int32_t> ids = test_ids(kM, kV);
  const std::vector<float> table = random_values(kV * kD, 6), dout = random_values(kM * kD, 7);
  std::vector<float> dtable_want = random_values(kV * kD, 8);  // pre-filled: the backward accumulates
  auto d_ids = upload(ids);
  auto d_table = upload(table), d_dout = upload(dout), d_dtable = upload(dtable_want);
  cuda::DeviceBuffer<float> d_out(kM * kD);
  const DeviceView<const std::int32_t, 1> ids_dev = d_ids.view<1>({kM});
  ops::embedding(cuda_backend{}, d_table.view<2>({kV, kD}), host1(ids), ids_dev, d_out.view<2>({kM, kD}));
  ops::embedding_backward(cuda_backend{}, host1(ids), ids_dev, d_dout.view<2>({kM, kD}), d_dtable.view<2>({kV, kD}));
  QLIP_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> out_want(kM * kD);
  reference::embedding(HostView<const float, 2>(table.data(), {kV, kD}), host1(ids),
                       HostView<float, 2>(out_want.data(), {kM, kD}));
  reference::embedding_backward(host1(ids), HostView<const float, 2>(dout.data(), {kM, kD}),
                                HostView<float, 2>(dtable_want.data(), {kV, kD}));
  EXPECT_TRUE(test::all_close(host1(download(d_out)), host1(out_want), test::kExact));
  // Up to ~7 rows summed per id, in float here and in double there: kF32Op.
  EXPECT_TRUE(test::all_close(host1(download(d_dtable)), host1(dtable_want), test::kF32Op));
}

TEST(CudaEmbedding, PositionTableBroadcastAndBackwardMatchReference) {
  QLIP_REQUIRE_GPU();
  constexpr std::int64_t kB = 3, kN = 65, kD = 77;
  Tensor<float, 3> x({kB, kN, kD}), dx({kB, kN, kD});
  const std::vector<float> xv = random_values(x.numel(), 9), dxv = random_values(dx.numel(), 10);
  std::copy(xv.begin(), xv.end(), x.data());
  std::copy(dxv.begin(), dxv.end(), dx.data());
  const std::vector<float> table = random_values(kN * kD, 11);
  std::vector<float> dtable = random_values(kN * kD, 12);  // pre-filled: accumulated
  auto d_x = upload(xv), d_dx = upload(dxv), d_table = upload(table), d_dtable = upload(dtable);
  ops::add_rows_broadcast(cuda_backend{}, d_x.view<3>({kB, kN, kD}), d_table.view<2>({kN, kD}));
  ops::add_rows_broadcast_backward(cuda_backend{}, d_dx.view<3>({kB, kN, kD}), d_dtable.view<2>({kN, kD}));
  QLIP_CUDA_CHECK(cudaDeviceSynchronize());
  reference::add_rows_broadcast(x.view(), HostView<const float, 2>(table.data(), {kN, kD}));
  reference::add_rows_broadcast_backward(HostView<const float, 3>(dx.view()),
                                         HostView<float, 2>(dtable.data(), {kN, kD}));
  // Both in double and rounded once: exact for the add, kF32Op for the sum over the batch.
  const std::vector<float> x_got = download(d_x), dtable_got = download(d_dtable);
  EXPECT_TRUE(test::all_close(HostView<const float, 1>(x_got.data(), {x.numel()}),
                              HostView<const float, 1>(x.data(), {x.numel()}), test::kExact));
  EXPECT_TRUE(test::all_close(host1(dtable_got), host1(dtable), test::kF32Op));
}

TEST(CudaEmbedding, OutOfRangeIdThrowsBeforeAnyLaunch) {
  const std::vector<std::int32_t> ids{0, 3, 50};
  DeviceView<const float, 2> table(nullptr, {50, 8}, {8, 1});
  DeviceView<const std::int32_t, 1> ids_dev(nullptr, {3}, {1});
  DeviceView<float, 2> out(nullptr, {3, 8}, {8, 1});
  EXPECT_THROW(ops::embedding(cuda_backend{}, table, host1(ids), ids_dev, out), Error);
  EXPECT_THROW(ops::embedding_backward(cuda_backend{}, host1(ids), ids_dev, DeviceView<const float, 2>(out),
                                       DeviceView<float, 2>(nullptr, {50, 8}, {8, 1})),
               Error);
}

TEST(CudaCrossEntropy, LossAndGradientMatchReference) {
  QLIP_REQUIRE_GPU();
  for (const std::int64_t vocab : {std::int64_t{13}, std::int64_t{32000}}) {
    SCOPED_TRACE(::testing::Message() << "V = " << vocab);
    constexpr std::int64_t kN = 37;
    const std::vector<float> logits = random_values(kN * vocab, 9, 3.0f);
    std::vector<std::int32_t> targets(kN);
    for (std::int64_t i = 0; i < kN; ++i)
      targets[i] = i % 5 == 2 ? -100 : static_cast<std::int32_t>((i * 7919) % vocab);  // masked rows
    auto d_logits = upload(logits);
    auto d_targets = upload(targets);
    cuda::DeviceBuffer<float> d_rows(kN), d_grad(kN * vocab);
    const DeviceView<const float, 2> z = d_logits.view<2>({kN, vocab});
    const DeviceView<const std::int32_t, 1> t = d_targets.view<1>({kN});
    const CrossEntropyResult got = ops::cross_entropy(cuda_backend{}, z, host1(targets), t, d_rows.view<1>({kN}));
    ops::cross_entropy_backward(cuda_backend{}, z, host1(targets), t, 0.7, d_grad.view<2>({kN, vocab}));
    QLIP_CUDA_CHECK(cudaDeviceSynchronize());
    const HostView<const float, 2> z_host(logits.data(), {kN, vocab});
    const CrossEntropyResult want = reference::cross_entropy(z_host, host1(targets));
    EXPECT_EQ(got.count, want.count);
    // logsumexp over up to 32000 terms in float: kF32Reduction.
    EXPECT_NEAR(got.loss, want.loss, test::kF32Reduction.atol + test::kF32Reduction.rtol * std::abs(want.loss));
    std::vector<float> grad_want(kN * vocab);
    reference::cross_entropy_backward(z_host, host1(targets), 0.7, HostView<float, 2>(grad_want.data(), {kN, vocab}));
    EXPECT_TRUE(test::all_close(host1(download(d_grad)), host1(grad_want), test::kF32Reduction));
  }
}

TEST(CudaCrossEntropy, TargetOutsideTheVocabularyThrowsBeforeAnyLaunch) {
  const std::vector<std::int32_t> targets{1, 13};
  DeviceView<const float, 2> z(nullptr, {2, 13}, {13, 1});
  DeviceView<const std::int32_t, 1> t(nullptr, {2}, {1});
  EXPECT_THROW(ops::cross_entropy(cuda_backend{}, z, host1(targets), t, DeviceView<float, 1>(nullptr, {2}, {1})),
               Error);
  EXPECT_THROW(ops::cross_entropy_backward(cuda_backend{}, z, host1(targets), t, 1.0,
                                           DeviceView<float, 2>(nullptr, {2, 13}, {13, 1})),
               Error);
}

}  // namespace
}  // namespace qlip
