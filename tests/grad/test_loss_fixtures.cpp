/// @file test_loss_fixtures.cpp
/// @brief The stage-1 losses against PyTorch autograd: tests/data/losses/losses.json, written by
///        tools/make_loss_fixtures.py from the formulas of docs/MODEL.md (not from this code), holds
///        float32 inputs and the float64 losses and gradients of a few small cases. The float
///        reference and the CPU backend are both compared with it, at kF32Reduction for the
///        contrastive loss (a GEMM and B-long log-sum-exps) and kF32Op for MSE and BSQ.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include <nlohmann/json.hpp>

#include "common/compare.hpp"
#include "common/loss_test_util.hpp"
#include "qlip/core/allocator.hpp"
#include "qlip/cpu/bsq_loss.hpp"
#include "qlip/cpu/contrastive_loss.hpp"
#include "qlip/cpu/mse_loss.hpp"
#include "qlip/io/json.hpp"
#include "qlip/reference/bsq_loss.hpp"
#include "qlip/reference/contrastive_loss.hpp"
#include "qlip/reference/mse_loss.hpp"

namespace qlip {
namespace {

const nlohmann::json& fixture() {
  static const nlohmann::json j = read_json(std::string(QLIP_TEST_DATA_DIR) + "/losses/losses.json");
  return j;
}

/// A [rows, cols] float tensor from a flat row-major JSON array (the values are float32 already).
Tensor<float, 2> matrix(const nlohmann::json& a, std::int64_t rows, std::int64_t cols) {
  EXPECT_EQ(static_cast<std::int64_t>(a.size()), rows * cols);
  Tensor<float, 2> t({rows, cols});
  for (std::int64_t i = 0; i < t.numel(); ++i) t.data()[i] = a.at(static_cast<std::size_t>(i)).get<float>();
  return t;
}

TEST(LossFixtures, FileHasEveryLoss) {
  for (const char* key : {"contrastive", "mse", "bsq"}) {
    ASSERT_TRUE(fixture().contains(key)) << key;
    EXPECT_GE(fixture()[key].size(), 2u) << key;
  }
}

TEST(LossFixtures, ContrastiveMatchesPyTorch) {
  for (const nlohmann::json& c : fixture().at("contrastive")) {
    SCOPED_TRACE(c.at("name").get<std::string>());
    const std::int64_t n = c.at("batch"), e = c.at("dim");
    const ContrastiveRows rows{c.at("offset").get<std::int64_t>(), c.at("count").get<std::int64_t>()};
    const Tensor<float, 2> image = matrix(c.at("image"), n, e), text = matrix(c.at("text"), n, e);
    const Tensor<float, 2> di_want = matrix(c.at("d_image"), n, e), dt_want = matrix(c.at("d_text"), n, e);
    Tensor<float, 1> ls({1});
    ls(0) = c.at("logit_scale").get<float>();
    const double dloss = c.at("dloss");
    Arena ws(contrastive_loss_workspace_bytes(rows.count, n));
    const ContrastiveLossResult ref = reference::contrastive_loss(image.view(), text.view(), ls.view(), rows);
    const ContrastiveLossResult cpu = ops::contrastive_loss(cpu_backend{}, ws, image.view(), text.view(), ls.view(), rows);
    for (const ContrastiveLossResult& r : {ref, cpu}) {
      EXPECT_TRUE(test::scalar_close(r.loss, c.at("loss"), test::kF32Reduction));
      EXPECT_EQ(r.image_to_text_accuracy, c.at("image_to_text_accuracy").get<double>());
      EXPECT_EQ(r.text_to_image_accuracy, c.at("text_to_image_accuracy").get<double>());
    }
    Tensor<float, 2> di_ref({n, e}), dt_ref({n, e}), di({n, e}), dt({n, e});
    Tensor<float, 1> dls_ref({1}), dls({1});
    reference::contrastive_loss_backward<float>(image.view(), text.view(), ls.view(), dloss, di_ref.view(),
                                                dt_ref.view(), dls_ref.view(), rows);
    ops::contrastive_loss_backward(cpu_backend{}, ws, image.view(), text.view(), ls.view(), dloss, di.view(), dt.view(),
                                   dls.view(), rows);
    for (const Tensor<float, 2>* got : {&di_ref, &di})
      EXPECT_TRUE(test::all_close(test::as_const_view(*got), test::as_const_view(di_want), test::kF32Reduction));
    for (const Tensor<float, 2>* got : {&dt_ref, &dt})
      EXPECT_TRUE(test::all_close(test::as_const_view(*got), test::as_const_view(dt_want), test::kF32Reduction));
    for (const Tensor<float, 1>* got : {&dls_ref, &dls})
      EXPECT_TRUE(test::scalar_close((*got)(0), c.at("d_logit_scale"), test::kF32Reduction));
  }
}

TEST(LossFixtures, MseMatchesPyTorch) {
  for (const nlohmann::json& c : fixture().at("mse")) {
    SCOPED_TRACE(c.at("name").get<std::string>());
    const std::int64_t m = c.at("rows"), d = c.at("cols");
    const Tensor<float, 2> x_hat = matrix(c.at("x_hat"), m, d), x = matrix(c.at("x"), m, d);
    const Tensor<float, 2> want = matrix(c.at("dx_hat"), m, d);
    const double dloss = c.at("dloss");
    EXPECT_TRUE(test::scalar_close(reference::mse_loss(x_hat.view(), x.view()), c.at("loss"), test::kF32Op));
    EXPECT_TRUE(test::scalar_close(ops::mse_loss(cpu_backend{}, x_hat.view(), x.view()), c.at("loss"), test::kF32Op));
    Tensor<float, 2> dx_ref({m, d}), dx({m, d});
    reference::mse_loss_backward<float>(x_hat.view(), x.view(), dloss, dx_ref.view());
    ops::mse_loss_backward(cpu_backend{}, x_hat.view(), x.view(), dloss, dx.view());
    EXPECT_TRUE(test::all_close(test::as_const_view(dx_ref), test::as_const_view(want), test::kF32Op));
    EXPECT_TRUE(test::all_close(test::as_const_view(dx), test::as_const_view(want), test::kF32Op));
  }
}

TEST(LossFixtures, BsqMatchesPyTorch) {
  for (const nlohmann::json& c : fixture().at("bsq")) {
    SCOPED_TRACE(c.at("name").get<std::string>());
    const std::int64_t n = c.at("tokens"), l = c.at("bits");
    const Tensor<float, 2> z = matrix(c.at("z"), n, l), dzq = matrix(c.at("dz_q"), n, l);
    const Tensor<float, 2> zq_want = matrix(c.at("zq"), n, l), dz_want = matrix(c.at("dz"), n, l);
    BsqLossConfig cfg;
    cfg.mode = c.at("mode").get<std::string>() == "group" ? BsqEntropyMode::group : BsqEntropyMode::analytical;
    cfg.group_size = c.at("group_size");
    cfg.inv_temperature = c.at("inv_temperature");
    cfg.gamma0 = c.at("gamma0");
    cfg.gamma1 = c.at("gamma1");
    cfg.beta = c.at("beta");
    cfg.l2_norm = c.at("l2_norm");
    const double dloss = c.at("dloss");
    Arena ws(bsq_loss_workspace_bytes(l, cfg));
    const BsqLossResult ref = reference::bsq_loss(z.view(), cfg), cpu = ops::bsq_loss(cpu_backend{}, ws, z.view(), cfg);
    for (const BsqLossResult& r : {ref, cpu}) {
      EXPECT_TRUE(test::scalar_close(r.loss, c.at("loss"), test::kF32Op));
      EXPECT_TRUE(test::scalar_close(r.commitment, c.at("commitment"), test::kF32Op));
      EXPECT_TRUE(test::scalar_close(r.per_sample_entropy, c.at("per_sample_entropy"), test::kF32Op));
      EXPECT_TRUE(test::scalar_close(r.codebook_entropy, c.at("codebook_entropy"), test::kF32Op));
      EXPECT_TRUE(test::scalar_close(r.entropy_penalty, c.at("entropy_penalty"), test::kF32Op));
    }
    // The quantiser output with the float32 q_scale the model uses (MODEL.md §3.1).
    const float q_scale = cfg.l2_norm ? static_cast<float>(1.0 / std::sqrt(static_cast<double>(l))) : 1.0f;
    Tensor<float, 2> zq({n, l});
    ops::bsq_straight_through(cpu_backend{}, z.view(), q_scale, zq.view());
    EXPECT_TRUE(test::all_close(test::as_const_view(zq), test::as_const_view(zq_want), test::kF32Op));
    Tensor<float, 2> dz_ref({n, l}), dz({n, l});
    reference::bsq_loss_backward<float>(z.view(), cfg, dloss, dzq.view(), dz_ref.view());
    ops::bsq_loss_backward(cpu_backend{}, ws, z.view(), cfg, dloss, dzq.view(), dz.view());
    EXPECT_TRUE(test::all_close(test::as_const_view(dz_ref), test::as_const_view(dz_want), test::kF32Op));
    EXPECT_TRUE(test::all_close(test::as_const_view(dz), test::as_const_view(dz_want), test::kF32Op));
  }
}

}  // namespace
}  // namespace qlip
