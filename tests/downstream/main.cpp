// Downstream smoke program: includes the umbrella header and runs a few library calls.
#include <cstdio>

#include "qlip/qlip.hpp"

int main() {
  qlip::Tensor<float, 2> x({2, 4});
  for (std::int64_t i = 0; i < x.numel(); ++i) x.data()[i] = qlip::Philox(7).normal(i);
  std::printf("downstream: qlip %s linked, x(1,3) = %.4f\n", QLIP_VERSION_STRING, x(1, 3));
  return 0;
}
