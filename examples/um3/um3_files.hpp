/// @file um3_files.hpp
/// @brief The files of a UM³ run (docs/UM3.md, "um3-train"): the Fashion-MNIST codes the demo QLIP
///        writes once (codes_<split>.safetensors), the text tokenizer (byte_bpe.json) and the
///        model's token layout and caption set (um3.json), and the run's checkpoint folder: a
///        Hugging Face Llama folder (config.json, model.safetensors) plus those two files and
///        training_state.safetensors, committed atomically as one folder.
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/inputs.hpp"
#include "cli/progress.hpp"
#include "configs/demo_qlip_config.hpp"
#include "configs/um3_demo_config.hpp"
#include "qlip/data.hpp"
#include "qlip/io/detail/file.hpp"
#include "qlip/io/json.hpp"
#include "qlip/io/safetensors.hpp"
#include "qlip/model/llama_checkpoint.hpp"
#include "qlip/qlip.hpp"
#include "qlip/text/byte_bpe.hpp"
#include "qlip/train/checkpoint_writer.hpp"
#include "qlip/train/train_state.hpp"
#include "qlip/um3/sequences.hpp"

namespace qlip::um3_cli {

using DemoQlip = QlipModel<QlipDemoFashion>;
inline constexpr std::int64_t kPatches = DemoQlip::kPatches;
inline constexpr const char* kUm3FileName = "um3.json";
inline constexpr const char* kBpeFileName = "byte_bpe.json";
inline constexpr const char* kUm3Format = "qlip-um3";

/// Calls f(Tag{}) with the compiled model called `name` (Um3DemoModel or Um3TinyModel).
/// @throws qlip::Error naming the unknown config
template <class F>
decltype(auto) with_um3_model(const std::string& name, F&& f) {
  if (name == Um3DemoModel::name) return f(Um3DemoModel{});
  if (name == Um3TinyModel::name) return f(Um3TinyModel{});
  QLIP_THROW("UM3 config '", name, "' is not compiled in (known: ", Um3DemoModel::name, ", ", Um3TinyModel::name, ")");
}

// ---------------------------------------------------------------------------------------------
// Codes of a Fashion-MNIST split
// ---------------------------------------------------------------------------------------------

/// The 28-bit codes of every image of a split and its labels.
struct LabelledCodes {
  std::int64_t images = 0;
  std::vector<std::uint32_t> codes;  ///< [images · kPatches]
  std::vector<int> labels;           ///< [images]
  std::span<const std::uint32_t> image(std::int64_t i) const {
    return {codes.data() + i * kPatches, static_cast<std::size_t>(kPatches)};
  }
};

/// Encodes the first `count` images of a Fashion-MNIST split with the QLIP (progress on stderr).
inline LabelledCodes encode_split(const DemoQlip& qlip, const ClipPreprocessConfig& pre, data::FashionMnistSplit split,
                                  const std::vector<std::string>& dirs, std::int64_t count, cli::ProgressMode progress) {
  data::FashionMnistSourceOptions so;
  so.resolution = DemoQlip::image_size();
  so.norm = pre;
  const data::FashionMnistSource source(data::FashionMnist::load(split, dirs), so);
  count = std::min(count, source.size());
  const std::int64_t batch = std::min<std::int64_t>(250, count);
  const int s = DemoQlip::image_size();
  Arena ws(DemoQlip::encode_image_workspace_bytes(batch));
  Tensor<float, 4> pixels({batch, 3, s, s});
  LabelledCodes out;
  out.images = count;
  out.codes.resize(static_cast<std::size_t>(count * kPatches));
  const std::string label = std::string("encoding ") + data::split_name(split);
  cli::ProgressBar bar(label.c_str(), count, progress);
  for (std::int64_t first = 0; first < count; first += batch) {
    const std::int64_t n = std::min(batch, count - first);
    for (std::int64_t b = 0; b < n; ++b) out.labels.push_back(source.load(first + b, 0, pixels.view().select(0, b)).label);
    ArenaScope scope(ws);
    const ImageEncoding enc = qlip.encode_image(ws, HostView<const float, 4>(pixels.view().slice(0, 0, n)));
    std::copy_n(enc.indices.data(), n * kPatches, out.codes.data() + first * kPatches);
    bar.advance(n);
  }
  bar.finish();
  return out;
}

/// Writes codes and labels as a qlip codes file ("indices" [N, P] u32, as `qlip encode` writes,
/// plus "labels" [N] i32), atomically.
inline void write_labelled_codes(const std::string& path, const LabelledCodes& c, const std::string& source) {
  SafetensorsWriter w;
  w.add_raw("indices", DType::u32, {c.images, kPatches}, c.codes.data());
  std::vector<std::int32_t> labels(c.labels.begin(), c.labels.end());
  w.add_raw("labels", DType::i32, {c.images}, labels.data());
  w.write(path, {{"format", "qlip-codes"},
                 {"config", QlipDemoFashion::name},
                 {"bits", std::to_string(DemoQlip::bits_per_token())},
                 {"grid", std::to_string(DemoQlip::grid())},
                 {"bit_order", "dimension 0 is the most significant bit"},
                 {"source", source}});
}

/// Reads a codes file with labels, refusing one whose bits per code or codes per image do not fit
/// the layout (um3::check_codes_layout: one line naming the file).
inline LabelledCodes read_labelled_codes(const std::string& path, const um3::VisualTokenLayout& layout) {
  const SafetensorsFile f = SafetensorsFile::open(path);
  const auto fmt = f.metadata().find("format");
  QLIP_CHECK(fmt != f.metadata().end() && fmt->second == "qlip-codes", path,
             ": not a qlip codes file (metadata format is not \"qlip-codes\")");
  const auto bits_it = f.metadata().find("bits");
  QLIP_CHECK(bits_it != f.metadata().end(), path, ": codes file without \"bits\" in its metadata");
  int bits = 0;
  try {
    bits = std::stoi(bits_it->second);
  } catch (const std::exception&) {
    QLIP_THROW(path, ": metadata bits '", bits_it->second, "' is not a number");
  }
  QLIP_CHECK(f.contains("indices") && f.contains("labels"), path,
             ": the codes file needs tensors 'indices' [images, patches] and 'labels' [images]");
  const auto& shape = f.info("indices").shape;
  QLIP_CHECK(shape.size() == 2 && shape[0] >= 1, path, ": 'indices' must be [images, patches] with images >= 1");
  um3::check_codes_layout(layout, bits, shape[1], kPatches, path);
  const auto& lshape = f.info("labels").shape;
  QLIP_CHECK(lshape.size() == 1 && lshape[0] == shape[0], path, ": 'labels' must be [", shape[0], "]");
  LabelledCodes c;
  c.images = shape[0];
  const auto codes = f.view<std::uint32_t, 2>("indices");
  c.codes.assign(codes.data(), codes.data() + codes.numel());
  const std::uint64_t limit = std::uint64_t{1} << layout.code_bits;
  for (std::size_t i = 0; i < c.codes.size(); ++i)
    QLIP_CHECK(c.codes[i] < limit, path, ": code ", c.codes[i], " at ", i, " does not fit ", layout.code_bits, " bits");
  const auto labels = f.view<std::int32_t, 1>("labels");
  for (std::int64_t i = 0; i < c.images; ++i) {
    QLIP_CHECK(labels(i) >= 0 && labels(i) < 10, path, ": label ", labels(i), " at ", i, " is not a class in [0, 10)");
    c.labels.push_back(labels(i));
  }
  return c;
}

// ---------------------------------------------------------------------------------------------
// Vocabulary, captions, um3.json
// ---------------------------------------------------------------------------------------------

inline um3::Um3Vocab vocab_for(const text::ByteBpe& bpe, int group_bits) {
  um3::Um3Vocab v;
  v.bos = bpe.id_of_special("<|bos|>");
  v.eos = bpe.id_of_special("<|eos|>");
  v.pad = bpe.id_of_special("<|pad|>");
  v.layout = {static_cast<std::int32_t>(bpe.vocab_size()), DemoQlip::bits_per_token(), group_bits, false};
  v.validate();
  return v;
}

/// What turns a class into text and back: the class names, the caption templates and the
/// tokenizer, with the UM³ ids.
struct Um3Text {
  /// The tokenizer with Fashion-MNIST's class names and the default caption templates.
  Um3Text(text::ByteBpe b, int group_bits)
      : bpe(std::move(b)), vocab(vocab_for(bpe, group_bits)), class_names(data::fashion_mnist_class_names()),
        templates(data::default_caption_templates()) {}

  text::ByteBpe bpe;
  um3::Um3Vocab vocab;
  std::vector<std::string> class_names;
  std::vector<std::string> templates;

  std::vector<std::int32_t> caption(int cls, std::size_t template_index) const {
    return bpe.encode(data::format_caption(templates[template_index], class_names[static_cast<std::size_t>(cls)]));
  }
  std::string decode(std::span<const std::int32_t> ids) const { return bpe.decode(ids); }
  /// The longest caption any (class, template) gives.
  std::int64_t longest_caption() const {
    std::size_t m = 0;
    for (std::size_t t = 0; t < templates.size(); ++t)
      for (int c = 0; c < static_cast<int>(class_names.size()); ++c) m = std::max(m, caption(c, t).size());
    return static_cast<std::int64_t>(m);
  }
  /// The class a caption names: the class whose name appears in it (the longest match, so
  /// "ankle boot" wins over "boot"-like overlaps); −1 when none does.
  int class_named(const std::string& text) const {
    int best = -1;
    std::size_t best_len = 0;
    for (std::size_t c = 0; c < class_names.size(); ++c)
      if (text.find(class_names[c]) != std::string::npos && class_names[c].size() > best_len)
        best = static_cast<int>(c), best_len = class_names[c].size();
    return best;
  }
  /// The entries as one token stream, <bos> entry <eos> each, in the given order (the text-only
  /// rows are windows of it; held-out perplexity is measured on it).
  std::vector<std::int32_t> entry_stream(std::span<const std::string> entries) const {
    std::vector<std::int32_t> s;
    for (const std::string& e : entries) {
      s.push_back(vocab.bos);
      const std::vector<std::int32_t> ids = bpe.encode(e);
      s.insert(s.end(), ids.begin(), ids.end());
      s.push_back(vocab.eos);
    }
    return s;
  }
};


/// Trains the demo's byte BPE on the training fortunes and every caption, to kUm3DemoTextVocab ids.
/// @throws qlip::Error when the corpus gives fewer merges than the compiled vocabulary needs
inline Um3Text build_demo_text(const std::vector<std::string>& corpus) {
  std::vector<std::string> texts = corpus;
  for (const std::string& tpl : data::default_caption_templates())
    for (const std::string& name : data::fashion_mnist_class_names()) texts.push_back(data::format_caption(tpl, name));
  text::ByteBpe bpe = text::ByteBpe::train(texts, kUm3DemoTextVocab, {"<|bos|>", "<|eos|>", "<|pad|>"});
  QLIP_CHECK(bpe.vocab_size() == kUm3DemoTextVocab, "the text corpus gave a BPE of ", bpe.vocab_size(),
             " ids; the compiled UM3 demo needs ", kUm3DemoTextVocab, " (give a larger corpus)");
  Um3Text t(std::move(bpe), kUm3DemoGroupBits);
  QLIP_CHECK(t.vocab.size() == kUm3Demo.vocab_size, "UM3 vocabulary of ", t.vocab.size(), " ids, compiled ",
             kUm3Demo.vocab_size);
  QLIP_CHECK(t.longest_caption() <= kUm3DemoMaxCaption, "a caption of ", t.longest_caption(),
             " tokens exceeds the demo's ", kUm3DemoMaxCaption);
  return t;
}

inline nlohmann::json um3_json(const Um3Text& t, const std::string& qlip_checkpoint, const char* config_name) {
  const um3::VisualTokenLayout& l = t.vocab.layout;
  return {{"format", kUm3Format},
          {"version", 1},
          {"config", config_name},
          {"text_vocab", l.text_vocab},
          {"code_bits", l.code_bits},
          {"group_bits", l.group_bits},
          {"shared_groups", l.shared_groups},
          {"patches", kPatches},
          {"bos", t.vocab.bos},
          {"eos", t.vocab.eos},
          {"pad", t.vocab.pad},
          {"max_caption", kUm3DemoMaxCaption},
          {"class_names", t.class_names},
          {"caption_templates", t.templates},
          {"qlip", qlip_checkpoint}};
}

/// What a UM³ folder says besides the weights.
struct Um3Folder {
  std::string config;  ///< the compiled model's name
  Um3Text text;
  std::string qlip;  ///< the QLIP checkpoint whose codes the model was trained on (as given)
};

/// Reads byte_bpe.json and um3.json of `dir`, checking them against each other and the compiled
/// model (one line naming the file and field otherwise).
inline Um3Folder read_um3_folder(const std::string& dir) {
  namespace fs = std::filesystem;
  const std::string jpath = (fs::path(dir) / kUm3FileName).string();
  QLIP_CHECK(fs::exists(jpath), dir, ": no ", kUm3FileName, " (not a folder written by um3_train)");
  const nlohmann::json j = read_json(jpath);
  const auto field = [&](const char* k) -> const nlohmann::json& {
    QLIP_CHECK(j.is_object() && j.contains(k), "missing \"", k, "\"");
    return j[k];
  };
  text::ByteBpe bpe = text::ByteBpe::load((fs::path(dir) / kBpeFileName).string());
  try {
    QLIP_CHECK(field("format") == kUm3Format, "format is not \"", kUm3Format, "\"");
    Um3Folder f{field("config").get<std::string>(), Um3Text(std::move(bpe), field("group_bits").get<int>()),
                field("qlip").get<std::string>()};
    f.text.class_names = field("class_names").get<std::vector<std::string>>();
    f.text.templates = field("caption_templates").get<std::vector<std::string>>();
    QLIP_CHECK(field("text_vocab").get<std::int64_t>() == f.text.vocab.text_vocab(), "text_vocab ",
               field("text_vocab").get<std::int64_t>(), " but ", kBpeFileName, " has ", f.text.vocab.text_vocab(), " ids");
    QLIP_CHECK(field("code_bits").get<int>() == f.text.vocab.layout.code_bits, "code_bits ",
               field("code_bits").get<int>(), ", the QLIP's codes have ", f.text.vocab.layout.code_bits);
    QLIP_CHECK(field("patches").get<std::int64_t>() == kPatches, "patches ", field("patches").get<std::int64_t>(),
               ", the demo QLIP has ", kPatches);
    QLIP_CHECK(!field("shared_groups").get<bool>(), "shared_groups is true; the demo uses per-group blocks");
    QLIP_CHECK(f.text.vocab.size() == kUm3DemoVocab, "a vocabulary of ", f.text.vocab.size(),
               " ids, the compiled models have ", kUm3DemoVocab);
    QLIP_CHECK(f.text.class_names.size() == 10 && !f.text.templates.empty(),
               "expected 10 class names and at least one caption template");
    return f;
  } catch (const nlohmann::json::exception& e) {
    QLIP_THROW(jpath, ": ", e.what());
  } catch (const Error& e) {
    QLIP_THROW(jpath, ": ", e.what());
  }
}

// ---------------------------------------------------------------------------------------------
// The run's checkpoint folder
// ---------------------------------------------------------------------------------------------

/// The Llama run-time values of the demo: context for the longest row, RoPE θ 10000.
inline LlamaRuntime demo_runtime(const um3::Um3Vocab& v) {
  LlamaRuntime rt;
  rt.rms_eps = 1e-5f;
  rt.rope_theta = 10000.0f;
  rt.max_positions = um3::image_row_length(v.layout.image_tokens(kPatches), kUm3DemoMaxCaption);
  rt.bos_token_id = v.bos;
  rt.eos_token_id = v.eos;
  return rt;
}

/// Writes `dir`: the HF Llama folder of `model`, byte_bpe.json, um3.json and (when `opt`) the
/// training state with `progress` and `settings`; atomically (train::write_folder_atomic), and
/// the new folder is read back before it replaces the old one.
template <class Tag>
void save_um3_folder(const std::string& dir, nn::LlamaModel<Tag::config, cpu_backend>& model, const Um3Text& text,
                     const std::string& qlip, train::Optimizer* opt, const train::TrainProgress& progress,
                     const std::map<std::string, std::string>& settings) {
  namespace fs = std::filesystem;
  const std::string um3_text = um3_json(text, qlip, Tag::name).dump(2) + "\n";
  const auto fill = [&](const fs::path& tmp) {
    save_llama_folder(tmp.string(), model);
    text.bpe.save((tmp / kBpeFileName).string());
    qlip::detail::write_file_atomic((tmp / kUm3FileName).string(), um3_text.data(), um3_text.size());
    if (opt) train::write_train_state((tmp / train::kTrainStateFileName).string(), Tag::name, *opt, progress, settings);
  };
  const auto verify = [](const fs::path& tmp) {
    QLIP_CHECK(read_um3_folder(tmp.string()).config == Tag::name, "um3.json names another config");
    const LlamaFolderConfig cfg = read_llama_config(tmp.string());
    LlamaFolderWeights weights(tmp.string());
    check_llama_weights(cfg, weights, tmp.string());
    check_compiled_llama<Tag::config>(cfg, tmp.string());
  };
  const auto replaceable = [](const fs::path& p) {
    std::error_code ec;
    return fs::exists(p / kUm3FileName, ec) || fs::is_empty(p, ec);
  };
  train::write_folder_atomic(dir, fill, verify, replaceable, std::string("holds no ") + kUm3FileName);
}

/// A UM³ folder loaded for inference (values only) or training (with gradients).
template <class Tag>
struct LoadedUm3 {
  LoadedLlama<Tag::config, cpu_backend> llama;
  Um3Folder files;
};

/// Reads um3.json first (recovering `<dir>.old` after an interrupted save) and names its config.
inline Um3Folder open_um3_folder(const std::string& dir) {
  (void)train::recover_checkpoint_dir(dir);
  QLIP_CHECK(std::filesystem::is_directory(dir), "UM3 model folder '", dir, "' does not exist");
  return read_um3_folder(dir);
}

/// Loads the folder for the compiled model Tag (values only, or with gradients for training).
template <class Tag>
LoadedUm3<Tag> load_um3_folder(const std::string& dir, train::Gradients gradients = train::Gradients::none) {
  LoadedUm3<Tag> out{{}, open_um3_folder(dir)};
  QLIP_CHECK(out.files.config == Tag::name, dir, ": um3.json says config '", out.files.config, "', expected '",
             Tag::name, "'");
  out.llama = load_llama_folder<Tag::config>(dir, gradients);
  return out;
}

}  // namespace qlip::um3_cli
