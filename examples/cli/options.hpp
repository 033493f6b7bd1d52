/// @file options.hpp
/// @brief The parsed command line of each `qlip` subcommand (filled by CLI11 in qlip.cpp, consumed
///        by commands.hpp).
#pragma once

#include <string>
#include <vector>

#include "progress.hpp"

namespace qlip::cli {

/// Options every subcommand accepts.
struct GlobalOptions {
  int threads = 0;     ///< 0 = leave OpenMP's default
  bool quiet = false;  ///< no progress bar, no "wrote ..." lines
  ProgressMode progress = ProgressMode::automatic;
  std::string vocab;  ///< tokenizer: a bpe .gz file or a folder with vocab.json + merges.txt
};

struct InfoOptions {
  std::string checkpoint;
};

struct EncodeOptions {
  std::string checkpoint;
  std::vector<std::string> images;
  std::string output;
  int group_size = 0;  ///< 0 = no group_indices tensor
  int batch = 8;
  std::string index_dtype = "u32";  ///< "u32" or "i64"
};

struct DecodeOptions {
  std::string checkpoint;
  std::string codes;
  std::string output;  ///< folder
  int batch = 8;
};

struct ReconstructOptions {
  std::string checkpoint;
  std::vector<std::string> images;
  std::string output;  ///< grid PNG
  int batch = 8;
  int padding = 2;
  int columns = 0;  ///< images per grid row pair; 0 = all images in one row
};

struct ClassifyOptions {
  std::string checkpoint;
  std::vector<std::string> images;
  std::string labels;                        ///< "a,b,c" or "@file" (one label per line)
  std::vector<std::string> templates{"{}"};  ///< one or more; several are ensembled
  int top = 0;                               ///< 0 = all labels
  int batch = 8;
  bool json = false;  ///< one JSON document on stdout instead of the table
};

struct EmbedOptions {
  std::string checkpoint;
  std::vector<std::string> images;
  std::string text;         ///< "a,b" or "@file" (one text per line)
  bool text_given = false;  ///< --text was on the command line (an empty value is then an error)
  std::string output;
  int batch = 8;
};

/// `qlip tokenize`: texts → CLIP BPE ids, or with --decode ids → texts.
struct TokenizeOptions {
  std::vector<std::string> inputs;  ///< texts (or lines of ids with --decode); {"-"} = standard input
  std::string context = "77";       ///< a context length (>= 2) or "none" (raw BPE ids, no SOT/EOT)
  bool decode = false;
};

}  // namespace qlip::cli
