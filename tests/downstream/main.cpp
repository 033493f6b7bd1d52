// Downstream program: the README's usage example, built against the installed package (or
// add_subdirectory). It dispatches over the released configs, so scripts/check_downstream.sh runs it
// on folders it must refuse with one clear line (a missing folder; the small test checkpoint, which
// is no released config); own_config.cpp is the example that encodes with a config of its own.
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
  try {
    qlip::with_qlip_model(dir, [&](auto& model) {  // picks the released config matching the folder
      auto cfg = qlip::ClipPreprocessConfig::load(dir + "/preprocessor_config.json");
      qlip::Tensor<float, 4> pixels({1, 3, model.image_size(), model.image_size()});
      qlip::preprocess_clip_batch({qlip::read_image(photo)}, cfg, pixels.view());
      qlip::Arena ws(model.workspace_bytes(1));                 // no allocation inside forward
      auto codes = model.encode_image(ws, pixels.view());       // bits, uint32 indices, embeddings
      auto recon = model.decode(ws, codes.indices);              // [1, 3, H, W], CLIP-normalised
      qlip::write_png("recon.png", qlip::postprocess_clip(recon.pixels.select(0, 0), cfg.mean, cfg.std));
      std::printf("%s: first code %u, %d bits per token\n", model.name(), codes.indices(0, 0), model.bits_per_token());
    });
  } catch (const qlip::Error& e) {  // missing files, corrupt weights, an unknown config: one line
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  // --- end of README example ---
  std::printf("downstream: qlip %s ok\n", QLIP_VERSION_STRING);
  return 0;
}
