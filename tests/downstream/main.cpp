// Downstream program: the README's usage example, built against the installed package (or
// add_subdirectory) and run on the small checkpoint in tests/data.
#include <cstdio>
#include <string>

#include "qlip/qlip.hpp"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s CHECKPOINT_DIR IMAGE\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1], photo = argv[2];
  // --- README example, verbatim from here ---
  qlip::with_qlip_model(dir, [&](auto& model) {  // picks the compiled config matching the folder
    auto cfg = qlip::ClipPreprocessConfig::load(dir + "/preprocessor_config.json");
    qlip::Tensor<float, 4> pixels({1, 3, model.image_size(), model.image_size()});
    qlip::preprocess_clip_batch({qlip::read_image(photo)}, cfg, pixels.view());
    qlip::Arena ws(model.workspace_bytes(1));
    auto codes = model.encode_image(ws, pixels.view());          // bits, uint32 indices, embeddings
    auto recon = model.decode(ws, codes.indices);                 // [1, 3, H, W], CLIP-normalised
    qlip::write_png("recon.png", qlip::postprocess_clip(recon.pixels.select(0, 0), cfg.mean, cfg.std));
    std::printf("%s: first code %u, %d bits per token\n", model.name(), codes.indices(0, 0), model.bits_per_token());
  });
  // --- end of README example ---
  std::printf("downstream: qlip %s ok\n", QLIP_VERSION_STRING);
  return 0;
}
