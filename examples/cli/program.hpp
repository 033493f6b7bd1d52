/// @file program.hpp
/// @brief What the example programs' main()s share: the parse → run → one-line error epilogue,
///        --threads, the sampler's flags and --decode-weights.
#pragma once

#include <omp.h>

#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>

#include <CLI/CLI.hpp>

#include "cli/util.hpp"
#include "qlip/nn/llama_block.hpp"
#include "qlip/sample/sampler.hpp"

namespace qlip::cli {

/// --threads N (0: OpenMP's default, every core); run_program applies it.
inline void add_threads_option(CLI::App& app, int& threads) {
  app.add_option("--threads", threads, "CPU threads (0: all)")->check(CLI::NonNegativeNumber);
}

/// --temperature, --top-k, --top-p, --cfg and --seed of the sampler (sample/sampler.hpp).
inline void add_sampler_options(CLI::App& app, sample::SamplerConfig& s, std::uint64_t& seed) {
  app.add_option("--temperature", s.temperature, "sampling temperature (0: greedy)");
  app.add_option("--top-k", s.top_k, "keep the k most probable tokens (0: off)");
  app.add_option("--top-p", s.top_p, "nucleus mass (1: off)");
  app.add_option("--cfg", s.cfg_scale, "text to image: classifier-free guidance scale (1: none)");
  app.add_option("--seed", seed, "sampling seed");
}

/// --decode-weights f32|bf16: the weights the Llama multiplies by while decoding (bf16 halves the
/// bytes a memory-bound step reads; docs/PERFORMANCE.md states its speed and accuracy).
inline void add_decode_weights_option(CLI::App& app, nn::DecodeWeights& w) {
  app.add_option_function<std::string>(
         "--decode-weights", [&w](const std::string& s) { w = s == "bf16" ? nn::DecodeWeights::bf16 : nn::DecodeWeights::f32; },
         "weights of the Llama while decoding: f32 (default) or bf16")
      ->check(CLI::IsMember({"f32", "bf16"}));
}

/// Parses argv (a usage error prints CLI11's message and returns 2), sets `threads` (> 0), then
/// returns body(); any exception becomes "<program>: error: <one line>" on stderr (after stdout
/// is flushed) and 1.
template <class F>
int run_program(CLI::App& app, int argc, char** argv, const char* program, const int& threads, F&& body) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  try {
    if (threads > 0) omp_set_num_threads(threads);
    return body();
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "%s: error: %s\n", program, one_line_message(e.what(), false).c_str());
    return 1;
  }
}

}  // namespace qlip::cli
