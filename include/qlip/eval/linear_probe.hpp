/// @file linear_probe.hpp
/// @brief Linear-probe accuracy (MODEL.md §7.3: the paper's linear-probe numbers): multinomial
///        logistic regression on frozen features, trained on one split, scored top-1 on another.
///
/// Features are standardised with the training split's per-dimension mean and std; the classifier is
/// fit by full-batch gradient descent with Nesterov momentum on the mean cross-entropy plus
/// ½·λ‖W‖² (convex, so the optimiser only decides how close to the optimum we get; the defaults
/// are enough for the small feature widths qlip-eval probes). Deterministic: double precision,
/// fixed iteration order, no randomness.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip::eval {

struct LinearProbeOptions {
  double l2 = 1e-4;          ///< λ
  int iterations = 300;
  double learning_rate = 1.0;  ///< on standardised features
  double momentum = 0.9;
};

struct LinearProbeResult {
  double train_top1 = 0.0;
  double test_top1 = 0.0;
  double final_loss = 0.0;  ///< training objective at the end
};

namespace detail {
/// Softmax cross-entropy of logits z (one row) for label y; writes p = softmax(z) into p.
inline double softmax_ce(const double* z, int classes, int y, double* p) {
  double m = z[0];
  for (int c = 1; c < classes; ++c) m = std::max(m, z[c]);
  double s = 0;
  for (int c = 0; c < classes; ++c) s += (p[c] = std::exp(z[c] - m));
  for (int c = 0; c < classes; ++c) p[c] /= s;
  return -(z[y] - m - std::log(s));
}
}  // namespace detail

/// A fitted probe: the training split's standardisation and the weights, [classes, F + 1] with
/// the bias in the last column.
struct LinearClassifier {
  int classes = 0;
  std::int64_t features = 0;
  std::vector<double> mean, inv_std, weights;
  double final_loss = 0.0;  ///< training objective at the end

  /// The class of highest score for one feature row of `features` values.
  int predict(const float* x) const {
    int best = 0;
    double best_s = -1e300;
    for (int c = 0; c < classes; ++c) {
      const double* w = &weights[static_cast<std::size_t>(c * (features + 1))];
      double s = w[features];
      for (std::int64_t j = 0; j < features; ++j) s += w[j] * (x[j] - mean[j]) * inv_std[j];
      if (s > best_s) best_s = s, best = c;
    }
    return best;
  }
  /// Top-1 accuracy on (x [N, F], y [N]); 0 for no rows.
  double top1(HostView<const float, 2> x, const std::vector<int>& y) const {
    QLIP_CHECK(x.size(1) == features && static_cast<std::int64_t>(y.size()) == x.size(0), "linear probe: features [",
               x.size(0), ", ", x.size(1), "] do not match ", y.size(), " labels of width ", features);
    std::int64_t right = 0;
    for (std::int64_t i = 0; i < x.size(0); ++i) right += predict(x.data() + i * x.stride(0)) == y[static_cast<std::size_t>(i)];
    return y.empty() ? 0.0 : static_cast<double>(right) / static_cast<double>(y.size());
  }
};

/// Fits the probe on (train_x [N, F] contiguous rows, train_y [N]); labels in [0, classes).
inline LinearClassifier fit_linear_probe(HostView<const float, 2> train_x, const std::vector<int>& train_y, int classes,
                                         const LinearProbeOptions& opt = {}) {
  const std::int64_t n = train_x.size(0), f = train_x.size(1);
  QLIP_CHECK(n >= 1 && static_cast<std::int64_t>(train_y.size()) == n, "linear_probe: ", n, " training features but ",
             train_y.size(), " labels");
  QLIP_CHECK(classes >= 2, "linear_probe: needs at least 2 classes, got ", classes);
  for (int y : train_y) QLIP_CHECK(y >= 0 && y < classes, "linear_probe: training label ", y, " outside [0, ", classes, ")");
  LinearClassifier out;
  out.classes = classes;
  out.features = f;
  // Standardisation from the training split.
  std::vector<double>& mean = out.mean;
  std::vector<double>& inv_std = out.inv_std;
  mean.assign(static_cast<std::size_t>(f), 0.0);
  inv_std.assign(static_cast<std::size_t>(f), 0.0);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < f; ++j) mean[j] += train_x(i, j);
  for (auto& m : mean) m /= static_cast<double>(n);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < f; ++j) inv_std[j] += (train_x(i, j) - mean[j]) * (train_x(i, j) - mean[j]);
  for (auto& s : inv_std) s = 1.0 / std::sqrt(s / static_cast<double>(n) + 1e-12);
  const std::int64_t width = f + 1;  // bias column
  std::vector<double> xs(static_cast<std::size_t>(n * width));
  for (std::int64_t i = 0; i < n; ++i) {
    for (std::int64_t j = 0; j < f; ++j) xs[i * width + j] = (train_x(i, j) - mean[j]) * inv_std[j];
    xs[i * width + f] = 1.0;
  }
  std::vector<double>& w = out.weights;
  w.assign(static_cast<std::size_t>(classes * width), 0.0);
  std::vector<double> vel(w.size(), 0.0), grad(w.size()), look(w.size());
  std::vector<double> z(static_cast<std::size_t>(classes)), p(static_cast<std::size_t>(classes));
  const auto objective = [&](const std::vector<double>& wt, std::vector<double>* g) {
    double loss = 0;
    if (g) std::fill(g->begin(), g->end(), 0.0);
    for (std::int64_t i = 0; i < n; ++i) {
      const double* xi = &xs[i * width];
      for (int c = 0; c < classes; ++c) {
        double s = 0;
        for (std::int64_t j = 0; j < width; ++j) s += wt[c * width + j] * xi[j];
        z[c] = s;
      }
      loss += detail::softmax_ce(z.data(), classes, train_y[i], p.data());
      if (g) {
        p[train_y[i]] -= 1.0;
        for (int c = 0; c < classes; ++c)
          for (std::int64_t j = 0; j < width; ++j) (*g)[c * width + j] += p[c] * xi[j];
      }
    }
    loss /= static_cast<double>(n);
    double reg = 0;
    for (int c = 0; c < classes; ++c)
      for (std::int64_t j = 0; j < f; ++j) reg += wt[c * width + j] * wt[c * width + j];  // bias not penalised
    if (g) {
      for (auto& v : *g) v /= static_cast<double>(n);
      for (int c = 0; c < classes; ++c)
        for (std::int64_t j = 0; j < f; ++j) (*g)[c * width + j] += opt.l2 * wt[c * width + j];
    }
    return loss + 0.5 * opt.l2 * reg;
  };
  for (int it = 0; it < opt.iterations; ++it) {  // Nesterov: gradient at the look-ahead point
    for (std::size_t k = 0; k < w.size(); ++k) look[k] = w[k] + opt.momentum * vel[k];
    (void)objective(look, &grad);
    for (std::size_t k = 0; k < w.size(); ++k) {
      vel[k] = opt.momentum * vel[k] - opt.learning_rate * grad[k];
      w[k] += vel[k];
    }
  }
  out.final_loss = objective(w, nullptr);
  return out;
}

/// Fits on (train_x [N, F], train_y [N]) and scores on (test_x, test_y); labels in [0, classes).
inline LinearProbeResult linear_probe(HostView<const float, 2> train_x, const std::vector<int>& train_y,
                                      HostView<const float, 2> test_x, const std::vector<int>& test_y, int classes,
                                      const LinearProbeOptions& opt = {}) {
  QLIP_CHECK(test_x.size(1) == train_x.size(1) && static_cast<std::int64_t>(test_y.size()) == test_x.size(0),
             "linear_probe: test features [", test_x.size(0), ", ", test_x.size(1), "] do not match ", test_y.size(),
             " labels of width ", train_x.size(1));
  for (int y : test_y) QLIP_CHECK(y >= 0 && y < classes, "linear_probe: test label ", y, " outside [0, ", classes, ")");
  const LinearClassifier probe = fit_linear_probe(train_x, train_y, classes, opt);
  LinearProbeResult r;
  r.final_loss = probe.final_loss;
  r.train_top1 = probe.top1(train_x, train_y);
  r.test_top1 = probe.top1(test_x, test_y);
  return r;
}

}  // namespace qlip::eval
