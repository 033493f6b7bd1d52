/// @file fuzz_json.cpp
/// @brief Fuzz target: qlip::parse_json / parse_ordered_json (depth cap, duplicate keys, error
///        text), json_excerpt of whatever parsed, and the typed getters on it.
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  qlip::fuzz::expect_only_qlip_errors("json", [&] {
    const nlohmann::json j = qlip::parse_json(text, "input");
    const std::string e = qlip::json_excerpt(j);
    if (e.size() > qlip::kJsonExcerptBytes + 3) std::abort();  // the excerpt bound, "..." included
    const nlohmann::ordered_json o = qlip::parse_ordered_json(text, "input");
    if (o.size() != j.size()) std::abort();  // the same keys, in another order
    for (const char* key : {"a", "a.b", "vision_config.hidden_size", "size.shortest_edge"}) {
      try {
        (void)qlip::json_get_or<int>(j, key, 0);
      } catch (const qlip::Error&) {
      }
      try {
        (void)qlip::json_get<std::vector<double>>(j, key);
      } catch (const qlip::Error&) {
      }
    }
  });
  return 0;
}

#ifdef QLIP_FUZZ_LIBFUZZER
extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size, unsigned seed) {
  static const std::vector<std::string> dict = {"a", "b", "vision_config", "hidden_size", "size", "shortest_edge"};
  return qlip::fuzz::json_custom_mutator(data, size, max_size, seed, dict);
}
#endif
