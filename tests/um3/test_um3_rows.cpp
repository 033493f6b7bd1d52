/// @file test_um3_rows.cpp
/// @brief UM³ training rows (um3/sequences.hpp) checked position by position on a small vocabulary,
///        and the task mix (um3/task_mix.hpp): ratio parsing, the schedule's end points, task
///        frequencies against their probabilities, and draws that depend only on (seed, step, row).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "common/compare.hpp"
#include "um3/um3_test_util.hpp"
#include "qlip/um3/sequences.hpp"
#include "qlip/um3/task_mix.hpp"

namespace qlip::um3 {
namespace {

using test::small_um3_vocab;

TEST(Um3Rows, CaptionRowTrainsTheCaptionAndEosOnly) {
  const Um3Vocab v = small_um3_vocab();
  const std::vector<std::int32_t> image{12, 17, 13, 18}, caption{1, 2};
  std::vector<std::int32_t> ids(10), targets(10);
  caption_row(v, image, caption, ids, targets);
  EXPECT_EQ(ids, (std::vector<std::int32_t>{7, 10, 12, 17, 13, 18, 11, 1, 2, 8}));
  // <eoi> (position 6) predicts 1, then 2, then <eos>; nothing else is trained.
  EXPECT_EQ(targets, (std::vector<std::int32_t>{-1, -1, -1, -1, -1, -1, 1, 2, 8, -1}));
  std::vector<std::int32_t> longer(12), longer_t(12);
  caption_row(v, image, caption, longer, longer_t);
  EXPECT_EQ(longer[10], 9);  // right padding
  EXPECT_EQ(longer_t[10], -1);
  std::vector<std::int32_t> short_ids(9), short_t(9);
  EXPECT_THROW(caption_row(v, image, caption, short_ids, short_t), Error);
}

TEST(Um3Rows, GenerationRowTrainsTheImageAndEoi) {
  const Um3Vocab v = small_um3_vocab();
  const std::vector<std::int32_t> image{12, 17, 13, 18}, caption{1, 2, 3};
  std::vector<std::int32_t> ids(10), targets(10);
  generation_row(v, caption, image, false, ids, targets);
  EXPECT_EQ(ids, (std::vector<std::int32_t>{7, 1, 2, 3, 10, 12, 17, 13, 18, 11}));
  EXPECT_EQ(targets, (std::vector<std::int32_t>{-1, -1, -1, -1, 12, 17, 13, 18, 11, -1}));
  generation_row(v, caption, image, true, ids, targets);  // the null caption: as many <pad>
  EXPECT_EQ(ids, (std::vector<std::int32_t>{7, 9, 9, 9, 10, 12, 17, 13, 18, 11}));
  EXPECT_EQ(targets, (std::vector<std::int32_t>{-1, -1, -1, -1, 12, 17, 13, 18, 11, -1}));
  // The sampling prompts are the rows' prefixes.
  EXPECT_EQ(generation_prompt(v, caption, false), (std::vector<std::int32_t>{7, 1, 2, 3, 10}));
  EXPECT_EQ(generation_prompt(v, caption, true), (std::vector<std::int32_t>{7, 9, 9, 9, 10}));
  EXPECT_EQ(caption_prompt(v, image), (std::vector<std::int32_t>{7, 10, 12, 17, 13, 18, 11}));
  EXPECT_EQ(image_row_length(4, 3), 11);
}

TEST(Um3Rows, TextRowIsTheShiftedWindow) {
  const std::vector<std::int32_t> window{7, 1, 2, 8, 7, 3};
  std::vector<std::int32_t> ids(5), targets(5);
  text_row(window, ids, targets);
  EXPECT_EQ(ids, (std::vector<std::int32_t>{7, 1, 2, 8, 7}));
  EXPECT_EQ(targets, (std::vector<std::int32_t>{1, 2, 8, 7, 3}));
  std::vector<std::int32_t> wrong(4), wrong_t(4);
  EXPECT_THROW(text_row(window, wrong, wrong_t), Error);
}

TEST(Um3Rows, VocabularyChecksItsSpecials) {
  Um3Vocab v = small_um3_vocab();
  v.eos = v.bos;
  EXPECT_THROW(v.validate(), Error);
  v = small_um3_vocab();
  v.pad = 10;  // <boi>, not a text id
  test::expect_error_naming([&] { v.validate(); }, "special id 10 is not a text id");
}

TEST(Um3TaskMix, RatiosParseAndPrint) {
  const TaskRatio r = parse_task_ratio("60:1:3");
  EXPECT_EQ(r.text(), "60:1:3");
  EXPECT_DOUBLE_EQ(r.probability(Task::text), 60.0 / 64.0);
  EXPECT_DOUBLE_EQ(r.probability(Task::generation), 3.0 / 64.0);
  EXPECT_EQ(parse_task_ratio("0.5:0:1.5").text(), "0.5:0:1.5");
  test::expect_error_naming([] { (void)parse_task_ratio("60:1"); }, "expected three numbers");
  test::expect_error_naming([] { (void)parse_task_ratio("1:2:3:4"); }, "expected three numbers");
  test::expect_error_naming([] { (void)parse_task_ratio("1:x:3"); }, "'x' is not a number");
  test::expect_error_naming([] { (void)parse_task_ratio("1::3"); }, "'' is not a number");
  test::expect_error_naming([] { (void)parse_task_ratio("0:0:0"); }, "sum to 0");
  test::expect_error_naming([] { (void)parse_task_ratio("-1:1:1"); }, "finite and >= 0");
}

TEST(Um3TaskMix, ScheduleMovesLinearlyFromStartToEnd) {
  const TaskSchedule s{parse_task_ratio("60:1:3"), parse_task_ratio("12:1:3"), 101};
  const auto p0 = s.probabilities(0), p1 = s.probabilities(100), half = s.probabilities(50);
  EXPECT_DOUBLE_EQ(p0[0], 60.0 / 64);
  EXPECT_DOUBLE_EQ(p1[0], 12.0 / 16);
  EXPECT_DOUBLE_EQ(p1[2], 3.0 / 16);
  EXPECT_NEAR(half[0], 0.5 * (60.0 / 64 + 12.0 / 16), 1e-12);
  EXPECT_NEAR(half[0] + half[1] + half[2], 1.0, 1e-12);
}

// Over 120k rows of one step's distribution, each task's count is within 5 standard deviations
// of its expectation; the draws are a function of (seed, step, row) alone.
TEST(Um3TaskMix, TaskFrequenciesFollowTheProbabilities) {
  const TaskSchedule s{parse_task_ratio("2:1:3"), parse_task_ratio("2:1:3"), 10};
  const RowDraws draws(11);
  std::array<double, kTaskCount> count{};
  const std::int64_t n = 120000;
  for (std::int64_t i = 0; i < n; ++i) count[static_cast<std::size_t>(draws.task(s, i / 32, i % 32))] += 1;
  const auto p = s.probabilities(0);
  for (int k = 0; k < kTaskCount; ++k) {
    const double mean = static_cast<double>(n) * p[static_cast<std::size_t>(k)];
    const double sd = std::sqrt(mean * (1 - p[static_cast<std::size_t>(k)]));
    EXPECT_NEAR(count[static_cast<std::size_t>(k)], mean, 5 * sd) << task_name(static_cast<Task>(k));
  }
  const RowDraws again(11), other(12);
  int same = 0, differ = 0;
  for (std::int64_t step = 0; step < 50; ++step)
    for (std::int64_t row = 0; row < 16; ++row) {
      same += again.index(step, row, Draw::image, 60000) == draws.index(step, row, Draw::image, 60000);
      differ += other.index(step, row, Draw::image, 60000) != draws.index(step, row, Draw::image, 60000);
      EXPECT_LT(draws.index(step, row, Draw::image, 7), 7u);
      const double u = draws.uniform(step, row, Draw::drop_caption);
      EXPECT_TRUE(u >= 0.0 && u < 1.0);
    }
  EXPECT_EQ(same, 800);
  EXPECT_GE(differ, 795);
}

}  // namespace
}  // namespace qlip::um3
