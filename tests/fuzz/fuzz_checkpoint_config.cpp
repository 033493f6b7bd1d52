/// @file fuzz_checkpoint_config.cpp
/// @brief Fuzz target: config.json → structure detection and cross-checks (qlip::open_checkpoint)
///        against the fixed, valid weights of the committed tiny checkpoint
///        (tests/data/qlip/qlip-test-tiny/model.safetensors, copied once to /dev/shm).
#include "fuzz_common.hpp"
#include "qlip/model/checkpoint.hpp"

namespace {

const std::string& checkpoint_dir() {
  static const std::string dir = [] {
    const std::string d = qlip::fuzz::scratch_path("ck_config");
    ::mkdir(d.c_str(), 0755);
    const std::string weights =
        qlip::fuzz::read_file(std::string(QLIP_TEST_DATA_DIR) + "/qlip/qlip-test-tiny/model.safetensors");
    qlip::fuzz::write_file(d + "/model.safetensors", weights);
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string& dir = checkpoint_dir();
  qlip::fuzz::write_file(dir + "/config.json", data, size);
  qlip::fuzz::expect_only_qlip_errors("checkpoint_config", [&] { (void)qlip::open_checkpoint(dir); });
  return 0;
}

#ifdef QLIP_FUZZ_LIBFUZZER
extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size, unsigned seed) {
  static const std::vector<std::string> dict = {"vision_config",
                                                "decoder_config",
                                                "text_config",
                                                "hidden_size",
                                                "num_hidden_layers",
                                                "intermediate_size",
                                                "num_attention_heads",
                                                "swiglu",
                                                "subln",
                                                "q_bias",
                                                "k_bias",
                                                "v_bias",
                                                "image_size",
                                                "patch_size",
                                                "num_channels",
                                                "quantizer",
                                                "quantizer_embed_type",
                                                "quantizer_cfg",
                                                "embed_dim",
                                                "group_size",
                                                "l2_norm",
                                                "hidden_size_post_q",
                                                "quantizer_l2_norm",
                                                "vocab_size",
                                                "max_position_embeddings",
                                                "eos_token_id",
                                                "projection_dim",
                                                "vision_projection_bias",
                                                "text_projection_bias",
                                                "layer_norm_eps",
                                                "hidden_act",
                                                "rope",
                                                "logit_scale_init_value"};
  return qlip::fuzz::json_custom_mutator(data, size, max_size, seed, dict);
}
#endif
