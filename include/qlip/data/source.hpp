/// @file source.hpp
/// @brief qlip::data::DataSource, what the batch loader (loader.hpp) reads: a fixed number of
///        samples, each an image preprocessed to [3, S, S] float plus a caption and, when the data
///        has them, a class label. Implemented by FashionMnistSource and ManifestSource.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"

namespace qlip::data {

/// What DataSource::load produced for one sample. ok = false means the sample could not be read
/// (a broken or missing image): the loader skips it, records `error` as a warning and counts it.
struct SampleLoad {
  bool ok = true;
  std::string caption;
  std::int32_t label = -1;  // -1 when the source has no labels
  std::string error;        // one line naming the file and why, when !ok

  static SampleLoad failure(std::string why) {
    SampleLoad s;
    s.ok = false;
    s.error = std::move(why);
    return s;
  }
};

/// A data set of `size()` samples at a fixed square `resolution()`.
///
/// Thread safety: load() is called concurrently from the loader's worker threads; it must only
/// read shared state. It must be a pure function of (index, epoch), so that batches do not depend
/// on the thread count or on when they were loaded.
class DataSource {
 public:
  virtual ~DataSource() = default;

  virtual std::int64_t size() const = 0;
  /// Side S of the [3, S, S] images load() writes.
  virtual int resolution() const = 0;
  virtual bool has_labels() const = 0;
  /// A short name for messages ("Fashion-MNIST train", "manifest /data/x.tsv").
  virtual std::string name() const = 0;

  /// Writes sample `index` of `epoch` (the epoch can change e.g. the caption template) into
  /// `pixels` [3, S, S] (CLIP-normalised, MODEL.md §2.1) and returns its caption and label. A
  /// sample that cannot be read returns SampleLoad::failure(...); programming errors (a bad index,
  /// a wrongly shaped view) throw qlip::Error.
  virtual SampleLoad load(std::int64_t index, std::uint64_t epoch, HostView<float, 3> pixels) const = 0;
};

namespace detail {

/// Throws unless `index` is a sample of `source` and `pixels` is [3, S, S]: the checks every
/// DataSource::load begins with.
inline void check_sample_args(const DataSource& source, std::int64_t index, const HostView<float, 3>& pixels) {
  QLIP_CHECK(index >= 0 && index < source.size(), source.name(), ": sample index ", index, " outside [0, ", source.size(), ")");
  const std::int64_t s = source.resolution();
  check_shape(pixels, {3, s, s}, "DataSource::load pixels");
}

/// A qlip::Error message without its leading "file.hpp:123: " source location (what a user reads
/// in a warning is the file at fault, not the header that noticed).
inline std::string without_source_location(const std::string& message) {
  const std::size_t colon = message.find(": ");
  if (colon == std::string::npos) return message;
  const std::size_t line_colon = message.rfind(':', colon - 1);
  if (line_colon == std::string::npos || line_colon + 1 >= colon) return message;
  for (std::size_t i = line_colon + 1; i < colon; ++i)
    if (message[i] < '0' || message[i] > '9') return message;
  const std::string file = message.substr(0, line_colon);
  const bool source_file = file.size() > 4 && (file.ends_with(".hpp") || file.ends_with(".cuh") || file.ends_with(".cpp"));
  return source_file ? message.substr(colon + 2) : message;
}

}  // namespace detail
}  // namespace qlip::data
