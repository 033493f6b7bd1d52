/// @file plot.hpp
/// @brief A PNG line plot of training curves (log10 scale), rendered with no plotting library:
///        axes, tick labels and a legend drawn with a 5×7 bitmap font.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "qlip/io/image.hpp"

namespace qlip::train_cli {

/// One named curve: y values at steps x.
struct Curve {
  std::string name;
  std::vector<double> x, y;
};

namespace detail {

struct Rgb {
  std::uint8_t r, g, b;
};

/// 5×7 glyphs (one byte per row, bit 4 = leftmost column) for the characters plots need.
inline const std::array<std::uint8_t, 7>* glyph(char c) {
  static const std::string chars = "0123456789.-+e:=abcdfghiklmnoprstuvwxyz_ ()/jq";
  static const std::array<std::array<std::uint8_t, 7>, 46> g = {{
      {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E}, {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E},
      {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F}, {0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E},
      {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02}, {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E},
      {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E}, {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08},
      {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E}, {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C},
      {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C}, {0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00},
      {0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00}, {0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E},
      {0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00}, {0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00},
      {0x00, 0x00, 0x0E, 0x01, 0x0F, 0x11, 0x0F}, {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1E},
      {0x00, 0x00, 0x0E, 0x10, 0x10, 0x11, 0x0E}, {0x01, 0x01, 0x0D, 0x13, 0x11, 0x11, 0x0F},
      {0x06, 0x09, 0x08, 0x1C, 0x08, 0x08, 0x08}, {0x00, 0x0F, 0x11, 0x11, 0x0F, 0x01, 0x0E},
      {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11}, {0x04, 0x00, 0x0C, 0x04, 0x04, 0x04, 0x0E},
      {0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12}, {0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E},
      {0x00, 0x00, 0x1A, 0x15, 0x15, 0x11, 0x11}, {0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11},
      {0x00, 0x00, 0x0E, 0x11, 0x11, 0x11, 0x0E}, {0x00, 0x00, 0x1E, 0x11, 0x1E, 0x10, 0x10},
      {0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10}, {0x00, 0x00, 0x0E, 0x10, 0x0E, 0x01, 0x1E},
      {0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06}, {0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0D},
      {0x00, 0x00, 0x11, 0x11, 0x11, 0x0A, 0x04}, {0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0A},
      {0x00, 0x00, 0x11, 0x0A, 0x04, 0x0A, 0x11}, {0x00, 0x00, 0x11, 0x11, 0x0F, 0x01, 0x0E},
      {0x00, 0x00, 0x1F, 0x02, 0x04, 0x08, 0x1F}, {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F},
      {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}, {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02},
      {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08}, {0x01, 0x01, 0x02, 0x04, 0x08, 0x10, 0x10},
      {0x02, 0x00, 0x06, 0x02, 0x02, 0x12, 0x0C}, {0x00, 0x00, 0x0D, 0x13, 0x0F, 0x01, 0x01},
  }};
  const char lower = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  const std::size_t at = chars.find(lower);
  return at == std::string::npos ? nullptr : &g[at];
}

inline void put(Image& im, int x, int y, Rgb c) {
  if (x < 0 || y < 0 || x >= im.width || y >= im.height) return;
  std::uint8_t* p = im.pixels.data() + (static_cast<std::size_t>(y) * im.width + x) * 3;
  p[0] = c.r;
  p[1] = c.g;
  p[2] = c.b;
}

inline void text(Image& im, int x, int y, const std::string& s, Rgb c) {
  for (char ch : s) {
    if (const auto* g = glyph(ch))
      for (int r = 0; r < 7; ++r)
        for (int k = 0; k < 5; ++k)
          if (((*g)[r] >> (4 - k)) & 1) put(im, x + k, y + r, c);
    x += 6;
  }
}

/// Bresenham line, 2 px thick.
inline void line(Image& im, int x0, int y0, int x1, int y1, Rgb c) {
  const int dx = std::abs(x1 - x0), dy = -std::abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
  int err = dx + dy;
  for (;;) {
    put(im, x0, y0, c);
    put(im, x0, y0 + 1, c);
    if (x0 == x1 && y0 == y1) break;
    const int e2 = 2 * err;
    if (e2 >= dy) {
      err += dy;
      x0 += sx;
    }
    if (e2 <= dx) {
      err += dx;
      y0 += sy;
    }
  }
}

inline std::string format_tick(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

}  // namespace detail

/// Renders the curves with a log10 y axis (non-positive values are skipped: the entropy penalty is
/// negative by design, so it is plotted as its magnitude by the caller if wanted) and writes a PNG.
inline void write_loss_plot(const std::string& path, const std::vector<Curve>& curves, const std::string& title) {
  using detail::Rgb;
  const int w = 900, h = 480, left = 70, right = 190, top = 30, bottom = 40;
  Image im = Image::zeros(w, h, 3);
  std::fill(im.pixels.begin(), im.pixels.end(), std::uint8_t{255});
  double x_max = 1, y_lo = std::numeric_limits<double>::infinity(), y_hi = -y_lo;
  for (const Curve& c : curves)
    for (std::size_t i = 0; i < c.y.size(); ++i) {
      x_max = std::max(x_max, c.x[i]);
      if (c.y[i] > 0 && std::isfinite(c.y[i])) {
        y_lo = std::min(y_lo, std::log10(c.y[i]));
        y_hi = std::max(y_hi, std::log10(c.y[i]));
      }
    }
  if (!std::isfinite(y_lo)) y_lo = 0, y_hi = 1;
  y_lo = std::floor(y_lo);
  y_hi = std::max(std::ceil(y_hi), y_lo + 1);
  const auto px = [&](double x) { return left + static_cast<int>((w - left - right) * x / x_max); };
  const auto py = [&](double ly) { return h - bottom - static_cast<int>((h - top - bottom) * (ly - y_lo) / (y_hi - y_lo)); };
  const Rgb black{0, 0, 0}, grey{210, 210, 210};
  for (double d = y_lo; d <= y_hi + 1e-9; d += 1) {  // decades
    detail::line(im, left, py(d), w - right, py(d), grey);
    detail::text(im, 8, py(d) - 3, detail::format_tick(std::pow(10.0, d)), black);
  }
  detail::line(im, left, top, left, h - bottom, black);
  detail::line(im, left, h - bottom, w - right, h - bottom, black);
  for (int k = 0; k <= 4; ++k) {
    const double x = x_max * k / 4;
    detail::text(im, px(x) - 6, h - bottom + 8, detail::format_tick(std::round(x)), black);
  }
  detail::text(im, (w - right) / 2 - 12, h - 14, "step", black);
  detail::text(im, left, 10, title, black);
  static const Rgb palette[] = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44},  {214, 39, 40},
                                {148, 103, 189}, {140, 86, 75}, {227, 119, 194}, {127, 127, 127}};
  for (std::size_t k = 0; k < curves.size(); ++k) {
    const Rgb col = palette[k % 8];
    const Curve& c = curves[k];
    bool have = false;
    int lx = 0, ly = 0;
    for (std::size_t i = 0; i < c.y.size(); ++i) {
      if (!(c.y[i] > 0 && std::isfinite(c.y[i]))) {
        have = false;
        continue;
      }
      const int x = px(c.x[i]), y = py(std::log10(c.y[i]));
      if (have) detail::line(im, lx, ly, x, y, col);
      have = true;
      lx = x;
      ly = y;
    }
    const int ky = top + 14 * static_cast<int>(k);
    detail::line(im, w - right + 12, ky + 3, w - right + 30, ky + 3, col);
    detail::text(im, w - right + 36, ky, c.name, black);
  }
  write_png(path, im);
}

}  // namespace qlip::train_cli
