/// @file task_mix.hpp
/// @brief Which task each row of a UM³ batch trains, and on what: the ratio text : image → text :
///        text → image moves linearly from a start ratio to an end ratio over the run (the paper's
///        Table 9 goes from 60:1:3 to 12:1:3), and every draw of a row (its task, its image, its
///        caption template, its text window, whether its caption is dropped for guidance) is a
///        Philox value keyed by (seed, step, row, purpose).
///
/// Keyed draws make a batch a pure function of (seed, step): a resumed run rebuilds exactly the
/// batches an uninterrupted one would, with no loader position to save, and any rank of a data-
/// parallel run can build its own rows of the global batch.
#pragma once

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>

#include "qlip/core/error.hpp"
#include "qlip/core/philox.hpp"
#include "qlip/um3/sequences.hpp"

namespace qlip::um3 {

/// Relative row counts of the three tasks (any positive scale; 60:1:3 is the paper's start).
struct TaskRatio {
  std::array<double, kTaskCount> weight{1.0, 1.0, 1.0};  ///< text, image → text, text → image

  /// Throws unless every weight is finite and ≥ 0 and their sum is positive.
  void validate(const char* what) const {
    double sum = 0;
    for (double w : weight) {
      QLIP_CHECK(std::isfinite(w) && w >= 0, what, ": task weights must be finite and >= 0, got ", w);
      sum += w;
    }
    QLIP_CHECK(sum > 0, what, ": the task weights sum to 0");
  }
  /// Probability of task t.
  double probability(Task t) const {
    return weight[static_cast<std::size_t>(t)] / (weight[0] + weight[1] + weight[2]);
  }
  /// "60:1:3".
  std::string text() const;
};

/// Parses "A:B:C" (three non-negative numbers, text : image→text : text→image).
/// @throws qlip::Error "task ratio '60:1': expected three numbers A:B:C ..."
inline TaskRatio parse_task_ratio(std::string_view s) {
  QLIP_CHECK(std::count(s.begin(), s.end(), ':') == kTaskCount - 1, "task ratio '", s,
             "': expected three numbers A:B:C (text : image-to-text : text-to-image)");
  TaskRatio r;
  std::size_t at = 0;
  for (int k = 0; k < kTaskCount; ++k) {
    const std::size_t end = k + 1 < kTaskCount ? s.find(':', at) : s.size();
    const std::string_view part = s.substr(at, end - at);
    double v = 0;
    const auto res = std::from_chars(part.data(), part.data() + part.size(), v);
    QLIP_CHECK(!part.empty() && res.ec == std::errc() && res.ptr == part.data() + part.size(), "task ratio '", s,
               "': '", part, "' is not a number");
    r.weight[static_cast<std::size_t>(k)] = v;
    at = end + 1;
  }
  r.validate("task ratio");
  return r;
}

inline std::string TaskRatio::text() const {
  std::string out;
  for (int k = 0; k < kTaskCount; ++k) {
    char buf[32];
    const auto res = std::to_chars(buf, buf + sizeof buf, weight[static_cast<std::size_t>(k)]);
    if (k) out += ':';
    out.append(buf, res.ptr);
  }
  return out;
}

/// The ratio at each step: start at step 0, end at the last step, linear in between (the weights
/// of each ratio normalised to probabilities first, so 60:1:3 → 12:1:3 moves the probabilities).
struct TaskSchedule {
  TaskRatio start, end;
  std::int64_t steps = 1;

  /// Probabilities of the three tasks at `step` (0-based).
  std::array<double, kTaskCount> probabilities(std::int64_t step) const {
    const double f = steps > 1 ? std::clamp(static_cast<double>(step) / static_cast<double>(steps - 1), 0.0, 1.0) : 1.0;
    std::array<double, kTaskCount> p{};
    for (int k = 0; k < kTaskCount; ++k) {
      const Task t = static_cast<Task>(k);
      p[static_cast<std::size_t>(k)] = (1.0 - f) * start.probability(t) + f * end.probability(t);
    }
    return p;
  }
};

/// What a keyed draw is for (the Philox stream); new purposes get new numbers.
enum class Draw : std::uint64_t { task = 1, image = 2, template_index = 3, text_window = 4, drop_caption = 5 };

/// The draws of one run.
class RowDraws {
 public:
  explicit RowDraws(std::uint64_t seed) : philox_(seed) {}

  /// Uniform in [0, 1) with 53 bits, for (step, row, purpose).
  double uniform(std::int64_t step, std::int64_t row, Draw what) const {
    const Philox::Block b = block(step, row, what);
    const std::uint64_t bits = (static_cast<std::uint64_t>(b[0]) << 21) ^ (static_cast<std::uint64_t>(b[1]) >> 11);
    return static_cast<double>(bits & ((std::uint64_t{1} << 53) - 1)) * 0x1.0p-53;
  }
  /// Uniform integer in [0, n) for (step, row, purpose) (64-bit value reduced by multiply-high,
  /// bias below 2^-40 for the n used here).
  std::uint64_t index(std::int64_t step, std::int64_t row, Draw what, std::uint64_t n) const {
    QLIP_CHECK(n >= 1, "RowDraws::index: empty range");
    const Philox::Block b = block(step, row, what);
    const std::uint64_t x = (static_cast<std::uint64_t>(b[2]) << 32) | b[3];
    return static_cast<std::uint64_t>((static_cast<unsigned __int128>(x) * n) >> 64);
  }
  /// The task of row `row` at `step` under the schedule.
  Task task(const TaskSchedule& s, std::int64_t step, std::int64_t row) const {
    const std::array<double, kTaskCount> p = s.probabilities(step);
    const double u = uniform(step, row, Draw::task);
    if (u < p[0]) return Task::text;
    if (u < p[0] + p[1]) return Task::caption;
    return Task::generation;
  }

 private:
  Philox::Block block(std::int64_t step, std::int64_t row, Draw what) const {
    // Counter: (step, row) in the offset's two halves; purpose in the stream.
    const std::uint64_t offset = (static_cast<std::uint64_t>(step) << 24) ^ static_cast<std::uint64_t>(row);
    return philox_.draw(offset, static_cast<std::uint64_t>(what));
  }
  Philox philox_;
};

}  // namespace qlip::um3
