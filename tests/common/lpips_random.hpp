/// @file lpips_random.hpp
/// @brief The deterministic "random" VGG16 backbone of the LPIPS tests, bit for bit the one
///        tools/make_lpips_fixtures.py builds (no VGG16 ImageNet weights exist offline): tensor t
///        (the index in visit_parameters order), element i gets
///          u = (splitmix64(t·2³² + i) >> 40) / 2²³ − 1      (exact in float and double, in [−1, 1))
///          weight = float(u · √(6 / fan_in)),  bias = float(u · 0.1)
///        with fan_in = C_in·9 (He-uniform: the activations keep their scale through 13 ReLU layers).
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

namespace qlip::test {

inline std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

/// u in [−1, 1) for element i of tensor t.
inline double lpips_test_uniform(std::uint64_t t, std::uint64_t i) {
  return static_cast<double>(splitmix64((t << 32) + i) >> 40) / 8388608.0 - 1.0;
}

/// Fills the conv weights and biases of an nn::Lpips (the lin heads are left alone) with the
/// backbone above.
template <class Net>
void fill_lpips_test_backbone(Net& net) {
  std::uint64_t t = 0;
  net.visit_parameters([&](const std::string& name, auto& p) {
    const std::uint64_t index = t++;
    if (name.starts_with("lin")) return;
    const bool bias = name.ends_with(".bias");
    const double scale = bias ? 0.1 : std::sqrt(6.0 / static_cast<double>(p.shape[1] * 9));
    for (std::int64_t i = 0; i < p.numel(); ++i)
      p.value.data()[i] = static_cast<typename Net::T>(
          static_cast<float>(lpips_test_uniform(index, static_cast<std::uint64_t>(i)) * scale));
  });
}

}  // namespace qlip::test
