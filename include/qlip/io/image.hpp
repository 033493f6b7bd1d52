/// @file image.hpp
/// @brief 8-bit RGB images: decoding (PNG with libpng, JPEG with libjpeg-turbo, WebP with libwebp:
///        the decoders PIL uses), atomic PNG/JPEG writing, image grids, and the reconstruction
///        metrics PSNR and SSIM (MODEL.md §7.2).
///
/// Colour conversion on read follows PIL's Image.convert("RGB"), which is what CLIPImageProcessor
/// applies: grey is replicated to three channels, grey+alpha and RGBA simply drop alpha (no
/// compositing onto a background), palette images are expanded, 16-bit PNGs are reduced as PIL
/// reduces them (high byte, but 16-bit grey saturates; details in detail/png.hpp), CMYK JPEGs are
/// converted as PIL converts them. EXIF orientation is ignored by both. With the same decoders
/// and their default settings, decoded pixels equal PIL's.
///
/// Robustness: the format is recognised from the first bytes; anything but PNG, JPEG and WebP is
/// refused ("unsupported image format: <file>: TIFF ..."). The declared width × height is checked
/// against a pixel budget (ImageDecodeOptions::max_pixels, PIL's decompression-bomb limit by
/// default) before any pixel is allocated. A truncated or corrupt file is an error, never an image
/// with made-up pixels. Every error is one line naming the file and the cause.
#pragma once

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "qlip/core/error.hpp"
#include "qlip/io/detail/file.hpp"
#include "qlip/io/detail/image_format.hpp"
#include "qlip/io/detail/jpeg.hpp"
#include "qlip/io/detail/png.hpp"
#include "qlip/io/detail/webp.hpp"

namespace qlip {

/// An interleaved (HWC) 8-bit image. Images produced by read_image() are RGB (channels == 3).
struct Image {
  int width = 0;
  int height = 0;
  int channels = 3;
  std::vector<std::uint8_t> pixels;  // [height, width, channels], row-major

  /// Allocates a zero (black) image.
  static Image zeros(int width, int height, int channels = 3) {
    QLIP_CHECK(width >= 0 && height >= 0 && channels >= 1 && channels <= 4, "bad image geometry ", width, "x",
               height, "x", channels);
    Image im;
    im.width = width;
    im.height = height;
    im.channels = channels;
    im.pixels.assign(static_cast<std::size_t>(width) * static_cast<std::size_t>(height) * static_cast<std::size_t>(channels), 0);
    return im;
  }
  std::int64_t index(int y, int x, int c) const {
    return (static_cast<std::int64_t>(y) * width + x) * channels + c;
  }
  std::uint8_t& at(int y, int x, int c) { return pixels[static_cast<std::size_t>(index(y, x, c))]; }
  std::uint8_t at(int y, int x, int c) const { return pixels[static_cast<std::size_t>(index(y, x, c))]; }
  bool empty() const { return width == 0 || height == 0; }
};

namespace detail {

inline void check_image(const Image& im, const char* what) {
  QLIP_CHECK(im.width >= 0 && im.height >= 0 && im.channels >= 1 && im.channels <= 4, what, ": bad geometry ",
             im.width, "x", im.height, "x", im.channels);
  const std::size_t want = static_cast<std::size_t>(im.width) * static_cast<std::size_t>(im.height) *
                           static_cast<std::size_t>(im.channels);
  QLIP_CHECK(im.pixels.size() == want, what, ": pixel buffer has ", im.pixels.size(), " bytes, ", im.width, "x",
             im.height, "x", im.channels, " needs ", want);
}

}  // namespace detail

/// PIL's Image.MAX_IMAGE_PIXELS, int(1024 · 1024 · 1024 // 4 // 3): PIL warns above it and raises
/// DecompressionBombError above twice it.
inline constexpr std::int64_t kPilMaxImagePixels = 89478485;

/// qlip's default pixel budget: the size beyond which PIL refuses to open an image (2 · 89,478,485
/// pixels, 537 MB as RGB8), so that qlip reads everything CLIPImageProcessor reads.
inline constexpr std::int64_t kMaxImagePixels = 2 * kPilMaxImagePixels;

/// Options of decode_image() / read_image().
struct ImageDecodeOptions {
  /// Largest declared width · height accepted; checked before anything is allocated or decoded.
  std::int64_t max_pixels = kMaxImagePixels;
};

/// Decodes a PNG, JPEG or WebP file from memory to RGB8 (see the file comment for the rules).
/// `name` is used in error messages. Throws for an empty file, an unsupported format, a declared
/// size over the budget, and a truncated or corrupt file.
inline Image decode_image(const std::uint8_t* data, std::size_t size, const std::string& name,
                          const ImageDecodeOptions& options = {}) {
  if (size == 0) QLIP_THROW("not an image file: ", name, ": file is empty");
  QLIP_CHECK(options.max_pixels > 0, "decode_image: max_pixels must be positive, got ", options.max_pixels);
  Image im;
  auto alloc = [&im](int w, int h) {
    im.width = w;
    im.height = h;
    im.channels = 3;
    im.pixels.assign(static_cast<std::size_t>(w) * static_cast<std::size_t>(h) * 3, 0);
    return im.pixels.data();
  };
  const detail::SniffedFormat f = detail::sniff_image_format(data, size);
  switch (f.format) {
    case detail::ImageFormat::png: detail::decode_png(data, size, name, options.max_pixels, alloc); break;
    case detail::ImageFormat::jpeg: detail::decode_jpeg(data, size, name, options.max_pixels, alloc); break;
    case detail::ImageFormat::webp: detail::decode_webp(data, size, name, options.max_pixels, alloc); break;
    default: detail::throw_unsupported_format(data, size, name, f);
  }
  return im;
}

/// Reads a PNG, JPEG or WebP file as RGB8. Throws for a missing/unreadable file ("cannot open
/// <path>: ...") and for everything decode_image() refuses.
inline Image read_image(const std::string& path, const ImageDecodeOptions& options = {}) {
  std::vector<std::uint8_t> bytes = detail::read_file_bytes(path);
  return decode_image(bytes.data(), bytes.size(), path, options);
}

/// Converts 1 (grey), 2 (grey+alpha), 3 or 4 (RGBA) channel images to RGB, following PIL's
/// convert("RGB"): grey is replicated, alpha is dropped.
inline Image to_rgb(const Image& im) {
  detail::check_image(im, "to_rgb");
  if (im.channels == 3) return im;
  Image out = Image::zeros(im.width, im.height, 3);
  const std::int64_t n = static_cast<std::int64_t>(im.width) * im.height;
  for (std::int64_t i = 0; i < n; ++i) {
    const std::uint8_t* s = &im.pixels[static_cast<std::size_t>(i * im.channels)];
    std::uint8_t* d = &out.pixels[static_cast<std::size_t>(i * 3)];
    if (im.channels <= 2) {
      d[0] = d[1] = d[2] = s[0];
    } else {
      d[0] = s[0], d[1] = s[1], d[2] = s[2];
    }
  }
  return out;
}

/// Encodes an image (1–4 channels) as PNG in memory (libpng, zlib level 6, adaptive filters).
inline std::vector<std::uint8_t> encode_png(const Image& im) {
  detail::check_image(im, "encode_png");
  QLIP_CHECK(!im.empty(), "encode_png: zero-size image");
  return detail::encode_png(im.pixels.data(), im.width, im.height, im.channels);
}

/// Writes a PNG atomically (temp file + fsync + rename; an existing file survives any failure).
inline void write_png(const std::string& path, const Image& im) {
  std::vector<std::uint8_t> png = encode_png(im);
  detail::write_file_atomic(path, png.data(), png.size());
}

/// JPEG quality used by write_image(): high enough that reconstructions are judged, not the codec.
inline constexpr int kDefaultJpegQuality = 95;

/// Encodes a grey (1 channel) or RGB (3 channels) image as baseline JPEG (libjpeg, 4:2:0 chroma).
/// Images with alpha are refused rather than silently flattened: convert with to_rgb() first.
inline std::vector<std::uint8_t> encode_jpeg(const Image& im, int quality = kDefaultJpegQuality) {
  detail::check_image(im, "encode_jpeg");
  QLIP_CHECK(!im.empty(), "encode_jpeg: zero-size image");
  return detail::encode_jpeg(im.pixels.data(), im.width, im.height, im.channels, quality);
}

/// Writes a JPEG atomically (as write_png).
inline void write_jpeg(const std::string& path, const Image& im, int quality = kDefaultJpegQuality) {
  std::vector<std::uint8_t> jpg = encode_jpeg(im, quality);
  detail::write_file_atomic(path, jpg.data(), jpg.size());
}

/// Writes PNG or JPEG (quality kDefaultJpegQuality) chosen by the extension of `path`, compared
/// case-insensitively: .png, or .jpg/.jpeg. Any other extension is refused before a file is touched.
inline void write_image(const std::string& path, const Image& im) {
  const std::size_t dot = path.find_last_of("./");
  std::string ext = dot != std::string::npos && path[dot] == '.' ? path.substr(dot) : "";
  for (char& ch : ext) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (ext == ".png") return write_png(path, im);
  if (ext == ".jpg" || ext == ".jpeg") return write_jpeg(path, im);
  QLIP_THROW("write_image: ", path, ": cannot choose an image format from the extension '", ext,
             "' (use .png, .jpg or .jpeg)");
}

/// Tiles images into a grid of `columns` columns (like torchvision's make_grid): every cell is as
/// large as the largest image, images sit at the top-left of their cell, `padding` black pixels
/// surround every cell (edges included). All images must have the same channel count.
inline Image make_grid(const std::vector<Image>& images, int columns, int padding = 2) {
  QLIP_CHECK(!images.empty(), "make_grid: no images");
  QLIP_CHECK(columns >= 1, "make_grid: columns must be >= 1, got ", columns);
  QLIP_CHECK(padding >= 0, "make_grid: padding must be >= 0, got ", padding);
  int cell_w = 0, cell_h = 0;
  const int ch = images[0].channels;
  for (const auto& im : images) {
    detail::check_image(im, "make_grid");
    QLIP_CHECK(im.channels == ch, "make_grid: images have ", ch, " and ", im.channels, " channels");
    cell_w = std::max(cell_w, im.width);
    cell_h = std::max(cell_h, im.height);
  }
  const std::int64_t n = static_cast<std::int64_t>(images.size());
  const std::int64_t cols = std::min<std::int64_t>(columns, n);
  const std::int64_t rows = (n + cols - 1) / cols;
  const std::int64_t gw = cols * (cell_w + padding) + padding;
  const std::int64_t gh = rows * (cell_h + padding) + padding;
  QLIP_CHECK(gw <= std::numeric_limits<int>::max() && gh <= std::numeric_limits<int>::max(), "make_grid: grid too large");
  Image grid = Image::zeros(static_cast<int>(gw), static_cast<int>(gh), ch);
  for (std::int64_t i = 0; i < n; ++i) {
    const Image& im = images[static_cast<std::size_t>(i)];
    const std::int64_t x0 = padding + (i % cols) * (cell_w + padding);
    const std::int64_t y0 = padding + (i / cols) * (cell_h + padding);
    for (int y = 0; y < im.height; ++y) {
      const std::uint8_t* src = &im.pixels[static_cast<std::size_t>(im.index(y, 0, 0))];
      std::uint8_t* dst = &grid.pixels[static_cast<std::size_t>(((y0 + y) * gw + x0) * ch)];
      std::copy(src, src + static_cast<std::int64_t>(im.width) * ch, dst);
    }
  }
  return grid;
}

/// Originals above reconstructions, `columns` images per row pair; a short last chunk is padded
/// with black cells so the two rows stay aligned.
inline Image comparison_grid(const std::vector<Image>& originals, const std::vector<Image>& recons, int columns,
                             int padding) {
  const std::size_t n = originals.size();
  const std::size_t cols = columns > 0 ? std::min<std::size_t>(static_cast<std::size_t>(columns), n) : n;
  std::vector<Image> cells;
  const Image blank = Image::zeros(originals[0].width, originals[0].height, 3);
  for (std::size_t start = 0; start < n; start += cols) {
    for (const auto* row : {&originals, &recons}) {
      for (std::size_t i = start; i < start + cols; ++i) cells.push_back(i < n ? (*row)[i] : blank);
    }
  }
  return make_grid(cells, static_cast<int>(cols), padding);
}

/// `im` enlarged `factor` times with nearest-neighbour sampling (so that 32-pixel images can be
/// looked at in a grid without blurring them).
inline Image upscale_nearest(const Image& im, int factor) {
  detail::check_image(im, "upscale_nearest");
  QLIP_CHECK(factor >= 1, "upscale_nearest: factor must be >= 1, got ", factor);
  Image out = Image::zeros(im.width * factor, im.height * factor, im.channels);
  for (int y = 0; y < out.height; ++y)
    for (int x = 0; x < out.width; ++x)
      for (int c = 0; c < im.channels; ++c)
        out.pixels[(static_cast<std::size_t>(y) * out.width + x) * im.channels + c] =
            im.pixels[(static_cast<std::size_t>(y / factor) * im.width + x / factor) * im.channels + c];
  return out;
}

namespace detail {
inline void check_same_geometry(const Image& a, const Image& b, const char* what) {
  check_image(a, what);
  check_image(b, what);
  QLIP_CHECK(a.width == b.width && a.height == b.height && a.channels == b.channels, what, ": images differ in size: ",
             a.width, "x", a.height, "x", a.channels, " vs ", b.width, "x", b.height, "x", b.channels);
  QLIP_CHECK(!a.empty(), what, ": zero-size images");
}
}  // namespace detail

/// PSNR in dB over all channels and pixels of 8-bit images (MODEL.md §7.2): 20·log10(255/√MSE).
/// Identical images give +infinity. The squared error is summed exactly in integers, so the result
/// is deterministic.
inline double psnr(const Image& a, const Image& b) {
  detail::check_same_geometry(a, b, "psnr");
  std::uint64_t sse = 0;
  for (std::size_t i = 0; i < a.pixels.size(); ++i) {
    const int d = static_cast<int>(a.pixels[i]) - static_cast<int>(b.pixels[i]);
    sse += static_cast<std::uint64_t>(d * d);
  }
  if (sse == 0) return std::numeric_limits<double>::infinity();
  const double mse = static_cast<double>(sse) / static_cast<double>(a.pixels.size());
  return 20.0 * std::log10(255.0 / std::sqrt(mse));
}

/// SSIM as pytorch_msssim.ssim(x, y, data_range=255) computes it (MODEL.md §7.2): an 11-tap Gaussian
/// window (σ = 1.5) applied separably with *valid* convolution (no padding; an axis shorter than 11
/// is not smoothed, as pytorch_msssim does), K1 = 0.01, K2 = 0.03, the SSIM map averaged per
/// channel, then the channels averaged. Computed in double with pytorch_msssim's float32 window.
inline double ssim(const Image& a, const Image& b) {
  detail::check_same_geometry(a, b, "ssim");
  constexpr int kWin = 11;
  // pytorch_msssim's window, bit for bit: _fspecial_gauss_1d(11, 1.5) in float32 (torch's exp and
  // its summation order). It sums to 0.99999997, not 1, and because σ² = E[x²] − μ² cancels
  // catastrophically, rebuilding it with std::exp (1 ulp apart) moved SSIM by ~5e-6. Symmetric.
  static constexpr float kWindow[kWin] = {0x1.0d957p-10f, 0x1.f1fe02p-8f, 0x1.26eb18p-5f, 0x1.bff0fep-4f,
                                          0x1.b43c3ep-3f,  0x1.10656p-2f,  0x1.b43c3ep-3f, 0x1.bff0fep-4f,
                                          0x1.26eb18p-5f, 0x1.f1fe02p-8f, 0x1.0d957p-10f};
  double win[kWin];
  for (int i = 0; i < kWin; ++i) win[i] = static_cast<double>(kWindow[i]);
  const int H = a.height, W = a.width, C = a.channels;
  const bool smooth_h = H >= kWin, smooth_w = W >= kWin;
  const int Ho = smooth_h ? H - kWin + 1 : H;
  const int Wo = smooth_w ? W - kWin + 1 : W;
  const double C1 = (0.01 * 255.0) * (0.01 * 255.0);
  const double C2 = (0.03 * 255.0) * (0.03 * 255.0);

  // filtered(f) = gaussian_filter of the per-pixel value f(x, y), first along H then along W.
  std::vector<double> tmp(static_cast<std::size_t>(Ho) * W), maps[5];
  std::vector<double> plane_x(static_cast<std::size_t>(H) * W), plane_y(plane_x.size());
  auto filter = [&](auto value, std::vector<double>& out) {
    for (int y = 0; y < Ho; ++y)
      for (int x = 0; x < W; ++x) {
        double s = 0;
        if (smooth_h) {
          for (int k = 0; k < kWin; ++k) s += win[k] * value(static_cast<std::int64_t>(y + k) * W + x);
        } else {
          s = value(static_cast<std::int64_t>(y) * W + x);
        }
        tmp[static_cast<std::size_t>(y) * W + x] = s;
      }
    out.assign(static_cast<std::size_t>(Ho) * Wo, 0.0);
    for (int y = 0; y < Ho; ++y)
      for (int x = 0; x < Wo; ++x) {
        double s = 0;
        if (smooth_w) {
          for (int k = 0; k < kWin; ++k) s += win[k] * tmp[static_cast<std::size_t>(y) * W + x + k];
        } else {
          s = tmp[static_cast<std::size_t>(y) * W + x];
        }
        out[static_cast<std::size_t>(y) * Wo + x] = s;
      }
  };

  double total = 0.0;
  for (int c = 0; c < C; ++c) {
    for (std::int64_t i = 0; i < static_cast<std::int64_t>(H) * W; ++i) {
      plane_x[static_cast<std::size_t>(i)] = a.pixels[static_cast<std::size_t>(i * C + c)];
      plane_y[static_cast<std::size_t>(i)] = b.pixels[static_cast<std::size_t>(i * C + c)];
    }
    const double* X = plane_x.data();
    const double* Y = plane_y.data();
    filter([&](std::int64_t i) { return X[i]; }, maps[0]);
    filter([&](std::int64_t i) { return Y[i]; }, maps[1]);
    filter([&](std::int64_t i) { return X[i] * X[i]; }, maps[2]);
    filter([&](std::int64_t i) { return Y[i] * Y[i]; }, maps[3]);
    filter([&](std::int64_t i) { return X[i] * Y[i]; }, maps[4]);
    double sum = 0.0;
    for (std::size_t i = 0; i < maps[0].size(); ++i) {
      const double mu1 = maps[0][i], mu2 = maps[1][i];
      const double s1 = maps[2][i] - mu1 * mu1, s2 = maps[3][i] - mu2 * mu2, s12 = maps[4][i] - mu1 * mu2;
      const double cs = (2.0 * s12 + C2) / (s1 + s2 + C2);
      sum += ((2.0 * mu1 * mu2 + C1) / (mu1 * mu1 + mu2 * mu2 + C1)) * cs;
    }
    total += sum / static_cast<double>(maps[0].size());
  }
  return total / C;
}

}  // namespace qlip
