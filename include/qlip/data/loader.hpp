/// @file loader.hpp
/// @brief qlip::data::BatchLoader: deterministic, sharded, resumable batches of (pixels, token ids,
///        labels) from any DataSource, prepared ahead on worker threads.
///
/// What batch (epoch e, index b) holds is a pure function of the source, the options other than
/// `threads`/`prefetch`, and (e, b):
/// - epoch order: shuffled_order(N, seed, e) (random.hpp: Philox Fisher–Yates, the same with every
///   standard library);
/// - shard: rank r of W takes positions r, r + W, r + 2W, ... of that order, floor(N / W) samples
///   each (the last N mod W of the order go to nobody, so every rank has as many batches);
/// - batch b: shard positions [b·B, (b+1)·B); with drop_last the incomplete tail of the shard is
///   dropped, otherwise the last batch is smaller;
/// - an unreadable sample (DataSource::load failed) is skipped: the slot of shard position p takes
///   the sample at another position q, uniform over the other P − 1 (uniform_below(P − 1, seed,
///   substitute, e, p·64 + a), shifted past p), for attempts a = 0, 1, ... until one loads (at
///   most kMaxSubstituteAttempts); each failure adds one warning line naming the file and why, and
///   counts in `skipped`. A substitute may repeat a sample of the epoch.
/// So the output is identical for any thread count, and seek(position) resumes a run exactly.
///
/// Threads: with threads = 0 next() loads the batch itself. With threads = T ≥ 1, T std::threads
/// each build whole batches, in order of position, into a bounded queue of at most `prefetch`
/// batches ahead of the consumer (default T + 1); next() hands them out in order. An exception
/// while building a batch is rethrown by the next() that would have returned it (and again on every
/// later call: the loader stays at that position until seek()). One consumer: next(), seek() and
/// position() are not meant to be called concurrently with each other; load_batch() and shard() are.
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "qlip/core/allocator.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/tensor.hpp"
#include "qlip/data/random.hpp"
#include "qlip/data/source.hpp"
#include "qlip/text/clip_tokenizer.hpp"

namespace qlip::data {

/// How many substitutes are tried for one unreadable sample before the batch fails.
inline constexpr int kMaxSubstituteAttempts = 64;

/// Options of BatchLoader.
struct LoaderOptions {
  std::int64_t batch_size = 64;  // B, per rank
  int context_length = text::ClipTokenizer::kDefaultContextLength;
  std::uint64_t seed = 0;  // of the epoch shuffle and of substitutes
  int rank = 0;            // this process's shard ...
  int world_size = 1;      // ... of this many
  bool drop_last = true;   // drop the shard's incomplete last batch
  int threads = 0;         // worker threads; 0 = load in next()
  int prefetch = 0;        // batches prepared ahead (queue bound); 0 = threads + 1
};

/// Where a loader is: the batch next() returns next. Save it with a checkpoint; seek() to it on
/// resume and the run sees the same batches as if it had not stopped.
struct LoaderPosition {
  std::uint64_t epoch = 0;
  std::int64_t batch = 0;
  bool operator==(const LoaderPosition&) const = default;
};

/// One batch. B = pixels.size(0) (batch_size, or less for the last batch without drop_last).
struct Batch {
  LoaderPosition position;          // where this batch is in the stream
  Tensor<float, 4> pixels;          // [B, 3, S, S], CLIP-normalised (MODEL.md §2.1)
  Tensor<std::int32_t, 2> tokens;   // [B, context_length], ClipTokenizer::tokenize of the captions
  Tensor<std::int32_t, 1> labels;   // [B] class ids; [0] when the source has no labels
  std::vector<std::int64_t> samples;  // [B] source indices (after substitution)
  std::vector<std::string> captions;  // [B]
  std::vector<std::string> warnings;  // one line per skipped unreadable sample
  std::int64_t skipped = 0;           // unreadable samples met while building the batch

  std::int64_t size() const { return pixels.size(0); }
};

class BatchLoader {
 public:
  /// Checks the options against the source (a shard must hold at least one batch) and, with
  /// threads ≥ 1, starts preparing batches from `start`.
  BatchLoader(std::shared_ptr<const DataSource> source, text::ClipTokenizer tokenizer, LoaderOptions options,
              LoaderPosition start = {})
      : source_(std::move(source)), tokenizer_(std::move(tokenizer)), options_(options) {
    QLIP_CHECK(source_ != nullptr, "BatchLoader: no data source");
    QLIP_CHECK(options_.batch_size >= 1, "BatchLoader: batch_size must be at least 1, got ", options_.batch_size);
    QLIP_CHECK(options_.context_length >= 2, "BatchLoader: context_length must hold SOT and EOT, got ", options_.context_length);
    QLIP_CHECK(options_.world_size >= 1, "BatchLoader: world_size must be at least 1, got ", options_.world_size);
    QLIP_CHECK(options_.rank >= 0 && options_.rank < options_.world_size, "BatchLoader: rank ", options_.rank,
               " outside [0, world_size = ", options_.world_size, ")");
    QLIP_CHECK(options_.threads >= 0, "BatchLoader: threads must be >= 0, got ", options_.threads);
    QLIP_CHECK(options_.prefetch >= 0, "BatchLoader: prefetch must be >= 0, got ", options_.prefetch);
    QLIP_CHECK(source_->resolution() > 0, "BatchLoader: ", source_->name(), " has resolution ", source_->resolution());
    per_rank_ = source_->size() / options_.world_size;
    batches_ = options_.drop_last ? per_rank_ / options_.batch_size
                                  : (per_rank_ + options_.batch_size - 1) / options_.batch_size;
    QLIP_CHECK(batches_ >= 1, "BatchLoader: ", source_->name(), " has ", source_->size(), " samples, ", per_rank_,
               " per rank over ", options_.world_size, " ranks: fewer than one batch of ", options_.batch_size,
               options_.drop_last ? " (drop_last)" : "");
    capacity_ = static_cast<std::uint64_t>(options_.prefetch > 0 ? options_.prefetch : options_.threads + 1);
    next_ = sequence_of(start);
    start_workers();
  }

  ~BatchLoader() { stop_workers(); }
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  const DataSource& source() const { return *source_; }
  const LoaderOptions& options() const { return options_; }
  /// Samples of this rank per epoch: floor(N / world_size).
  std::int64_t samples_per_rank() const { return per_rank_; }
  std::int64_t batches_per_epoch() const { return batches_; }

  /// The position of the batch next() returns next.
  LoaderPosition position() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return position_of(next_);
  }

  /// Continues from `p` (drops whatever was prepared). Throws when p.batch is not in
  /// [0, batches_per_epoch()).
  void seek(LoaderPosition p) {
    const std::uint64_t seq = sequence_of(p);
    stop_workers();
    ready_.clear();
    next_ = seq;
    start_workers();
  }

  /// The next batch; advances the position (to batch 0 of the next epoch after the last batch).
  Batch next() {
    if (options_.threads == 0) {
      Batch b = load_batch(position_of(next_));
      ++next_;
      skipped_total_ += b.skipped;
      return b;
    }
    std::unique_lock<std::mutex> lock(mutex_);
    ready_cv_.wait(lock, [&] { return ready_.count(next_) != 0; });
    auto it = ready_.find(next_);
    if (it->second.error) std::rethrow_exception(it->second.error);  // kept: next() fails again here
    Batch b = std::move(*it->second.batch);
    ready_.erase(it);
    ++next_;
    skipped_total_ += b.skipped;
    lock.unlock();
    space_cv_.notify_all();
    return b;
  }

  /// Unreadable samples skipped in the batches next() has returned so far.
  std::int64_t skipped_total() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return skipped_total_;
  }

  /// The source indices of this rank's shard in `epoch`, in order (see the file comment).
  std::vector<std::int64_t> shard(std::uint64_t epoch) const { return *shard_ptr(epoch); }

  /// The batch at `p`, built on the calling thread: what next() returns there. Thread-safe.
  Batch load_batch(LoaderPosition p) const {
    QLIP_CHECK(p.batch >= 0 && p.batch < batches_, "BatchLoader: batch ", p.batch, " outside [0, ", batches_, ")");
    const std::shared_ptr<const std::vector<std::int64_t>> shard = shard_ptr(p.epoch);
    const std::int64_t first = p.batch * options_.batch_size;
    const std::int64_t n = std::min(options_.batch_size, per_rank_ - first);
    const std::int64_t s = source_->resolution();
    Batch b;
    b.position = p;
    b.pixels = Tensor<float, 4>(Extents<4>{n, 3, s, s});
    b.labels = Tensor<std::int32_t, 1>(Extents<1>{source_->has_labels() ? n : 0});
    b.samples.resize(static_cast<std::size_t>(n));
    b.captions.resize(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) {
      const std::int64_t pos = first + i;
      HostView<float, 3> px = b.pixels.view().select(0, i);
      std::int64_t sample = (*shard)[static_cast<std::size_t>(pos)];
      SampleLoad got = source_->load(sample, p.epoch, px);
      for (int attempt = 0; !got.ok; ++attempt) {
        b.warnings.push_back("skipped sample " + std::to_string(sample) + " of " + source_->name() + ": " + got.error);
        ++b.skipped;
        QLIP_CHECK(attempt < kMaxSubstituteAttempts, source_->name(), ": ", kMaxSubstituteAttempts,
                   " substitutes in a row for an unreadable sample were unreadable too (last: ", got.error, ")");
        QLIP_CHECK(per_rank_ > 1, source_->name(), ": the shard has one sample and it is unreadable: ", got.error);
        // Uniform over the shard's other positions.
        auto q = static_cast<std::int64_t>(uniform_below(static_cast<std::uint64_t>(per_rank_ - 1), options_.seed,
                                                         RandomPurpose::substitute, p.epoch,
                                                         static_cast<std::uint64_t>(pos) * kMaxSubstituteAttempts +
                                                             static_cast<std::uint64_t>(attempt)));
        if (q >= pos) ++q;
        sample = (*shard)[static_cast<std::size_t>(q)];
        got = source_->load(sample, p.epoch, px);
      }
      b.samples[static_cast<std::size_t>(i)] = sample;
      b.captions[static_cast<std::size_t>(i)] = std::move(got.caption);
      if (source_->has_labels()) b.labels(i) = got.label;
    }
    b.tokens = tokenizer_.tokenize_batch(b.captions, options_.context_length);
    return b;
  }

 private:
  struct Slot {
    std::optional<Batch> batch;
    std::exception_ptr error;
  };

  std::uint64_t sequence_of(LoaderPosition p) const {
    QLIP_CHECK(p.batch >= 0 && p.batch < batches_, "BatchLoader position: batch ", p.batch, " outside [0, ", batches_,
               ") of an epoch");
    QLIP_CHECK(p.epoch <= kMaxEpoch, "BatchLoader position: epoch ", p.epoch, " exceeds ", kMaxEpoch);
    const auto bpe = static_cast<std::uint64_t>(batches_);
    QLIP_CHECK(p.epoch < (std::numeric_limits<std::uint64_t>::max() - bpe) / bpe, "BatchLoader position: epoch ", p.epoch,
               " too large for ", bpe, " batches per epoch");
    return p.epoch * bpe + static_cast<std::uint64_t>(p.batch);
  }
  LoaderPosition position_of(std::uint64_t seq) const {
    const auto bpe = static_cast<std::uint64_t>(batches_);
    return {seq / bpe, static_cast<std::int64_t>(seq % bpe)};
  }

  /// The shard of `epoch`, computed once and shared by the workers (the last few epochs are kept).
  std::shared_ptr<const std::vector<std::int64_t>> shard_ptr(std::uint64_t epoch) const {
    {
      std::lock_guard<std::mutex> lock(shard_mutex_);
      auto it = shards_.find(epoch);
      if (it != shards_.end()) return it->second;
    }
    const std::vector<std::int64_t> order = shuffled_order(source_->size(), options_.seed, epoch);
    auto shard = std::make_shared<std::vector<std::int64_t>>(static_cast<std::size_t>(per_rank_));
    for (std::int64_t k = 0; k < per_rank_; ++k)
      (*shard)[static_cast<std::size_t>(k)] = order[static_cast<std::size_t>(options_.rank + k * options_.world_size)];
    std::lock_guard<std::mutex> lock(shard_mutex_);
    std::shared_ptr<const std::vector<std::int64_t>> kept = shards_.emplace(epoch, std::move(shard)).first->second;
    while (shards_.size() > 3) shards_.erase(shards_.begin());  // workers span at most two epochs
    return kept;
  }

  void start_workers() {
    if (options_.threads == 0) return;
    stop_ = false;
    next_assign_ = next_;
    workers_.reserve(static_cast<std::size_t>(options_.threads));
    for (int t = 0; t < options_.threads; ++t) workers_.emplace_back([this] { work(); });
  }

  void stop_workers() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    space_cv_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
  }

  void work() {
    for (;;) {
      std::uint64_t seq = 0;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        space_cv_.wait(lock, [&] { return stop_ || next_assign_ < next_ + capacity_; });
        if (stop_) return;
        seq = next_assign_++;
      }
      Slot slot;
      try {
        slot.batch.emplace(load_batch(position_of(seq)));
      } catch (...) {
        slot.error = std::current_exception();
      }
      {
        std::lock_guard<std::mutex> lock(mutex_);
        ready_.emplace(seq, std::move(slot));
      }
      ready_cv_.notify_all();
    }
  }

  std::shared_ptr<const DataSource> source_;
  text::ClipTokenizer tokenizer_;
  LoaderOptions options_;
  std::int64_t per_rank_ = 0, batches_ = 0;
  std::uint64_t capacity_ = 1;

  mutable std::mutex mutex_;  // guards everything below up to workers_
  std::condition_variable ready_cv_, space_cv_;
  std::uint64_t next_ = 0;         // sequence number (epoch · batches + batch) next() returns
  std::uint64_t next_assign_ = 0;  // the next one a worker starts
  std::map<std::uint64_t, Slot> ready_;
  bool stop_ = false;
  std::int64_t skipped_total_ = 0;
  std::vector<std::thread> workers_;

  mutable std::mutex shard_mutex_;
  mutable std::map<std::uint64_t, std::shared_ptr<const std::vector<std::int64_t>>> shards_;
};

}  // namespace qlip::data
