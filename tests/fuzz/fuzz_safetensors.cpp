/// @file fuzz_safetensors.cpp
/// @brief Fuzz target: SafetensorsFile::open on arbitrary bytes (a file in /dev/shm), then every
///        accessor on every tensor it accepts, and a write → reopen round trip that must reproduce
///        names, dtypes, shapes and bytes exactly.
#include "fuzz_common.hpp"
#include "qlip/io/safetensors.hpp"

namespace {

void touch(const qlip::SafetensorsFile& f) {
  std::vector<qlip::SafetensorsEntry> entries;
  for (const auto& t : f.tensors()) {
    const auto bytes = f.bytes(t.name);
    if (bytes.size() != static_cast<std::size_t>(t.numel()) * qlip::dtype_size(t.dtype)) std::abort();
    (void)f.to_float_vector(t.name);
    try {
      (void)f.to_float<2>(t.name);  // rank mismatch is an error, not a crash
    } catch (const qlip::Error&) {
    }
    try {
      (void)f.view<float, 1>(t.name);  // dtype, rank or alignment may not fit
    } catch (const qlip::Error&) {
    }
    entries.push_back({t.name, t.dtype, t.shape, bytes.data()});
  }
  // Round trip: what was accepted can be written and reads back identically.
  const std::string out = qlip::fuzz::scratch_path("roundtrip.safetensors");
  try {
    qlip::write_safetensors(out, entries, f.metadata());
  } catch (const qlip::Error&) {
    return;  // e.g. a name that is not UTF-8 cannot be encoded in a JSON header
  }
  const auto g = qlip::SafetensorsFile::open(out);
  if (g.tensors().size() != f.tensors().size() || g.metadata() != f.metadata()) std::abort();
  for (const auto& t : f.tensors()) {
    const auto& u = g.info(t.name);
    const auto a = f.bytes(t.name), b = g.bytes(t.name);
    if (u.dtype != t.dtype || u.shape != t.shape || a.size() != b.size() ||
        (a.size() && std::memcmp(a.data(), b.data(), a.size()) != 0))
      std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string path = qlip::fuzz::scratch_path("input.safetensors");
  qlip::fuzz::write_file(path, data, size);
  qlip::fuzz::expect_only_qlip_errors("safetensors", [&] { touch(qlip::SafetensorsFile::open(path)); });
  return 0;
}

#ifdef QLIP_FUZZ_LIBFUZZER
extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size, unsigned seed) {
  return qlip::fuzz::safetensors_custom_mutator(data, size, max_size, seed);
}
#endif
