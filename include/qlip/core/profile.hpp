/// @file profile.hpp
/// @brief Opt-in wall-clock breakdown of a forward by op (`QLIP_PROFILE_SCOPE("label")`), usable
///        by modules (nn/) and backends alike: standard library only.
///
/// Compiled out unless the translation unit defines QLIP_PROFILE_OPS before including qlip headers
/// (bench/cpu_qlip_model.cpp does); then it also has to be switched on at run time with
/// qlip::profile::set_enabled(true). Only the thread that switched it on records: outside OpenMP
/// regions a scope times a whole op, including its own threading; inside a region that thread is
/// the region's thread 0, so such a label is thread 0's share (its rows), and the enclosing
/// region's label minus its parts is time spent waiting at the join. Labels must be string
/// literals (they are compared by address first, then by content).
#pragma once

#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace qlip::profile {

/// One label's accumulated wall time.
struct Entry {
  const char* label = nullptr;
  double seconds = 0.0;
  std::int64_t calls = 0;
};

/// Process-wide totals (single-threaded use: ops are timed on the thread that calls them).
struct Registry {
  bool enabled = false;
  std::thread::id owner{};  ///< the thread that enabled profiling: the only one that records
  std::vector<Entry> entries;

  Entry& find(const char* label) {
    for (auto& e : entries)
      if (e.label == label || std::strcmp(e.label, label) == 0) return e;
    entries.push_back({label, 0.0, 0});
    return entries.back();
  }
};

inline Registry& registry() {
  static Registry r;
  return r;
}

inline void set_enabled(bool on) {
  registry().enabled = on;
  registry().owner = std::this_thread::get_id();
}
inline bool enabled() { return registry().enabled; }
inline void reset() { registry().entries.clear(); }
inline const std::vector<Entry>& entries() { return registry().entries; }

/// Adds the lifetime of the object to `label` when profiling is enabled.
class ScopedTimer {
 public:
  explicit ScopedTimer(const char* label)
      : label_(label), on_(enabled() && std::this_thread::get_id() == registry().owner) {
    if (on_) start_ = std::chrono::steady_clock::now();
  }
  ~ScopedTimer() {
    if (!on_) return;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    Entry& e = registry().find(label_);
    e.seconds += s;
    e.calls += 1;
  }
  ScopedTimer(const ScopedTimer&) = delete;
  ScopedTimer& operator=(const ScopedTimer&) = delete;

 private:
  const char* label_;
  bool on_;
  std::chrono::steady_clock::time_point start_{};
};

}  // namespace qlip::profile

#define QLIP_PROFILE_CAT2(a, b) a##b
#define QLIP_PROFILE_CAT(a, b) QLIP_PROFILE_CAT2(a, b)
#ifdef QLIP_PROFILE_OPS
/// Times the rest of the enclosing scope under `label` (a string literal).
#define QLIP_PROFILE_SCOPE(label) ::qlip::profile::ScopedTimer QLIP_PROFILE_CAT(qlip_profile_timer_, __LINE__)(label)
#else
#define QLIP_PROFILE_SCOPE(label) static_cast<void>(0)
#endif
