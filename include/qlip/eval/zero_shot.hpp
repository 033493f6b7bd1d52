/// @file zero_shot.hpp
/// @brief Zero-shot classification (MODEL.md §7.1, the CLIP protocol): each class's embedding is the
///        normalised mean of its prompts' normalised text embeddings (template ensemble); an image is
///        assigned the class of highest cosine similarity.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "qlip/core/allocator.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip::eval {

/// text [classes·templates, P] (row c·templates + t) → class embeddings [classes, P], unit norm.
inline Tensor<float, 2> class_embeddings(HostView<const float, 2> text, std::int64_t classes) {
  QLIP_CHECK(classes >= 1 && text.size(0) % classes == 0, "class_embeddings: ", text.size(0),
             " prompt embeddings are not a whole number of templates for ", classes, " classes");
  const std::int64_t templates = text.size(0) / classes, p = text.size(1);
  Tensor<float, 2> out({classes, p});
  std::vector<double> acc(static_cast<std::size_t>(p));
  for (std::int64_t c = 0; c < classes; ++c) {
    std::fill(acc.begin(), acc.end(), 0.0);
    for (std::int64_t t = 0; t < templates; ++t) {
      double n = 0;
      for (std::int64_t j = 0; j < p; ++j) n += static_cast<double>(text(c * templates + t, j)) * text(c * templates + t, j);
      n = std::max(std::sqrt(n), 1e-12);
      for (std::int64_t j = 0; j < p; ++j) acc[j] += text(c * templates + t, j) / n;
    }
    double n = 0;
    for (double v : acc) n += v * v;
    n = std::max(std::sqrt(n), 1e-12);
    for (std::int64_t j = 0; j < p; ++j) out(c, j) = static_cast<float>(acc[j] / n);
  }
  return out;
}

/// The predicted class of each image embedding [N, P] (normalisation does not change the argmax of
/// cosine similarity against unit class vectors, so raw embeddings are fine).
inline std::vector<int> zero_shot_predict(HostView<const float, 2> images, HostView<const float, 2> classes) {
  QLIP_CHECK(images.size(1) == classes.size(1), "zero_shot_predict: image embeddings have width ", images.size(1),
             ", class embeddings ", classes.size(1));
  std::vector<int> out(static_cast<std::size_t>(images.size(0)));
  for (std::int64_t i = 0; i < images.size(0); ++i) {
    int best = 0;
    double best_s = -1e300;
    for (std::int64_t c = 0; c < classes.size(0); ++c) {
      double s = 0;
      for (std::int64_t j = 0; j < images.size(1); ++j) s += static_cast<double>(images(i, j)) * classes(c, j);
      if (s > best_s) best_s = s, best = static_cast<int>(c);
    }
    out[static_cast<std::size_t>(i)] = best;
  }
  return out;
}

/// Fraction of predictions equal to the labels.
inline double top1(const std::vector<int>& predicted, const std::vector<int>& labels) {
  QLIP_CHECK(predicted.size() == labels.size(), "top1: ", predicted.size(), " predictions for ", labels.size(), " labels");
  std::int64_t right = 0;
  for (std::size_t i = 0; i < labels.size(); ++i) right += predicted[i] == labels[i];
  return labels.empty() ? 0.0 : static_cast<double>(right) / static_cast<double>(labels.size());
}

}  // namespace qlip::eval
