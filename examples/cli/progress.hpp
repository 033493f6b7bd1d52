/// @file progress.hpp
/// @brief A one-line progress bar on stderr for batch jobs ("encode [#####.....] 40/100 images").
///
/// Drawn only when stderr is a terminal (or when forced with --progress always), so logs and the
/// tests, which capture stderr, see nothing but the final one-line error on failure. main() calls
/// ProgressBar::clear_active() before printing an error so the message starts at column 0.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>

namespace qlip::cli {

/// When to draw the bar.
enum class ProgressMode { automatic, always, never };

/// The bar of one batch job. At most one is on screen at a time (tracked for clear_active()).
class ProgressBar {
 public:
  /// @param label    word before the bar ("encode")
  /// @param total    number of items (images)
  /// @param mode     automatic = only on a terminal and only for more than one batch of work
  /// @param min_total below this count the bar is not drawn in automatic mode
  ProgressBar(std::string label, std::int64_t total, ProgressMode mode, std::int64_t min_total = 2)
      : label_(std::move(label)),
        total_(total),
        uncaught_(std::uncaught_exceptions()),
        start_(std::chrono::steady_clock::now()) {
    enabled_ = mode == ProgressMode::always ||
               (mode == ProgressMode::automatic && total >= min_total && ::isatty(STDERR_FILENO));
    if (enabled_) {
      active() = this;
      draw();
    }
  }
  /// Ends the bar; when an exception is unwinding, erases it instead so the error line that main()
  /// prints next stands alone.
  ~ProgressBar() {
    if (std::uncaught_exceptions() > uncaught_) {
      clear_active();
      if (enabled_) std::fputs("\r\033[K", stderr);
      enabled_ = false;
      return;
    }
    finish();
  }
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  /// Marks `n` more items done and redraws.
  void advance(std::int64_t n) {
    done_ += n;
    if (enabled_) draw();
  }

  /// Ends the bar with a newline (idempotent).
  void finish() {
    if (!enabled_) return;
    std::fputc('\n', stderr);
    std::fflush(stderr);
    enabled_ = false;
    if (active() == this) active() = nullptr;
  }

  /// Erases a bar that is still on screen (called before printing an error).
  static void clear_active() {
    if (ProgressBar* bar = active()) {
      std::fputs("\r\033[K", stderr);
      bar->enabled_ = false;
      active() = nullptr;
    }
  }

 private:
  static ProgressBar*& active() {
    static ProgressBar* bar = nullptr;
    return bar;
  }

  void draw() {
    constexpr int kWidth = 30;
    const double frac = total_ > 0 ? static_cast<double>(done_) / static_cast<double>(total_) : 1.0;
    const int filled = static_cast<int>(frac * kWidth + 0.5);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    std::string bar(static_cast<std::size_t>(filled), '#');
    bar.append(static_cast<std::size_t>(kWidth - filled), '.');
    char rate[64] = "";
    if (done_ > 0 && secs > 0) std::snprintf(rate, sizeof(rate), "  %.2f img/s", static_cast<double>(done_) / secs);
    std::fprintf(stderr, "\r\033[K%s [%s] %lld/%lld images%s", label_.c_str(), bar.c_str(),
                 static_cast<long long>(done_), static_cast<long long>(total_), rate);
    std::fflush(stderr);
  }

  std::string label_;
  std::int64_t total_ = 0;
  std::int64_t done_ = 0;
  bool enabled_ = false;
  int uncaught_ = 0;  // std::uncaught_exceptions() at construction
  std::chrono::steady_clock::time_point start_;
};

}  // namespace qlip::cli
