/// @file fuzz_preprocess.cpp
/// @brief Fuzz target: preprocessor_config.json through ClipPreprocessConfig::load (read_json +
///        from_json), with a JSON-aware mutator.
#include "fuzz_common.hpp"
#include "qlip/io/preprocess.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string path = qlip::fuzz::scratch_path("preprocessor_config.json");
  qlip::fuzz::write_file(path, data, size);
  qlip::fuzz::expect_only_qlip_errors("preprocess", [&] {
    const qlip::ClipPreprocessConfig c = qlip::ClipPreprocessConfig::load(path);
    if (c.shortest_edge <= 0 || c.crop_height <= 0 || c.crop_width <= 0) std::abort();  // load() promises this
  });
  return 0;
}

#ifdef QLIP_FUZZ_LIBFUZZER
extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size, unsigned seed) {
  static const std::vector<std::string> dict = {
      "size",         "shortest_edge", "crop_size",      "height",   "width",      "do_resize", "do_center_crop",
      "do_normalize", "do_rescale",    "rescale_factor", "resample", "image_mean", "image_std"};
  return qlip::fuzz::json_custom_mutator(data, size, max_size, seed, dict);
}
#endif
