/// @file inputs.hpp
/// @brief Validated inputs of the `qlip` CLI: the checkpoint folder, its preprocessor config, images
///        (read, checked against the patch size, preprocessed in batches), the tokenizer (--vocab,
///        the checkpoint folder, $QLIP_VOCAB), label and text lists (inline or @file) and the codes
///        file read by `decode`.
///
/// Every check throws with a message that names the file or option at fault; main() prints it as
/// the one error line.
#pragma once

#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "qlip/core/allocator.hpp"
#include "qlip/core/dtype.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/io/image.hpp"
#include "qlip/io/preprocess.hpp"
#include "qlip/io/safetensors.hpp"
#include "qlip/text/clip_tokenizer.hpp"
#include "util.hpp"

namespace qlip::cli {

/// Throws a clear message when the checkpoint folder is missing or not a folder (before the loader
/// would report it less directly). Like every other problem with the checkpoint folder (no
/// config.json, no model.safetensors, a bad tensor), this is an input error: exit status 1.
inline void check_checkpoint_folder(const std::string& dir) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR) throw qlip::Error("checkpoint folder '" + dir + "' does not exist");
    throw qlip::Error("checkpoint folder '" + dir + "': " + std::strerror(err));
  }
  if (!S_ISDIR(st.st_mode))
    throw qlip::Error("checkpoint '" + dir +
                      "' is not a folder (expected a folder with config.json and model.safetensors)");
}

/// The checkpoint's preprocessor_config.json, checked against the model's input size. Without the
/// file, CLIP's defaults at the model's resolution are used and `warning` says so.
inline ClipPreprocessConfig load_preprocess_config(const std::string& dir, int image_size, std::string& warning) {
  const std::string path = (std::filesystem::path(dir) / "preprocessor_config.json").string();
  ClipPreprocessConfig cfg;
  if (std::filesystem::exists(path)) {
    cfg = ClipPreprocessConfig::load(path);
  } else {
    cfg.shortest_edge = cfg.crop_height = cfg.crop_width = image_size;
    warning = "no preprocessor_config.json in '" + dir + "'; using CLIP's defaults (bicubic resize to " +
              std::to_string(image_size) + ", centre crop, CLIP mean/std)";
  }
  if (!cfg.do_center_crop && !(cfg.do_resize && cfg.shortest_edge == image_size)) {
    throw qlip::Error(path + ": do_center_crop is false, so images would not come out " + std::to_string(image_size) +
                      "x" + std::to_string(image_size) + " as the model needs");
  }
  if (cfg.do_center_crop && (cfg.crop_height != image_size || cfg.crop_width != image_size)) {
    throw qlip::Error(path + ": crop_size " + std::to_string(cfg.crop_height) + "x" + std::to_string(cfg.crop_width) +
                      " does not match the model's input size " + std::to_string(image_size) + "x" +
                      std::to_string(image_size));
  }
  return cfg;
}

/// Reads an image and rejects one that is smaller than a patch. Preprocessing would happily upscale
/// a 3x3 image to the model's resolution, but the result carries no information the model can
/// tokenise meaningfully, so it is almost certainly a wrong file: the check is on the original,
/// min(width, height) < patch_size.
inline Image read_checked_image(const std::string& path, int patch_size) {
  // read_image's message (cannot open / not an image / unsupported format, naming the file) is
  // passed through as it is.
  Image im = read_image(path);
  if (std::min(im.width, im.height) < patch_size) {
    throw qlip::Error("image '" + path + "' is " + std::to_string(im.width) + "x" + std::to_string(im.height) +
                      " pixels, smaller than one " + std::to_string(patch_size) + "x" + std::to_string(patch_size) +
                      " patch");
  }
  return im;
}

/// Checks, before any model work, that every image path names a readable regular file, so a typo in
/// the 90th file name does not cost 89 images of compute. (Decoding errors still surface per batch.)
inline void check_image_paths(const std::vector<std::string>& paths) {
  for (const auto& p : paths) {
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0) throw qlip::Error("cannot open image '" + p + "': " + std::strerror(errno));
    if (S_ISDIR(st.st_mode)) throw qlip::Error("'" + p + "' is a folder, not an image file");
  }
}

/// One batch of images, preprocessed: pixels[b] is image `first + b`.
struct ImageBatch {
  std::int64_t first = 0;
  std::int64_t count = 0;
  HostView<float, 4> pixels;   // [count, 3, S, S], CLIP-normalised
  std::vector<Image> cropped;  // the resized + centre-cropped uint8 inputs (only when requested)
};

/// Reads, checks and preprocesses images `first .. first+count` into the front of `storage`
/// ([batch, 3, S, S], reused across batches).
inline ImageBatch load_image_batch(const std::vector<std::string>& paths, std::int64_t first, std::int64_t count,
                                   int patch_size, const ClipPreprocessConfig& cfg, Tensor<float, 4>& storage,
                                   bool keep_cropped) {
  ImageBatch batch;
  batch.first = first;
  batch.count = count;
  batch.pixels = storage.view().slice(0, 0, count);
  ClipPreprocessConfig normalise_only = cfg;  // for an image that is already resized and cropped
  normalise_only.do_resize = false;
  normalise_only.do_center_crop = false;
  for (std::int64_t b = 0; b < count; ++b) {
    const std::string& path = paths[static_cast<std::size_t>(first + b)];
    const Image im = read_checked_image(path, patch_size);
    if (keep_cropped) {
      Image crop = clip_resize_crop(im, cfg);
      preprocess_clip(crop, normalise_only, batch.pixels.select(0, b));
      batch.cropped.push_back(std::move(crop));
    } else {
      preprocess_clip(im, cfg, batch.pixels.select(0, b));
    }
  }
  return batch;
}

/// The tokenizer: --vocab (a bpe_simple_vocab_16e6.txt.gz file, a vocab.json next to merges.txt, or a
/// folder holding either), else the checkpoint folder (skipped when `checkpoint` is empty, as for
/// `tokenize`), else $QLIP_VOCAB (same forms as --vocab). A path that does not exist is an input
/// error (exit 1); no vocabulary anywhere too, since the fix may as well be a file in the folder.
inline text::ClipTokenizer load_tokenizer(const std::string& vocab, const std::string& checkpoint) {
  namespace fs = std::filesystem;
  auto from_path = [](const std::string& p, const std::string& what) -> text::ClipTokenizer {
    if (fs::is_directory(p)) return text::ClipTokenizer::from_folder(p);
    if (!fs::exists(p)) throw qlip::Error(what + " '" + p + "' does not exist");
    if (fs::path(p).filename() == "vocab.json") {
      const std::string merges = (fs::path(p).parent_path() / "merges.txt").string();
      if (!fs::exists(merges)) throw qlip::Error(what + " '" + p + "': no merges.txt next to it");
      return text::ClipTokenizer::from_hf(p, merges);
    }
    return text::ClipTokenizer::from_bpe_gz(p);
  };
  if (!vocab.empty()) return from_path(vocab, "--vocab");
  if (!checkpoint.empty()) {
    const fs::path ck(checkpoint);
    if ((fs::exists(ck / "vocab.json") && fs::exists(ck / "merges.txt")) ||
        fs::exists(ck / "bpe_simple_vocab_16e6.txt.gz")) {
      return text::ClipTokenizer::from_folder(checkpoint);
    }
  }
  if (const char* env = std::getenv("QLIP_VOCAB"); env != nullptr && env[0] != '\0')
    return from_path(env, "$QLIP_VOCAB");
  if (checkpoint.empty()) {
    throw qlip::Error(
        "no tokenizer vocabulary: pass --vocab (e.g. third_party_data/bpe_simple_vocab_16e6.txt.gz) or set "
        "QLIP_VOCAB");
  }
  throw qlip::Error("no tokenizer vocabulary: checkpoint folder '" + checkpoint +
                    "' has neither vocab.json + merges.txt nor bpe_simple_vocab_16e6.txt.gz; pass --vocab "
                    "(e.g. third_party_data/bpe_simple_vocab_16e6.txt.gz) or set QLIP_VOCAB");
}

/// The items of a list option (--labels, --text): "a,b,c" as split_list reads it, or "@FILE" for
/// one item per line of FILE. In a file, each line is trimmed; blank lines and lines starting with
/// '#' are skipped; commas and backslashes are literal (so "a dog, wet" is one label); a UTF-8 byte
/// order mark is ignored. Errors name the option and the file.
inline std::vector<std::string> read_list_argument(const std::string& value, const std::string& what,
                                                   const std::string& item_name) {
  if (value.empty() || value[0] != '@') return split_list(value, what, item_name);
  const std::string path = value.substr(1);
  if (path.empty()) throw UsageError(what + " @: no file name after '@'");
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    throw qlip::Error(what + " @" + path + ": cannot open '" + path + "': " + std::strerror(errno));
  if (S_ISDIR(st.st_mode)) throw qlip::Error(what + " @" + path + ": '" + path + "' is a folder, not a text file");
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) throw qlip::Error(what + " @" + path + ": cannot open '" + path + "': " + std::strerror(errno));
  std::string text;
  char buf[1 << 14];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) throw qlip::Error(what + " @" + path + ": reading '" + path + "' failed");
  if (text.compare(0, 3, "\xEF\xBB\xBF") == 0) text.erase(0, 3);
  std::vector<std::string> items;
  std::size_t start = 0;
  while (start <= text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    const std::string line = trim(text.substr(start, end - start));
    if (!line.empty() && line[0] != '#') items.push_back(line);
    start = end + 1;
  }
  if (items.empty()) {
    throw qlip::Error(what + " @" + path + ": '" + path + "' holds no " + item_name +
                      "s (one per line; blank lines and # comments are skipped)");
  }
  return items;
}

/// What `decode` found in a codes file.
struct CodesFile {
  enum class Kind { indices, bits, group_indices } kind = Kind::indices;
  std::int64_t images = 0;             ///< B
  std::int64_t patches = 0;            ///< N
  int group_size = 0;                  ///< g (group_indices only)
  std::vector<std::uint32_t> indices;  ///< [B, N] or [B, N, G] (group indices), values checked
  std::vector<std::uint8_t> bits;      ///< [B, N, L], values checked to be 0/1
  std::vector<std::string> names;      ///< image names from the metadata (may be empty)
  std::string config;                  ///< metadata "config" (may be empty)
};

namespace detail {

/// Calls `fn(i, value)` for every element of an integer tensor of any integer dtype, as int64
/// (memcpy per element: foreign files need not be aligned); `fn` throws to reject a value. Streams instead of copying
/// to an int64 vector, which would take 8x a U8 tensor's size. Throws for floating-point dtypes.
template <class Fn>
void for_each_integer(const SafetensorsFile& f, const std::string& name, Fn&& fn) {
  const auto& info = f.info(name);
  const auto bytes = f.bytes(name);
  const std::int64_t n = info.numel();
  auto visit = [&](auto tag) {
    using S = decltype(tag);
    for (std::int64_t i = 0; i < n; ++i) {
      S v;
      std::memcpy(&v, bytes.data() + i * static_cast<std::int64_t>(sizeof(S)), sizeof(S));
      fn(i, static_cast<std::int64_t>(v));
    }
  };
  switch (info.dtype) {
    case DType::u8:
      visit(std::uint8_t{});
      break;
    case DType::u32:
      visit(std::uint32_t{});
      break;
    case DType::i32:
      visit(std::int32_t{});
      break;
    case DType::i64:
      visit(std::int64_t{});
      break;
    default:
      throw qlip::Error(f.path() + ": tensor '" + name + "' has dtype " + dtype_name(info.dtype) +
                        ", expected an integer dtype (U8, U32, I32 or I64)");
  }
}

inline std::string shape_text(const std::vector<std::int64_t>& s) {
  std::string t = "[";
  for (std::size_t i = 0; i < s.size(); ++i) t += (i ? ", " : "") + std::to_string(s[i]);
  return t + "]";
}

/// Longest metadata "config" value kept (it is a model name; it is printed in messages).
inline constexpr std::size_t kCodesConfigMaxBytes = 200;

}  // namespace detail

/// Reads and validates a codes file for a model with `patches` tokens of `bits` bits: prefers
/// `indices`, then `bits`, then `group_indices`. Every value is range-checked, so a corrupt or
/// foreign file fails here with the tensor named, not inside the decoder. The reader's own limits
/// (SafetensorsFile: depth-capped header without duplicate keys, shapes whose products fit int64)
/// keep every size below overflow-free; the metadata is advisory: "images" that is not a JSON array
/// of one string per image is ignored, and "config" is cut to kCodesConfigMaxBytes.
inline CodesFile read_codes_file(const std::string& path, std::int64_t patches, int bits) {
  // The model's values: indices are uint32, so 1 <= bits <= 32 (this also keeps 1 << bits defined).
  if (patches < 1 || bits < 1 || bits > 32) {
    throw qlip::Error("read_codes_file: a model with " + std::to_string(patches) + " tokens of " +
                      std::to_string(bits) + " bits is not supported (tokens >= 1, bits 1..32)");
  }
  const SafetensorsFile f = SafetensorsFile::open(path);
  CodesFile c;
  if (auto it = f.metadata().find("images"); it != f.metadata().end()) c.names = parse_string_array(it->second);
  if (auto it = f.metadata().find("config"); it != f.metadata().end())
    c.config = qlip::detail::utf8_prefix(it->second, detail::kCodesConfigMaxBytes);
  auto check_shape = [&](const std::string& name, std::size_t rank) -> const std::vector<std::int64_t>& {
    const auto& s = f.info(name).shape;
    if (s.size() != rank) {
      throw qlip::Error(path + ": tensor '" + name + "' has shape " + detail::shape_text(s) + ", expected rank " +
                        std::to_string(rank));
    }
    if (s[0] == 0)
      throw qlip::Error(path + ": tensor '" + name + "' holds no images (shape " + detail::shape_text(s) + ")");
    if (s[1] != patches) {
      throw qlip::Error(path + ": tensor '" + name + "' has " + std::to_string(s[1]) + " tokens per image (shape " +
                        detail::shape_text(s) + "), but this model uses " + std::to_string(patches) +
                        (c.config.empty() ? std::string() : " (the codes were written for " + c.config + ")"));
    }
    return s;
  };
  if (f.contains("indices")) {
    const auto& s = check_shape("indices", 2);
    c.kind = CodesFile::Kind::indices;
    c.images = s[0];
    c.patches = s[1];
    const std::int64_t limit = std::int64_t{1} << bits;
    c.indices.resize(static_cast<std::size_t>(f.info("indices").numel()));
    detail::for_each_integer(f, "indices", [&](std::int64_t i, std::int64_t v) {
      if (v < 0 || v >= limit) {
        throw qlip::Error(path + ": tensor 'indices' holds " + std::to_string(v) + " at position " + std::to_string(i) +
                          ", outside [0, 2^" + std::to_string(bits) + ")");
      }
      c.indices[static_cast<std::size_t>(i)] = static_cast<std::uint32_t>(v);
    });
  } else if (f.contains("bits")) {
    const auto& s = check_shape("bits", 3);
    if (s[2] != bits) {
      throw qlip::Error(path + ": tensor 'bits' has shape " + detail::shape_text(s) + ", expected " +
                        std::to_string(bits) + " bits per token");
    }
    c.kind = CodesFile::Kind::bits;
    c.images = s[0];
    c.patches = s[1];
    c.bits.resize(static_cast<std::size_t>(f.info("bits").numel()));
    detail::for_each_integer(f, "bits", [&](std::int64_t i, std::int64_t v) {
      if (v != 0 && v != 1) {
        throw qlip::Error(path + ": tensor 'bits' holds " + std::to_string(v) + " at position " + std::to_string(i) +
                          ", expected 0 or 1");
      }
      c.bits[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(v);
    });
  } else if (f.contains("group_indices")) {
    const auto& s = check_shape("group_indices", 3);
    if (s[2] < 1 || s[2] > bits || bits % s[2] != 0) {
      throw qlip::Error(path + ": tensor 'group_indices' has shape " + detail::shape_text(s) + "; " +
                        std::to_string(s[2]) + " groups do not divide " + std::to_string(bits) + " bits");
    }
    c.kind = CodesFile::Kind::group_indices;
    c.images = s[0];
    c.patches = s[1];
    c.group_size = bits / static_cast<int>(s[2]);
    const std::int64_t limit = std::int64_t{1} << c.group_size;
    c.indices.resize(static_cast<std::size_t>(f.info("group_indices").numel()));
    detail::for_each_integer(f, "group_indices", [&](std::int64_t i, std::int64_t v) {
      if (v < 0 || v >= limit) {
        throw qlip::Error(path + ": tensor 'group_indices' holds " + std::to_string(v) + " at position " +
                          std::to_string(i) + ", outside [0, 2^" + std::to_string(c.group_size) + ") for groups of " +
                          std::to_string(c.group_size) + " bits");
      }
      c.indices[static_cast<std::size_t>(i)] = static_cast<std::uint32_t>(v);
    });
  } else {
    throw qlip::Error(path +
                      ": no 'indices', 'bits' or 'group_indices' tensor (is it a file written by `qlip encode`?)");
  }
  if (c.names.size() != static_cast<std::size_t>(c.images)) c.names.clear();
  return c;
}

}  // namespace qlip::cli
