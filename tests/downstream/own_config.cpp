// Downstream program with a config of its own: the shapes of a checkpoint that is not one of the
// released QLIP models (here the small random checkpoint tests/data/qlip/qlip-test-tiny, written by
// tools/qlip_reference.py). It loads the folder, encodes an image and, with --time, reports the
// median time of a batch-8 encode (scripts/check_downstream.sh compares builds with it).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "qlip/qlip.hpp"

// --- a user's own config, verbatim in README.md ("Your own config") ---
struct MyTinyQlip {
  static constexpr const char* name = "my-tiny-qlip";
  static constexpr qlip::StackConfig eva{.hidden = 64, .layers = 2, .heads = 4, .intermediate = 176,
                                         .mlp = qlip::MlpKind::swiglu, .subln = true, .k_bias = false};
  static constexpr qlip::QlipConfig config{
      .vision = {.image_size = 32, .patch_size = 8, .stack = eva},
      .quantizer = {.bits = 28, .hidden_post_q = 64},
      .decoder = {.image_size = 32, .patch_size = 8, .stack = eva},
      .text = {.stack = {.hidden = 32, .layers = 2, .heads = 2, .intermediate = 128}},
      .projection_dim = 32,
  };
};
static_assert(qlip::qlip_config_tag<MyTinyQlip>);  // the concepts check the shapes at compile time
// --- end of the README excerpt ---

namespace {

/// Median milliseconds of one encode of `batch` copies of `pixels`, over `reps` timed runs.
template <class Model>
double median_encode_ms(const Model& model, const qlip::Tensor<float, 4>& batch_pixels, int reps) {
  qlip::Arena ws(model.encode_image_workspace_bytes(batch_pixels.size(0)));
  std::vector<double> ms;
  for (int r = 0; r < reps + 2; ++r) {  // two warm-up runs
    qlip::ArenaScope scope(ws);
    const auto t0 = std::chrono::steady_clock::now();
    const auto codes = model.encode_image(ws, batch_pixels.view());
    const auto t1 = std::chrono::steady_clock::now();
    if (codes.indices.numel() == 0) std::abort();
    if (r >= 2) ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  std::nth_element(ms.begin(), ms.begin() + static_cast<long>(ms.size() / 2), ms.end());
  return ms[ms.size() / 2];
}

const char* isa() {
#if defined(__AVX512F__)
  return "avx512";
#elif defined(__AVX2__) && defined(__FMA__)
  return "avx2+fma";
#else
  return "baseline (no avx2/fma)";
#endif
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 && !(argc == 5 && std::string(argv[3]) == "--time")) {
    std::fprintf(stderr, "usage: %s CHECKPOINT_DIR IMAGE [--time REPS]\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1], photo = argv[2];
  try {
    auto model = qlip::QlipModel<MyTinyQlip>::load(dir);  // or with_qlip_model<qlip::TypeList<MyTinyQlip, ...>>
    auto cfg = qlip::ClipPreprocessConfig::load(dir + "/preprocessor_config.json");
    const int s = model.image_size();
    qlip::Tensor<float, 4> pixels({1, 3, s, s});
    qlip::preprocess_clip_batch({qlip::read_image(photo)}, cfg, pixels.view());
    qlip::Arena ws(model.workspace_bytes(1));
    const auto codes = model.encode_image(ws, pixels.view());
    std::printf("%s: %lld tokens, first code %u (compiled for %s)\n", model.name(),
                static_cast<long long>(codes.indices.size(1)), codes.indices(0, 0), isa());
    if (argc == 5) {
      constexpr std::int64_t kBatch = 8;
      qlip::Tensor<float, 4> batch({kBatch, 3, s, s});
      for (std::int64_t b = 0; b < kBatch; ++b)
        std::copy_n(pixels.data(), pixels.numel(), batch.data() + b * pixels.numel());
      std::printf("encode batch %lld: median %.4f ms\n", static_cast<long long>(kBatch),
                  median_encode_ms(model, batch, std::atoi(argv[4])));
    }
  } catch (const qlip::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
