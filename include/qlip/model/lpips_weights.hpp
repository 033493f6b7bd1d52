/// @file lpips_weights.hpp
/// @brief Storage and loading for an nn::Lpips network: one flat buffer that every parameter views
///        (the network is frozen, so there are no gradients), filled by name from safetensors files
///        in the `lpips` package's state_dict names.
///
/// Files: the full network (tools/make_lpips_weights.py: torchvision's VGG16 + the package's linear
/// heads) or the heads alone (`lin{0..4}.model.1.weight`, which scripts/setup.sh extracts from the
/// `lpips` wheel into third_party_data/; the VGG16 backbone does not exist offline).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qlip/core/error.hpp"
#include "qlip/io/safetensors.hpp"

namespace qlip {

/// What a load must find in the file.
enum class LpipsLoad {
  everything,   ///< every conv and head (a usable perceptual loss)
  heads_only,   ///< the five linear heads; the backbone is left as it is
};

/// Owns the values of `Net`'s parameters. Not copyable: the network's views point into it.
template <class Net>
class LpipsWeights {
 public:
  using T = typename Net::T;
  explicit LpipsWeights(Net& net) : net_(net) {
    std::int64_t total = 0;
    net_.visit_parameters([&](const std::string&, auto& p) { total += p.numel(); });
    values_.assign(static_cast<std::size_t>(total), T(0));
    std::int64_t offset = 0;
    net_.visit_parameters([&](const std::string&, auto& p) {
      using View = decltype(p.value);
      p.value = View(values_.data() + offset, p.shape);
      p.grad = View();
      offset += p.numel();
    });
  }
  LpipsWeights(const LpipsWeights&) = delete;
  LpipsWeights& operator=(const LpipsWeights&) = delete;

  /// Copies the tensors of `path` into the parameters of the same names.
  /// @throws qlip::Error naming the file and the first tensor that is missing or has another shape
  void load(const std::string& path, LpipsLoad what = LpipsLoad::everything) {
    const SafetensorsFile f = SafetensorsFile::open(path);
    net_.visit_parameters([&](const std::string& name, auto& p) {
      const bool head = name.starts_with("lin");
      if (what == LpipsLoad::heads_only && !head) return;
      QLIP_CHECK(f.contains(name), path, ": no tensor '", name, "'",
                 head ? " (not LPIPS weights?)"
                      : " (the VGG16 backbone: a file of the linear heads alone has none; tools/make_lpips_weights.py "
                        "writes a full one)");
      const auto& info = f.info(name);
      const std::vector<std::int64_t> want(p.shape.begin(), p.shape.end());
      QLIP_CHECK(info.shape == want, path, ": tensor '", name, "' has shape ", shape_text(info.shape), ", expected ",
                 shape_text(want));
      const std::vector<float> v = f.to_float_vector(name);
      for (std::size_t i = 0; i < v.size(); ++i) p.value.data()[i] = static_cast<T>(v[i]);
    });
  }

 private:
  static std::string shape_text(const std::vector<std::int64_t>& s) {
    std::string t = "[";
    for (std::size_t i = 0; i < s.size(); ++i) t += (i ? ", " : "") + std::to_string(s[i]);
    return t + "]";
  }
  Net& net_;
  std::vector<T> values_;
};

}  // namespace qlip
