/// @file image_format.hpp
/// @brief Recognising an image file's format from its first bytes, and the pixel-budget check every
///        decoder runs on the declared size before it allocates anything.
///
/// qlip decodes PNG, JPEG and WebP only. The other formats are recognised here just to name them in
/// the "unsupported image format" error, so that a user holding a TIFF learns it is a TIFF rather
/// than reading "corrupt file". TGA has no signature; a header that looks like one is named "TGA?".
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#include "qlip/core/error.hpp"

namespace qlip::detail {

enum class ImageFormat { unknown, png, jpeg, webp, other };

struct SniffedFormat {
  ImageFormat format = ImageFormat::unknown;
  const char* name = "";  // for ImageFormat::other: what it looks like ("TIFF", "GIF", ...)
};

inline bool starts_with(const std::uint8_t* data, std::size_t size, const char* magic, std::size_t n,
                        std::size_t offset = 0) {
  return size >= offset + n && std::memcmp(data + offset, magic, n) == 0;
}

/// Looks only at signatures (never at file names: an extension says nothing about the bytes).
inline SniffedFormat sniff_image_format(const std::uint8_t* d, std::size_t n) {
  if (starts_with(d, n, "\x89PNG\r\n\x1a\n", 8)) return {ImageFormat::png, "PNG"};
  if (starts_with(d, n, "\xff\xd8\xff", 3)) return {ImageFormat::jpeg, "JPEG"};
  if (starts_with(d, n, "RIFF", 4) && starts_with(d, n, "WEBP", 4, 8)) return {ImageFormat::webp, "WebP"};
  struct Magic {
    const char* bytes;
    std::size_t size, offset;
    const char* name;
  };
  static constexpr Magic kOthers[] = {
      {"GIF87a", 6, 0, "GIF"},
      {"GIF89a", 6, 0, "GIF"},
      {"II*\0", 4, 0, "TIFF"},
      {"MM\0*", 4, 0, "TIFF"},
      {"II+\0", 4, 0, "BigTIFF"},
      {"MM\0+", 4, 0, "BigTIFF"},
      {"8BPS", 4, 0, "PSD"},
      {"BM", 2, 0, "BMP"},
      {"qoif", 4, 0, "QOI"},
      {"#?RADIANCE", 10, 0, "Radiance HDR"},
      {"#?RGBE", 6, 0, "Radiance HDR"},
      {"v/1\x01", 4, 0, "OpenEXR"},
      {"\0\0\0\x0cjP  ", 8, 0, "JPEG 2000"},
      {"\xff\x4f\xff\x51", 4, 0, "JPEG 2000 codestream"},
      {"\0\0\0\x0cJXL ", 8, 0, "JPEG XL"},
      {"\xff\x0a", 2, 0, "JPEG XL"},
      {"ftypavif", 8, 4, "AVIF"},
      {"ftypavis", 8, 4, "AVIF"},
      {"ftypheic", 8, 4, "HEIF"},
      {"ftypheix", 8, 4, "HEIF"},
      {"ftypmif1", 8, 4, "HEIF"},
      {"ftypmsf1", 8, 4, "HEIF"},
      {"DDS ", 4, 0, "DDS"},
      {"\x53\x80\xf6\x34", 4, 0, "PIC"},
  };
  for (const Magic& m : kOthers) {
    if (starts_with(d, n, m.bytes, m.size, m.offset)) return {ImageFormat::other, m.name};
  }
  // ICO/CUR: 00 00 01|02 00 and a non-zero image count (a TGA header can start 00 00 02 00 too,
  // but then its colour-map fields, where ICO has the count, are zero).
  if (n >= 6 && d[0] == 0 && d[1] == 0 && (d[2] == 1 || d[2] == 2) && d[3] == 0 && (d[4] | d[5]) != 0) {
    return {ImageFormat::other, d[2] == 1 ? "ICO" : "CUR"};
  }
  // PNM family: P1..P7 (P7 = PAM) or Pf/PF (PFM), then whitespace.
  if (n >= 3 && d[0] == 'P' && ((d[1] >= '1' && d[1] <= '7') || d[1] == 'f' || d[1] == 'F') &&
      (d[2] == ' ' || d[2] == '\t' || d[2] == '\n' || d[2] == '\r')) {
    return {ImageFormat::other, d[1] == 'f' || d[1] == 'F' ? "PFM" : (d[1] == '7' ? "PAM" : "PNM")};
  }
  // TGA: no signature. A plausible 18-byte header (colour-map type 0/1, a known image type, a
  // known pixel depth) is reported as such; the name carries a '?' because this is a guess.
  if (n >= 18 && d[1] <= 1 && (d[2] == 1 || d[2] == 2 || d[2] == 3 || d[2] == 9 || d[2] == 10 || d[2] == 11) &&
      (d[16] == 8 || d[16] == 15 || d[16] == 16 || d[16] == 24 || d[16] == 32)) {
    return {ImageFormat::other, "TGA?"};
  }
  return {};
}

/// Throws "unsupported image format" for anything but PNG, JPEG and WebP, naming what it looks like.
[[noreturn]] inline void throw_unsupported_format(const std::uint8_t* d, std::size_t n, const std::string& name,
                                                  const SniffedFormat& f) {
  if (f.format == ImageFormat::other) {
    QLIP_THROW("unsupported image format: ", name, ": ", f.name, " (qlip decodes PNG, JPEG and WebP)");
  }
  std::string head;
  for (std::size_t i = 0; i < n && i < 8; ++i) {
    char b[4];
    std::snprintf(b, sizeof b, "%s%02x", i ? " " : "", d[i]);
    head += b;
  }
  QLIP_THROW("unsupported image format: ", name, ": not a PNG, JPEG or WebP file (first bytes ", head, ")");
}

/// The check every decoder makes on the declared size, before allocating pixels or decoding.
inline void check_pixel_budget(const std::string& name, const char* format, std::int64_t width, std::int64_t height,
                               std::int64_t max_pixels) {
  if (width <= 0 || height <= 0)
    QLIP_THROW("corrupt ", format, " file: ", name, ": declared size ", width, "x", height);
  if (width > 0x7fffffff || height > 0x7fffffff || width * height > max_pixels) {
    QLIP_THROW("image too large: ", name, ": ", format, " declares ", width, "x", height, " = ", width * height,
               " pixels, over the limit of ", max_pixels, " (ImageDecodeOptions::max_pixels)");
  }
}

}  // namespace qlip::detail
