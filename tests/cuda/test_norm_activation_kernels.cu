/// @file test_norm_activation_kernels.cu
/// @brief The CUDA RMSNorm and LayerNorm training forwards and backwards and the activation
///        backwards vs the plain-loop reference on the same inputs: odd row counts, a wide and an
///        odd normalised dimension, accumulation into pre-filled parameter gradients, and empty
///        (not wanted) gradient views. Skips the device tests (GTEST_SKIP) without a CUDA device;
///        the argument checks run anyway, since they throw before any launch.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <tuple>

#include "common/compare.hpp"
#include "cuda_test_util.hpp"
#include "qlip/reference/activation.hpp"
#include "qlip/reference/layer_norm.hpp"
#include "qlip/reference/rms_norm.hpp"

#include "common.cuh"
#include "elementwise.cuh"
#include "layer_norm.cuh"
#include "rms_norm.cuh"

namespace qlip {
namespace {

using test::download;
using test::random_matrix;
using test::random_vector;
using test::upload;

constexpr float kEps = 1e-6f;

void sync() { QLIP_CUDA_CHECK(cudaDeviceSynchronize()); }

/// (rows, D): odd row counts so the last block of warps is partly idle; D = 768 (a model width,
/// a multiple of the warp) and 77 (not a multiple of 32, so lanes own unequal column counts and
/// the last column tile of the parameter gradients is partial).
class CudaNormActivation : public ::testing::TestWithParam<std::tuple<std::int64_t, std::int64_t>> {
 protected:
  std::int64_t rows() const { return std::get<0>(GetParam()); }
  std::int64_t cols() const { return std::get<1>(GetParam()); }
};

// ---- RMSNorm ----

TEST_P(CudaNormActivation, RmsNormMatchesReference) {
  QLIP_REQUIRE_GPU();
  const std::int64_t M = rows(), D = cols();
  auto x = random_matrix(M, D, 11, 2.0f);
  auto w = random_vector(D, 12, 0.5f, 1.0f);
  auto d_x = upload(x), d_w = upload(w);
  cuda::DeviceBuffer<float> d_y(M * D);
  ops::rms_norm(cuda_backend{}, d_x.view<2>({M, D}), d_w.view<1>({D}), kEps, d_y.view<2>({M, D}));
  sync();
  Tensor<float, 2> ref({M, D});
  reference::rms_norm(x.view(), w.view(), kEps, ref.view());
  EXPECT_TRUE(test::all_close(download<float, 2>(d_y, {M, D}).view(), ref.view(), test::kF32Op));
  // In place (y aliases x): each lane reads its columns before writing them.
  ops::rms_norm(cuda_backend{}, d_x.view<2>({M, D}), d_w.view<1>({D}), kEps, d_x.view<2>({M, D}));
  sync();
  EXPECT_TRUE(test::all_close(download<float, 2>(d_x, {M, D}).view(), ref.view(), test::kF32Op));
}

TEST_P(CudaNormActivation, RmsNormTrainMatchesReference) {
  QLIP_REQUIRE_GPU();
  const std::int64_t M = rows(), D = cols();
  auto x = random_matrix(M, D, 21, 2.0f);
  auto w = random_vector(D, 22, 0.5f, 1.0f);
  auto d_x = upload(x), d_w = upload(w);
  cuda::DeviceBuffer<float> d_y(M * D), d_rstd(M);
  ops::rms_norm_train(cuda_backend{}, d_x.view<2>({M, D}), d_w.view<1>({D}), kEps, d_y.view<2>({M, D}),
                      d_rstd.view<1>({M}));
  sync();
  Tensor<float, 2> ref_y({M, D});
  Tensor<float, 1> ref_rstd({M});
  reference::rms_norm_train<float>(x.view(), w.view(), kEps, ref_y.view(), ref_rstd.view());
  EXPECT_TRUE(test::all_close(download<float, 2>(d_y, {M, D}).view(), ref_y.view(), test::kF32Op));
  EXPECT_TRUE(test::all_close(download<float, 1>(d_rstd, {M}).view(), ref_rstd.view(), test::kF32Op));
}

/// The inputs of an RMSNorm backward: x, weight, the reference's saved rstd, upstream dy.
struct RmsBackwardInputs {
  Tensor<float, 2> x, dy;
  Tensor<float, 1> w, rstd;
  RmsBackwardInputs(std::int64_t M, std::int64_t D)
      : x(random_matrix(M, D, 31, 2.0f)), dy(random_matrix(M, D, 32)), w(random_vector(D, 33, 0.5f, 1.0f)),
        rstd({M}) {
    Tensor<float, 2> y({M, D});
    reference::rms_norm_train<float>(x.view(), w.view(), kEps, y.view(), rstd.view());
  }
};

TEST_P(CudaNormActivation, RmsNormBackwardMatchesReference) {
  QLIP_REQUIRE_GPU();
  const std::int64_t M = rows(), D = cols();
  RmsBackwardInputs in(M, D);
  // dweight is accumulated: both sides start from the same non-zero values.
  auto ref_dw = random_vector(D, 34);
  Tensor<float, 2> ref_dx({M, D});
  reference::rms_norm_backward<float>(in.x.view(), in.w.view(), in.rstd.view(), in.dy.view(), ref_dx.view(),
                                      ref_dw.view());
  auto d_x = upload(in.x), d_w = upload(in.w), d_rstd = upload(in.rstd), d_dy = upload(in.dy);
  auto d_dw = upload(random_vector(D, 34));
  cuda::DeviceBuffer<float> d_dx(M * D);
  ops::rms_norm_backward(cuda_backend{}, d_x.view<2>({M, D}), d_w.view<1>({D}), d_rstd.view<1>({M}),
                         d_dy.view<2>({M, D}), d_dx.view<2>({M, D}), d_dw.view<1>({D}));
  sync();
  EXPECT_TRUE(test::all_close(download<float, 2>(d_dx, {M, D}).view(), ref_dx.view(), test::kF32Op));
  EXPECT_TRUE(test::all_close(download<float, 1>(d_dw, {D}).view(), ref_dw.view(), test::kF32Reduction));
}

TEST_P(CudaNormActivation, RmsNormBackwardSkipsUnwantedGradients) {
  QLIP_REQUIRE_GPU();
  const std::int64_t M = rows(), D = cols();
  RmsBackwardInputs in(M, D);
  auto ref_dw = random_vector(D, 35);
  Tensor<float, 2> ref_dx({M, D});
  reference::rms_norm_backward<float>(in.x.view(), in.w.view(), in.rstd.view(), in.dy.view(), ref_dx.view(),
                                      ref_dw.view());
  auto d_x = upload(in.x), d_w = upload(in.w), d_rstd = upload(in.rstd);
  const auto x = d_x.view<2>({M, D});
  const auto w = d_w.view<1>({D});
  const auto rstd = d_rstd.view<1>({M});
  {
    SCOPED_TRACE("dweight only");
    auto d_dy = upload(in.dy), d_dw = upload(random_vector(D, 35));
    ops::rms_norm_backward(cuda_backend{}, x, w, rstd, d_dy.view<2>({M, D}), {}, d_dw.view<1>({D}));
    sync();
    EXPECT_TRUE(test::all_close(download<float, 1>(d_dw, {D}).view(), ref_dw.view(), test::kF32Reduction));
  }
  {
    SCOPED_TRACE("dx only");
    auto d_dy = upload(in.dy);
    cuda::DeviceBuffer<float> d_dx(M * D);
    ops::rms_norm_backward(cuda_backend{}, x, w, rstd, d_dy.view<2>({M, D}), d_dx.view<2>({M, D}), {});
    sync();
    EXPECT_TRUE(test::all_close(download<float, 2>(d_dx, {M, D}).view(), ref_dx.view(), test::kF32Op));
  }
  {
    SCOPED_TRACE("dx aliases dy");  // dweight reads dy before dx overwrites it (stream order)
    auto d_dy = upload(in.dy), d_dw = upload(random_vector(D, 35));
    ops::rms_norm_backward(cuda_backend{}, x, w, rstd, d_dy.view<2>({M, D}), d_dy.view<2>({M, D}), d_dw.view<1>({D}));
    sync();
    EXPECT_TRUE(test::all_close(download<float, 2>(d_dy, {M, D}).view(), ref_dx.view(), test::kF32Op));
    EXPECT_TRUE(test::all_close(download<float, 1>(d_dw, {D}).view(), ref_dw.view(), test::kF32Reduction));
  }
}

// ---- LayerNorm ----

TEST_P(CudaNormActivation, LayerNormTrainMatchesReference) {
  QLIP_REQUIRE_GPU();
  const std::int64_t M = rows(), D = cols();
  // A non-zero row mean (offset 0.5) so the centring matters.
  auto x = random_matrix(M, D, 41, 2.0f);
  for (std::int64_t i = 0; i < x.numel(); ++i) x.data()[i] += 0.5f;
  auto g = random_vector(D, 42, 0.5f, 1.0f), b = random_vector(D, 43);
  auto d_x = upload(x), d_g = upload(g), d_b = upload(b);
  cuda::DeviceBuffer<float> d_y(M * D), d_mean(M), d_rstd(M);
  ops::layer_norm_train(cuda_backend{}, d_x.view<2>({M, D}), d_g.view<1>({D}), d_b.view<1>({D}), kEps,
                        d_y.view<2>({M, D}), d_mean.view<1>({M}), d_rstd.view<1>({M}));
  sync();
  Tensor<float, 2> ref_y({M, D});
  Tensor<float, 1> ref_mean({M}), ref_rstd({M});
  reference::layer_norm_train<float>(x.view(), g.view(), b.view(), kEps, ref_y.view(), ref_mean.view(),
                                     ref_rstd.view());
  EXPECT_TRUE(test::all_close(download<float, 2>(d_y, {M, D}).view(), ref_y.view(), test::kF32Op));
  EXPECT_TRUE(test::all_close(download<float, 1>(d_mean, {M}).view(), ref_mean.view(), test::kF32Op));
  EXPECT_TRUE(test::all_close(download<float, 1>(d_rstd, {M}).view(), ref_rstd.view(), test::kF32Op));
}

/// The inputs of a LayerNorm backward: x, gamma, the reference's saved mean and rstd, upstream dy.
struct LayerNormBackwardInputs {
  Tensor<float, 2> x, dy;
  Tensor<float, 1> gamma, mean, rstd;
  LayerNormBackwardInputs(std::int64_t M, std::int64_t D)
      : x(random_matrix(M, D, 51, 2.0f)), dy(random_matrix(M, D, 52)), gamma(random_vector(D, 53, 0.5f, 1.0f)),
        mean({M}), rstd({M}) {
    for (std::int64_t i = 0; i < x.numel(); ++i) x.data()[i] += 0.5f;
    auto beta = random_vector(D, 54);
    Tensor<float, 2> y({M, D});
    reference::layer_norm_train<float>(x.view(), gamma.view(), beta.view(), kEps, y.view(), mean.view(), rstd.view());
  }
};

TEST_P(CudaNormActivation, LayerNormBackwardMatchesReference) {
  QLIP_REQUIRE_GPU();
  const std::int64_t M = rows(), D = cols();
  LayerNormBackwardInputs in(M, D);
  // dgamma and dbeta are accumulated: both sides start from the same non-zero values.
  auto ref_dg = random_vector(D, 55), ref_db = random_vector(D, 56);
  Tensor<float, 2> ref_dx({M, D});
  reference::layer_norm_backward<float>(in.x.view(), in.gamma.view(), in.mean.view(), in.rstd.view(), in.dy.view(),
                                        ref_dx.view(), ref_dg.view(), ref_db.view());
  auto d_x = upload(in.x), d_g = upload(in.gamma), d_mean = upload(in.mean), d_rstd = upload(in.rstd);
  auto d_dy = upload(in.dy), d_dg = upload(random_vector(D, 55)), d_db = upload(random_vector(D, 56));
  cuda::DeviceBuffer<float> d_dx(M * D);
  ops::layer_norm_backward(cuda_backend{}, d_x.view<2>({M, D}), d_g.view<1>({D}), d_mean.view<1>({M}),
                           d_rstd.view<1>({M}), d_dy.view<2>({M, D}), d_dx.view<2>({M, D}), d_dg.view<1>({D}),
                           d_db.view<1>({D}));
  sync();
  EXPECT_TRUE(test::all_close(download<float, 2>(d_dx, {M, D}).view(), ref_dx.view(), test::kF32Op));
  EXPECT_TRUE(test::all_close(download<float, 1>(d_dg, {D}).view(), ref_dg.view(), test::kF32Reduction));
  EXPECT_TRUE(test::all_close(download<float, 1>(d_db, {D}).view(), ref_db.view(), test::kF32Reduction));
}

TEST_P(CudaNormActivation, LayerNormBackwardSkipsUnwantedGradients) {
  QLIP_REQUIRE_GPU();
  const std::int64_t M = rows(), D = cols();
  LayerNormBackwardInputs in(M, D);
  auto ref_dg = random_vector(D, 57), ref_db = random_vector(D, 58);
  Tensor<float, 2> ref_dx({M, D});
  reference::layer_norm_backward<float>(in.x.view(), in.gamma.view(), in.mean.view(), in.rstd.view(), in.dy.view(),
                                        ref_dx.view(), ref_dg.view(), ref_db.view());
  auto d_x = upload(in.x), d_g = upload(in.gamma), d_mean = upload(in.mean), d_rstd = upload(in.rstd);
  const auto x = d_x.view<2>({M, D});
  const auto gamma = d_g.view<1>({D});
  const auto mean = d_mean.view<1>({M});
  const auto rstd = d_rstd.view<1>({M});
  {
    SCOPED_TRACE("dgamma only");
    auto d_dy = upload(in.dy), d_dg = upload(random_vector(D, 57));
    ops::layer_norm_backward(cuda_backend{}, x, gamma, mean, rstd, d_dy.view<2>({M, D}), {}, d_dg.view<1>({D}), {});
    sync();
    EXPECT_TRUE(test::all_close(download<float, 1>(d_dg, {D}).view(), ref_dg.view(), test::kF32Reduction));
  }
  {
    SCOPED_TRACE("dbeta only");
    auto d_dy = upload(in.dy), d_db = upload(random_vector(D, 58));
    ops::layer_norm_backward(cuda_backend{}, x, gamma, mean, rstd, d_dy.view<2>({M, D}), {}, {}, d_db.view<1>({D}));
    sync();
    EXPECT_TRUE(test::all_close(download<float, 1>(d_db, {D}).view(), ref_db.view(), test::kF32Reduction));
  }
  {
    SCOPED_TRACE("dx only");
    auto d_dy = upload(in.dy);
    cuda::DeviceBuffer<float> d_dx(M * D);
    ops::layer_norm_backward(cuda_backend{}, x, gamma, mean, rstd, d_dy.view<2>({M, D}), d_dx.view<2>({M, D}), {},
                             {});
    sync();
    EXPECT_TRUE(test::all_close(download<float, 2>(d_dx, {M, D}).view(), ref_dx.view(), test::kF32Op));
  }
  {
    SCOPED_TRACE("nothing wanted");
    auto d_dy = upload(in.dy);
    ops::layer_norm_backward(cuda_backend{}, x, gamma, mean, rstd, d_dy.view<2>({M, D}), {}, {}, {});
    sync();
    EXPECT_TRUE(test::all_close(download<float, 2>(d_dy, {M, D}).view(), in.dy.view(), test::kExact));
  }
  {
    SCOPED_TRACE("dx aliases dy");  // the parameter gradients read dy before dx overwrites it (stream order)
    auto d_dy = upload(in.dy), d_dg = upload(random_vector(D, 57)), d_db = upload(random_vector(D, 58));
    ops::layer_norm_backward(cuda_backend{}, x, gamma, mean, rstd, d_dy.view<2>({M, D}), d_dy.view<2>({M, D}),
                             d_dg.view<1>({D}), d_db.view<1>({D}));
    sync();
    EXPECT_TRUE(test::all_close(download<float, 2>(d_dy, {M, D}).view(), ref_dx.view(), test::kF32Op));
    EXPECT_TRUE(test::all_close(download<float, 1>(d_dg, {D}).view(), ref_dg.view(), test::kF32Reduction));
    EXPECT_TRUE(test::all_close(download<float, 1>(d_db, {D}).view(), ref_db.view(), test::kF32Reduction));
  }
}

// ---- activation backwards ----

using DeviceBackward = void (*)(cuda_backend, DeviceView<const float, 2>, DeviceView<const float, 2>,
                                DeviceView<float, 2>, cudaStream_t);
using HostBackward = void (*)(HostView<const float, 2>, HostView<const float, 2>, HostView<float, 2>);

TEST_P(CudaNormActivation, ActivationBackwardsMatchReference) {
  QLIP_REQUIRE_GPU();
  const std::int64_t M = rows(), D = cols();
  // Scale 3: the tails (where σ, Φ and tanh saturate) as well as the curved middle.
  auto x = random_matrix(M, D, 61, 3.0f), dy = random_matrix(M, D, 62);
  auto d_x = upload(x), d_dy = upload(dy);
  struct Case {
    const char* name;
    DeviceBackward device;
    HostBackward host;
  };
  const Case cases[] = {
      {"gelu", ops::gelu_backward, reference::gelu_backward<float>},
      {"quick_gelu", ops::quick_gelu_backward, reference::quick_gelu_backward<float>},
      {"silu", ops::silu_backward, reference::silu_backward<float>},
      {"tanh", ops::tanh_act_backward, reference::tanh_act_backward<float>},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    cuda::DeviceBuffer<float> d_dx(M * D);
    c.device(cuda_backend{}, d_x.view<2>({M, D}), d_dy.view<2>({M, D}), d_dx.view<2>({M, D}), 0);
    sync();
    Tensor<float, 2> ref({M, D});
    c.host(x.view(), dy.view(), ref.view());
    EXPECT_TRUE(test::all_close(download<float, 2>(d_dx, {M, D}).view(), ref.view(), test::kF32Op));
    // dx aliasing dy: each element is read before it is written, by the same thread.
    auto d_inplace = upload(dy);
    c.device(cuda_backend{}, d_x.view<2>({M, D}), d_inplace.view<2>({M, D}), d_inplace.view<2>({M, D}), 0);
    // Not wanted: an empty dx is skipped without touching anything.
    c.device(cuda_backend{}, d_x.view<2>({M, D}), d_dy.view<2>({M, D}), {}, 0);
    sync();
    EXPECT_TRUE(test::all_close(download<float, 2>(d_inplace, {M, D}).view(), ref.view(), test::kF32Op));
  }
  // The template entry point is the same kernel as the named wrappers.
  cuda::DeviceBuffer<float> d_dx(M * D);
  ops::activation_backward<Activation::silu>(cuda_backend{}, d_x.view<2>({M, D}), d_dy.view<2>({M, D}),
                                             d_dx.view<2>({M, D}));
  sync();
  Tensor<float, 2> ref({M, D});
  reference::silu_backward<float>(x.view(), dy.view(), ref.view());
  EXPECT_TRUE(test::all_close(download<float, 2>(d_dx, {M, D}).view(), ref.view(), test::kF32Op));
}

TEST_P(CudaNormActivation, SwigluBackwardMatchesReference) {
  QLIP_REQUIRE_GPU();
  const std::int64_t M = rows(), D = cols();
  auto gate = random_matrix(M, D, 71, 3.0f), lin = random_matrix(M, D, 72), dy = random_matrix(M, D, 73);
  Tensor<float, 2> ref_dgate({M, D}), ref_dlin({M, D});
  reference::swiglu_backward<float>(gate.view(), lin.view(), dy.view(), ref_dgate.view(), ref_dlin.view());
  auto d_gate = upload(gate), d_lin = upload(lin), d_dy = upload(dy);
  const auto g = d_gate.view<2>({M, D});
  const auto l = d_lin.view<2>({M, D});
  const auto d = d_dy.view<2>({M, D});
  {
    SCOPED_TRACE("both");
    cuda::DeviceBuffer<float> d_dgate(M * D), d_dlin(M * D);
    ops::swiglu_backward(cuda_backend{}, g, l, d, d_dgate.view<2>({M, D}), d_dlin.view<2>({M, D}));
    sync();
    EXPECT_TRUE(test::all_close(download<float, 2>(d_dgate, {M, D}).view(), ref_dgate.view(), test::kF32Op));
    EXPECT_TRUE(test::all_close(download<float, 2>(d_dlin, {M, D}).view(), ref_dlin.view(), test::kF32Op));
  }
  {
    SCOPED_TRACE("dgate only");
    cuda::DeviceBuffer<float> d_dgate(M * D);
    ops::swiglu_backward(cuda_backend{}, g, l, d, d_dgate.view<2>({M, D}), {});
    sync();
    EXPECT_TRUE(test::all_close(download<float, 2>(d_dgate, {M, D}).view(), ref_dgate.view(), test::kF32Op));
  }
  {
    SCOPED_TRACE("dlin only");
    cuda::DeviceBuffer<float> d_dlin(M * D);
    ops::swiglu_backward(cuda_backend{}, g, l, d, {}, d_dlin.view<2>({M, D}));
    sync();
    EXPECT_TRUE(test::all_close(download<float, 2>(d_dlin, {M, D}).view(), ref_dlin.view(), test::kF32Op));
  }
  {
    SCOPED_TRACE("outputs alias gate and lin");
    auto d_g2 = upload(gate), d_l2 = upload(lin);
    ops::swiglu_backward(cuda_backend{}, d_g2.view<2>({M, D}), d_l2.view<2>({M, D}), d, d_g2.view<2>({M, D}),
                         d_l2.view<2>({M, D}));
    sync();
    EXPECT_TRUE(test::all_close(download<float, 2>(d_g2, {M, D}).view(), ref_dgate.view(), test::kF32Op));
    EXPECT_TRUE(test::all_close(download<float, 2>(d_l2, {M, D}).view(), ref_dlin.view(), test::kF32Op));
  }
}

INSTANTIATE_TEST_SUITE_P(OddRowsTwoWidths, CudaNormActivation,
                         ::testing::Combine(::testing::Values<std::int64_t>(1, 7, 65, 989),
                                            ::testing::Values<std::int64_t>(768, 77)),
                         [](const ::testing::TestParamInfo<CudaNormActivation::ParamType>& info) {
                           return "M" + std::to_string(std::get<0>(info.param)) + "_D" +
                                  std::to_string(std::get<1>(info.param));
                         });

// ---- argument checks: host-side, before any launch, so they run without a device ----

TEST(CudaNormActivationErrors, BadShapesThrowBeforeLaunch) {
  const cuda_backend be{};
  using CV2 = DeviceView<const float, 2>;
  using CV1 = DeviceView<const float, 1>;
  using V2 = DeviceView<float, 2>;
  using V1 = DeviceView<float, 1>;
  // Null device pointers: nothing is dereferenced or launched when a check fails.
  const CV2 x(nullptr, {4, 8}, {8, 1});
  const CV2 dy(nullptr, {4, 8}, {8, 1});
  const CV2 dy_bad(nullptr, {4, 7}, {7, 1});
  const CV1 w(nullptr, {8}, {1});
  const CV1 w_bad(nullptr, {9}, {1});
  const CV1 rstd(nullptr, {4}, {1});
  const CV1 mean(nullptr, {4}, {1});
  const V2 y(nullptr, {4, 8}, {8, 1});
  const V2 out2_bad(nullptr, {8, 4}, {4, 1});
  const V1 stats_bad(nullptr, {5}, {1});
  const V1 grad1_bad(nullptr, {7}, {1});
  const V1 grad1(nullptr, {8}, {1});

  using test::expect_error_naming;
  expect_error_naming([&] { ops::rms_norm(be, x, w_bad, kEps, y); }, "rms_norm weight");
  expect_error_naming([&] { ops::rms_norm(be, x, w, kEps, out2_bad); }, "rms_norm output y");
  expect_error_naming([&] { ops::rms_norm_train(be, x, w, kEps, y, stats_bad); }, "rms_norm_train rstd");
  // x and y share the (null) base address: the training forward refuses the overlap.
  expect_error_naming([&] { ops::rms_norm_train(be, x, w, kEps, y, V1(nullptr, {4}, {1})); }, "overlaps input x");
  expect_error_naming([&] { ops::rms_norm_backward(be, x, w, rstd, dy, {}, grad1_bad); },
                      "rms_norm_backward: dweight");
  expect_error_naming([&] { ops::rms_norm_backward(be, x, w, rstd, dy, out2_bad, {}); }, "rms_norm_backward: dx");
  expect_error_naming([&] { ops::rms_norm_backward(be, x, w, rstd, dy_bad, {}, grad1); }, "rms_norm_backward: dy");

  expect_error_naming([&] { ops::layer_norm_train(be, x, w, w, kEps, y, stats_bad, V1(nullptr, {4}, {1})); },
                      "layer_norm_train mean");
  expect_error_naming([&] { ops::layer_norm_train(be, x, w, w_bad, kEps, y, V1(nullptr, {4}, {1}), stats_bad); },
                      "layer_norm beta");
  expect_error_naming([&] { ops::layer_norm_backward(be, x, w, mean, rstd, dy, {}, grad1_bad, {}); },
                      "layer_norm_backward: dgamma");
  expect_error_naming([&] { ops::layer_norm_backward(be, x, w, mean, rstd, dy, {}, {}, grad1_bad); },
                      "layer_norm_backward: dbeta");
  expect_error_naming([&] { ops::layer_norm_backward(be, x, w, mean, CV1(nullptr, {3}, {1}), dy, y, {}, {}); },
                      "layer_norm_backward: rstd");

  expect_error_naming([&] { ops::gelu_backward(be, x, dy_bad, y); }, "gelu_backward: dy");
  expect_error_naming([&] { ops::quick_gelu_backward(be, x, dy, out2_bad); }, "quick_gelu_backward: dx");
  expect_error_naming([&] { ops::silu_backward(be, x, dy_bad, {}); }, "silu_backward: dy");
  expect_error_naming([&] { ops::tanh_act_backward(be, x, dy, out2_bad); }, "tanh_act_backward: dx");
  expect_error_naming([&] { ops::swiglu_backward(be, x, dy_bad, dy, y, y); }, "swiglu_backward: lin");
  expect_error_naming([&] { ops::swiglu_backward(be, x, x, dy, y, out2_bad); }, "swiglu_backward: dlin");
}

TEST(CudaNormActivationErrors, EmptyWorkReturnsBeforeLaunch) {
  // No rows, or no gradient wanted: the launchers return after the checks, so no device is needed.
  const cuda_backend be{};
  const DeviceView<const float, 2> x0(nullptr, {0, 8}, {8, 1});
  const DeviceView<float, 2> y0(nullptr, {0, 8}, {8, 1});
  const DeviceView<const float, 1> w(nullptr, {8}, {1});
  const DeviceView<const float, 1> stats0(nullptr, {0}, {1});
  const DeviceView<float, 1> out_stats0(nullptr, {0}, {1});
  const DeviceView<float, 1> grad(nullptr, {8}, {1});
  EXPECT_NO_THROW(ops::rms_norm(be, x0, w, kEps, y0));
  EXPECT_NO_THROW(ops::rms_norm_train(be, x0, w, kEps, y0, out_stats0));
  EXPECT_NO_THROW(ops::rms_norm_backward(be, x0, w, stats0, x0, y0, grad));
  EXPECT_NO_THROW(ops::layer_norm_train(be, x0, w, w, kEps, y0, out_stats0, out_stats0));
  EXPECT_NO_THROW(ops::layer_norm_backward(be, x0, w, stats0, stats0, x0, y0, grad, grad));
  const DeviceView<const float, 2> x(nullptr, {4, 8}, {8, 1});
  EXPECT_NO_THROW(ops::gelu_backward(be, x, x, {}));
  EXPECT_NO_THROW(ops::swiglu_backward(be, x, x, x, {}, {}));
}

}  // namespace
}  // namespace qlip
