/// @file jpeg.hpp
/// @brief JPEG decoding to RGB8 and encoding, with libjpeg(-turbo) (the library PIL uses).
///
/// Decoding uses libjpeg's defaults, as Pillow does when nothing calls draft(): JDCT_ISLOW, fancy
/// upsampling, block smoothing for progressive files. So the pixels are libjpeg-turbo's, bit for
/// bit (CLIPImageProcessor sees the same values). Colour: YCbCr/RGB files are converted to RGB by
/// libjpeg, grey is replicated, CMYK/YCCK files are read as CMYK, inverted (Pillow's "CMYK;I"
/// raw mode: it assumes Adobe's inverted convention) and converted with Pillow's cmyk2rgb.
///
/// Failure policy: libjpeg's error exit is an error, and so is every libjpeg *warning* except the
/// few that leave the pixels intact (stray bytes between segments, an unknown Adobe transform or
/// JFIF revision, a bad ICC marker, odd sequential SOS parameters): in particular "Premature end of
/// JPEG file" (truncated → "truncated JPEG file") and the corrupt-entropy-data warnings, after which
/// libjpeg would otherwise fill the rest of the image with grey. Progressive files with more than
/// kMaxJpegScans scans are refused (each scan is a pass over the whole coefficient buffer, so a tiny
/// file could cost minutes; libjpeg-turbo's own tools use the same kind of limit), and libjpeg's
/// memory manager is capped from the pixel budget.
///
/// setjmp/longjmp: as in png.hpp, only the *_jmp functions call setjmp and they hold no C++
/// objects; libjpeg's error exit and our warning/progress hooks longjmp back into them.
#pragma once

#include <csetjmp>
#include <cstddef>
#include <cstdint>
#include <cstdio>  // jpeglib.h needs FILE and size_t first
#include <cstdlib>
#include <string>
#include <vector>

#include <jerror.h>
#include <jpeglib.h>

#include "qlip/core/error.hpp"
#include "qlip/io/detail/image_format.hpp"

namespace qlip::detail {

/// Scans allowed in a progressive JPEG (the limit libjpeg-turbo's fuzzers and TurboJPEG's scan
/// limit examples use; real encoders write about 10).
inline constexpr int kMaxJpegScans = 500;

struct JpegDecodeState {
  jpeg_decompress_struct cinfo;
  jpeg_error_mgr err;
  jpeg_progress_mgr progress;
  std::jmp_buf jmp;
  char message[JMSG_LENGTH_MAX + 64] = {};
  bool truncated = false;
  bool created = false;
};

[[noreturn]] inline void jpeg_fail_longjmp(j_common_ptr c) {
  auto* s = static_cast<JpegDecodeState*>(c->client_data);
  if (s->message[0] == '\0') (*c->err->format_message)(c, s->message);
  std::longjmp(s->jmp, 1);
}

inline void jpeg_emit_message(j_common_ptr c, int level) {
  if (level >= 0) return;  // trace messages
  switch (c->err->msg_code) {
    case JWRN_EXTRANEOUS_DATA:  // garbage between segments, skipped; the image data is intact
    case JWRN_ADOBE_XFORM:
    case JWRN_JFIF_MAJOR:
    case JWRN_BOGUS_ICC:  // the ICC profile is not used
    case JWRN_NOT_SEQUENTIAL:
      return;
    default:
      break;
  }
  auto* s = static_cast<JpegDecodeState*>(c->client_data);
  s->truncated = c->err->msg_code == JWRN_JPEG_EOF;
  jpeg_fail_longjmp(c);
}

inline void jpeg_limit_scans(j_common_ptr c) {
  if (!c->is_decompressor) return;
  if (reinterpret_cast<j_decompress_ptr>(c)->input_scan_number > kMaxJpegScans) {
    auto* s = static_cast<JpegDecodeState*>(c->client_data);
    std::snprintf(s->message, sizeof s->message, "progressive JPEG with more than %d scans", kMaxJpegScans);
    std::longjmp(s->jmp, 1);
  }
}

inline bool jpeg_read_header_jmp(JpegDecodeState* s, const std::uint8_t* data, std::size_t size) {
  if (setjmp(s->jmp)) return false;
  s->cinfo.err = jpeg_std_error(&s->err);
  s->err.error_exit = jpeg_fail_longjmp;
  s->err.emit_message = jpeg_emit_message;
  jpeg_create_decompress(&s->cinfo);
  s->cinfo.client_data = s;
  s->created = true;
  s->progress.progress_monitor = jpeg_limit_scans;
  s->cinfo.progress = &s->progress;
  jpeg_mem_src(&s->cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&s->cinfo, TRUE);  // TRUE: a tables-only stream is an error
  return true;
}

/// Output colour space from the file's: grey stays grey, CMYK/YCCK become CMYK, the rest RGB.
inline int jpeg_output_components(J_COLOR_SPACE in) {
  return in == JCS_GRAYSCALE ? 1 : (in == JCS_CMYK || in == JCS_YCCK) ? 4 : 3;
}

/// Decodes every scanline: RGB straight into `out`, grey/CMYK through `row` then converted.
inline bool jpeg_read_pixels_jmp(JpegDecodeState* s, std::uint8_t* out, std::uint8_t* row, long max_memory) {
  if (setjmp(s->jmp)) return false;
  j_decompress_ptr c = &s->cinfo;
  const int comps = jpeg_output_components(c->jpeg_color_space);
  c->out_color_space = comps == 1 ? JCS_GRAYSCALE : comps == 4 ? JCS_CMYK : JCS_RGB;
  c->mem->max_memory_to_use = max_memory;  // beyond this libjpeg fails ("backing store not supported")
  jpeg_start_decompress(c);
  if (c->output_components != comps) ERREXIT(c, JERR_CONVERSION_NOTIMPL);
  const std::size_t w = c->output_width;
  while (c->output_scanline < c->output_height) {
    std::uint8_t* dst = out + static_cast<std::size_t>(c->output_scanline) * w * 3;
    JSAMPROW r = comps == 3 ? dst : row;
    if (jpeg_read_scanlines(c, &r, 1) != 1) ERREXIT(c, JERR_INPUT_EMPTY);
    if (comps == 1) {
      for (std::size_t x = 0; x < w; ++x) dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = row[x];
    } else if (comps == 4) {
      for (std::size_t x = 0; x < w; ++x) {
        // Pillow: unpack "CMYK;I" (255 - v), then cmyk2rgb: nk - nk·v/255 with its rounding.
        const int k = 255 - row[4 * x + 3], nk = 255 - k;
        for (int ch = 0; ch < 3; ++ch) {
          const int v = 255 - row[4 * x + ch];
          const int t = v * nk + 128;
          const int m = ((t >> 8) + t) >> 8;
          const int o = nk - m;
          dst[3 * x + ch] = static_cast<std::uint8_t>(o < 0 ? 0 : (o > 255 ? 255 : o));
        }
      }
    }
  }
  jpeg_finish_decompress(c);  // reads up to EOI: a file cut after the last scan is caught here
  return true;
}

struct JpegDecodeGuard {
  JpegDecodeState* s;
  ~JpegDecodeGuard() {
    if (s->created) jpeg_destroy_decompress(&s->cinfo);
  }
};

[[noreturn]] inline void throw_jpeg_error(const JpegDecodeState& s, const std::string& name) {
  QLIP_THROW(s.truncated ? "truncated JPEG file: " : "corrupt JPEG file: ", name, ": ", s.message);
}

/// Decodes a JPEG to RGB8; `alloc(w, h)` as in decode_png.
template <class Alloc>
void decode_jpeg(const std::uint8_t* data, std::size_t size, const std::string& name, std::int64_t max_pixels,
                 Alloc&& alloc) {
  QLIP_CHECK(size <= 0xffffffffu, "JPEG file too large for libjpeg: ", name);
  JpegDecodeState s;
  JpegDecodeGuard guard{&s};
  if (!jpeg_read_header_jmp(&s, data, size)) throw_jpeg_error(s, name);
  check_pixel_budget(name, "JPEG", s.cinfo.image_width, s.cinfo.image_height, max_pixels);
  const std::size_t w = s.cinfo.image_width;
  std::uint8_t* out = alloc(static_cast<int>(w), static_cast<int>(s.cinfo.image_height));
  std::vector<std::uint8_t> row(w * 4);
  // Room for a progressive 4-component 4:4:4 coefficient buffer (2 bytes per coefficient) of the
  // largest allowed image, plus libjpeg's small tables.
  const std::int64_t cap = 8 * max_pixels + (std::int64_t{64} << 20);
  const long max_memory = cap > 0x7fffffffffffll ? 0x7fffffffffffl : static_cast<long>(cap);
  if (!jpeg_read_pixels_jmp(&s, out, row.data(), max_memory)) throw_jpeg_error(s, name);
}

// ---- encoding ----

struct JpegEncodeState {
  jpeg_compress_struct cinfo;
  jpeg_error_mgr err;
  std::jmp_buf jmp;
  char message[JMSG_LENGTH_MAX] = {};
  bool created = false;
  unsigned char* buf = nullptr;  // malloc'd by jpeg_mem_dest
  unsigned long size = 0;
};

[[noreturn]] inline void jpeg_encode_fail_longjmp(j_common_ptr c) {
  auto* s = static_cast<JpegEncodeState*>(c->client_data);
  (*c->err->format_message)(c, s->message);
  std::longjmp(s->jmp, 1);
}

inline void jpeg_encode_ignore_message(j_common_ptr, int) {}

inline bool jpeg_encode_jmp(JpegEncodeState* s, const std::uint8_t* pixels, int width, int height, int channels,
                            int quality) {
  if (setjmp(s->jmp)) return false;
  s->cinfo.err = jpeg_std_error(&s->err);
  s->err.error_exit = jpeg_encode_fail_longjmp;
  s->err.emit_message = jpeg_encode_ignore_message;
  jpeg_create_compress(&s->cinfo);
  s->cinfo.client_data = s;
  s->created = true;
  jpeg_mem_dest(&s->cinfo, &s->buf, &s->size);
  s->cinfo.image_width = static_cast<JDIMENSION>(width);
  s->cinfo.image_height = static_cast<JDIMENSION>(height);
  s->cinfo.input_components = channels;
  s->cinfo.in_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&s->cinfo);  // 4:2:0 chroma, baseline Huffman tables, JDCT_ISLOW (as PIL)
  jpeg_set_quality(&s->cinfo, quality, TRUE);
  jpeg_start_compress(&s->cinfo, TRUE);
  const std::size_t stride = static_cast<std::size_t>(width) * static_cast<std::size_t>(channels);
  while (s->cinfo.next_scanline < s->cinfo.image_height) {
    // libjpeg's row type is non-const, but the compressor only reads the rows.
    JSAMPROW r = const_cast<std::uint8_t*>(pixels) + s->cinfo.next_scanline * stride;
    jpeg_write_scanlines(&s->cinfo, &r, 1);
  }
  jpeg_finish_compress(&s->cinfo);
  return true;
}

struct JpegEncodeGuard {
  JpegEncodeState* s;
  ~JpegEncodeGuard() {
    if (s->created) jpeg_destroy_compress(&s->cinfo);
    std::free(s->buf);
  }
};

/// Encodes 1 (grey) or 3 (RGB) channel 8-bit pixels as a baseline JPEG of the given quality (1–100).
inline std::vector<std::uint8_t> encode_jpeg(const std::uint8_t* pixels, int width, int height, int channels,
                                             int quality) {
  QLIP_CHECK(width > 0 && height > 0 && width <= 65500 && height <= 65500, "encode_jpeg: JPEG cannot hold a ", width,
             "x", height, " image (at most 65500 per side)");
  QLIP_CHECK(channels == 1 || channels == 3, "encode_jpeg: JPEG has no alpha channel; got ", channels,
             " channels (convert with to_rgb() first)");
  QLIP_CHECK(quality >= 1 && quality <= 100, "encode_jpeg: quality must be in [1, 100], got ", quality);
  JpegEncodeState s;
  JpegEncodeGuard guard{&s};
  if (!jpeg_encode_jmp(&s, pixels, width, height, channels, quality)) {
    QLIP_THROW("JPEG encoding failed for a ", width, "x", height, "x", channels, " image: ", s.message);
  }
  return std::vector<std::uint8_t>(s.buf, s.buf + s.size);
}

}  // namespace qlip::detail
