/// @file parameters.hpp
/// @brief Where module weights come from (WeightSource), and the two parameter holders every tower
///        uses: Linear (PyTorch [out, in] weight + optional bias) and LayerNorm (gamma, beta).
///
/// Accumulation contract (for the backward pass this design leaves room for): forward writes its
/// output with `=`; a future backward adds parameter gradients with `+=` into a gradient holder of
/// the same shapes.
///
/// Weights stay in PyTorch layout ([out, in], row-major) so the linear op reads them with no copy;
/// the rearrangements of the frozen inference layer happen in nn/encoder_layer.hpp. Forwards call
/// the ops unqualified with the caller's backend, so this header includes no backend.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "qlip/core/allocator.hpp"
#include "qlip/core/backend.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/reference/ops.hpp"

namespace qlip::nn {

/// A source of named float32 weights (a checkpoint, or an in-memory map in unit tests).
/// Implementations convert from the stored dtype and throw qlip::Error when a tensor is missing
/// (naming the tensor and the file) or has the wrong shape (naming the tensor, expected and actual).
class WeightSource {
 public:
  virtual ~WeightSource() = default;
  /// True when the source holds a tensor of that name.
  virtual bool contains(const std::string& name) const = 0;
  /// Copies tensor `name` as float32 into dst (numel(shape) floats, row-major) after checking that
  /// its shape is exactly `shape`.
  virtual void read(const std::string& name, std::span<const std::int64_t> shape, float* dst) = 0;
  /// Every tensor name in the source (for aliased buffers such as `*.rope.freqs_cos`).
  virtual std::vector<std::string> names() const = 0;
  /// The stored shape of a tensor (throws like read() when it is missing).
  virtual std::vector<std::int64_t> shape_of(const std::string& name) const = 0;
  /// Records a non-fatal finding (an unexpected buffer shape, a recomputed table). The library
  /// never prints; the caller decides what to do with the collected warnings.
  virtual void warn(const std::string& message) { (void)message; }
};

/// Reads a tensor of known shape into a new host Tensor.
/// @tparam R rank
template <int R>
Tensor<float, R> load_tensor(WeightSource& src, const std::string& name, const Extents<R>& shape) {
  Tensor<float, R> t(shape);
  src.read(name, std::span<const std::int64_t>(shape.data(), R), t.data());
  return t;
}

/// Whether a Linear has a bias (a scoped enum, not a bool, so call sites say what they mean).
enum class Bias : std::uint8_t { none, present };

inline Bias bias_if(bool present) { return present ? Bias::present : Bias::none; }

/// y = x·Wᵀ + b with W in PyTorch [out, in] layout.
struct Linear {
  Tensor<float, 2> weight;  // [out, in]
  Tensor<float, 1> bias;    // [out], or empty (numel 0) for no bias

  /// Loads `<prefix>.weight` [out, in] and, when `bias == Bias::present`, `<prefix>.bias` [out].
  void load(WeightSource& src, const std::string& prefix, std::int64_t out, std::int64_t in, Bias b) {
    weight = load_tensor<2>(src, prefix + ".weight", {out, in});
    bias = b == Bias::present ? load_tensor<1>(src, prefix + ".bias", {out}) : Tensor<float, 1>();
  }

  std::int64_t out_features() const { return weight.size(0); }
  std::int64_t in_features() const { return weight.size(1); }
  bool has_bias() const { return bias.numel() > 0; }
  std::int64_t parameter_count() const { return weight.numel() + bias.numel(); }

  HostView<const float, 1> bias_view() const { return has_bias() ? bias.view() : HostView<const float, 1>(); }

  /// y[M, out] = x[M, in]·Wᵀ + b.
  template <backend B>
  void forward(B be, HostView<const float, 2> x, HostView<float, 2> y) const {
    linear(be, x, weight.view(), bias_view(), y);
  }
};

/// torch.nn.LayerNorm(D) parameters. eps is a run-time value (read from config.json).
struct LayerNorm {
  Tensor<float, 1> weight;  // [D]
  Tensor<float, 1> bias;    // [D]
  float eps = 1e-5f;

  void load(WeightSource& src, const std::string& prefix, std::int64_t d, float epsilon) {
    weight = load_tensor<1>(src, prefix + ".weight", {d});
    bias = load_tensor<1>(src, prefix + ".bias", {d});
    eps = epsilon;
  }
  std::int64_t parameter_count() const { return weight.numel() + bias.numel(); }

  /// y[M, D] = LN(x[M, D]); y may alias x.
  template <backend B>
  void forward(B be, HostView<const float, 2> x, HostView<float, 2> y) const {
    layer_norm(be, x, weight.view(), bias.view(), eps, y);
  }
};

/// The context an inference forward returns. A training forward would return the activations its
/// backward needs instead; callers already write `auto ctx = module.forward(ws, ...)`.
struct InferenceContext {};

}  // namespace qlip::nn
