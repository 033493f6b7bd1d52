/// @file test_image_decode.cpp
/// @brief Robust decoding: every defect class fuzzing found in the former stb_image decoder (the
///        inputs are rebuilt here byte by byte), unsupported formats named, the pixel budget
///        applied before allocation, truncated and corrupt PNG/JPEG/WebP refused, parity with PIL
///        on every PNG colour type / bit depth and on JPEG/WebP variants (fixture made by
///        tools/make_preprocess_fixtures.py), and the PNG/JPEG writers.
#include <gtest/gtest.h>
#include <webp/encode.h>
#include <zlib.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "io/io_test_util.hpp"
#include "io/photos.hpp"
#include "io/sha256.hpp"
#include "qlip/core/philox.hpp"
#include "qlip/io/image.hpp"
#include "qlip/io/json.hpp"

namespace {

using qlip::Image;
using qlip::test::throws_error;

using qlip::test::random_image;

/// A smooth image (compresses like a photo, so JPEG round trips are meaningful).
Image smooth_image(int w, int h) {
  Image im = Image::zeros(w, h, 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      im.at(y, x, 0) = static_cast<std::uint8_t>(x * 255 / w);
      im.at(y, x, 1) = static_cast<std::uint8_t>(y * 255 / h);
      im.at(y, x, 2) = static_cast<std::uint8_t>(128 + 100 * std::sin(0.1 * (x + y)));
    }
  return im;
}

std::vector<std::uint8_t> bytes_of(const std::string& s) {
  return {s.begin(), s.end()};
}

Image decode(const std::vector<std::uint8_t>& b, const std::string& name,
             std::int64_t max_pixels = qlip::kMaxImagePixels) {
  return qlip::decode_image(b.data(), b.size(), name, qlip::ImageDecodeOptions{max_pixels});
}

template <class F>
double seconds(F&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::vector<std::uint8_t> webp_lossless(const Image& im) {
  std::uint8_t* out = nullptr;
  const std::size_t n = WebPEncodeLosslessRGB(im.pixels.data(), im.width, im.height, im.width * 3, &out);
  std::vector<std::uint8_t> v(out, out + n);
  WebPFree(out);
  return v;
}

std::vector<std::uint8_t> webp_lossy(const Image& im, float quality) {
  std::uint8_t* out = nullptr;
  const std::size_t n = WebPEncodeRGB(im.pixels.data(), im.width, im.height, im.width * 3, quality, &out);
  std::vector<std::uint8_t> v(out, out + n);
  WebPFree(out);
  return v;
}

// ---- the stb_image defects, one per class ----

TEST(ImageDecode, JpegHuffmanTableOverflowInput) {
  // stb wrote out of bounds building this DHT (length 0x0100, 3 bytes of table).
  const std::vector<std::uint8_t> b = {0xff, 0xd8, 0xff, 0xc4, 0x01, 0x00, 0x00, 0xb1, 0xb1};
  EXPECT_TRUE(throws_error([&] { (void)decode(b, "dht9.jpg"); }, {"truncated JPEG file: ", "dht9.jpg"}));
}

TEST(ImageDecode, PnmIsUnsupportedWhateverItsHeader) {
  // 16-bit PGM (stb read past the heap buffer), a header value overflowing int (signed overflow in
  // stb's parser), and a 23-byte PPM declaring more pixels than it holds (stb returned
  // uninitialised memory as the image).
  std::string pgm16 = "P5\n2 2\n65535\n";
  pgm16 += std::string(8, '\x7f');
  const std::string huge = "P6\n99999999999999999999 3\n255\n\x01\x02\x03";
  const std::string ppm23 = "P6\n4 4\n255\n" + std::string(12, '\x55');
  ASSERT_EQ(ppm23.size(), 23u);
  for (const auto& [name, data] :
       {std::pair<std::string, std::string>{"g16.pgm", pgm16}, {"huge.ppm", huge}, {"cut.ppm", ppm23}}) {
    EXPECT_TRUE(throws_error([&] { (void)decode(bytes_of(data), name); }, {"unsupported image format: ", name, "PNM"}));
  }
  EXPECT_TRUE(
      throws_error([&] { (void)decode(bytes_of("P7\nWIDTH 1\n"), "a.pam"); }, {"unsupported image format", "PAM"}));
}

TEST(ImageDecode, TgaHeaderIsRefusedAtOnce) {
  // 18-byte TGA header declaring 31397 x 13407 x 24 bit: stb allocated 2.5 GB and spent 8 s.
  std::vector<std::uint8_t> tga(18, 0);
  tga[2] = 2;  // uncompressed true colour
  tga[12] = 31397 & 0xff, tga[13] = 31397 >> 8;
  tga[14] = 13407 & 0xff, tga[15] = 13407 >> 8;
  tga[16] = 24;
  double t = seconds([&] {
    EXPECT_TRUE(throws_error([&] { (void)decode(tga, "big.tga"); }, {"unsupported image format: ", "big.tga", "TGA"}));
  });
  EXPECT_LT(t, 0.5);
}

TEST(ImageDecode, OtherFormatsAreNamed) {
  const std::pair<std::string, std::string> cases[] = {
      {"BMP", std::string("BM\x36\0\0\0\0\0\0\0\x36\0\0\0", 14)},
      {"GIF", "GIF89a\x01\0\x01\0\0\0\0;"},
      {"TIFF", std::string("II*\0\x08\0\0\0", 8)},
      {"TIFF", std::string("MM\0*\0\0\0\x08", 8)},
      {"PSD", "8BPS\0\x01"},
      {"AVIF", std::string("\0\0\0\x1c"
                           "ftypavif\0\0\0\0",
                           16)},
      {"ICO", std::string("\0\0\1\0\1\0\x10\x10", 8)},
      {"JPEG XL", std::string("\xff\x0a\x01\x02", 4)},
  };
  for (const auto& [fmt, data] : cases) {
    const std::string name = "file_" + fmt + ".img";
    EXPECT_TRUE(throws_error([&] { (void)decode(bytes_of(data), name); }, {"unsupported image format: ", name, fmt}));
  }
  EXPECT_TRUE(throws_error([&] { (void)decode(bytes_of("hello, world"), "notes.png"); },
                           {"unsupported image format: ", "notes.png", "not a PNG, JPEG or WebP", "68 65 6c 6c"}));
  // A RIFF container that is not WebP (an AVI, say) is not taken for one.
  EXPECT_TRUE(
      throws_error([&] { (void)decode(bytes_of("RIFF\x04\0\0\0AVI "), "clip.webp"); }, {"unsupported image format"}));
}

// ---- the pixel budget ----

std::uint32_t crc_of(const std::uint8_t* p, std::size_t n) {
  return static_cast<std::uint32_t>(crc32(0L, p, static_cast<uInt>(n)));
}

void put_be32(std::uint8_t* p, std::uint32_t v) {
  p[0] = static_cast<std::uint8_t>(v >> 24), p[1] = static_cast<std::uint8_t>(v >> 16);
  p[2] = static_cast<std::uint8_t>(v >> 8), p[3] = static_cast<std::uint8_t>(v);
}

/// A valid PNG whose IHDR is rewritten to declare w x h (CRC fixed, so libpng accepts the header).
std::vector<std::uint8_t> png_declaring(std::uint32_t w, std::uint32_t h) {
  std::vector<std::uint8_t> png = qlip::encode_png(random_image(8, 8, 3, 1));
  put_be32(&png[16], w);
  put_be32(&png[20], h);
  put_be32(&png[29], crc_of(&png[12], 17));  // CRC over "IHDR" + 13 data bytes
  return png;
}

/// A valid JPEG whose SOF0 is rewritten to declare w x h.
std::vector<std::uint8_t> jpeg_declaring(std::uint16_t w, std::uint16_t h) {
  std::vector<std::uint8_t> jpg = qlip::encode_jpeg(smooth_image(16, 16), 90);
  for (std::size_t i = 2; i + 8 < jpg.size(); ++i) {
    if (jpg[i] == 0xff && jpg[i + 1] == 0xc0) {
      jpg[i + 5] = static_cast<std::uint8_t>(h >> 8), jpg[i + 6] = static_cast<std::uint8_t>(h);
      jpg[i + 7] = static_cast<std::uint8_t>(w >> 8), jpg[i + 8] = static_cast<std::uint8_t>(w);
      return jpg;
    }
  }
  ADD_FAILURE() << "no SOF0 in the encoded JPEG";
  return jpg;
}

TEST(ImageDecode, HugeDeclaredSizeIsRefusedBeforeAllocation) {
  const double t = seconds([&] {
    EXPECT_TRUE(throws_error([&] { (void)decode(png_declaring(100000, 100000), "bomb.png"); },
                             {"image too large: ", "bomb.png", "PNG declares 100000x100000", "max_pixels"}));
    // Beyond libpng's own 1e6-per-side limit: still our budget message, not a libpng one.
    EXPECT_TRUE(throws_error([&] { (void)decode(png_declaring(200000000, 1000), "wide.png"); },
                             {"image too large: ", "wide.png"}));
    EXPECT_TRUE(throws_error([&] { (void)decode(jpeg_declaring(60000, 60000), "bomb.jpg"); },
                             {"image too large: ", "bomb.jpg", "JPEG declares 60000x60000"}));
    // WebP lossless header: 14-bit width-1 and height-1 set to 16383 (16384 x 16384 = 268 M pixels).
    std::vector<std::uint8_t> webp = webp_lossless(random_image(4, 4, 3, 2));
    ASSERT_EQ(webp[20], 0x2f);  // simple lossless file: RIFF header, "VP8L" chunk, signature byte
    webp[21] = 0xff, webp[22] = 0xff, webp[23] = 0xff, webp[24] = static_cast<std::uint8_t>((webp[24] & 0xf0) | 0x0f);
    EXPECT_TRUE(throws_error([&] { (void)decode(webp, "bomb.webp"); },
                             {"image too large: ", "bomb.webp", "WebP declares 16384x16384"}));
  });
  EXPECT_LT(t, 0.5) << "the size must be refused from the header, before anything is decoded";
  // Just above PIL's limit (2 x 89478485) is refused, and the budget can be lowered or raised.
  EXPECT_EQ(qlip::kMaxImagePixels, 178956970);
  EXPECT_TRUE(throws_error([&] { (void)decode(png_declaring(178956971, 1), "over.png"); }, {"178956971", "178956970"}));
  const std::vector<std::uint8_t> ok = qlip::encode_png(random_image(64, 64, 3, 3));
  EXPECT_TRUE(throws_error([&] { (void)decode(ok, "small.png", 64 * 64 - 1); }, {"image too large: ", "small.png"}));
  EXPECT_EQ(decode(ok, "small.png", 64 * 64).width, 64);
  EXPECT_TRUE(throws_error([&] { (void)decode(png_declaring(0, 5), "zero.png"); }, {"zero.png"}));
}

// ---- truncated and corrupt files ----

/// Every cut must be an error naming the file as truncated (never a decoded image).
void expect_every_cut_fails(const std::vector<std::uint8_t>& file, const std::string& fmt, std::size_t first_cut) {
  const std::size_t n = file.size();
  std::vector<std::size_t> cuts = {first_cut, first_cut + 1, 33,     100,   n / 4, n / 3,
                                   n / 2,     2 * n / 3,     n - 13, n - 2, n - 1};
  for (std::size_t cut : cuts) {
    if (cut < first_cut || cut >= n) continue;
    const std::vector<std::uint8_t> part(file.begin(), file.begin() + static_cast<std::ptrdiff_t>(cut));
    const std::string name = "cut_at_" + std::to_string(cut) + "." + fmt;
    EXPECT_TRUE(throws_error([&] { (void)decode(part, name); }, {"truncated ", name}))
        << fmt << " cut at " << cut << " of " << n;
  }
}

TEST(ImageDecode, TruncatedFilesAreErrors) {
  std::string path;
  ASSERT_TRUE(qlip::test::locate_photo("coffee.png", "", path));
  expect_every_cut_fails(qlip::detail::read_file_bytes(path), "png", 8);
  ASSERT_TRUE(qlip::test::locate_photo("rocket.jpg", "", path));
  expect_every_cut_fails(qlip::detail::read_file_bytes(path), "jpg", 3);
  // Interlaced and progressive variants are cut as well: their data arrives in passes.
  expect_every_cut_fails(qlip::detail::read_file_bytes(QLIP_TEST_DATA_DIR "/io/decode/adam7_rgb.png"), "png", 8);
  expect_every_cut_fails(qlip::detail::read_file_bytes(QLIP_TEST_DATA_DIR "/io/decode/progressive.jpg"), "jpg", 3);
  expect_every_cut_fails(qlip::encode_png(random_image(61, 47, 4, 4)), "png", 8);
  expect_every_cut_fails(webp_lossy(smooth_image(97, 61), 80), "webp", 12);
  expect_every_cut_fails(webp_lossless(random_image(37, 29, 3, 5)), "webp", 12);
}

TEST(ImageDecode, CorruptFilesAreErrors) {
  // A flipped byte inside IDAT: the chunk CRC no longer matches.
  std::vector<std::uint8_t> png = qlip::encode_png(random_image(32, 32, 3, 6));
  png[png.size() / 2] ^= 0x40;
  EXPECT_TRUE(throws_error([&] { (void)decode(png, "flip.png"); }, {"corrupt PNG file: ", "flip.png"}));
  // A PNG signature followed by garbage.
  std::vector<std::uint8_t> sig = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'X'};
  sig.resize(64, 0);
  EXPECT_TRUE(throws_error([&] { (void)decode(sig, "garbage.png"); }, {"corrupt PNG file: ", "garbage.png"}));
  // JPEG entropy data overwritten with a run of 0xff bytes (markers where coefficients should be).
  std::vector<std::uint8_t> jpg = qlip::encode_jpeg(smooth_image(64, 64), 90);
  for (std::size_t i = jpg.size() / 2; i < jpg.size() / 2 + 40; ++i) jpg[i] = 0xff;
  EXPECT_TRUE(throws_error([&] { (void)decode(jpg, "smashed.jpg"); }, {"JPEG file: ", "smashed.jpg"}));
  // A JPEG with only SOI and EOI has no frame.
  EXPECT_TRUE(throws_error(
      [&] {
        (void)decode({0xff, 0xd8, 0xff, 0xd9}, "empty.jpg");
      },
      {"corrupt JPEG file: ", "empty.jpg"}));
  // A lossy WebP whose VP8 start code (9d 01 2a, after the RIFF and chunk headers and the 3-byte
  // frame tag) is broken.
  std::vector<std::uint8_t> webp = webp_lossy(smooth_image(64, 64), 80);
  ASSERT_EQ(webp[23], 0x9d);
  webp[23] = 0;
  EXPECT_TRUE(throws_error([&] { (void)decode(webp, "badstart.webp"); }, {"corrupt WebP file: ", "badstart.webp"}));
}

// ---- what decodes, and how ----

TEST(ImageDecode, WebpDecodes) {
  const Image im = random_image(23, 17, 3, 7);
  const Image back = decode(webp_lossless(im), "ll.webp");
  EXPECT_EQ(back.width, 23);
  EXPECT_EQ(back.height, 17);
  EXPECT_EQ(back.pixels, im.pixels);
  const Image smooth = smooth_image(64, 48);
  const Image lossy = decode(webp_lossy(smooth, 90), "lossy.webp");
  ASSERT_EQ(lossy.width, 64);
  EXPECT_GT(qlip::psnr(lossy, smooth), 30.0);
}

/// PIL's Image.open(f).convert("RGB") on small files of every PNG colour type and bit depth
/// (palette with tRNS, 16-bit grey, 1/2/4-bit grey, ...), JPEG (4:2:0, 4:2:2, 4:4:4, progressive,
/// grey, CMYK) and WebP (lossy, lossless, with alpha): the decoded RGB bytes must be PIL's, exactly.
TEST(ImageDecode, MatchesPilOnEveryColourType) {
  auto j = qlip::read_json(QLIP_TEST_DATA_DIR "/io/decode/decode_cases.json");
  const auto& cases = j.at("cases");
  ASSERT_GE(cases.size(), 25u);
  for (const auto& c : cases) {
    const std::string file = c.at("file").get<std::string>();
    const Image im = qlip::read_image(QLIP_TEST_DATA_DIR "/io/decode/" + file);
    EXPECT_EQ(im.width, c.at("width").get<int>()) << file;
    EXPECT_EQ(im.height, c.at("height").get<int>()) << file;
    EXPECT_EQ(qlip::test::sha256_hex(im.pixels), c.at("rgb_sha256").get<std::string>())
        << file << " (PIL mode " << c.at("mode").get<std::string>() << ") decodes differently from PIL";
  }
}

TEST(ImageDecode, SixteenBitPngFollowsPil) {
  // 16-bit grey: PIL's I;16 -> RGB saturates; 16-bit RGB keeps the high byte (checked with Pillow 13).
  std::vector<std::uint8_t> raw;
  const std::uint16_t vals[] = {0, 1, 100, 255, 256, 1000, 32768, 65535};
  for (std::uint16_t v : vals)
    raw.insert(raw.end(), {0, static_cast<std::uint8_t>(v >> 8), static_cast<std::uint8_t>(v)});
  uLongf zn = compressBound(static_cast<uLong>(raw.size()));
  std::vector<std::uint8_t> z(zn);
  ASSERT_EQ(compress(z.data(), &zn, raw.data(), static_cast<uLong>(raw.size())), Z_OK);
  z.resize(zn);
  auto chunk = [](std::vector<std::uint8_t>& out, const char* type, const std::vector<std::uint8_t>& data) {
    std::uint8_t len[4];
    put_be32(len, static_cast<std::uint32_t>(data.size()));
    out.insert(out.end(), len, len + 4);
    const std::size_t at = out.size();
    out.insert(out.end(), type, type + 4);
    out.insert(out.end(), data.begin(), data.end());
    std::uint8_t crc[4];
    put_be32(crc, crc_of(&out[at], out.size() - at));
    out.insert(out.end(), crc, crc + 4);
  };
  std::vector<std::uint8_t> png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  std::vector<std::uint8_t> ihdr(13, 0);
  put_be32(&ihdr[0], 1);
  put_be32(&ihdr[4], 8);
  ihdr[8] = 16;  // bit depth; colour type 0 (grey)
  chunk(png, "IHDR", ihdr);
  chunk(png, "IDAT", z);
  chunk(png, "IEND", {});
  const Image g = decode(png, "grey16.png");
  ASSERT_EQ(g.height, 8);
  const std::uint8_t want[] = {0, 1, 100, 255, 255, 255, 255, 255};
  for (int y = 0; y < 8; ++y) {
    EXPECT_EQ(g.at(y, 0, 0), want[y]) << "row " << y;
    EXPECT_EQ(g.at(y, 0, 2), want[y]) << "row " << y;
  }
}

// ---- writing ----

TEST(ImageWrite, JpegRoundTripAndAtomicity) {
  qlip::test::ScratchDir dir;
  const Image im = smooth_image(99, 67);
  const std::string path = dir.file("a.jpg");
  qlip::write_jpeg(path, im, 95);
  const Image back = qlip::read_image(path);
  ASSERT_EQ(back.width, 99);
  ASSERT_EQ(back.height, 67);
  EXPECT_GT(qlip::psnr(back, im), 35.0);
  // Lower quality, smaller file; grey images stay grey.
  qlip::write_jpeg(dir.file("low.jpg"), im, 20);
  EXPECT_LT(qlip::test::read_bytes(dir.file("low.jpg")).size(), qlip::test::read_bytes(path).size());
  const Image grey = random_image(16, 9, 1, 8);
  qlip::write_jpeg(dir.file("g.jpg"), grey);
  const Image g3 = qlip::read_image(dir.file("g.jpg"));
  for (std::size_t i = 0; i < g3.pixels.size(); i += 3)
    ASSERT_TRUE(g3.pixels[i] == g3.pixels[i + 1] && g3.pixels[i] == g3.pixels[i + 2]);
  // Failures leave the existing file alone and no temp file behind.
  const std::string before = qlip::test::read_bytes(path);
  EXPECT_TRUE(throws_error([&] { qlip::write_jpeg(path, random_image(8, 8, 4, 9)); }, {"no alpha", "to_rgb"}));
  EXPECT_TRUE(throws_error([&] { qlip::write_jpeg(path, im, 0); }, {"quality"}));
  EXPECT_TRUE(throws_error([&] { qlip::write_jpeg(path, im, 101); }, {"quality"}));
  Image broken = im;
  broken.pixels.resize(7);
  EXPECT_TRUE(throws_error([&] { qlip::write_jpeg(path, broken); }, {"pixel buffer"}));
  EXPECT_TRUE(throws_error([&] { qlip::write_jpeg(dir.file("nodir/x.jpg"), im); }, {"nodir"}));
  EXPECT_EQ(qlip::test::read_bytes(path), before);
  EXPECT_EQ(dir.list().size(), 3u);
}

TEST(ImageWrite, WriteImagePicksTheFormatFromTheExtension) {
  qlip::test::ScratchDir dir;
  const Image im = random_image(12, 10, 3, 10);
  qlip::write_image(dir.file("x.PNG"), im);
  qlip::write_image(dir.file("x.jpeg"), im);
  qlip::write_image(dir.file("y.JPG"), im);
  EXPECT_EQ(qlip::test::read_bytes(dir.file("x.PNG")).substr(0, 4), "\x89PNG");
  EXPECT_EQ(qlip::test::read_bytes(dir.file("x.jpeg")).substr(0, 3), "\xff\xd8\xff");
  EXPECT_EQ(qlip::test::read_bytes(dir.file("y.JPG")).substr(0, 3), "\xff\xd8\xff");
  EXPECT_EQ(qlip::read_image(dir.file("x.PNG")).pixels, im.pixels);
  EXPECT_TRUE(
      throws_error([&] { qlip::write_image(dir.file("x.bmp"), im); }, {"x.bmp", "'.bmp'", ".png, .jpg or .jpeg"}));
  EXPECT_TRUE(throws_error([&] { qlip::write_image(dir.file("noext"), im); }, {"noext", "''"}));
  EXPECT_TRUE(throws_error([&] { qlip::write_image(dir.file("dir.png/file"), im); }, {"dir.png/file"}));
  EXPECT_EQ(dir.list().size(), 3u);
}

}  // namespace
