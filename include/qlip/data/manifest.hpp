/// @file manifest.hpp
/// @brief A user's image–caption pairs as a DataSource: a TSV manifest (`path<TAB>caption` per
///        line, relative paths taken from the manifest's folder) or a folder of images, each with a
///        same-named .txt caption ("cat.jpg" + "cat.txt").
///
/// Images are decoded with io/image.hpp (PNG, JPEG, WebP, the decoders PIL uses) and preprocessed
/// with io/preprocess.hpp as CLIPImageProcessor does (shortest edge → S with PIL bicubic, center
/// crop S × S, CLIP mean/std of MODEL.md §2.1). An image that cannot be read or decoded is never
/// fatal: load() returns a failure whose message names the file and why, and the loader skips the
/// sample, keeps the message as a warning and counts it (loader.hpp). A malformed manifest (a line
/// without a TAB, an empty path or caption) is an error naming the manifest and the line: it is a
/// mistake to fix, not data to skip.
#pragma once

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/data/source.hpp"
#include "qlip/io/detail/file.hpp"
#include "qlip/io/image.hpp"
#include "qlip/io/preprocess.hpp"

namespace qlip::data {

/// One image–caption pair; `path` is as opened (relative paths already joined to the manifest's folder).
struct ManifestEntry {
  std::string path;
  std::string caption;
};

/// Options of ManifestSource.
struct ManifestOptions {
  int resolution = 256;          // S of the [3, S, S] inputs
  ImageDecodeOptions decode{};   // pixel budget of each image
  ClipPreprocessConfig norm{};   // mean and std (resize / crop sizes are set from `resolution`)
};

namespace detail {

inline std::string trim_whitespace(const std::string& s) {
  std::size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

inline bool is_image_extension(std::string ext) {
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".webp";
}

inline std::string read_text_file(const std::string& path) {
  const std::vector<std::uint8_t> bytes = qlip::detail::read_file_bytes(path);
  return std::string(bytes.begin(), bytes.end());
}

}  // namespace detail

/// Image–caption pairs from a manifest or a folder (see the file comment). No labels.
class ManifestSource final : public DataSource {
 public:
  /// Reads `tsv`: one `path<TAB>caption` per line (UTF-8, an optional BOM, LF or CRLF; blank lines
  /// ignored; the caption is what follows the first TAB, trimmed). Relative paths are relative to
  /// the manifest's folder. Throws naming "<tsv>:<line>" for a line without a TAB or with an empty
  /// path or caption, and when there are no entries. Images are not opened here.
  static ManifestSource from_tsv(const std::string& tsv, ManifestOptions options = {}) {
    namespace fs = std::filesystem;
    std::string text = detail::read_text_file(tsv);
    if (text.starts_with("\xEF\xBB\xBF")) text.erase(0, 3);
    const fs::path base = fs::path(tsv).parent_path();
    ManifestSource m(std::move(options), "manifest " + tsv);
    std::size_t line_no = 0;
    for (std::size_t pos = 0; pos < text.size();) {
      std::size_t end = text.find('\n', pos);
      if (end == std::string::npos) end = text.size();
      std::string line = text.substr(pos, end - pos);
      pos = end + 1;
      ++line_no;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (detail::trim_whitespace(line).empty()) continue;
      const std::size_t tab = line.find('\t');
      QLIP_CHECK(tab != std::string::npos, tsv, ":", line_no, ": expected 'path<TAB>caption', found no TAB");
      const std::string path = line.substr(0, tab);
      const std::string caption = detail::trim_whitespace(line.substr(tab + 1));
      QLIP_CHECK(!detail::trim_whitespace(path).empty(), tsv, ":", line_no, ": empty image path");
      QLIP_CHECK(!caption.empty(), tsv, ":", line_no, ": empty caption for ", path);
      const fs::path p(path);
      m.entries_.push_back({p.is_absolute() ? p.string() : (base / p).string(), caption});
    }
    QLIP_CHECK(!m.entries_.empty(), tsv, ": manifest has no entries ('path<TAB>caption' per line)");
    return m;
  }

  /// The images (.png, .jpg, .jpeg, .webp, any case; not recursive) in `dir`, sorted by file name,
  /// each captioned by the same-named .txt (trimmed). An image without a caption file, or with an
  /// empty one, is left out with a warning (warnings(), skipped()). Throws when none is left.
  static ManifestSource from_folder(const std::string& dir, ManifestOptions options = {}) {
    namespace fs = std::filesystem;
    std::error_code ec;
    QLIP_CHECK(fs::is_directory(dir, ec), "image folder ", dir, " does not exist or is not a folder");
    std::vector<fs::path> images;
    for (const auto& e : fs::directory_iterator(dir)) {
      if (e.is_regular_file() && detail::is_image_extension(e.path().extension().string())) images.push_back(e.path());
    }
    std::sort(images.begin(), images.end());
    ManifestSource m(std::move(options), "image folder " + dir);
    for (const auto& img : images) {
      fs::path txt = img;
      txt.replace_extension(".txt");
      if (!fs::is_regular_file(txt, ec)) {
        m.scan_warnings_.push_back("skipped " + img.string() + ": no caption file " + txt.string());
        continue;
      }
      std::string caption = detail::trim_whitespace(detail::read_text_file(txt.string()));
      if (caption.empty()) {
        m.scan_warnings_.push_back("skipped " + img.string() + ": caption file " + txt.string() + " is empty");
        continue;
      }
      m.entries_.push_back({img.string(), std::move(caption)});
    }
    QLIP_CHECK(!m.entries_.empty(), dir, ": no images with a caption (.png/.jpg/.jpeg/.webp with a same-named .txt); ",
               m.scan_warnings_.size(), " without one");
    return m;
  }

  /// from_folder when `path` is a folder, else from_tsv.
  static ManifestSource open(const std::string& path, ManifestOptions options = {}) {
    std::error_code ec;
    return std::filesystem::is_directory(path, ec) ? from_folder(path, std::move(options)) : from_tsv(path, std::move(options));
  }

  /// Pairs given directly (paths as they will be opened).
  static ManifestSource from_entries(std::vector<ManifestEntry> entries, ManifestOptions options = {},
                                     std::string name = "image list") {
    QLIP_CHECK(!entries.empty(), name, ": no entries");
    ManifestSource m(std::move(options), std::move(name));
    m.entries_ = std::move(entries);
    return m;
  }

  std::int64_t size() const override { return static_cast<std::int64_t>(entries_.size()); }
  int resolution() const override { return options_.resolution; }
  bool has_labels() const override { return false; }
  std::string name() const override { return name_; }

  /// Decodes and preprocesses entry `index`. A missing, truncated, corrupt or unsupported image
  /// gives SampleLoad::failure("<path>: <why>"). The epoch changes nothing here.
  SampleLoad load(std::int64_t index, std::uint64_t /*epoch*/, HostView<float, 3> pixels) const override {
    detail::check_sample_args(*this, index, pixels);
    const ManifestEntry& e = entries_[static_cast<std::size_t>(index)];
    try {
      const Image im = read_image(e.path, options_.decode);
      preprocess_clip(im, preprocess_, pixels);
    } catch (const Error& err) {
      std::string why = detail::without_source_location(err.what());
      if (why.find(e.path) == std::string::npos) why = e.path + ": " + why;
      return SampleLoad::failure(std::move(why));
    }
    SampleLoad s;
    s.caption = e.caption;
    return s;
  }

  const std::vector<ManifestEntry>& entries() const { return entries_; }
  /// One line per pair left out while scanning a folder (no or empty caption file).
  const std::vector<std::string>& scan_warnings() const { return scan_warnings_; }
  std::int64_t scan_skipped() const { return static_cast<std::int64_t>(scan_warnings_.size()); }

 private:
  ManifestSource(ManifestOptions options, std::string name) : options_(std::move(options)), name_(std::move(name)) {
    QLIP_CHECK(options_.resolution > 0, name_, ": resolution must be positive, got ", options_.resolution);
    preprocess_ = options_.norm;
    preprocess_.do_resize = preprocess_.do_center_crop = true;
    preprocess_.shortest_edge = preprocess_.crop_height = preprocess_.crop_width = options_.resolution;
  }

  ManifestOptions options_;
  ClipPreprocessConfig preprocess_;
  std::string name_;
  std::vector<ManifestEntry> entries_;
  std::vector<std::string> scan_warnings_;
};

}  // namespace qlip::data
