/// @file fuzz_codes.cpp
/// @brief Fuzz target: the codes file `qlip decode` reads (read_codes_file in examples/cli/inputs.hpp)
///        for the tiny test model's 16 tokens of 28 bits, and the PNG names derived from its metadata.
#include "cli/inputs.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string path = qlip::fuzz::scratch_path("codes.safetensors");
  qlip::fuzz::write_file(path, data, size);
  qlip::fuzz::expect_only_qlip_errors("codes", [&] {
    const qlip::cli::CodesFile c = qlip::cli::read_codes_file(path, 16, 28);
    // What decode relies on: the arrays hold exactly images x tokens (x bits or groups) values.
    const auto n = static_cast<std::size_t>(c.images * c.patches);
    switch (c.kind) {
      case qlip::cli::CodesFile::Kind::indices:
        if (c.indices.size() != n) std::abort();
        break;
      case qlip::cli::CodesFile::Kind::bits:
        if (c.bits.size() != n * 28) std::abort();
        break;
      case qlip::cli::CodesFile::Kind::group_indices:
        if (c.group_size < 1 || 28 % c.group_size ||
            c.indices.size() != n * static_cast<std::size_t>(28 / c.group_size))
          std::abort();
        break;
    }
    if (!c.names.empty() && c.names.size() != static_cast<std::size_t>(c.images)) std::abort();
    (void)qlip::cli::png_names(c.names, static_cast<std::size_t>(c.images));
  });
  return 0;
}

#ifdef QLIP_FUZZ_LIBFUZZER
extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size, unsigned seed) {
  return qlip::fuzz::safetensors_custom_mutator(data, size, max_size, seed);
}
#endif
