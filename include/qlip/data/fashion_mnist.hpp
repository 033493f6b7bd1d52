/// @file fashion_mnist.hpp
/// @brief Fashion-MNIST (Xiao et al. 2017): the train (60,000) and test (10,000) splits of 28×28
///        greyscale product images in 10 classes, read from the IDX files of Debian's
///        `dataset-fashion-mnist` package (/usr/share/datasets/fashion-mnist, gzip-compressed), and
///        FashionMnistSource, which turns them into CLIP inputs [3, S, S] with class captions.
///
/// Conversion to a model input (grey_to_clip): the 28×28 image is resized to S×S, the grey value
/// replicated to three channels, and CLIP-normalised with the mean/std of MODEL.md §2.1
/// (ClipPreprocessConfig's defaults in io/preprocess.hpp). Resize::bicubic is exactly
/// CLIPImageProcessor on the image converted to RGB (preprocess_clip: PIL bicubic, uint8 between
/// passes); Resize::bilinear is torch's F.interpolate(mode="bilinear", align_corners=False,
/// antialias=False) on the float image, without rounding.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/data/captions.hpp"
#include "qlip/data/idx.hpp"
#include "qlip/data/source.hpp"
#include "qlip/io/image.hpp"
#include "qlip/io/preprocess.hpp"

namespace qlip::data {

/// Class names, indexed by label (the dataset's README).
inline constexpr std::array<std::string_view, 10> kFashionMnistClasses = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};

inline constexpr int kFashionMnistSide = 28;
inline constexpr std::int64_t kFashionMnistTrainSize = 60000;
inline constexpr std::int64_t kFashionMnistTestSize = 10000;

/// Where Debian's dataset-fashion-mnist package installs the files.
inline constexpr std::string_view kFashionMnistDebianDir = "/usr/share/datasets/fashion-mnist";

enum class FashionMnistSplit { train, test };

inline const char* split_name(FashionMnistSplit s) { return s == FashionMnistSplit::train ? "train" : "test"; }

/// The class names as strings (for zero_shot_prompts and the like).
inline std::vector<std::string> fashion_mnist_class_names() {
  return std::vector<std::string>(kFashionMnistClasses.begin(), kFashionMnistClasses.end());
}

/// The folders searched by default: the Debian package's.
inline std::vector<std::string> default_fashion_mnist_dirs() { return {std::string(kFashionMnistDebianDir)}; }

/// The image and label files of one split.
struct FashionMnistFiles {
  std::string images, labels;
};

/// The split's files in `dir` ("train-images-idx3-ubyte.gz" or the same without .gz; "t10k-..."
/// for the test split), or nullopt when either is missing.
inline std::optional<FashionMnistFiles> fashion_mnist_files_in(const std::string& dir, FashionMnistSplit split) {
  namespace fs = std::filesystem;
  const std::string prefix = split == FashionMnistSplit::train ? "train" : "t10k";
  auto pick = [&](const std::string& stem) -> std::optional<std::string> {
    for (const char* ext : {".gz", ""}) {
      const fs::path p = fs::path(dir) / (stem + ext);
      std::error_code ec;
      if (fs::is_regular_file(p, ec)) return p.string();
    }
    return std::nullopt;
  };
  auto images = pick(prefix + "-images-idx3-ubyte");
  auto labels = pick(prefix + "-labels-idx1-ubyte");
  if (!images || !labels) return std::nullopt;
  return FashionMnistFiles{*images, *labels};
}

/// The split's files in the first of `dirs` that has both. Throws, in one line naming the folders
/// and the package, when none does.
inline FashionMnistFiles find_fashion_mnist(FashionMnistSplit split,
                                            const std::vector<std::string>& dirs = default_fashion_mnist_dirs()) {
  std::string searched;
  for (const auto& d : dirs) {
    if (auto f = fashion_mnist_files_in(d, split)) return *f;
    searched += (searched.empty() ? "" : ", ") + d;
  }
  QLIP_THROW("Fashion-MNIST (", split_name(split), " split) not found in ", searched.empty() ? "(no folders)" : searched,
             ": install Debian's dataset-fashion-mnist (scripts/setup.sh does)");
}

/// One split in memory: `size()` images of 28×28 bytes and their labels in [0, 10).
class FashionMnist {
 public:
  /// Reads the split from the first folder of `dirs` that has it (find_fashion_mnist).
  static FashionMnist load(FashionMnistSplit split, const std::vector<std::string>& dirs = default_fashion_mnist_dirs()) {
    return load_files(find_fashion_mnist(split, dirs), split);
  }

  /// Reads an image file [N, 28, 28] and a label file [N] (IDX, gzip or not). Throws naming the
  /// file when either is malformed, when the counts differ, or when a label is not in [0, 10).
  static FashionMnist load_files(const FashionMnistFiles& files, FashionMnistSplit split) {
    IdxArray images = read_idx(files.images, {kAnyDim, kFashionMnistSide, kFashionMnistSide});
    IdxArray labels = read_idx(files.labels, {kAnyDim});
    QLIP_CHECK(images.dims[0] == labels.dims[0], files.labels, ": ", labels.dims[0], " labels for the ", images.dims[0],
               " images of ", files.images);
    for (std::size_t i = 0; i < labels.data.size(); ++i) {
      QLIP_CHECK(labels.data[i] < kFashionMnistClasses.size(), files.labels, ": label ", int{labels.data[i]}, " of sample ", i,
                 " is not a class in [0, ", kFashionMnistClasses.size(), ")");
    }
    FashionMnist d;
    d.split_ = split;
    d.images_ = std::move(images.data);
    d.labels_ = std::move(labels.data);
    return d;
  }

  /// Samples [begin, begin + count) as a data set of their own (fast tests, small runs).
  FashionMnist subset(std::int64_t begin, std::int64_t count) const {
    QLIP_CHECK(begin >= 0 && count >= 0 && begin <= size() - count, "FashionMnist::subset [", begin, ", ", begin + count,
               ") outside the ", size(), " samples of the ", split_name(split_), " split");
    constexpr std::int64_t px = kFashionMnistSide * kFashionMnistSide;
    FashionMnist d;
    d.split_ = split_;
    d.images_.assign(images_.begin() + begin * px, images_.begin() + (begin + count) * px);
    d.labels_.assign(labels_.begin() + begin, labels_.begin() + begin + count);
    return d;
  }

  std::int64_t size() const { return static_cast<std::int64_t>(labels_.size()); }
  FashionMnistSplit split() const { return split_; }

  /// The 28 × 28 bytes of image i, row-major (0 = background, 255 = full intensity).
  const std::uint8_t* image(std::int64_t i) const {
    check_index(i);
    return images_.data() + i * kFashionMnistSide * kFashionMnistSide;
  }
  std::int32_t label(std::int64_t i) const {
    check_index(i);
    return labels_[static_cast<std::size_t>(i)];
  }
  std::string_view class_name(std::int64_t i) const { return kFashionMnistClasses[static_cast<std::size_t>(label(i))]; }

 private:
  void check_index(std::int64_t i) const {
    QLIP_CHECK(i >= 0 && i < size(), "Fashion-MNIST ", split_name(split_), ": sample ", i, " outside [0, ", size(), ")");
  }

  FashionMnistSplit split_ = FashionMnistSplit::train;
  std::vector<std::uint8_t> images_;  // [N, 28, 28]
  std::vector<std::uint8_t> labels_;  // [N]
};

/// How grey_to_clip resizes (see the file comment).
enum class Resize { bicubic, bilinear };

/// A height × width grey image (row-major bytes) → `out` [3, S, S]: resized to S × S, grey
/// replicated to RGB, (v / 255 − mean) / std per channel with `norm`'s mean and std (MODEL.md §2.1).
inline void grey_to_clip(const std::uint8_t* grey, int height, int width, Resize resize, HostView<float, 3> out,
                         const ClipPreprocessConfig& norm = {}) {
  QLIP_CHECK(height > 0 && width > 0, "grey_to_clip: zero-size image ", width, "x", height);
  const std::int64_t s = out.size(1);
  QLIP_CHECK(s > 0, "grey_to_clip: zero-size output");
  check_shape(out, {3, s, s}, "grey_to_clip output");
  if (resize == Resize::bicubic) {
    Image im = Image::zeros(width, height, 1);
    std::copy(grey, grey + static_cast<std::ptrdiff_t>(width) * height, im.pixels.begin());
    ClipPreprocessConfig cfg = norm;
    cfg.do_resize = cfg.do_center_crop = cfg.do_rescale = cfg.do_normalize = true;
    cfg.rescale_factor = 1.0 / 255.0;
    cfg.shortest_edge = cfg.crop_height = cfg.crop_width = static_cast<int>(s);
    // A square stays square under CLIP's shortest-edge resize, so the crop keeps everything.
    preprocess_clip(to_rgb(im), cfg, out);
    return;
  }
  // torch bilinear, align_corners=False: source coordinate (d + 0.5)·in/out − 0.5, clamped at 0.
  auto taps = [s](int in, std::vector<int>& i0, std::vector<int>& i1, std::vector<double>& w1) {
    const double scale = static_cast<double>(in) / static_cast<double>(s);
    i0.resize(static_cast<std::size_t>(s));
    i1.resize(static_cast<std::size_t>(s));
    w1.resize(static_cast<std::size_t>(s));
    for (std::int64_t d = 0; d < s; ++d) {
      const double src = std::max(0.0, (static_cast<double>(d) + 0.5) * scale - 0.5);
      const int lo = std::min(static_cast<int>(src), in - 1);
      i0[static_cast<std::size_t>(d)] = lo;
      i1[static_cast<std::size_t>(d)] = std::min(lo + 1, in - 1);
      w1[static_cast<std::size_t>(d)] = src - lo;
    }
  };
  std::vector<int> y0, y1, x0, x1;
  std::vector<double> wy, wx;
  taps(height, y0, y1, wy);
  taps(width, x0, x1, wx);
  for (std::int64_t y = 0; y < s; ++y) {
    const std::size_t yy = static_cast<std::size_t>(y);
    const std::uint8_t* r0 = grey + static_cast<std::ptrdiff_t>(y0[yy]) * width;
    const std::uint8_t* r1 = grey + static_cast<std::ptrdiff_t>(y1[yy]) * width;
    for (std::int64_t x = 0; x < s; ++x) {
      const std::size_t xx = static_cast<std::size_t>(x);
      const double top = r0[x0[xx]] + (r0[x1[xx]] - r0[x0[xx]]) * wx[xx];
      const double bottom = r1[x0[xx]] + (r1[x1[xx]] - r1[x0[xx]]) * wx[xx];
      const double v = (top + (bottom - top) * wy[yy]) / 255.0;
      for (int c = 0; c < 3; ++c) {
        const auto cc = static_cast<std::size_t>(c);
        out(c, y, x) = static_cast<float>((v - norm.mean[cc]) / norm.std[cc]);
      }
    }
  }
}

/// Options of FashionMnistSource.
struct FashionMnistSourceOptions {
  int resolution = 256;  // S of the [3, S, S] inputs
  Resize resize = Resize::bicubic;
  std::uint64_t seed = 0;  // of the caption template choice (captions.hpp)
  std::vector<std::string> templates = default_caption_templates();
  ClipPreprocessConfig norm{};  // only mean and std are used
};

/// A Fashion-MNIST split as a DataSource: image i through grey_to_clip, caption
/// class_caption(class name, seed, epoch, i), label = class index.
class FashionMnistSource final : public DataSource {
 public:
  explicit FashionMnistSource(FashionMnist data, FashionMnistSourceOptions options = {})
      : data_(std::move(data)), options_(std::move(options)) {
    QLIP_CHECK(options_.resolution > 0, "FashionMnistSource: resolution must be positive, got ", options_.resolution);
    QLIP_CHECK(!options_.templates.empty(), "FashionMnistSource: no caption templates");
    for (const auto& t : options_.templates) (void)format_caption(t, "x");  // a template without "{}" fails now
  }

  std::int64_t size() const override { return data_.size(); }
  int resolution() const override { return options_.resolution; }
  bool has_labels() const override { return true; }
  std::string name() const override { return std::string("Fashion-MNIST ") + split_name(data_.split()); }

  SampleLoad load(std::int64_t index, std::uint64_t epoch, HostView<float, 3> pixels) const override {
    detail::check_sample_args(*this, index, pixels);
    grey_to_clip(data_.image(index), kFashionMnistSide, kFashionMnistSide, options_.resize, pixels, options_.norm);
    SampleLoad s;
    s.label = data_.label(index);
    s.caption = class_caption(data_.class_name(index), options_.seed, epoch, index, options_.templates);
    return s;
  }

  const FashionMnist& data() const { return data_; }
  const FashionMnistSourceOptions& options() const { return options_; }

 private:
  FashionMnist data_;
  FashionMnistSourceOptions options_;
};

}  // namespace qlip::data
