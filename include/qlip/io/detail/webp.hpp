/// @file webp.hpp
/// @brief WebP decoding to RGB8 with libwebp (the library PIL uses).
///
/// libwebp's defaults (fancy upsampling, no dithering), as Pillow uses them; alpha is dropped (PIL
/// decodes RGBA and convert("RGB") drops it; libwebp's RGB output has the same colour values).
/// Animated WebP is refused: Pillow would give the first frame composited on its canvas, which
/// qlip does not reproduce. libwebp reports errors through return codes, so no setjmp here.
#pragma once

#include <webp/decode.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "qlip/core/error.hpp"
#include "qlip/io/detail/image_format.hpp"

namespace qlip::detail {

inline const char* webp_status_string(VP8StatusCode s) {
  switch (s) {
    case VP8_STATUS_OK:
      return "ok";
    case VP8_STATUS_OUT_OF_MEMORY:
      return "out of memory";
    case VP8_STATUS_INVALID_PARAM:
      return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR:
      return "bitstream error";
    case VP8_STATUS_UNSUPPORTED_FEATURE:
      return "unsupported feature";
    case VP8_STATUS_SUSPENDED:
      return "suspended";
    case VP8_STATUS_USER_ABORT:
      return "aborted";
    case VP8_STATUS_NOT_ENOUGH_DATA:
      return "not enough data";
  }
  return "unknown error";
}

[[noreturn]] inline void throw_webp_error(VP8StatusCode s, const std::string& name) {
  QLIP_THROW(s == VP8_STATUS_NOT_ENOUGH_DATA ? "truncated WebP file: " : "corrupt WebP file: ", name,
             ": libwebp: ", webp_status_string(s));
}

/// Decodes a still WebP to RGB8; `alloc(w, h)` as in decode_png.
template <class Alloc>
void decode_webp(const std::uint8_t* data, std::size_t size, const std::string& name, std::int64_t max_pixels,
                 Alloc&& alloc) {
  WebPDecoderConfig config;
  QLIP_CHECK(WebPInitDecoderConfig(&config), "libwebp version mismatch (WebPInitDecoderConfig failed)");
  VP8StatusCode st = WebPGetFeatures(data, size, &config.input);
  if (st != VP8_STATUS_OK) throw_webp_error(st, name);
  if (config.input.has_animation) QLIP_THROW("unsupported image format: ", name, ": animated WebP");
  check_pixel_budget(name, "WebP", config.input.width, config.input.height, max_pixels);
  const int w = config.input.width, h = config.input.height;
  std::uint8_t* out = alloc(w, h);
  config.output.colorspace = MODE_RGB;
  config.output.is_external_memory = 1;
  config.output.u.RGBA.rgba = out;
  config.output.u.RGBA.stride = w * 3;
  config.output.u.RGBA.size = static_cast<std::size_t>(w) * static_cast<std::size_t>(h) * 3;
  st = WebPDecode(data, size, &config);
  WebPFreeDecBuffer(&config.output);  // nothing to free for external memory; kept for symmetry with the API
  if (st != VP8_STATUS_OK) throw_webp_error(st, name);
}

}  // namespace qlip::detail
