/// @file test_conv_grad.cpp
/// @brief The convolutional ops of the perceptual network and the discriminator: conv2d (strides,
///        padding, 1×1 and 3×3), 2×2 max pooling, leaky ReLU, and the LPIPS ops (channel affine,
///        channel normalisation, layer distance). Each double reference backward against finite
///        differences; each CPU op against the float reference (forward, backward, accumulation
///        into non-zero gradients, skipped gradients); argument errors.
#include <gtest/gtest.h>

#include <cmath>

#include "common/compare.hpp"
#include "common/gradcheck.hpp"
#include "qlip/core/allocator.hpp"
#include "qlip/cpu/activation.hpp"
#include "qlip/cpu/conv2d.hpp"
#include "qlip/cpu/perceptual.hpp"
#include "qlip/reference/activation.hpp"
#include "qlip/reference/conv2d.hpp"
#include "qlip/reference/perceptual.hpp"

namespace qlip {
namespace {

using test::fill_normal;
using test::span_of;

struct ConvCase {
  std::int64_t b, ci, h, w, co, k;
  Conv2dGeometry g;
  bool bias;
};
// 3×3 same padding (VGG), 3×3 stride 2 (the discriminator's down-sampling conv), 1×1 (skip and
// LPIPS heads), 4×4 with odd input (StyleGAN2's blur kernel size), rectangular images, padding
// wider than the kernel's reach (whole output rows and columns of zeros).
constexpr ConvCase kConvCases[] = {{2, 3, 5, 5, 4, 3, {1, 1}, true},  {1, 2, 7, 6, 3, 3, {2, 1}, true},
                                   {2, 4, 3, 4, 5, 1, {1, 0}, false}, {1, 2, 7, 7, 2, 4, {2, 1}, true},
                                   {3, 1, 4, 6, 2, 3, {1, 0}, false}, {2, 2, 3, 5, 3, 3, {2, 2}, true}};

Extents<4> conv_out(const ConvCase& c) {
  return {c.b, c.co, detail::conv_output_extent(c.h, c.k, c.g), detail::conv_output_extent(c.w, c.k, c.g)};
}

TEST(ConvGrad, ReferenceConv2dMatchesFiniteDifferences) {
  std::uint64_t seed = 10;
  for (const ConvCase& c : kConvCases) {
    SCOPED_TRACE(::testing::Message() << "case ci " << c.ci << " k " << c.k << " stride " << c.g.stride << " pad "
                                      << c.g.pad);
    Tensor<double, 4> x({c.b, c.ci, c.h, c.w}), w({c.co, c.ci, c.k, c.k}), dy(conv_out(c)), y(conv_out(c));
    Tensor<double, 1> bias({c.bias ? c.co : 0});
    fill_normal(x, ++seed);
    fill_normal(w, ++seed);
    fill_normal(bias, ++seed);
    fill_normal(dy, ++seed);
    Tensor<double, 4> dx(x.shape()), dw(w.shape());
    Tensor<double, 1> db(bias.shape());
    reference::conv2d_backward<double>(x.view(), w.view(), dy.view(), dx.view(), dw.view(), db.view(), c.g);
    auto loss = [&] {
      reference::conv2d<double>(x.view(), w.view(), bias.view(), y.view(), c.g);
      return test::weighted_sum(dy, y);
    };
    std::vector<test::GradInput> in = {{"x", span_of(x), span_of(dx)}, {"w", span_of(w), span_of(dw)}};
    if (c.bias) in.push_back({"bias", span_of(bias), span_of(db)});
    EXPECT_TRUE(test::check_gradients(loss, in));
  }
}

TEST(ConvGrad, CpuConv2dMatchesReferenceAndAccumulates) {
  std::uint64_t seed = 50;
  // The kConvCases and a VGG-like layer with more images than threads.
  std::vector<ConvCase> cases(std::begin(kConvCases), std::end(kConvCases));
  cases.push_back({5, 16, 8, 8, 24, 3, {1, 1}, true});
  for (const ConvCase& c : cases) {
    SCOPED_TRACE(::testing::Message() << "case b " << c.b << " ci " << c.ci << " k " << c.k << " stride "
                                      << c.g.stride);
    Tensor<double, 4> xd({c.b, c.ci, c.h, c.w}), wd({c.co, c.ci, c.k, c.k}), dyd(conv_out(c)), dw0(wd.shape());
    Tensor<double, 1> bd({c.co}), db0({c.co});
    fill_normal(xd, ++seed);
    fill_normal(wd, ++seed);
    fill_normal(bd, ++seed);
    fill_normal(dyd, ++seed);
    fill_normal(dw0, ++seed);  // gradients already holding a value: backward must add to it
    fill_normal(db0, ++seed);
    const Tensor<float, 4> x = test::to_float(xd), w = test::to_float(wd), dy = test::to_float(dyd);
    const Tensor<float, 1> b = test::to_float(bd);
    const HostView<const float, 1> bias = c.bias ? HostView<const float, 1>(b.view()) : HostView<const float, 1>();
    Tensor<float, 4> y_ref(conv_out(c)), y(conv_out(c));
    Arena ws(ops::conv2d_workspace_bytes(cpu_backend{}, x.shape(), w.shape(), c.g));
    reference::conv2d<float>(x.view(), w.view(), bias, y_ref.view(), c.g);
    ops::conv2d(cpu_backend{}, ws, x.view(), w.view(), bias, y.view(), c.g);
    EXPECT_TRUE(test::all_close(test::as_const_view(y), test::as_const_view(y_ref), test::kF32Reduction));

    Tensor<float, 4> dx_ref(x.shape()), dx(x.shape()), dw_ref = test::to_float(dw0), dw = test::to_float(dw0);
    Tensor<float, 1> db_ref = test::to_float(db0), db = test::to_float(db0);
    reference::conv2d_backward<float>(x.view(), w.view(), dy.view(), dx_ref.view(), dw_ref.view(), db_ref.view(), c.g);
    ops::conv2d_backward(cpu_backend{}, ws, x.view(), w.view(), dy.view(), dx.view(), dw.view(), db.view(), c.g);
    EXPECT_TRUE(test::all_close(test::as_const_view(dx), test::as_const_view(dx_ref), test::kF32Reduction));
    EXPECT_TRUE(test::all_close(test::as_const_view(dw), test::as_const_view(dw_ref), test::kF32Reduction));
    EXPECT_TRUE(test::all_close(test::as_const_view(db), test::as_const_view(db_ref), test::kF32Reduction));

    // Skipped gradients: only dw (a frozen input), only dx (a frozen network, the LPIPS case).
    Tensor<float, 4> dw_only = test::to_float(dw0), dx_only(x.shape());
    ops::conv2d_backward(cpu_backend{}, ws, x.view(), w.view(), dy.view(), HostView<float, 4>(), dw_only.view(),
                         HostView<float, 1>(), c.g);
    EXPECT_TRUE(test::all_close(test::as_const_view(dw_only), test::as_const_view(dw_ref), test::kF32Reduction));
    ops::conv2d_backward(cpu_backend{}, ws, x.view(), w.view(), dy.view(), dx_only.view(), HostView<float, 4>(),
                         HostView<float, 1>(), c.g);
    EXPECT_TRUE(test::all_close(test::as_const_view(dx_only), test::as_const_view(dx_ref), test::kF32Reduction));
  }
}

TEST(ConvGrad, MaxPoolMatchesFiniteDifferencesAndTheCpuOp) {
  // Odd extents: the trailing row and column are dropped (floor mode) and get zero gradient.
  Tensor<double, 4> x({2, 3, 5, 6}), dy({2, 3, 2, 3}), y({2, 3, 2, 3}), dx({2, 3, 5, 6});
  fill_normal(x, 1);
  fill_normal(dy, 2);
  reference::max_pool2x2_backward<double>(x.view(), dy.view(), dx.view());
  auto loss = [&] {
    reference::max_pool2x2<double>(x.view(), y.view());
    return test::weighted_sum(dy, y);
  };
  EXPECT_TRUE(test::check_gradients(loss, {{"x", span_of(x), span_of(dx)}}));

  const Tensor<float, 4> xf = test::to_float(x), dyf = test::to_float(dy);
  Tensor<float, 4> yr({2, 3, 2, 3}), yc({2, 3, 2, 3}), dxr(xf.shape()), dxc(xf.shape());
  reference::max_pool2x2<float>(xf.view(), yr.view());
  ops::max_pool2x2(cpu_backend{}, xf.view(), yc.view());
  EXPECT_TRUE(test::all_close(test::as_const_view(yc), test::as_const_view(yr), test::kExact));
  reference::max_pool2x2_backward<float>(xf.view(), dyf.view(), dxr.view());
  ops::max_pool2x2_backward(cpu_backend{}, xf.view(), dyf.view(), dxc.view());
  EXPECT_TRUE(test::all_close(test::as_const_view(dxc), test::as_const_view(dxr), test::kExact));

  // Ties go to the first maximum of the window in row-major order (torch's choice).
  Tensor<float, 4> flat({1, 1, 2, 2}), out({1, 1, 1, 1}), g({1, 1, 1, 1}), dflat({1, 1, 2, 2});
  for (int i = 0; i < 4; ++i) flat.data()[i] = 1.0f;
  g.data()[0] = 3.0f;
  ops::max_pool2x2_backward(cpu_backend{}, flat.view(), g.view(), dflat.view());
  EXPECT_EQ(dflat.data()[0], 3.0f);
  EXPECT_EQ(dflat.data()[1] + dflat.data()[2] + dflat.data()[3], 0.0f);
}

TEST(ConvGrad, LeakyReluMatchesFiniteDifferencesAndTheCpuOp) {
  for (const double slope : {0.0, 0.2}) {
    const double gain = slope == 0.0 ? 1.0 : std::sqrt(2.0);  // ReLU (VGG16); StyleGAN2's lrelu
    Tensor<double, 2> x({7, 9}), dy({7, 9}), y({7, 9}), dx({7, 9});
    fill_normal(x, 3);
    fill_normal(dy, 4);
    reference::leaky_relu_backward<double>(x.view(), dy.view(), dx.view(), slope, gain);
    auto loss = [&] {
      reference::leaky_relu<double>(x.view(), y.view(), slope, gain);
      return test::weighted_sum(dy, y);
    };
    EXPECT_TRUE(test::check_gradients(loss, {{"x", span_of(x), span_of(dx)}}));
    const Tensor<float, 2> xf = test::to_float(x), dyf = test::to_float(dy);
    Tensor<float, 2> yr({7, 9}), yc({7, 9}), dxr({7, 9}), dxc({7, 9});
    reference::leaky_relu<float>(xf.view(), yr.view(), slope, gain);
    ops::leaky_relu(cpu_backend{}, xf.view(), yc.view(), slope, gain);
    EXPECT_TRUE(test::all_close(test::as_const_view(yc), test::as_const_view(yr), test::kExact));
    reference::leaky_relu_backward<float>(xf.view(), dyf.view(), dxr.view(), slope, gain);
    ops::leaky_relu_backward(cpu_backend{}, xf.view(), dyf.view(), dxc.view(), slope, gain);
    EXPECT_TRUE(test::all_close(test::as_const_view(dxc), test::as_const_view(dxr), test::kExact));
  }
}

TEST(ConvGrad, LpipsOpsMatchFiniteDifferences) {
  Tensor<double, 4> x({2, 5, 3, 4}), dy({2, 5, 3, 4}), y({2, 5, 3, 4}), dx({2, 5, 3, 4});
  Tensor<double, 1> a({5}), t({5});
  fill_normal(x, 5);
  fill_normal(dy, 6);
  fill_normal(a, 7);
  fill_normal(t, 8);
  reference::channel_affine_backward<double>(dy.view(), a.view(), dx.view());
  auto affine = [&] {
    reference::channel_affine<double>(x.view(), a.view(), t.view(), y.view());
    return test::weighted_sum(dy, y);
  };
  EXPECT_TRUE(test::check_gradients(affine, {{"x", span_of(x), span_of(dx)}}));

  reference::channel_normalize_backward<double>(x.view(), dy.view(), dx.view());
  auto normalize = [&] {
    reference::channel_normalize<double>(x.view(), y.view());
    return test::weighted_sum(dy, y);
  };
  EXPECT_TRUE(test::check_gradients(normalize, {{"x", span_of(x), span_of(dx)}}));

  Tensor<double, 4> f1({2, 5, 3, 4}), df1({2, 5, 3, 4});
  Tensor<double, 1> lin({5}), dd({2}), d({2});
  fill_normal(f1, 9);
  fill_normal(lin, 10, 1.0, 1.0);
  fill_normal(dd, 11);
  reference::lpips_layer_distance_backward<double>(x.view(), f1.view(), lin.view(), dd.view(), dx.view(), df1.view());
  auto distance = [&] {
    reference::lpips_layer_distance<double>(x.view(), f1.view(), lin.view(), d.view());
    return test::weighted_sum(dd, d);
  };
  EXPECT_TRUE(test::check_gradients(distance, {{"f0", span_of(x), span_of(dx)}, {"f1", span_of(f1), span_of(df1)}}));
}

TEST(ConvGrad, CpuLpipsOpsEqualTheReference) {
  // Bit-identical: the CPU ops run the reference loops per image.
  Tensor<double, 4> xd({3, 6, 4, 5}), dyd({3, 6, 4, 5}), f1d({3, 6, 4, 5});
  Tensor<double, 1> ad({6}), td({6}), lind({6}), ddd({3});
  fill_normal(xd, 21);
  fill_normal(dyd, 22);
  fill_normal(f1d, 23);
  fill_normal(ad, 24);
  fill_normal(td, 25);
  fill_normal(lind, 26, 1.0, 1.0);
  fill_normal(ddd, 27);
  const auto x = test::to_float(xd), dy = test::to_float(dyd), f1 = test::to_float(f1d);
  const auto a = test::to_float(ad), t = test::to_float(td), lin = test::to_float(lind), dd = test::to_float(ddd);
  const auto same4 = [](const auto& run_ref, const auto& run_cpu) {
    Tensor<float, 4> r({3, 6, 4, 5}), c({3, 6, 4, 5});
    run_ref(r.view());
    run_cpu(c.view());
    EXPECT_TRUE(test::all_close(test::as_const_view(c), test::as_const_view(r), test::kExact));
  };
  const cpu_backend be{};
  same4([&](HostView<float, 4> o) { reference::channel_affine<float>(x.view(), a.view(), t.view(), o); },
        [&](HostView<float, 4> o) { ops::channel_affine(be, x.view(), a.view(), t.view(), o); });
  same4([&](HostView<float, 4> o) { reference::channel_affine_backward<float>(dy.view(), a.view(), o); },
        [&](HostView<float, 4> o) { ops::channel_affine_backward(be, dy.view(), a.view(), o); });
  same4([&](HostView<float, 4> o) { reference::channel_normalize<float>(x.view(), o); },
        [&](HostView<float, 4> o) { ops::channel_normalize(be, x.view(), o); });
  same4([&](HostView<float, 4> o) { reference::channel_normalize_backward<float>(x.view(), dy.view(), o); },
        [&](HostView<float, 4> o) { ops::channel_normalize_backward(be, x.view(), dy.view(), o); });
  same4(
      [&](HostView<float, 4> o) {
        reference::lpips_layer_distance_backward<float>(x.view(), f1.view(), lin.view(), dd.view(), o, {});
      },
      [&](HostView<float, 4> o) { ops::lpips_layer_distance_backward(be, x.view(), f1.view(), lin.view(), dd.view(), o, {}); });
  Tensor<float, 1> dr({3}), dc({3});
  reference::lpips_layer_distance<float>(x.view(), f1.view(), lin.view(), dr.view());
  ops::lpips_layer_distance(be, x.view(), f1.view(), lin.view(), dc.view());
  EXPECT_TRUE(test::all_close(test::as_const_view(dc), test::as_const_view(dr), test::kExact));
}

TEST(ConvGrad, BadArgumentsNameTheProblem) {
  Tensor<float, 4> x({1, 3, 8, 8}), w({4, 2, 3, 3}), y({1, 4, 8, 8}), w_ok({4, 3, 3, 3}), y_bad({1, 4, 7, 8});
  Tensor<float, 1> b({5});
  Arena ws(1 << 20);
  const cpu_backend be{};
  test::expect_error_naming([&] { ops::conv2d(be, ws, x.view(), w.view(), {}, y.view(), {1, 1}); },
                            "takes 2 input channels");
  test::expect_error_naming([&] { ops::conv2d(be, ws, x.view(), w_ok.view(), b.view(), y.view(), {1, 1}); },
                            "bias has 5 elements");
  test::expect_error_naming([&] { ops::conv2d(be, ws, x.view(), w_ok.view(), {}, y_bad.view(), {1, 1}); },
                            "expected [1, 4, 8, 8]");
  test::expect_error_naming([&] { ops::conv2d(be, ws, x.view(), w_ok.view(), {}, y.view(), {0, 1}); },
                            "stride must be ≥ 1");
  Tensor<float, 4> tiny({1, 1, 1, 4}), pooled({1, 1, 0, 2});
  test::expect_error_naming([&] { ops::max_pool2x2(be, tiny.view(), pooled.view()); }, "smaller than the 2x2 window");
  Tensor<float, 4> f({2, 3, 2, 2});
  Tensor<float, 1> lin({4}), d({2});
  test::expect_error_naming([&] { ops::lpips_layer_distance(be, f.view(), f.view(), lin.view(), d.view()); },
                            "the linear head has 4 weights, the features 3 channels");
}

}  // namespace
}  // namespace qlip
