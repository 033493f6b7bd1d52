/// @file test_loader.cpp
/// @brief BatchLoader: identical batches for every thread count and queue size, shards that are
///        disjoint and cover the epoch, drop_last, resume from a saved position, skipped unreadable
///        samples (deterministic substitutes, warnings, counts), errors, and Fashion-MNIST batches.

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/compare.hpp"
#include "common/data_pipeline_util.hpp"
#include "qlip/data/fashion_mnist.hpp"
#include "qlip/data/loader.hpp"

namespace qlip::data::test {
namespace {

using qlip::test::expect_error_naming;

std::vector<Batch> take(BatchLoader& l, int n) {
  std::vector<Batch> out;
  for (int i = 0; i < n; ++i) out.push_back(l.next());
  return out;
}

LoaderOptions small_options(int threads, int prefetch = 0) {
  LoaderOptions o;
  o.batch_size = 5;
  o.context_length = 16;
  o.seed = 11;
  o.threads = threads;
  o.prefetch = prefetch;
  return o;
}

TEST(BatchLoader, BatchContents) {
  auto src = std::make_shared<SyntheticSource>(23, 3);
  BatchLoader l(src, tokenizer(), small_options(0));
  EXPECT_EQ(l.samples_per_rank(), 23);
  EXPECT_EQ(l.batches_per_epoch(), 4);  // 23 / 5, drop_last
  EXPECT_EQ(l.position(), (LoaderPosition{0, 0}));
  const Batch b = l.next();
  EXPECT_EQ(l.position(), (LoaderPosition{0, 1}));
  EXPECT_EQ(b.position, (LoaderPosition{0, 0}));
  ASSERT_EQ(b.size(), 5);
  EXPECT_EQ(b.pixels.shape(), (Extents<4>{5, 3, 3, 3}));
  EXPECT_EQ(b.tokens.shape(), (Extents<2>{5, 16}));
  EXPECT_EQ(b.labels.shape(), (Extents<1>{5}));
  const auto shard = l.shard(0);
  const auto order = shuffled_order(23, 11, 0);
  EXPECT_EQ(shard, order);  // one rank: the whole shuffled order
  for (std::int64_t i = 0; i < 5; ++i) {
    const std::int64_t s = b.samples[static_cast<std::size_t>(i)];
    EXPECT_EQ(s, order[static_cast<std::size_t>(i)]);
    EXPECT_EQ(b.labels(i), s % 7);
    EXPECT_EQ(b.captions[static_cast<std::size_t>(i)], "item " + std::to_string(s) + " of epoch 0");
    EXPECT_FLOAT_EQ(b.pixels(i, 2, 1, 0), static_cast<float>(s + 0.001 * (2 * 9 + 1 * 3 + 0)));
    const auto row = tokenizer().tokenize(b.captions[static_cast<std::size_t>(i)], 16);
    for (int t = 0; t < 16; ++t) ASSERT_EQ(b.tokens(i, t), row[static_cast<std::size_t>(t)]);
  }
  EXPECT_TRUE(b.warnings.empty());
  EXPECT_EQ(b.skipped, 0);
}

TEST(BatchLoader, EpochsCoverEverySampleOnceInANewOrder) {
  auto src = std::make_shared<SyntheticSource>(20, 2);
  BatchLoader l(src, tokenizer(), small_options(0));
  std::vector<std::int64_t> e0, e1;
  for (int b = 0; b < 4; ++b) {
    const Batch x = l.next();
    e0.insert(e0.end(), x.samples.begin(), x.samples.end());
  }
  EXPECT_EQ(l.position(), (LoaderPosition{1, 0}));
  for (int b = 0; b < 4; ++b) {
    const Batch x = l.next();
    EXPECT_EQ(x.position.epoch, 1u);
    EXPECT_EQ(x.captions[0].substr(x.captions[0].size() - 7), "epoch 1");
    e1.insert(e1.end(), x.samples.begin(), x.samples.end());
  }
  EXPECT_NE(e0, e1);
  std::sort(e0.begin(), e0.end());
  std::sort(e1.begin(), e1.end());
  for (std::int64_t i = 0; i < 20; ++i) {
    EXPECT_EQ(e0[static_cast<std::size_t>(i)], i);
    EXPECT_EQ(e1[static_cast<std::size_t>(i)], i);
  }
}

TEST(BatchLoader, SameBatchesForAnyThreadCount) {
  // Some samples unreadable, so the substitutes are part of what must not depend on threads.
  auto src = std::make_shared<SyntheticSource>(37, 4, std::set<std::int64_t>{3, 4, 20});
  BatchLoader ref(src, tokenizer(), small_options(0));
  const std::vector<Batch> want = take(ref, 17);  // 7 per epoch: crosses two epoch boundaries
  for (auto [threads, prefetch] : std::vector<std::pair<int, int>>{{1, 0}, {2, 1}, {3, 0}, {4, 9}}) {
    BatchLoader l(src, tokenizer(), small_options(threads, prefetch));
    const std::vector<Batch> got = take(l, 17);
    for (std::size_t i = 0; i < want.size(); ++i)
      expect_same_batch(want[i], got[i], "threads " + std::to_string(threads) + " prefetch " + std::to_string(prefetch) +
                                             " batch " + std::to_string(i));
    EXPECT_EQ(l.skipped_total(), ref.skipped_total());
  }
}

TEST(BatchLoader, ShardsAreDisjointAndCoverTheEpoch) {
  const std::int64_t n = 101;
  auto src = std::make_shared<SyntheticSource>(n, 2);
  for (int world : {1, 2, 3, 4}) {
    SCOPED_TRACE("world_size " + std::to_string(world));
    const auto order = shuffled_order(n, 11, 2);
    std::set<std::int64_t> all;
    std::int64_t total = 0;
    for (int rank = 0; rank < world; ++rank) {
      LoaderOptions o = small_options(rank % 2);  // threads vary between ranks too: shards must not
      o.rank = rank;
      o.world_size = world;
      o.batch_size = 4;
      BatchLoader l(src, tokenizer(), o, {2, 0});
      EXPECT_EQ(l.samples_per_rank(), n / world);
      EXPECT_EQ(l.batches_per_epoch(), n / world / 4);
      const auto shard = l.shard(2);
      ASSERT_EQ(static_cast<std::int64_t>(shard.size()), n / world);
      // Rank r takes every world_size-th sample of the shuffled order, starting at r.
      for (std::size_t k = 0; k < shard.size(); ++k) ASSERT_EQ(shard[k], order[static_cast<std::size_t>(rank) + k * world]);
      all.insert(shard.begin(), shard.end());
      total += static_cast<std::int64_t>(shard.size());
      // The batches walk the shard in order.
      std::vector<std::int64_t> seen;
      for (std::int64_t b = 0; b < l.batches_per_epoch(); ++b) {
        const Batch x = l.next();
        seen.insert(seen.end(), x.samples.begin(), x.samples.end());
      }
      EXPECT_TRUE(std::equal(seen.begin(), seen.end(), shard.begin()));
    }
    EXPECT_EQ(static_cast<std::int64_t>(all.size()), total) << "shards overlap";
    EXPECT_EQ(total, n - n % world) << "shards do not cover the epoch";
    // What nobody takes is the tail of the order.
    for (std::int64_t k = n - n % world; k < n; ++k) EXPECT_EQ(all.count(order[static_cast<std::size_t>(k)]), 0u);
  }
}

TEST(BatchLoader, DropLast) {
  auto src = std::make_shared<SyntheticSource>(12, 2);
  LoaderOptions o = small_options(0);
  o.batch_size = 5;
  BatchLoader dropped(src, tokenizer(), o);
  EXPECT_EQ(dropped.batches_per_epoch(), 2);
  o.drop_last = false;
  o.threads = 2;
  BatchLoader kept(src, tokenizer(), o);
  EXPECT_EQ(kept.batches_per_epoch(), 3);
  const auto batches = take(kept, 4);
  EXPECT_EQ(batches[0].size(), 5);
  EXPECT_EQ(batches[2].size(), 2);  // the tail
  EXPECT_EQ(batches[2].tokens.shape(), (Extents<2>{2, 16}));
  EXPECT_EQ(batches[2].labels.shape(), (Extents<1>{2}));
  EXPECT_EQ(batches[3].position, (LoaderPosition{1, 0}));
  EXPECT_EQ(batches[3].size(), 5);
}

TEST(BatchLoader, ResumeFromASavedPositionSeesTheSameBatches) {
  auto src = std::make_shared<SyntheticSource>(30, 3, std::set<std::int64_t>{7});
  for (int threads : {0, 2}) {
    SCOPED_TRACE("threads " + std::to_string(threads));
    BatchLoader run(src, tokenizer(), small_options(threads));  // 6 batches per epoch
    const auto first = take(run, 4);
    const LoaderPosition saved = run.position();
    EXPECT_EQ(saved, (LoaderPosition{0, 4}));
    const auto rest = take(run, 9);  // through epoch 1 into epoch 2

    // A new process: constructed at the saved position ...
    BatchLoader resumed(src, tokenizer(), small_options(2 - threads), saved);
    EXPECT_EQ(resumed.position(), saved);
    const auto again = take(resumed, 9);
    for (std::size_t i = 0; i < rest.size(); ++i) expect_same_batch(rest[i], again[i], "resumed " + std::to_string(i));

    // ... or an existing loader seeking back (dropping what it had prepared).
    resumed.seek({0, 1});
    expect_same_batch(first[1], resumed.next(), "seek back");
    EXPECT_EQ(resumed.position(), (LoaderPosition{0, 2}));
    resumed.seek({1, 5});
    expect_same_batch(rest[7], resumed.next(), "seek forward");
    // load_batch is what next() returns at a position.
    expect_same_batch(rest[8], run.load_batch({2, 0}), "load_batch");
    expect_error_naming([&] { resumed.seek({0, 6}); }, "batch 6 outside [0, 6)");
  }
}

TEST(BatchLoader, UnreadableSamplesAreSkippedWarnedAndCounted) {
  // Every sample of the first batch positions ... a third of the data is broken.
  std::set<std::int64_t> broken;
  for (std::int64_t i = 0; i < 30; i += 3) broken.insert(i);
  auto src = std::make_shared<SyntheticSource>(30, 2, broken);
  BatchLoader l(src, tokenizer(), small_options(2));
  std::int64_t skipped = 0;
  for (int b = 0; b < 12; ++b) {
    const Batch x = l.next();
    ASSERT_EQ(x.size(), 5);
    for (std::int64_t s : x.samples) EXPECT_EQ(broken.count(s), 0u) << "broken sample " << s << " in a batch";
    EXPECT_EQ(static_cast<std::int64_t>(x.warnings.size()), x.skipped);
    for (const auto& w : x.warnings) {
      EXPECT_NE(w.find("of synthetic: item"), std::string::npos) << w;
      EXPECT_NE(w.find(".png: broken on purpose"), std::string::npos) << w;
      EXPECT_EQ(w.find('\n'), std::string::npos) << w;
    }
    skipped += x.skipped;
  }
  // Each epoch meets the 10 broken samples in their own slots, plus any substitutes that failed.
  EXPECT_GE(skipped, 20);
  EXPECT_EQ(l.skipped_total(), skipped);
}

TEST(BatchLoader, AllUnreadableFailsNamingTheSource) {
  std::set<std::int64_t> all;
  for (std::int64_t i = 0; i < 8; ++i) all.insert(i);
  auto src = std::make_shared<SyntheticSource>(8, 2, all);
  LoaderOptions o = small_options(0);
  o.batch_size = 2;
  BatchLoader l(src, tokenizer(), o);
  expect_error_naming([&] { (void)l.next(); }, "synthetic: 64 substitutes in a row for an unreadable sample were unreadable too");
}

TEST(BatchLoader, ErrorsWhileLoadingReachTheCaller) {
  auto src = std::make_shared<SyntheticSource>(20, 2, std::set<std::int64_t>{}, std::set<std::int64_t>{shuffled_order(20, 11, 0)[7]});
  BatchLoader l(src, tokenizer(), small_options(3));
  (void)l.next();  // positions 0-4
  expect_error_naming([&] { (void)l.next(); }, "throws");  // position 7 is in batch 1
  expect_error_naming([&] { (void)l.next(); }, "throws");  // still there
  EXPECT_EQ(l.position(), (LoaderPosition{0, 1}));
  l.seek({0, 2});
  EXPECT_EQ(l.next().position, (LoaderPosition{0, 2}));
}

TEST(BatchLoader, OptionErrors) {
  auto src = std::make_shared<SyntheticSource>(10, 2);
  auto make = [&](auto edit) {
    LoaderOptions o = small_options(0);
    edit(o);
    BatchLoader l(src, tokenizer(), o);
  };
  expect_error_naming([&] { make([](LoaderOptions& o) { o.batch_size = 11; }); },
                      "synthetic has 10 samples, 10 per rank over 1 ranks: fewer than one batch of 11 (drop_last)");
  expect_error_naming([&] { make([](LoaderOptions& o) { o.world_size = 3, o.batch_size = 4; }); }, "3 per rank over 3 ranks");
  expect_error_naming([&] { make([](LoaderOptions& o) { o.rank = 2, o.world_size = 2; }); }, "rank 2 outside [0, world_size = 2)");
  expect_error_naming([&] { make([](LoaderOptions& o) { o.batch_size = 0; }); }, "batch_size must be at least 1");
  expect_error_naming([&] { make([](LoaderOptions& o) { o.threads = -1; }); }, "threads must be >= 0");
  expect_error_naming([&] { make([](LoaderOptions& o) { o.context_length = 1; }); }, "context_length");
  expect_error_naming([&] { BatchLoader l(nullptr, tokenizer(), small_options(0)); }, "no data source");
  expect_error_naming([&] { BatchLoader l(src, tokenizer(), small_options(0), {0, 2}); }, "batch 2 outside [0, 2)");
}

TEST(BatchLoader, FashionMnistBatches) {
  FashionMnist test_split;
  try {
    test_split = FashionMnist::load(FashionMnistSplit::test);
  } catch (const Error& e) {
    FAIL() << e.what();
  }
  FashionMnistSourceOptions so;
  so.resolution = 32;
  so.seed = 3;
  auto src = std::make_shared<FashionMnistSource>(test_split.subset(0, 96), so);
  LoaderOptions o;
  o.batch_size = 16;
  o.seed = 3;
  o.threads = 0;
  BatchLoader serial(src, tokenizer(), o);
  o.threads = 3;
  BatchLoader threaded(src, tokenizer(), o);
  for (int b = 0; b < 8; ++b) {  // 6 per epoch
    const Batch x = serial.next();
    expect_same_batch(x, threaded.next(), "batch " + std::to_string(b));
    EXPECT_EQ(x.pixels.shape(), (Extents<4>{16, 3, 32, 32}));
    for (std::int64_t i = 0; i < x.size(); ++i) {
      const std::int64_t s = x.samples[static_cast<std::size_t>(i)];
      EXPECT_EQ(x.labels(i), test_split.label(s));
      EXPECT_NE(x.captions[static_cast<std::size_t>(i)].find(std::string(test_split.class_name(s))), std::string::npos);
      EXPECT_EQ(x.tokens(i, 0), tokenizer().sot_id());
    }
  }
}

}  // namespace
}  // namespace qlip::data::test
