/// @file png.hpp
/// @brief PNG decoding to RGB8 and encoding, with libpng (the library PIL uses).
///
/// Colour rules (PIL's Image.open + convert("RGB"), checked against Pillow 13): palette entries are
/// expanded and tRNS ignored; grey is replicated; alpha is dropped without compositing; 1/2/4-bit
/// grey is scaled to 8 bits (×255, ×85, ×17); 16-bit RGB, RGBA and grey+alpha keep the high byte
/// (v >> 8, PIL's "RGB;16B" unpacker); 16-bit grey *without* alpha is clamped, min(v, 255), because
/// PIL opens it as mode I;16 and its I;16 → RGB/L conversion saturates. Gamma, sRGB and iCCP are
/// ignored, as PIL's convert does.
///
/// Failure policy: a file that ends early is an error ("truncated PNG file"), never a partly filled
/// image: the read callback refuses to read past the end and png_read_end() insists on the zlib
/// stream end and IEND. Other libpng errors (bad CRC on a critical chunk, bad zlib data) are
/// "corrupt PNG file". libpng's warnings (e.g. a known-incorrect sRGB profile) are ignored, as
/// PIL ignores them; none of them concerns missing data.
///
/// setjmp/longjmp: libpng reports errors by calling an error function that must not return; ours
/// longjmps. Only the *_jmp functions below call setjmp; they hold nothing but trivially
/// destructible locals, and everything C++ (vectors, strings, exceptions) lives in their callers,
/// so no destructor is ever skipped.
#pragma once

#include <png.h>

#include <csetjmp>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "qlip/core/error.hpp"
#include "qlip/io/detail/image_format.hpp"

namespace qlip::detail {

struct PngReadState {
  const std::uint8_t* data = nullptr;
  std::size_t size = 0, pos = 0;
  std::jmp_buf jmp;
  bool truncated = false;
  char message[256] = {};
  png_structp png = nullptr;
  png_infop info = nullptr;
  png_uint_32 width = 0, height = 0;
  int bit_depth = 0, color_type = 0;
};

[[noreturn]] inline void png_error_longjmp(png_structp png, png_const_charp msg) {
  auto* s = static_cast<PngReadState*>(png_get_error_ptr(png));
  if (s->message[0] == '\0') std::snprintf(s->message, sizeof s->message, "%s", msg ? msg : "unknown libpng error");
  std::longjmp(s->jmp, 1);
}

inline void png_warning_ignore(png_structp, png_const_charp) {}

inline void png_read_from_memory(png_structp png, png_bytep out, png_size_t n) {
  auto* s = static_cast<PngReadState*>(png_get_io_ptr(png));
  if (n > s->size - s->pos) {
    s->truncated = true;
    std::snprintf(s->message, sizeof s->message, "file ends at byte %zu, %zu more bytes were expected", s->size,
                  static_cast<std::size_t>(n) - (s->size - s->pos));
    png_error(png, s->message);
  }
  std::memcpy(out, s->data + s->pos, n);
  s->pos += n;
}

/// Phase 1: signature, IHDR and the chunks before IDAT. Returns false on a libpng error.
inline bool png_read_header_jmp(PngReadState* s) {
  if (setjmp(s->jmp)) return false;
  png_set_read_fn(s->png, s, png_read_from_memory);
  // libpng's own limit is 1e6 per side; qlip's limit is the pixel budget checked by the caller,
  // so that a 2 x 1,000,001 strip is judged like any other shape.
  png_set_user_limits(s->png, 0x7fffffffu, 0x7fffffffu);
  // Bound what one ancillary chunk (text, ICC profile, EXIF) may allocate, decompressed: a small
  // zTXt can otherwise inflate to gigabytes. An oversized ancillary chunk is skipped with a warning.
  png_set_chunk_malloc_max(s->png, png_alloc_size_t{16} << 20);
  png_read_info(s->png, s->info);
  int interlace = 0, compression = 0, filter = 0;
  png_get_IHDR(s->png, s->info, &s->width, &s->height, &s->bit_depth, &s->color_type, &interlace, &compression,
               &filter);
  return true;
}

/// Phase 2: the transformations to the output layout, every row, and the chunks up to IEND.
/// `grey16` rows are 2 bytes per pixel (big-endian), all others RGB8; row y starts at base + y·stride.
/// Rows are read one at a time (each pass of an interlaced file combines into the same rows), so no
/// array of row pointers is needed: for a 1-pixel-wide image it would be larger than the pixels.
inline bool png_read_pixels_jmp(PngReadState* s, std::uint8_t* base, std::size_t stride, bool grey16) {
  if (setjmp(s->jmp)) return false;
  png_structp p = s->png;
  if (s->color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(p);  // may add alpha from tRNS
  if (s->color_type == PNG_COLOR_TYPE_GRAY && s->bit_depth < 8) png_set_expand_gray_1_2_4_to_8(p);
  if (!grey16) {
    if (s->bit_depth == 16) png_set_strip_16(p);  // the high byte, like PIL's ;16B unpackers
    png_set_strip_alpha(p);                       // drop alpha, no compositing
    if (!(s->color_type & PNG_COLOR_MASK_COLOR)) png_set_gray_to_rgb(p);
  }
  const int passes = png_set_interlace_handling(p);
  png_read_update_info(p, s->info);
  if (png_get_rowbytes(p, s->info) != stride) png_error(p, "unexpected row layout after the RGB8 transformations");
  for (int pass = 0; pass < passes; ++pass) {
    for (png_uint_32 y = 0; y < s->height; ++y) png_read_row(p, base + y * stride, nullptr);
  }
  png_read_end(p, nullptr);
  return true;
}

/// Destroys the libpng structures whatever happens in between (C++ side of the setjmp boundary).
struct PngReadGuard {
  PngReadState* s;
  ~PngReadGuard() {
    if (s->png) png_destroy_read_struct(&s->png, s->info ? &s->info : nullptr, nullptr);
  }
};

[[noreturn]] inline void throw_png_error(const PngReadState& s, const std::string& name) {
  QLIP_THROW(s.truncated ? "truncated PNG file: " : "corrupt PNG file: ", name, ": ", s.message);
}

/// Decodes a PNG to RGB8. `alloc(w, h)` is called once, after the size passed the pixel budget,
/// and returns the w·h·3 output buffer.
template <class Alloc>
void decode_png(const std::uint8_t* data, std::size_t size, const std::string& name, std::int64_t max_pixels,
                Alloc&& alloc) {
  PngReadState s;
  s.data = data;
  s.size = size;
  PngReadGuard guard{&s};
  s.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &s, png_error_longjmp, png_warning_ignore);
  QLIP_CHECK(s.png != nullptr, "png_create_read_struct failed (out of memory?) reading ", name);
  s.info = png_create_info_struct(s.png);
  QLIP_CHECK(s.info != nullptr, "png_create_info_struct failed (out of memory?) reading ", name);
  if (!png_read_header_jmp(&s)) throw_png_error(s, name);
  check_pixel_budget(name, "PNG", s.width, s.height, max_pixels);

  const bool grey16 = s.color_type == PNG_COLOR_TYPE_GRAY && s.bit_depth == 16;
  const std::size_t w = s.width, h = s.height;
  std::uint8_t* out = alloc(static_cast<int>(w), static_cast<int>(h));
  std::vector<std::uint8_t> grey;  // 16-bit grey: decoded here, then clamped into `out`
  if (grey16) grey.resize(w * h * 2);
  std::uint8_t* base = grey16 ? grey.data() : out;
  if (!png_read_pixels_jmp(&s, base, w * (grey16 ? 2 : 3), grey16)) throw_png_error(s, name);
  if (grey16) {
    for (std::size_t i = 0; i < w * h; ++i) {
      const unsigned v = (static_cast<unsigned>(grey[2 * i]) << 8) | grey[2 * i + 1];
      out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = static_cast<std::uint8_t>(v > 255 ? 255 : v);
    }
  }
}

// ---- encoding ----

struct PngWriteState {
  std::jmp_buf jmp;
  char message[256] = {};
  std::uint8_t* buf = nullptr;  // malloc'd: grown inside libpng's callback, where nothing may throw
  std::size_t size = 0, cap = 0;
  png_structp png = nullptr;
  png_infop info = nullptr;
};

[[noreturn]] inline void png_write_error_longjmp(png_structp png, png_const_charp msg) {
  auto* s = static_cast<PngWriteState*>(png_get_error_ptr(png));
  if (s->message[0] == '\0') std::snprintf(s->message, sizeof s->message, "%s", msg ? msg : "unknown libpng error");
  std::longjmp(s->jmp, 1);
}

inline void png_write_to_memory(png_structp png, png_bytep data, png_size_t n) {
  auto* s = static_cast<PngWriteState*>(png_get_io_ptr(png));
  if (n > s->cap - s->size) {
    std::size_t cap = s->cap ? s->cap : 65536;
    while (cap - s->size < n) cap *= 2;
    auto* grown = static_cast<std::uint8_t*>(std::realloc(s->buf, cap));
    if (!grown) png_error(png, "out of memory");
    s->buf = grown;
    s->cap = cap;
  }
  std::memcpy(s->buf + s->size, data, n);
  s->size += n;
}

inline void png_flush_nothing(png_structp) {}

inline bool png_write_jmp(PngWriteState* s, png_uint_32 w, png_uint_32 h, int channels, const std::uint8_t* pixels) {
  if (setjmp(s->jmp)) return false;
  static constexpr int kColor[5] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_COLOR_TYPE_RGB,
                                    PNG_COLOR_TYPE_RGB_ALPHA};
  png_set_write_fn(s->png, s, png_write_to_memory, png_flush_nothing);
  png_set_IHDR(s->png, s->info, w, h, 8, kColor[channels], PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_write_info(s->png, s->info);
  const std::size_t stride = static_cast<std::size_t>(w) * static_cast<std::size_t>(channels);
  // Row by row, as on the read side. png_write_row takes a const row.
  for (png_uint_32 y = 0; y < h; ++y) png_write_row(s->png, pixels + y * stride);
  png_write_end(s->png, nullptr);
  return true;
}

struct PngWriteGuard {
  PngWriteState* s;
  ~PngWriteGuard() {
    if (s->png) png_destroy_write_struct(&s->png, s->info ? &s->info : nullptr);
    std::free(s->buf);
  }
};

/// Encodes interleaved 8-bit pixels (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA channels) as PNG.
inline std::vector<std::uint8_t> encode_png(const std::uint8_t* pixels, int width, int height, int channels) {
  QLIP_CHECK(width > 0 && height > 0 && channels >= 1 && channels <= 4, "encode_png: bad geometry ", width, "x", height,
             "x", channels);
  PngWriteState s;
  PngWriteGuard guard{&s};
  s.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &s, png_write_error_longjmp, png_warning_ignore);
  QLIP_CHECK(s.png != nullptr, "png_create_write_struct failed (out of memory?)");
  s.info = png_create_info_struct(s.png);
  QLIP_CHECK(s.info != nullptr, "png_create_info_struct failed (out of memory?)");
  if (!png_write_jmp(&s, static_cast<png_uint_32>(width), static_cast<png_uint_32>(height), channels, pixels)) {
    QLIP_THROW("PNG encoding failed for a ", width, "x", height, "x", channels, " image: ", s.message);
  }
  return std::vector<std::uint8_t>(s.buf, s.buf + s.size);
}

}  // namespace qlip::detail
