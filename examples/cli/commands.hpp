/// @file commands.hpp
/// @brief The subcommands of the `qlip` CLI (info, encode, decode, reconstruct, classify, embed,
///        tokenize).
///
/// Shape of every command: cheap checks first (arguments, output location, input paths, labels,
/// tokenizer), then the model is loaded through qlip::with_qlip_model (which picks the compiled
/// config matching the checkpoint), then images are processed in batches of --batch with one arena
/// sized by the model's *_workspace_bytes(batch), and the output is written once at the end
/// (atomically, or all-or-nothing for decode's folder of PNGs).
///
/// Output conventions: results go to stdout; warnings go to stderr as "qlip: warning: ..." (not
/// printed with --quiet); the progress bar goes to stderr (only on a terminal by default). With
/// `-o -` the output file itself goes to stdout, and the lines that would have gone there (the
/// "wrote ..." line, reconstruct's table) go to stderr.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <iostream>
#include <map>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include "configs/small_qlip_configs.hpp"
#include "inputs.hpp"
#include "options.hpp"
#include "output.hpp"
#include "progress.hpp"
#include "qlip/cpu/threading.hpp"
#include "qlip/io/image.hpp"
#include "qlip/io/preprocess.hpp"
#include "qlip/io/safetensors.hpp"
#include "qlip/model/qlip_model.hpp"
#include "qlip/version.hpp"
#include "util.hpp"

namespace qlip::cli {

/// The configs the CLI dispatches over: the released checkpoints and the two small test checkpoints
/// (the demo and the CLI tests run those). A CLI for one's own checkpoints lists their tags here.
using CliConfigs = ExampleQlipConfigs;

/// Applies --threads (the only global option with a process-wide effect).
inline void apply_global_options(const GlobalOptions& g) {
  if (g.threads > 0) qlip::set_num_threads(g.threads);
}

namespace detail {

/// Prints "qlip: warning: ..." on stderr unless --quiet.
inline void warn(const GlobalOptions& g, const std::string& message) {
  if (g.quiet) return;
  ProgressBar::clear_active();
  std::fprintf(stderr, "qlip: warning: %s\n", one_line_message(message, false).c_str());
}

inline void warn_all(const GlobalOptions& g, const std::vector<std::string>& messages) {
  for (const auto& m : messages) warn(g, m);
}

/// At most the first `max_chars` bytes of `text`, cut at a UTF-8 character boundary, with "..."
/// when something was cut (for quoting user texts in one-line messages).
inline std::string abbreviate(const std::string& text, std::size_t max_chars = 60) {
  if (text.size() <= max_chars) return text;
  std::size_t cut = max_chars;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;  // not inside a character
  return text.substr(0, cut) + "...";
}

/// Warns about texts longer than the text context: tokenize() keeps only their first context − 2
/// BPE tokens (open_clip's behaviour), which silently changes what a prompt says. One warning per
/// text, the first few only, then a count.
class TruncationWarnings {
 public:
  TruncationWarnings(const GlobalOptions& g, int context, std::string what)
      : g_(g), context_(context), what_(std::move(what)), uncaught_(std::uncaught_exceptions()) {}
  /// Prints the count of warnings held back, unless an error is on its way (it gets the one line).
  ~TruncationWarnings() {
    if (hidden_ > 0 && std::uncaught_exceptions() <= uncaught_)
      warn(g_, std::to_string(hidden_) + " more " + what_ + (hidden_ == 1 ? " is" : "s are") + " cut the same way");
  }
  TruncationWarnings(const TruncationWarnings&) = delete;
  TruncationWarnings& operator=(const TruncationWarnings&) = delete;

  /// `text` has `bpe_tokens` BPE ids (without SOT/EOT).
  void check(const std::string& text, std::size_t bpe_tokens) {
    const std::size_t room = static_cast<std::size_t>(context_ - 2);
    if (bpe_tokens <= room) return;
    if (++shown_ > kMaxShown) {
      ++hidden_;
      return;
    }
    warn(g_, what_ + " \"" + abbreviate(text) + "\" is " + std::to_string(bpe_tokens) + " tokens, longer than the " +
                 std::to_string(context_) + "-token text context: only its first " + std::to_string(room) +
                 " tokens are used");
  }

 private:
  static constexpr int kMaxShown = 5;
  const GlobalOptions& g_;
  int context_;
  std::string what_;
  int shown_ = 0;
  int hidden_ = 0;
  int uncaught_ = 0;
};

/// Runs every text through TruncationWarnings for a tower with `context` tokens.
inline void warn_truncated(const GlobalOptions& g, const text::ClipTokenizer& tok,
                           const std::vector<std::string>& texts, int context, const std::string& what) {
  TruncationWarnings w(g, context, what);
  for (const auto& t : texts) w.check(t, tok.encode(t).size());
}

inline const char* yes_no(bool b) {
  return b ? "yes" : "no";
}

inline const char* rope_text(bool configured, nn::RopeSource source) {
  if (!configured) return "no";
  switch (source) {
    case nn::RopeSource::checkpoint:
      return "yes (table from the checkpoint)";
    case nn::RopeSource::computed:
      return "yes (table computed)";
    case nn::RopeSource::none:
      return "yes";
  }
  return "yes";
}

inline std::string stack_line(const StackConfig& s, const TowerRuntime& rt) {
  std::string mlp = s.mlp == MlpKind::swiglu
                        ? "SwiGLU " + std::to_string(s.intermediate)
                        : std::string(activation_name(rt.act)) + " " + std::to_string(s.intermediate);
  return "width " + std::to_string(s.hidden) + ", depth " + std::to_string(s.layers) + ", heads " +
         std::to_string(s.heads) + " (head dim " + std::to_string(s.head_dim()) + "), MLP " + mlp + ", LN eps " +
         short_float(rt.layer_norm_eps);
}

inline std::string flags_line(const StackConfig& s, bool rope_configured, nn::RopeSource rope, bool vision_like) {
  std::string line = std::string("q/k/v bias ") + yes_no(s.q_bias) + "/" + yes_no(s.k_bias) + "/" + yes_no(s.v_bias) +
                     ", sub-LN " + yes_no(s.subln) + ", SwiGLU " + yes_no(s.mlp == MlpKind::swiglu);
  if (vision_like) line += std::string(", RoPE ") + rope_text(rope_configured, rope);
  return line;
}

/// `qlip info` body (not templated: it only reads ModelInfo).
inline void print_info(const ModelInfo& mi, const std::vector<std::string>& warnings, const ClipPreprocessConfig& pre,
                       const std::string& pre_note, const std::string& tokenizer_note) {
  const QlipConfig& c = mi.structure;
  const QlipRuntimeConfig& rt = mi.runtime;
  auto row = [](const char* key, const std::string& value) { std::printf("%-12s %s\n", key, value.c_str()); };
  auto more = [](const std::string& value) { std::printf("%-12s %s\n", "", value.c_str()); };
  row("checkpoint", mi.dir);
  row("config", mi.name);
  row("image", std::to_string(c.vision.image_size) + "x" + std::to_string(c.vision.image_size) + " px, patch " +
                   std::to_string(c.vision.patch_size) + ", grid " + std::to_string(c.vision.grid()) + "x" +
                   std::to_string(c.vision.grid()) + " = " + std::to_string(c.vision.patches()) + " tokens, " +
                   std::to_string(c.vision.channels) + " channels");
  row("vision", stack_line(c.vision.stack, rt.vision));
  more(flags_line(c.vision.stack, rt.vision.rope, mi.vision_rope, true));
  row("quantizer", "BSQ, " + std::to_string(c.quantizer.bits) + " bits/token (2^" + std::to_string(c.quantizer.bits) +
                       " implicit codes), post-quantizer width " + std::to_string(c.quantizer.hidden_post_q) +
                       ", L2 norm " + yes_no(rt.quantizer_l2_norm) + ", group size " +
                       (rt.group_size > 0 ? std::to_string(rt.group_size) : std::string("not set")));
  row("decoder", stack_line(c.decoder.stack, rt.decoder));
  more(flags_line(c.decoder.stack, rt.decoder.rope, mi.decoder_rope, true));
  row("text", stack_line(c.text.stack, rt.text));
  more(flags_line(c.text.stack, false, nn::RopeSource::none, false) + ", context " +
       std::to_string(c.text.context_length) + ", vocab " + thousands(c.text.vocab_size) + ", EOS id " +
       std::to_string(rt.eos_token_id));
  row("projection", std::to_string(c.projection_dim) + " (vision bias " + yes_no(c.vision_projection_bias) +
                        ", text bias " + yes_no(c.text_projection_bias) + "), logit scale " +
                        short_float(rt.logit_scale) + " (exp " + fixed(std::exp(rt.logit_scale), 2) + ")");
  row("parameters", thousands(mi.parameters) + " (vision " + thousands(mi.vision_parameters) + ", quantizer " +
                        thousands(mi.quantizer_parameters) + ", decoder " + thousands(mi.decoder_parameters) +
                        ", text " + thousands(mi.text_parameters) + ")");
  std::string dtypes;
  for (const auto& [name, count] : mi.file_dtypes)
    dtypes += (dtypes.empty() ? "" : ", ") + name + " x" + thousands(count);
  row("file", "model.safetensors: " + thousands(mi.file_tensors) + " tensors, " + thousands(mi.file_elements) +
                  " elements; dtype " + (dtypes.empty() ? std::string("none") : dtypes));
  row("preprocess", "resize shortest edge " + std::to_string(pre.shortest_edge) + " (bicubic), centre crop " +
                        std::to_string(pre.crop_width) + "x" + std::to_string(pre.crop_height) + ", mean (" +
                        fixed(pre.mean[0], 4) + ", " + fixed(pre.mean[1], 4) + ", " + fixed(pre.mean[2], 4) +
                        "), std (" + fixed(pre.std[0], 4) + ", " + fixed(pre.std[1], 4) + ", " + fixed(pre.std[2], 4) +
                        ")" + pre_note);
  row("tokenizer", tokenizer_note);
  // save_pretrained omits fields equal to the class defaults; show what that made us assume.
  std::string assumed;
  for (const auto& f : mi.defaulted_fields) assumed += (assumed.empty() ? "" : ", ") + f;
  row("defaults", assumed.empty() ? std::string("none (config.json states every field read)")
                                  : "official class defaults for fields absent from config.json: " + assumed);
  if (warnings.empty()) {
    row("warnings", "none");
  } else {
    row("warnings", std::to_string(warnings.size()));
    for (const auto& w : warnings) more("- " + one_line_message(w, false));
  }
}

/// Which tokenizer files a checkpoint folder provides (for `info`).
inline std::string tokenizer_note(const std::string& dir) {
  namespace fs = std::filesystem;
  const fs::path d(dir);
  if (fs::exists(d / "vocab.json") && fs::exists(d / "merges.txt")) return "vocab.json + merges.txt";
  if (fs::exists(d / "bpe_simple_vocab_16e6.txt.gz")) return "bpe_simple_vocab_16e6.txt.gz";
  return "none in the folder (classify/embed --text need --vocab or $QLIP_VOCAB)";
}

/// Copies every element of a contiguous view into `dst` (results leave the arena this way).
/// @tparam T element type of the view
/// @tparam R rank of the view
template <class T, int R>
void copy_out(HostView<T, R> v, std::remove_const_t<T>* dst) {
  QLIP_CHECK(v.is_contiguous(), "internal: expected a contiguous result");
  std::copy_n(v.data(), v.numel(), dst);
}

/// L2-normalised image embeddings [B, P] of every image, in batches.
/// @tparam Model a QlipModel<Cfg, cpu_backend> (as with_qlip_model passes it)
template <class Model>
Tensor<float, 2> image_embeddings(const Model& model, const GlobalOptions& g, const std::vector<std::string>& images,
                                  int batch_size, const ClipPreprocessConfig& pre, const char* label) {
  const std::int64_t count = static_cast<std::int64_t>(images.size());
  const std::int64_t batch = std::min<std::int64_t>(batch_size, count);
  const int s = Model::image_size();
  ImageEncodeOptions opt;
  opt.quantize = false;  // only the CLS path is needed
  Arena ws(Model::encode_image_workspace_bytes(batch, opt));
  Tensor<float, 4> storage({batch, 3, s, s});              // [batch, 3, S, S]
  Tensor<float, 2> out({count, Model::projection_dim()});  // [B, P]
  ProgressBar bar(label, count, g.progress);
  for (std::int64_t first = 0; first < count; first += batch) {
    const std::int64_t n = std::min(batch, count - first);
    ImageBatch ib = load_image_batch(images, first, n, Model::patch_size(), pre, storage, false);
    ArenaScope scope(ws);
    ImageEncoding enc = model.encode_image(ws, ib.pixels, opt);
    copy_out(enc.image_embeds_normalized, out.data() + first * Model::projection_dim());
    bar.advance(n);
  }
  return out;
}

/// L2-normalised text embeddings [T, P] of every text, in chunks of 64.
/// @tparam Model a QlipModel<Cfg, cpu_backend>
template <class Model>
Tensor<float, 2> text_embeddings(const Model& model, const text::ClipTokenizer& tok,
                                 const std::vector<std::string>& texts) {
  const std::int64_t count = static_cast<std::int64_t>(texts.size());
  const int ctx = Model::context_length();
  const Tensor<std::int32_t, 2> ids = tok.tokenize_batch(texts, ctx);  // [T, ctx]
  const std::int64_t chunk = std::min<std::int64_t>(64, count);
  Arena ws(Model::encode_text_workspace_bytes(chunk, ctx));
  Tensor<float, 2> out({count, Model::projection_dim()});  // [T, P]
  for (std::int64_t first = 0; first < count; first += chunk) {
    const std::int64_t n = std::min(chunk, count - first);
    ArenaScope scope(ws);
    TextEncoding enc = model.encode_text(ws, ids.view().slice(0, first, first + n));
    copy_out(enc.text_embeds_normalized, out.data() + first * Model::projection_dim());
  }
  return out;
}

inline ClipPreprocessConfig preprocess_for(const GlobalOptions& g, const std::string& dir, int image_size) {
  std::string note;
  ClipPreprocessConfig cfg = load_preprocess_config(dir, image_size, note);
  if (!note.empty()) warn(g, note);
  return cfg;
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// info
// ---------------------------------------------------------------------------------------------

inline int run_info(const GlobalOptions& /*g*/, const InfoOptions& o) {
  check_checkpoint_folder(o.checkpoint);
  with_qlip_model<CliConfigs>(o.checkpoint, [&](auto& model) {
    using Model = std::remove_cvref_t<decltype(model)>;
    std::string note;
    const ClipPreprocessConfig pre = load_preprocess_config(o.checkpoint, Model::image_size(), note);
    detail::print_info(model.info(), model.warnings(), pre,
                       note.empty() ? "" : " (defaults: no preprocessor_config.json)",
                       detail::tokenizer_note(o.checkpoint));
  });
  return 0;
}

// ---------------------------------------------------------------------------------------------
// encode
// ---------------------------------------------------------------------------------------------

namespace detail {

/// `qlip encode` once the model is loaded: batches of images → codes file.
/// @tparam Model a QlipModel<Cfg, cpu_backend>
template <class Model>
void encode_with(const Model& model, const GlobalOptions& g, const EncodeOptions& o) {
  constexpr int L = Model::bits_per_token();
  constexpr std::int64_t N = Model::kPatches;
  const int s = Model::image_size();
  if (o.group_size > 0 && L % o.group_size != 0) {
    std::string valid;
    for (int d = 1; d <= L; ++d)
      if (L % d == 0) valid += (valid.empty() ? "" : ", ") + std::to_string(d);
    throw UsageError("--group-size " + std::to_string(o.group_size) + " does not divide the " + std::to_string(L) +
                     "-bit code (valid: " + valid + ")");
  }
  warn_all(g, model.warnings());
  const ClipPreprocessConfig pre = preprocess_for(g, o.checkpoint, s);

  const std::int64_t count = static_cast<std::int64_t>(o.images.size());
  const std::int64_t batch = std::min<std::int64_t>(o.batch, count);
  const int groups = o.group_size > 0 ? L / o.group_size : 0;
  ImageEncodeOptions opt;
  if (o.group_size > 0) opt.group_sizes = {o.group_size};
  Arena ws(Model::encode_image_workspace_bytes(batch, opt));
  Tensor<float, 4> storage({batch, 3, s, s});                                              // [batch, 3, S, S]
  std::vector<std::uint8_t> bits(static_cast<std::size_t>(count * N * L));                 // [B, N, L]
  std::vector<std::uint32_t> indices(static_cast<std::size_t>(count * N));                 // [B, N]
  std::vector<std::uint32_t> group_indices(static_cast<std::size_t>(count * N * groups));  // [B, N, G]

  ProgressBar bar("encode", count, g.progress);
  for (std::int64_t first = 0; first < count; first += batch) {
    const std::int64_t n = std::min(batch, count - first);
    ImageBatch ib = load_image_batch(o.images, first, n, Model::patch_size(), pre, storage, false);
    ArenaScope scope(ws);
    ImageEncoding enc = model.encode_image(ws, ib.pixels, opt);
    copy_out(enc.bits, bits.data() + first * N * L);
    copy_out(enc.indices, indices.data() + first * N);
    if (groups > 0) copy_out(enc.groups(o.group_size), group_indices.data() + first * N * groups);
    bar.advance(n);
  }
  bar.finish();

  SafetensorsWriter w;
  w.add_raw("bits", DType::u8, {count, N, L}, bits.data());
  auto add_index = [&](const std::string& name, const std::vector<std::uint32_t>& v, std::vector<std::int64_t> shape) {
    if (o.index_dtype == "i64") {
      std::vector<std::int64_t> wide(v.begin(), v.end());
      w.add_raw(name, DType::i64, shape, wide.data());
    } else {
      w.add_raw(name, DType::u32, shape, v.data());
    }
  };
  add_index("indices", indices, {count, N});
  if (groups > 0) add_index("group_indices", group_indices, {count, N, groups});

  std::vector<std::string> names;
  for (const auto& p : o.images) names.push_back(base_name(p));
  std::map<std::string, std::string> meta{
      {"format", "qlip-codes"},
      {"config", Model::name()},
      {"images", json_string_array(names)},
      {"image_size", std::to_string(s)},
      {"patch_size", std::to_string(Model::patch_size())},
      {"grid", std::to_string(Model::grid())},
      {"bits", std::to_string(L)},
      {"bit_order", "dimension 0 is the most significant bit"},
      {"qlip_version", QLIP_VERSION_STRING},
  };
  if (groups > 0) meta["group_size"] = std::to_string(o.group_size);
  write_output(o.output, "codes.safetensors", [&](const std::string& path) { w.write(path, meta); });
  if (!g.quiet) {
    std::fprintf(info_stream(o.output), "wrote %s: %lld image%s x %lld tokens x %d bits (%s)%s\n",
                 output_name(o.output).c_str(), static_cast<long long>(count), count == 1 ? "" : "s",
                 static_cast<long long>(N), L, Model::name(),
                 groups > 0 ? (", group size " + std::to_string(o.group_size)).c_str() : "");
  }
}

}  // namespace detail

inline int run_encode(const GlobalOptions& g, const EncodeOptions& o) {
  check_checkpoint_folder(o.checkpoint);
  check_output_file(o.output);
  check_image_paths(o.images);
  with_qlip_model<CliConfigs>(o.checkpoint, [&](auto& model) { detail::encode_with(model, g, o); });
  return 0;
}

// ---------------------------------------------------------------------------------------------
// decode
// ---------------------------------------------------------------------------------------------

namespace detail {

/// `qlip decode` once the model is loaded: codes file → PNGs, written all or nothing.
/// @tparam Model a QlipModel<Cfg, cpu_backend>
template <class Model>
void decode_with(const Model& model, const GlobalOptions& g, const DecodeOptions& o) {
  constexpr int L = Model::bits_per_token();
  constexpr std::int64_t N = Model::kPatches;
  warn_all(g, model.warnings());
  const CodesFile codes = read_codes_file(o.codes, N, L);
  if (!codes.config.empty() && codes.config != Model::name()) {
    warn(g, "'" + o.codes + "' was written for " + codes.config + "; decoding with " + Model::name());
  }
  const ClipPreprocessConfig pre = preprocess_for(g, o.checkpoint, Model::image_size());

  const std::int64_t count = codes.images;
  const std::int64_t batch = std::min<std::int64_t>(o.batch, count);
  const std::int64_t groups = codes.group_size > 0 ? L / codes.group_size : 0;
  Arena ws(Model::decode_workspace_bytes(batch));
  std::vector<Image> images;
  images.reserve(static_cast<std::size_t>(count));
  ProgressBar bar("decode", count, g.progress);
  for (std::int64_t first = 0; first < count; first += batch) {
    const std::int64_t n = std::min(batch, count - first);
    ArenaScope scope(ws);
    Decoding dec;
    switch (codes.kind) {
      case CodesFile::Kind::indices:
        dec = model.decode(ws, HostView<const std::uint32_t, 2>(codes.indices.data() + first * N, {n, N}));
        break;
      case CodesFile::Kind::bits:
        dec = model.decode(ws, HostView<const std::uint8_t, 3>(codes.bits.data() + first * N * L, {n, N, L}));
        break;
      case CodesFile::Kind::group_indices:
        dec = model.decode(ws,
                           HostView<const std::uint32_t, 3>(codes.indices.data() + first * N * groups, {n, N, groups}),
                           codes.group_size);
        break;
    }
    for (Image& im : postprocess_clip_batch(dec.pixels, pre.mean, pre.std)) images.push_back(std::move(im));
    bar.advance(n);
  }
  bar.finish();

  // Everything decoded: now write, all or nothing.
  const std::vector<std::string> names = png_names(codes.names, static_cast<std::size_t>(count));
  OutputFolderTransaction out(o.output);
  for (std::size_t i = 0; i < images.size(); ++i) {
    out.write(names[i], [&](const std::string& path) { write_png(path, images[i]); });
  }
  out.commit();
  if (!g.quiet) {
    const char* source = codes.kind == CodesFile::Kind::indices ? "indices"
                         : codes.kind == CodesFile::Kind::bits  ? "bits"
                                                                : "group_indices";
    std::printf("wrote %lld PNG%s (%dx%d) to %s (decoded from %s)\n", static_cast<long long>(count),
                count == 1 ? "" : "s", Model::image_size(), Model::image_size(), o.output.c_str(), source);
    for (const auto& n : names) std::printf("  %s\n", out.path_for(n).c_str());
  }
}

}  // namespace detail

inline int run_decode(const GlobalOptions& g, const DecodeOptions& o) {
  if (is_stdout(o.output)) {
    throw UsageError(
        "-o -: decode writes one PNG per image into a folder, which cannot go to standard output "
        "(give a folder; `qlip reconstruct ... -o -` writes one grid PNG to standard output)");
  }
  check_checkpoint_folder(o.checkpoint);
  check_output_folder(o.output);
  if (!std::filesystem::exists(o.codes)) throw qlip::Error("codes file '" + o.codes + "' does not exist");
  (void)SafetensorsFile::open(o.codes);  // a corrupt file fails now, before the model is loaded
  with_qlip_model<CliConfigs>(o.checkpoint, [&](auto& model) { detail::decode_with(model, g, o); });
  return 0;
}

// ---------------------------------------------------------------------------------------------
// reconstruct
// ---------------------------------------------------------------------------------------------

namespace detail {

inline std::string metric_text(double v, int digits) {
  return std::isinf(v) ? std::string("inf") : fixed(v, digits);
}

/// `qlip reconstruct` once the model is loaded: encode → indices → decode, metrics, grid.
/// @tparam Model a QlipModel<Cfg, cpu_backend>
template <class Model>
void reconstruct_with(const Model& model, const GlobalOptions& g, const ReconstructOptions& o) {
  constexpr std::int64_t N = Model::kPatches;
  const int s = Model::image_size();
  warn_all(g, model.warnings());
  const ClipPreprocessConfig pre = preprocess_for(g, o.checkpoint, s);

  const std::int64_t count = static_cast<std::int64_t>(o.images.size());
  const std::int64_t batch = std::min<std::int64_t>(o.batch, count);
  Arena ws(std::max(Model::encode_image_workspace_bytes(batch), Model::decode_workspace_bytes(batch)));
  Tensor<float, 4> storage({batch, 3, s, s});                               // [batch, 3, S, S]
  std::vector<std::uint32_t> indices(static_cast<std::size_t>(batch * N));  // [batch, N]
  std::vector<Image> originals, recons;
  std::vector<double> psnrs, ssims;
  ProgressBar bar("reconstruct", count, g.progress);
  for (std::int64_t first = 0; first < count; first += batch) {
    const std::int64_t n = std::min(batch, count - first);
    ImageBatch ib = load_image_batch(o.images, first, n, Model::patch_size(), pre, storage, true);
    {
      ArenaScope scope(ws);
      ImageEncodeOptions opt;
      ImageEncoding enc = model.encode_image(ws, ib.pixels, opt);
      copy_out(enc.indices, indices.data());
    }
    ArenaScope scope(ws);
    Decoding dec = model.decode(ws, HostView<const std::uint32_t, 2>(indices.data(), {n, N}));
    std::vector<Image> rec = postprocess_clip_batch(dec.pixels, pre.mean, pre.std);
    for (std::int64_t b = 0; b < n; ++b) {
      psnrs.push_back(psnr(ib.cropped[static_cast<std::size_t>(b)], rec[static_cast<std::size_t>(b)]));
      ssims.push_back(ssim(ib.cropped[static_cast<std::size_t>(b)], rec[static_cast<std::size_t>(b)]));
      originals.push_back(std::move(ib.cropped[static_cast<std::size_t>(b)]));
      recons.push_back(std::move(rec[static_cast<std::size_t>(b)]));
    }
    bar.advance(n);
  }
  bar.finish();

  const Image grid = comparison_grid(originals, recons, o.columns, o.padding);
  write_output(o.output, "grid.png", [&](const std::string& path) { write_image_output(path, grid); });

  std::FILE* table = info_stream(o.output);  // stdout, unless the grid went there
  std::size_t width = 5;
  for (const auto& p : o.images) width = std::max(width, base_name(p).size());
  std::fprintf(table, "%-*s  %9s  %7s\n", static_cast<int>(width), "image", "PSNR (dB)", "SSIM");
  for (std::size_t i = 0; i < psnrs.size(); ++i) {
    std::fprintf(table, "%-*s  %9s  %7s\n", static_cast<int>(width), base_name(o.images[i]).c_str(),
                 metric_text(psnrs[i], 3).c_str(), metric_text(ssims[i], 4).c_str());
  }
  if (psnrs.size() > 1) {
    const double mp = std::accumulate(psnrs.begin(), psnrs.end(), 0.0) / static_cast<double>(psnrs.size());
    const double ms = std::accumulate(ssims.begin(), ssims.end(), 0.0) / static_cast<double>(ssims.size());
    std::fprintf(table, "%-*s  %9s  %7s\n", static_cast<int>(width), "mean", metric_text(mp, 3).c_str(),
                 metric_text(ms, 4).c_str());
  }
  if (!g.quiet) {
    std::fprintf(table, "wrote %s (%dx%d: originals above reconstructions, %s, %lld tokens x %d bits per image)\n",
                 output_name(o.output).c_str(), grid.width, grid.height, Model::name(), static_cast<long long>(N),
                 Model::bits_per_token());
  }
}

}  // namespace detail

inline int run_reconstruct(const GlobalOptions& g, const ReconstructOptions& o) {
  check_image_output_name(o.output);
  check_checkpoint_folder(o.checkpoint);
  check_output_file(o.output);
  check_image_paths(o.images);
  with_qlip_model<CliConfigs>(o.checkpoint, [&](auto& model) { detail::reconstruct_with(model, g, o); });
  return 0;
}

// ---------------------------------------------------------------------------------------------
// classify
// ---------------------------------------------------------------------------------------------

namespace detail {

/// The JSON document `classify --json` prints: per image, its labels sorted by probability.
inline std::string classify_json(const char* config, const std::vector<std::string>& templates,
                                 const std::vector<std::string>& images, const std::vector<std::string>& labels,
                                 const std::vector<std::vector<std::size_t>>& order,
                                 const std::vector<std::vector<float>>& probs, std::size_t top) {
  nlohmann::ordered_json doc;
  doc["config"] = config;
  doc["templates"] = templates;
  nlohmann::ordered_json results = nlohmann::ordered_json::array();
  for (std::size_t i = 0; i < images.size(); ++i) {
    nlohmann::ordered_json rows = nlohmann::ordered_json::array();
    for (std::size_t k = 0; k < top; ++k) {
      const std::size_t j = order[i][k];
      rows.push_back({{"label", labels[j]}, {"probability", static_cast<double>(probs[i][j])}});
    }
    results.push_back({{"image", images[i]}, {"labels", std::move(rows)}});
  }
  doc["results"] = std::move(results);
  // Labels and paths need not be valid UTF-8; replace bad bytes rather than fail at the very end.
  return doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
}

/// `qlip classify` once the model is loaded: softmax(100·cos) of images against the labels, each
/// label's classifier being its prompt's embedding (one template) or the re-normalised mean of its
/// prompts' embeddings (several templates, MODEL.md §7.1).
/// @tparam Model a QlipModel<Cfg, cpu_backend>
template <class Model>
void classify_with(const Model& model, const GlobalOptions& g, const ClassifyOptions& o,
                   const std::vector<std::string>& labels, const text::ClipTokenizer& tok) {
  warn_all(g, model.warnings());
  const ClipPreprocessConfig pre = preprocess_for(g, o.checkpoint, Model::image_size());
  const std::int64_t templates = static_cast<std::int64_t>(o.templates.size());
  std::vector<std::string> prompts;  // class-major: row c·K + k is label c in template k
  for (const auto& l : labels)
    for (const auto& t : o.templates) prompts.push_back(apply_template(t, l));
  warn_truncated(g, tok, prompts, Model::context_length(), "prompt");
  const Tensor<float, 2> text = text_embeddings(model, tok, prompts);  // [C·K, P]
  // One template: the prompt embeddings are the classifier as they are, bit for bit what
  // `embed --text` writes. Several: ensembled per label.
  std::optional<Tensor<float, 2>> ensembled;
  if (templates > 1) ensembled.emplace(ensemble_class_embeddings(text.view(), templates));  // [C, P]
  const HostView<const float, 2> classifier = ensembled ? ensembled->view() : text.view();
  const Tensor<float, 2> image = image_embeddings(model, g, o.images, o.batch, pre, "classify");  // [B, P]
  const Tensor<float, 2> probs = zero_shot_probs(image.view(), classifier, 100.0f);               // [B, C]

  const std::size_t top =
      o.top > 0 ? std::min<std::size_t>(static_cast<std::size_t>(o.top), labels.size()) : labels.size();
  std::vector<std::vector<std::size_t>> order(o.images.size());
  std::vector<std::vector<float>> rows(o.images.size());
  for (std::size_t i = 0; i < o.images.size(); ++i) {
    for (std::size_t j = 0; j < labels.size(); ++j)
      rows[i].push_back(probs(static_cast<std::int64_t>(i), static_cast<std::int64_t>(j)));
    order[i].resize(labels.size());
    std::iota(order[i].begin(), order[i].end(), std::size_t{0});
    // Stable: equal probabilities keep the order the labels were given in.
    std::stable_sort(order[i].begin(), order[i].end(),
                     [&](std::size_t a, std::size_t b) { return rows[i][a] > rows[i][b]; });
  }
  if (o.json) {
    std::printf("%s\n", classify_json(Model::name(), o.templates, o.images, labels, order, rows, top).c_str());
    return;
  }
  for (std::size_t i = 0; i < o.images.size(); ++i) {
    std::printf("%s\n", o.images[i].c_str());
    for (std::size_t k = 0; k < top; ++k) {
      const std::size_t j = order[i][k];
      std::printf("  %.4f  %s\n", static_cast<double>(rows[i][j]), labels[j].c_str());
    }
  }
}

}  // namespace detail

inline int run_classify(const GlobalOptions& g, const ClassifyOptions& o) {
  if (o.templates.empty()) throw UsageError("--template: give at least one template");
  for (const auto& t : o.templates) (void)apply_template(t, "x");  // a template without "{}" fails now
  std::vector<std::string> labels;
  if (o.labels.rfind('@', 0) != 0) labels = split_list(o.labels, "--labels", "label");  // usage errors first
  check_checkpoint_folder(o.checkpoint);
  if (labels.empty()) labels = read_list_argument(o.labels, "--labels", "label");
  check_image_paths(o.images);
  const text::ClipTokenizer tok = load_tokenizer(g.vocab, o.checkpoint);
  with_qlip_model<CliConfigs>(o.checkpoint, [&](auto& model) { detail::classify_with(model, g, o, labels, tok); });
  return 0;
}

// ---------------------------------------------------------------------------------------------
// embed
// ---------------------------------------------------------------------------------------------

namespace detail {

/// `qlip embed` once the model is loaded: normalised image and/or text embeddings → file.
/// @tparam Model a QlipModel<Cfg, cpu_backend>
template <class Model>
void embed_with(const Model& model, const GlobalOptions& g, const EmbedOptions& o,
                const std::vector<std::string>& texts, const text::ClipTokenizer* tok) {
  warn_all(g, model.warnings());
  SafetensorsWriter w;
  std::map<std::string, std::string> meta{{"format", "qlip-embeddings"},
                                          {"config", Model::name()},
                                          {"normalized", "L2"},
                                          {"projection_dim", std::to_string(Model::projection_dim())},
                                          {"qlip_version", QLIP_VERSION_STRING}};
  if (!o.images.empty()) {
    const ClipPreprocessConfig pre = preprocess_for(g, o.checkpoint, Model::image_size());
    const Tensor<float, 2> image = image_embeddings(model, g, o.images, o.batch, pre, "embed");  // [B, P]
    w.add("image_embeds", image.view());
    std::vector<std::string> names;
    for (const auto& p : o.images) names.push_back(base_name(p));
    meta["images"] = json_string_array(names);
  }
  if (!texts.empty()) {
    warn_truncated(g, *tok, texts, Model::context_length(), "text");
    const Tensor<float, 2> text = text_embeddings(model, *tok, texts);  // [T, P]
    w.add("text_embeds", text.view());
    meta["texts"] = json_string_array(texts);
  }
  write_output(o.output, "embeddings.safetensors", [&](const std::string& path) { w.write(path, meta); });
  if (!g.quiet) {
    std::fprintf(info_stream(o.output), "wrote %s: %zu image and %zu text embedding%s of size %d (%s)\n",
                 output_name(o.output).c_str(), o.images.size(), texts.size(),
                 o.images.size() + texts.size() == 1 ? "" : "s", Model::projection_dim(), Model::name());
  }
}

}  // namespace detail

inline int run_embed(const GlobalOptions& g, const EmbedOptions& o) {
  std::vector<std::string> texts;
  if (o.images.empty() && !o.text_given) throw UsageError("nothing to embed: give image files and/or --text");
  if (o.text_given && o.text.rfind('@', 0) != 0) texts = split_list(o.text, "--text", "text");  // usage first
  check_checkpoint_folder(o.checkpoint);
  if (o.text_given && texts.empty()) texts = read_list_argument(o.text, "--text", "text");
  check_output_file(o.output);
  check_image_paths(o.images);
  std::optional<text::ClipTokenizer> tok;
  if (!texts.empty()) tok.emplace(load_tokenizer(g.vocab, o.checkpoint));
  with_qlip_model<CliConfigs>(o.checkpoint, [&](auto& model) { detail::embed_with(model, g, o, texts, tok ? &*tok : nullptr); });
  return 0;
}

// ---------------------------------------------------------------------------------------------
// tokenize
// ---------------------------------------------------------------------------------------------

namespace detail {

/// --context: a token count (>= 2: room for SOT and EOT) or "none" (0: raw BPE ids).
inline int parse_context(const std::string& value) {
  if (value == "none") return 0;
  int n = 0;
  const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
  if (ec != std::errc() || end != value.data() + value.size() || n < 2 || n > (1 << 20)) {
    throw UsageError("--context: expected a number of tokens >= 2 (77 for CLIP) or 'none', got '" + value + "'");
  }
  return n;
}

/// Token ids written as `qlip tokenize` prints them ("49406 320 1929 49407"); commas and square
/// brackets count as spaces, so a Python list pastes as is. `where` names the input in errors.
inline std::vector<std::int32_t> parse_ids(const std::string& line, const std::string& where, std::int32_t vocab_size) {
  std::vector<std::int32_t> ids;
  std::size_t i = 0;
  auto separator = [](char c) {
    return std::isspace(static_cast<unsigned char>(c)) || c == ',' || c == '[' || c == ']';
  };
  while (i < line.size()) {
    if (separator(line[i])) {
      ++i;
      continue;
    }
    std::size_t j = i;
    while (j < line.size() && !separator(line[j])) ++j;
    const std::string word = line.substr(i, j - i);
    long long id = 0;
    const auto [end, ec] = std::from_chars(word.data(), word.data() + word.size(), id);
    if (ec == std::errc::result_out_of_range ||
        (ec == std::errc() && end == word.data() + word.size() && (id < 0 || id >= vocab_size))) {
      throw qlip::Error(where + ": token id " + abbreviate(word, 24) + " is outside the vocabulary [0, " +
                        std::to_string(vocab_size) + ")");
    }
    if (ec != std::errc() || end != word.data() + word.size())
      throw qlip::Error(where + ": '" + abbreviate(word, 24) + "' is not a token id (expected integers)");
    ids.push_back(static_cast<std::int32_t>(id));
    i = j;
  }
  return ids;
}

/// ClipTokenizer::decode as one output line: the trailing space every word carries is dropped, and a
/// line break (only ids the tokenizer never produces decode to one) prints as a space, so each input
/// line gives exactly one output line.
inline std::string decoded_line(const text::ClipTokenizer& tok, const std::vector<std::int32_t>& ids) {
  std::string text = tok.decode(ids);
  for (char& c : text)
    if (c == '\n' || c == '\r') c = ' ';
  while (!text.empty() && text.back() == ' ') text.pop_back();
  return text;
}

inline std::string ids_line(const std::vector<std::int32_t>& ids) {
  std::string line;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (i > 0) line += ' ';
    line += std::to_string(ids[i]);
  }
  return line;
}

}  // namespace detail

/// `qlip tokenize`: each text (argument, or line of standard input for `-`) → one line of ids:
/// open_clip's tokenize() row (SOT ... EOT, zero padding) for --context N, encode()'s raw BPE ids for
/// --context none. --decode reads lines of ids and prints their text instead. Output is printed when
/// all input has been processed, so a bad line prints nothing but the error, except when standard
/// input is a terminal: then each typed line is answered at once.
inline int run_tokenize(const GlobalOptions& g, const TokenizeOptions& o) {
  const int context = detail::parse_context(o.context);
  if (o.inputs.empty()) {
    throw UsageError(std::string("nothing to ") + (o.decode ? "decode" : "tokenize") + ": give the " +
                     (o.decode ? "ids" : "texts") + " as arguments, or - to read standard input line by line");
  }
  const bool from_stdin = o.inputs.size() == 1 && o.inputs[0] == "-";
  if (!from_stdin && std::find(o.inputs.begin(), o.inputs.end(), "-") != o.inputs.end()) {
    throw UsageError("'-' (read standard input) cannot be combined with other arguments");
  }
  const text::ClipTokenizer tok = load_tokenizer(g.vocab, "");
  std::optional<detail::TruncationWarnings> cut;
  if (!o.decode && context > 0) cut.emplace(g, context, "text");

  auto answer = [&](const std::string& input, const std::string& where) -> std::string {
    if (o.decode) return detail::decoded_line(tok, detail::parse_ids(input, where, tok.vocab_size()));
    if (context == 0) return detail::ids_line(tok.encode(input));
    cut->check(input, tok.encode(input).size());
    return detail::ids_line(tok.tokenize(input, context));
  };

  std::string out;
  if (from_stdin) {
    const bool interactive = ::isatty(STDIN_FILENO) != 0;
    std::string line;
    for (std::size_t n = 1; std::getline(std::cin, line); ++n) {
      if (!line.empty() && line.back() == '\r') line.pop_back();  // CRLF files
      out += answer(line, "standard input line " + std::to_string(n)) + "\n";
      if (interactive) {
        std::fputs(out.c_str(), stdout);
        std::fflush(stdout);
        out.clear();
      }
    }
    if (std::cin.bad()) throw qlip::Error("reading standard input failed");
  } else {
    for (std::size_t i = 0; i < o.inputs.size(); ++i)
      out += answer(o.inputs[i], "argument " + std::to_string(i + 1)) + "\n";
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

}  // namespace qlip::cli
