/// @file test_gemm_kernels.cu
/// @brief The cuBLASLt GEMM and linear of the CUDA backend (kernels/gemm.cuh) vs the plain-loop
///        reference on the same inputs: fp32, TF32 and bf16 inputs, the three transposes as views,
///        alpha/beta, the bias epilogue and linear's backward. Skipped (GTEST_SKIP) without a device.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "common/compare.hpp"
#include "cuda_test_util.hpp"
#include "qlip/core/allocator.hpp"
#include "qlip/core/dtype.hpp"
#include "qlip/core/philox.hpp"
#include "qlip/reference/gemm.hpp"

#include "common.cuh"
#include "convert.cuh"
#include "gemm.cuh"

namespace qlip {
namespace {

/// A row-major [rows, cols] matrix N(0, scale²) from Philox, on the host and the device.
struct Matrix {
  Tensor<float, 2> host;
  cuda::DeviceBuffer<float> dev;
  Matrix(std::int64_t rows, std::int64_t cols, std::uint64_t seed, float scale = 1.0f)
      : host({rows, cols}), dev(rows * cols) {
    Philox rng(seed);
    for (std::int64_t i = 0; i < host.numel(); ++i) host.data()[i] = scale * rng.normal(i);
    cuda::copy_to_device(dev.data(), host.data(), host.numel());
  }
  DeviceView<float, 2> view() const { return dev.view<2>(host.shape()); }
  Tensor<float, 2> download() const {
    Tensor<float, 2> t(host.shape());
    cuda::copy_to_host(t.data(), dev.data(), t.numel());
    return t;
  }
};

enum class Form { nn, nt, tn };
const char* form_name(Form f) {
  return f == Form::nn ? "NN" : (f == Form::nt ? "NT" : "TN");
}

/// c = alpha·op(a)·op(b) + beta·c on the device and by the reference; a and b are stored so that
/// NT reads b through a transposed view and TN reads a through one.
void check_gemm(std::int64_t m, std::int64_t k, std::int64_t n, Form form, float alpha, float beta,
                cuda::FloatMath math, test::Tolerance tol) {
  SCOPED_TRACE(::testing::Message() << form_name(form) << " " << m << "x" << k << "x" << n << " alpha " << alpha
                                    << " beta " << beta << (math == cuda::FloatMath::tf32 ? " tf32" : " fp32"));
  const cuda::BlasLt lt;
  const float scale = 1.0f / std::sqrt(static_cast<float>(k));  // products of order 1
  Matrix a_store = form == Form::tn ? Matrix(k, m, 1) : Matrix(m, k, 1);
  Matrix b_store = form == Form::nt ? Matrix(n, k, 2, scale) : Matrix(k, n, 2, scale);
  Matrix c(m, n, 3);
  Tensor<float, 2> want({m, n});
  std::copy(c.host.data(), c.host.data() + c.host.numel(), want.data());
  const auto as_operand = [](const auto& v, bool transposed) { return transposed ? v.transpose(0, 1) : v; };
  const HostView<const float, 2> a_host = as_operand(HostView<const float, 2>(a_store.host.view()), form == Form::tn);
  const HostView<const float, 2> b_host = as_operand(HostView<const float, 2>(b_store.host.view()), form == Form::nt);
  const DeviceView<const float, 2> a_dev = as_operand(DeviceView<const float, 2>(a_store.view()), form == Form::tn);
  const DeviceView<const float, 2> b_dev = as_operand(DeviceView<const float, 2>(b_store.view()), form == Form::nt);
  ops::gemm(cuda_backend{}, lt, a_dev, b_dev, c.view(), alpha, beta, math);
  QLIP_CUDA_CHECK(cudaDeviceSynchronize());
  reference::gemm(a_host, b_host, want.view(), alpha, beta);
  EXPECT_TRUE(test::all_close(c.download().view(), want.view(), tol));
}

const std::vector<std::vector<std::int64_t>> kShapes{{1, 1, 1}, {7, 33, 5}, {65, 300, 129}, {256, 768, 768}};

TEST(CudaGemm, Fp32MatchesReferenceInEveryForm) {
  QLIP_REQUIRE_GPU();
  for (const auto& s : kShapes)
    for (Form f : {Form::nn, Form::nt, Form::tn}) {
      check_gemm(s[0], s[1], s[2], f, 1.0f, 0.0f, cuda::FloatMath::fp32, test::kF32Reduction);
      check_gemm(s[0], s[1], s[2], f, 0.5f, 1.0f, cuda::FloatMath::fp32, test::kF32Reduction);
    }
}

TEST(CudaGemm, Tf32MatchesReferenceWithinItsRounding) {
  QLIP_REQUIRE_GPU();
  for (const auto& s : kShapes)
    for (Form f : {Form::nn, Form::nt, Form::tn})
      check_gemm(s[0], s[1], s[2], f, 1.0f, 0.0f, cuda::FloatMath::tf32, test::kTf32Gemm);
}

TEST(CudaGemm, Bf16InputsAccumulateInFp32) {
  QLIP_REQUIRE_GPU();
  // bf16 × bf16 products are exact in fp32, so against the reference on the same rounded values
  // only the summation order differs: kF32Reduction.
  const cuda::BlasLt lt;
  for (const auto& s : kShapes) {
    const std::int64_t m = s[0], k = s[1], n = s[2];
    SCOPED_TRACE(::testing::Message() << m << "x" << k << "x" << n);
    Matrix a(m, k, 4), b(k, n, 5, 1.0f / std::sqrt(static_cast<float>(k)));
    Tensor<bf16, 2> a16({m, k}), b16({k, n});
    Tensor<float, 2> a_r({m, k}), b_r({k, n}), want({m, n});
    for (std::int64_t i = 0; i < a16.numel(); ++i) {
      a16.data()[i] = bf16(a.host.data()[i]);
      a_r.data()[i] = static_cast<float>(a16.data()[i]);
    }
    for (std::int64_t i = 0; i < b16.numel(); ++i) {
      b16.data()[i] = bf16(b.host.data()[i]);
      b_r.data()[i] = static_cast<float>(b16.data()[i]);
    }
    cuda::DeviceBuffer<bf16> da(m * k), db(k * n);
    cuda::copy_to_device(da.data(), a16.data(), a16.numel());
    cuda::copy_to_device(db.data(), b16.data(), b16.numel());
    Matrix c(m, n, 6);
    ops::gemm(cuda_backend{}, lt, DeviceView<const bf16, 2>(da.view<2>({m, k})),
              DeviceView<const bf16, 2>(db.view<2>({k, n})), c.view());
    QLIP_CUDA_CHECK(cudaDeviceSynchronize());
    reference::gemm(a_r.view(), b_r.view(), want.view());
    EXPECT_TRUE(test::all_close(c.download().view(), want.view(), test::kF32Reduction));
  }
}

TEST(CudaConvert, Bf16RoundTripHasTheHostBits) {
  QLIP_REQUIRE_GPU();
  constexpr std::int64_t kN = 100003;
  Matrix x(1, kN, 15, 100.0f);
  x.host(0, 0) = 0.0f;
  x.host(0, 1) = -0.0f;
  x.host(0, 2) = 1.0f + 1.0f / 256.0f;  // a tie: rounds to even
  cuda::copy_to_device(x.dev.data(), x.host.data(), kN);
  cuda::DeviceBuffer<bf16> d16(kN);
  cuda::DeviceBuffer<float> back(kN);
  ops::convert(cuda_backend{}, DeviceView<const float, 1>(x.dev.view<1>({kN})), d16.view<1>({kN}));
  ops::convert(cuda_backend{}, DeviceView<const bf16, 1>(d16.view<1>({kN})), back.view<1>({kN}));
  QLIP_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<bf16> got(kN), want(kN);
  cuda::copy_to_host(got.data(), d16.data(), kN);
  round_to_bf16(x.host.data(), want.data(), kN);
  std::vector<float> back_host(kN);
  cuda::copy_to_host(back_host.data(), back.data(), kN);
  std::int64_t differ = 0;
  for (std::int64_t i = 0; i < kN; ++i) {
    differ += got[i].bits != want[i].bits ? 1 : 0;
    differ += back_host[i] != static_cast<float>(want[i]) ? 1 : 0;
  }
  EXPECT_EQ(differ, 0);
}

TEST(CudaLinear, ForwardWithBiasAndBackwardMatchReference) {
  QLIP_REQUIRE_GPU();
  const cuda::BlasLt lt;
  for (const auto& s : kShapes) {
    const std::int64_t m = s[0], k = s[1], n = s[2];
    SCOPED_TRACE(::testing::Message() << m << "x" << k << "x" << n);
    const float scale = 1.0f / std::sqrt(static_cast<float>(k));
    Matrix x(m, k, 7), w(n, k, 8, scale), bias(1, n, 9), y(m, n, 10), dy(m, n, 11);
    Matrix dx(m, k, 12), dw(n, k, 13), db(1, n, 14);  // dw, db pre-filled: the backward accumulates
    Tensor<float, 2> y_want({m, n}), dx_want({m, k}), dw_want({n, k}), db_want({1, n});
    std::copy(dw.host.data(), dw.host.data() + dw.host.numel(), dw_want.data());
    std::copy(db.host.data(), db.host.data() + db.host.numel(), db_want.data());
    const auto dev1 = [](const Matrix& v) { return v.dev.view<1>({v.host.numel()}); };
    ops::linear(cuda_backend{}, lt, x.view(), w.view(), dev1(bias), y.view());
    ops::linear_backward(cuda_backend{}, lt, x.view(), w.view(), dy.view(), dx.view(), dw.view(), dev1(db));
    QLIP_CUDA_CHECK(cudaDeviceSynchronize());
    reference::linear(x.host.view(), w.host.view(), bias.host.view().select(0, 0), y_want.view());
    reference::linear_backward<float>(x.host.view(), w.host.view(), dy.host.view(), dx_want.view(), dw_want.view(),
                                      db_want.view().select(0, 0));
    EXPECT_TRUE(test::all_close(y.download().view(), y_want.view(), test::kF32Reduction)) << "y";
    EXPECT_TRUE(test::all_close(dx.download().view(), dx_want.view(), test::kF32Reduction)) << "dx";
    EXPECT_TRUE(test::all_close(dw.download().view(), dw_want.view(), test::kF32Reduction)) << "dw";
    EXPECT_TRUE(test::all_close(db.download().view(), db_want.view(), test::kF32Reduction)) << "db";
  }
}

TEST(CudaLinear, BadShapesThrowBeforeAnyLaunch) {
  QLIP_REQUIRE_GPU();  // a BlasLt needs a device
  const cuda::BlasLt lt;
  DeviceView<const float, 2> x(nullptr, {4, 6}, {6, 1}), w(nullptr, {5, 7}, {7, 1});
  DeviceView<float, 2> y(nullptr, {4, 5}, {5, 1});
  EXPECT_THROW(ops::linear(cuda_backend{}, lt, x, w, {}, y), Error);
  DeviceView<const float, 2> strided(nullptr, {4, 6}, {12, 2});  // no unit stride
  DeviceView<const float, 2> b(nullptr, {6, 5}, {5, 1});
  EXPECT_THROW(ops::gemm(cuda_backend{}, lt, strided, b, y), Error);
}

}  // namespace
}  // namespace qlip
