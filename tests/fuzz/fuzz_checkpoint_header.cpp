/// @file fuzz_checkpoint_header.cpp
/// @brief Fuzz target: the model.safetensors header → structure detection (qlip::open_checkpoint)
///        with the fixed, valid config.json of the committed tiny checkpoint.
///
/// Input: one mode byte, then the header's JSON text. The tensor data is synthesized, so inputs stay
/// small (the tiny checkpoint's header is ~20 kB, its data 4.4 MB): the file is the length prefix,
/// the header and a sparse zero-filled data section (ftruncate, nothing written). Mode bit 0 set:
/// the harness first rewrites every entry's data_offsets to lay the tensors out one after another
/// (so mutated shapes reach structure detection instead of failing the size check); clear: the
/// header is used byte for byte (the reader's own checks, duplicate keys, depth).
#include "fuzz_common.hpp"
#include "qlip/model/checkpoint.hpp"

namespace {

constexpr std::uint64_t kMaxData = 64ull << 20;  // sparse, so only the size limit matters

const std::string& checkpoint_dir() {
  static const std::string dir = [] {
    const std::string d = qlip::fuzz::scratch_path("ck_header");
    ::mkdir(d.c_str(), 0755);
    qlip::fuzz::write_file(d + "/config.json",
                           qlip::fuzz::read_file(std::string(QLIP_TEST_DATA_DIR) + "/qlip/qlip-test-tiny/config.json"));
    return d;
  }();
  return dir;
}

/// Sequential data_offsets for every entry whose dtype and shape are well-formed; returns the data
/// size. Entries it cannot size keep what they had.
std::uint64_t fix_offsets(nlohmann::ordered_json& header) {
  std::uint64_t offset = 0, end = 0;
  if (!header.is_object()) return 0;
  for (auto it = header.begin(); it != header.end(); ++it) {
    auto& v = it.value();
    if (it.key() == "__metadata__" || !v.is_object()) continue;
    qlip::DType dt;
    if (!v.contains("dtype") || !v["dtype"].is_string() || !qlip::parse_dtype_name(v["dtype"].get<std::string>(), dt))
      continue;
    if (!v.contains("shape") || !v["shape"].is_array()) continue;
    std::uint64_t n = qlip::dtype_size(dt);
    bool ok = true;
    for (const auto& d : v["shape"]) {
      if (!d.is_number_unsigned() || __builtin_mul_overflow(n, d.get<std::uint64_t>(), &n)) ok = false;
    }
    if (!ok || offset + n > kMaxData) continue;
    v["data_offsets"] = {offset, offset + n};
    offset += n;
    end = std::max(end, offset);
  }
  return end;
}

/// The data size a header asks for: the largest data_offsets end (capped).
std::uint64_t data_size(const nlohmann::ordered_json& header) {
  std::uint64_t end = 0;
  if (!header.is_object()) return 0;
  for (const auto& [k, v] : header.items()) {
    if (!v.is_object() || !v.contains("data_offsets") || !v["data_offsets"].is_array()) continue;
    for (const auto& o : v["data_offsets"])
      if (o.is_number_unsigned())
        end = std::max<std::uint64_t>(end, std::min<std::uint64_t>(o.get<std::uint64_t>(), kMaxData));
  }
  return end;
}

void write_checkpoint(const std::string& path, const std::string& header, std::uint64_t data) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>(static_cast<std::uint64_t>(header.size()) >> (8 * i));
  bytes += header;
  qlip::fuzz::write_file(path, bytes);
  if (::truncate(path.c_str(), static_cast<off_t>(bytes.size() + data)) != 0) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::string& dir = checkpoint_dir();
  std::string header(reinterpret_cast<const char*>(data + 1), size - 1);
  std::uint64_t data_bytes = 0;
  bool parsed = false;
  try {
    qlip::detail::json_check_depth(header, "header", qlip::kJsonMaxDepth);  // dump() below recurses
    nlohmann::ordered_json j = nlohmann::ordered_json::parse(header, nullptr, false);
    if (!j.is_discarded()) {
      parsed = true;
      if (data[0] & 1) {
        data_bytes = fix_offsets(j);
        header = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      } else {
        data_bytes = data_size(j);
      }
    }
  } catch (const qlip::Error&) {
  }
  if (!parsed) data_bytes = 0;
  write_checkpoint(dir + "/model.safetensors", header, data_bytes);
  qlip::fuzz::expect_only_qlip_errors("checkpoint_header", [&] { (void)qlip::open_checkpoint(dir); });
  return 0;
}

#ifdef QLIP_FUZZ_LIBFUZZER
extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size, unsigned seed) {
  // Mutate the JSON after the mode byte; the mode byte itself changes through byte mutation.
  if (size >= 2 && seed % 2 == 0) {
    static const std::vector<std::string> dict = {"dtype",
                                                  "shape",
                                                  "data_offsets",
                                                  "__metadata__",
                                                  "vision_model.encoder.layers.0.mlp.fc1.weight",
                                                  "vision_model.encoder.layers.4095.x",
                                                  "vision_model.embeddings.position_embedding.weight",
                                                  "vision_decoder.position_embeddings",
                                                  "logit_scale"};
    if (std::size_t n = qlip::fuzz::mutate_json(data + 1, size - 1, max_size - 1, seed, dict)) return n + 1;
  }
  return LLVMFuzzerMutate(data, size, max_size);
}
#endif
