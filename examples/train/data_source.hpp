/// @file data_source.hpp
/// @brief qlip-train's data: Fashion-MNIST (Debian's dataset-fashion-mnist) or a user's manifest /
///        folder, through the deterministic batch loader of include/qlip/data/, at the model's
///        resolution and context length.
#pragma once

#include <cstdio>
#include <memory>
#include <string>

#include "qlip/data.hpp"
#include <filesystem>
#include "qlip/model/config.hpp"

namespace qlip::train_cli {

/// The CLIP BPE vocabulary: --vocab, else $QLIP_VOCAB, else third_party_data/ (scripts/setup.sh).
inline std::string find_vocab(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* env = std::getenv("QLIP_VOCAB"); env != nullptr && env[0] != '\0') return env;
  const std::string local = "third_party_data/bpe_simple_vocab_16e6.txt.gz";
  QLIP_CHECK(std::filesystem::exists(local), "no tokenizer vocabulary: pass --vocab (e.g. ", local,
             ") or set QLIP_VOCAB; scripts/setup.sh fetches it");
  return local;
}

/// A loader plus what the trainer reports about it.
struct TrainData {
  std::shared_ptr<const data::DataSource> source;
  std::unique_ptr<data::BatchLoader> loader;
  data::Batch current;
  std::int64_t skipped_reported = 0;

  /// The next batch; prints each skipped unreadable sample's warning once.
  const data::Batch& next() {
    current = loader->next();
    for (const std::string& w : current.warnings) std::fprintf(stderr, "qlip-train: warning: %s\n", w.c_str());
    return current;
  }
};

/// Opens the training data. `kind` "fashion-mnist" reads the train split from `dir` (or the Debian
/// package's folder); a non-empty `manifest` (TSV or folder) takes precedence.
inline TrainData open_train_data(const std::string& kind, const std::string& dir, const std::string& manifest,
                                 const std::string& vocab, const QlipConfig& config, std::int64_t batch,
                                 std::uint64_t seed, int threads) {
  TrainData d;
  const int resolution = config.vision.image_size;
  if (!manifest.empty()) {
    data::ManifestOptions mo;
    mo.resolution = resolution;
    auto src = std::make_shared<data::ManifestSource>(data::ManifestSource::open(manifest, mo));
    for (const std::string& w : src->scan_warnings()) std::fprintf(stderr, "qlip-train: warning: %s\n", w.c_str());
    d.source = src;
  } else {
    QLIP_CHECK(kind == "fashion-mnist", "unknown --data '", kind, "': use fashion-mnist, or --manifest FILE|DIR");
    const std::vector<std::string> dirs = dir.empty() ? data::default_fashion_mnist_dirs() : std::vector<std::string>{dir};
    data::FashionMnistSourceOptions fo;
    fo.resolution = resolution;
    fo.seed = seed;
    d.source = std::make_shared<data::FashionMnistSource>(data::FashionMnist::load(data::FashionMnistSplit::train, dirs), fo);
  }
  data::LoaderOptions lo;
  lo.batch_size = batch;
  lo.context_length = config.text.context_length;
  lo.seed = seed;
  lo.threads = threads > 0 ? threads : 1;
  d.loader = std::make_unique<data::BatchLoader>(d.source, text::ClipTokenizer::from_bpe_gz(find_vocab(vocab)), lo);
  return d;
}

}  // namespace qlip::train_cli
