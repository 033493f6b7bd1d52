/// @file fuzz_image.cpp
/// @brief libFuzzer target: decode_image() on arbitrary bytes and, when they decode, CLIP
///        preprocessing at a small size. Any outcome but an image or a qlip::Error is a bug (a
///        crash, a sanitizer report, another exception type, a hang, a memory blow-up).
///
/// The pixel budget is lowered to 2^20 so that a fuzzed header cannot make every run allocate
/// hundreds of megabytes; the budget check itself is the same code at any value. The crop is
/// 32 x 32 at shortest edge 32: extreme aspect ratios still go through the resize, and it stays fast
/// because only the cropped part is computed.
#include <cstddef>
#include <cstdint>

#include "qlip/core/error.hpp"
#include "qlip/io/image.hpp"
#include "qlip/io/preprocess.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  qlip::ImageDecodeOptions options;
  options.max_pixels = std::int64_t{1} << 20;
  qlip::Image im;
  try {
    im = qlip::decode_image(data, size, "fuzz-input", options);
  } catch (const qlip::Error&) {
    return 0;  // refused: the expected outcome for most inputs
  }
  if (im.width <= 0 || im.height <= 0 || im.channels != 3 ||
      im.pixels.size() != static_cast<std::size_t>(im.width) * static_cast<std::size_t>(im.height) * 3) {
    __builtin_trap();  // a decoded image must be a consistent, non-empty RGB8 image
  }
  qlip::ClipPreprocessConfig cfg;
  cfg.shortest_edge = 32;
  cfg.crop_height = cfg.crop_width = 32;
  try {
    const qlip::Image px = qlip::clip_resize_crop(im, cfg);
    if (px.width != 32 || px.height != 32) __builtin_trap();
  } catch (const qlip::Error&) {
    // e.g. an aspect ratio whose resized long edge exceeds int: refused, not a crash
  }
  return 0;
}
