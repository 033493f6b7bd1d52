/// @file fuzz_tokenizer.cpp
/// @brief Fuzz target: the CLIP tokenizer. Input byte 0 selects what the rest is:
///        even: UTF-8 text (any bytes) for encode / tokenize / decode / clean_text with the real CLIP
///        vocabulary (third_party_data, from scripts/setup.sh);
///        odd: a 4-byte little-endian length n, then n bytes of vocab.json and the rest as merges.txt,
///        loaded with ClipTokenizer::from_hf and, when that succeeds, used to encode a few texts.
///        Both modes also check the O(n log n) merge loop (BpeModel::bpe) against a transcription of
///        open_clip's quadratic one on the input's bytes: any difference aborts.
#include <memory>

#include "common/open_clip_bpe.hpp"
#include "fuzz_common.hpp"
#include "qlip/text/clip_tokenizer.hpp"

namespace {

const qlip::text::ClipTokenizer* clip() {
  static const std::unique_ptr<qlip::text::ClipTokenizer> tok = []() -> std::unique_ptr<qlip::text::ClipTokenizer> {
    const std::string gz = std::string(QLIP_VOCAB_DIR) + "/bpe_simple_vocab_16e6.txt.gz";
    if (::access(gz.c_str(), R_OK) != 0) {
      std::fprintf(stderr, "fuzz tokenizer: %s missing (run scripts/setup.sh); text inputs are skipped\n", gz.c_str());
      return nullptr;
    }
    return std::make_unique<qlip::text::ClipTokenizer>(qlip::text::ClipTokenizer::from_bpe_gz(gz));
  }();
  return tok.get();
}


/// The differential check, on at most 256 bytes (the reference is quadratic).
void check_merges(const qlip::text::detail::BpeModel& m, std::string_view bytes) {
  bytes = bytes.substr(0, std::min<std::size_t>(bytes.size(), 256));
  if (m.bpe(bytes) != qlip::test::reference_bpe(m, bytes)) {
    std::fprintf(stderr, "fuzz tokenizer: BpeModel::bpe differs from open_clip's merge loop\n");
    std::abort();
  }
}

const qlip::text::detail::BpeModel* clip_model() {
  static const std::unique_ptr<qlip::text::detail::BpeModel> m = []() -> std::unique_ptr<qlip::text::detail::BpeModel> {
    const std::string gz = std::string(QLIP_VOCAB_DIR) + "/bpe_simple_vocab_16e6.txt.gz";
    if (::access(gz.c_str(), R_OK) != 0) return nullptr;
    return std::make_unique<qlip::text::detail::BpeModel>(qlip::text::detail::load_bpe_gz(gz));
  }();
  return m.get();
}

void exercise(const qlip::text::ClipTokenizer& tok, std::string_view text) {
  const std::vector<std::int32_t> ids = tok.encode(text);
  for (std::int32_t id : ids)
    if (id < 0 || id >= tok.vocab_size()) std::abort();
  const std::vector<std::int32_t> row = tok.tokenize(text);
  if (row.size() != 77 || row[0] != tok.sot_id()) std::abort();
  (void)tok.decode(row);
  (void)tok.decode(ids);
  (void)qlip::text::clean_text(text);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  if ((data[0] & 1) == 0) {
    if (const auto* tok = clip()) qlip::fuzz::expect_only_qlip_errors("tokenizer", [&] { exercise(*tok, rest); });
    if (const auto* m = clip_model()) check_merges(*m, rest);
    return 0;
  }
  if (rest.size() < 4) return 0;
  std::uint32_t n = 0;
  for (int i = 3; i >= 0; --i) n = (n << 8) | static_cast<std::uint8_t>(rest[static_cast<std::size_t>(i)]);
  const std::string_view body = rest.substr(4);
  if (n > body.size()) n = static_cast<std::uint32_t>(body.size());
  const std::string vocab = qlip::fuzz::scratch_path("vocab.json"), merges = qlip::fuzz::scratch_path("merges.txt");
  qlip::fuzz::write_file(vocab, body.substr(0, n));
  qlip::fuzz::write_file(merges, body.substr(n));
  qlip::fuzz::expect_only_qlip_errors("tokenizer", [&] {
    const qlip::text::detail::BpeModel m = qlip::text::detail::load_hf(vocab, merges);
    for (std::string_view t : {std::string_view("aaaaaaaa"), std::string_view("a photo"), body}) check_merges(m, t);
    const auto tok = qlip::text::ClipTokenizer::from_hf(vocab, merges);
    for (std::string_view t : {std::string_view("a photo of a cat."), std::string_view("<start_of_text>x<end_of_text>"),
                               body.substr(0, std::min<std::size_t>(body.size(), 256))})
      exercise(tok, t);
  });
  return 0;
}
