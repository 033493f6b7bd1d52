/// @file qlip_cli.cpp
/// @brief The `qlip` command-line tool: inspect a QLIP checkpoint, turn images into 28-bit codes
///        and back, measure reconstructions, classify zero-shot and export embeddings.
///
///   qlip info        DIR
///   qlip encode      DIR IMG... -o codes.safetensors [--group-size G] [--batch N]
///   qlip decode      DIR codes.safetensors -o out/
///   qlip reconstruct DIR IMG... -o grid.png
///   qlip classify    DIR IMG... --labels "a dog,a cat" [--template "a photo of a {}."]
///   qlip embed       DIR [IMG...] [--text "a,b"] -o emb.safetensors
///
/// Errors: every failure exits non-zero with exactly one line on stderr, "qlip: error: <message>",
/// and leaves no output file behind (single files are written atomically by the io layer; decode's
/// PNGs go through OutputFolderTransaction). Usage errors exit with 2, everything else with 1.
/// docs/CLI.md has the full manual.

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include <CLI/CLI.hpp>

#include "cli/commands.hpp"
#include "cli/options.hpp"
#include "cli/progress.hpp"
#include "cli/util.hpp"
#include "qlip/version.hpp"

namespace {

using namespace qlip::cli;

/// Prints the one error line, after erasing a progress bar that may still be on screen.
void print_error(const std::string& message) {
  ProgressBar::clear_active();
  const char* debug = std::getenv("QLIP_CLI_DEBUG");
  const bool keep_locations = debug != nullptr && debug[0] != '\0' && debug[0] != '0';
  std::fflush(stdout);
  std::fprintf(stderr, "qlip: error: %s\n", one_line_message(message, keep_locations).c_str());
  std::fflush(stderr);
}

/// CLI11 validator: an integer ≥ 1 (CLI::PositiveNumber's message prints DBL_MAX in full).
const CLI::Validator kPositive(
    [](std::string& value) -> std::string {
      try {
        std::size_t used = 0;
        const long long v = std::stoll(value, &used);
        if (used == value.size() && v >= 1 && v <= (1LL << 30)) return "";
      } catch (const std::exception&) {
      }
      return "must be an integer >= 1, got '" + value + "'";
    },
    "");

/// The first word that is neither an option nor the value of a global option: the command the user
/// meant. CLI11 would report "A subcommand is required" for a typo; naming the word is kinder.
std::string first_command_word(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--threads" || a == "--progress") {
      ++i;  // skip the value
      continue;
    }
    if (a.empty() || a[0] == '-') continue;
    return a;
  }
  return "";
}

/// Adds the options shared by the model subcommands that take images in batches.
void add_batch_option(CLI::App* sub, int& batch) {
  sub->add_option("--batch", batch, "images per forward pass (memory grows linearly with it)")
      ->check(kPositive)
      ->capture_default_str();
}

int run(int argc, char** argv) {
  CLI::App app{"qlip " QLIP_VERSION_STRING
               ": QLIP visual tokenizer (arXiv 2502.05178) on the CPU.\n"
               "Images → 28-bit BSQ codes per patch → images, plus the CLIP text tower for zero-shot use."};
  app.name("qlip");
  app.set_version_flag("--version", QLIP_VERSION_STRING);
  app.require_subcommand(1, 1);
  app.fallthrough();  // global options may follow the subcommand: `qlip info DIR --threads 2`
  app.footer(
      "Run `qlip <command> --help` for a command's options and examples.\n"
      "Examples:\n"
      "  qlip info ckpt/QLIP-B-16-256\n"
      "  qlip encode ckpt/QLIP-B-16-256 cat.png dog.jpg -o codes.safetensors --group-size 14\n"
      "  qlip decode ckpt/QLIP-B-16-256 codes.safetensors -o decoded/\n"
      "  qlip reconstruct ckpt/QLIP-B-16-256 cat.png -o grid.png\n"
      "  qlip classify ckpt/QLIP-B-16-256 cat.png --labels \"a dog,a cat\"\n"
      "  qlip embed ckpt/QLIP-B-16-256 cat.png --text \"a cat,a dog\" -o emb.safetensors");

  GlobalOptions global;
  std::string progress = "auto";
  app.add_option("--threads", global.threads, "CPU threads (default: all cores, or OMP_NUM_THREADS)")->check(kPositive);
  app.add_flag("-q,--quiet", global.quiet, "no progress bar and no informational lines");
  app.add_option("--progress", progress, "progress bar on stderr: auto (only on a terminal), always, never")
      ->check(CLI::IsMember({"auto", "always", "never"}))
      ->capture_default_str();

  // ---- info ----
  InfoOptions info;
  CLI::App* info_cmd = app.add_subcommand("info", "describe a checkpoint: matched config, towers, flags, parameters");
  info_cmd->add_option("checkpoint", info.checkpoint, "checkpoint folder (config.json, model.safetensors)")->required();
  info_cmd->footer(
      "Prints the compiled config the checkpoint matched, image size / patch / grid, width, depth and heads\n"
      "of each tower, the flags detected from the weights (k bias, sub-LN, SwiGLU, RoPE), the parameter\n"
      "count, the file's dtypes, and warnings (e.g. tensors the model does not use).\n"
      "Examples:\n"
      "  qlip info ckpt/QLIP-B-16-256\n"
      "  qlip info tests/data/qlip/qlip-test-tiny");

  // ---- encode ----
  EncodeOptions encode;
  CLI::App* encode_cmd = app.add_subcommand("encode", "images → BSQ codes (bits, indices, group indices)");
  encode_cmd->add_option("checkpoint", encode.checkpoint, "checkpoint folder")->required();
  encode_cmd->add_option("images", encode.images, "image files (PNG, JPEG, BMP, ...)")->required();
  encode_cmd->add_option("-o,--output", encode.output, "output .safetensors file")->required();
  encode_cmd
      ->add_option("--group-size", encode.group_size,
                   "also write group_indices [B,N,28/G]; G must divide the code width (1,2,4,7,14,28)")
      ->check(kPositive);
  encode_cmd->add_option("--index-dtype", encode.index_dtype, "dtype of indices / group_indices: u32 or i64")
      ->check(CLI::IsMember({"u32", "i64"}))
      ->capture_default_str();
  add_batch_option(encode_cmd, encode.batch);
  encode_cmd->footer(
      "Writes bits [B,N,L] U8 (0/1, dimension 0 = most significant bit), indices [B,N] (U32 by default)\n"
      "and, with --group-size G, group_indices [B,N,L/G]; metadata holds the config name, the image\n"
      "file names and the grid. B = number of images, N = patches per image, L = 28 bits.\n"
      "Examples:\n"
      "  qlip encode ckpt/QLIP-B-16-256 cat.png -o cat.codes.safetensors\n"
      "  qlip encode ckpt/QLIP-B-16-256 photos/*.jpg -o codes.safetensors --group-size 14 --batch 16");

  // ---- decode ----
  DecodeOptions decode;
  CLI::App* decode_cmd = app.add_subcommand("decode", "codes → images (one PNG per image)");
  decode_cmd->add_option("checkpoint", decode.checkpoint, "checkpoint folder")->required();
  decode_cmd->add_option("codes", decode.codes, "codes file written by `qlip encode`")->required();
  decode_cmd->add_option("-o,--output", decode.output, "output folder (created if missing)")->required();
  add_batch_option(decode_cmd, decode.batch);
  decode_cmd->footer(
      "Decodes from `indices` if present, else from `bits`, else from `group_indices`. Each image is\n"
      "mapped back from CLIP-normalised space (x·std + mean, clamped, rounded to uint8) and written as\n"
      "<name>.png after the source image's name (image_000.png, ... when names are unknown or clash).\n"
      "Nothing is written unless every image decodes.\n"
      "Examples:\n"
      "  qlip decode ckpt/QLIP-B-16-256 codes.safetensors -o decoded/");

  // ---- reconstruct ----
  ReconstructOptions recon;
  CLI::App* recon_cmd = app.add_subcommand("reconstruct", "encode → decode; print PSNR/SSIM; write a comparison grid");
  recon_cmd->add_option("checkpoint", recon.checkpoint, "checkpoint folder")->required();
  recon_cmd->add_option("images", recon.images, "image files")->required();
  recon_cmd->add_option("-o,--output", recon.output, "output grid PNG (originals above reconstructions)")->required();
  recon_cmd->add_option("--columns", recon.columns, "images per row of the grid (0 = all in one row)")
      ->check(CLI::Range(0, 1 << 20))
      ->capture_default_str();
  recon_cmd->add_option("--padding", recon.padding, "pixels between grid cells")
      ->check(CLI::Range(0, 64))
      ->capture_default_str();
  add_batch_option(recon_cmd, recon.batch);
  recon_cmd->footer(
      "PSNR and SSIM follow QLIP_SPEC 7.2: on [0,255] after the inverse normalisation, against the\n"
      "preprocessed (resized, centre-cropped) input, per image, then the mean.\n"
      "Examples:\n"
      "  qlip reconstruct ckpt/QLIP-B-16-256 cat.png dog.jpg -o grid.png\n"
      "  qlip reconstruct ckpt/QLIP-B-8-256 photos/*.png -o grid.png --quiet");

  // ---- classify ----
  ClassifyOptions classify;
  CLI::App* classify_cmd = app.add_subcommand("classify", "zero-shot classification: softmax(100·cos) over labels");
  classify_cmd->add_option("checkpoint", classify.checkpoint, "checkpoint folder")->required();
  classify_cmd->add_option("images", classify.images, "image files")->required();
  classify_cmd->add_option("--labels", classify.labels, "comma-separated labels (\"\\,\" for a literal comma)")
      ->required();
  classify_cmd->add_option("--template", classify.prompt_template, "prompt pattern; {} is replaced by each label")
      ->capture_default_str();
  classify_cmd->add_option("--top", classify.top, "print only the K most likely labels (0 = all)")
      ->check(CLI::Range(0, 1 << 30));
  classify_cmd->add_option("--vocab", global.vocab,
                           "tokenizer: bpe_simple_vocab_16e6.txt.gz or a folder with vocab.json + merges.txt "
                           "(default: the checkpoint folder, then $QLIP_VOCAB)");
  add_batch_option(classify_cmd, classify.batch);
  classify_cmd->footer(
      "Prints, per image, the labels sorted by probability = softmax over labels of 100·cos(image, text).\n"
      "Examples:\n"
      "  qlip classify ckpt/QLIP-B-8-256 dog.jpg --labels \"a diagram,a dog,a cat\"\n"
      "  qlip classify ckpt/QLIP-B-16-256 *.png --labels \"dog,cat,car\" --template \"a photo of a {}.\" --top 1\n"
      "  qlip classify ckpt/ cat.png --labels \"cat,dog\" --vocab third_party_data/bpe_simple_vocab_16e6.txt.gz");

  // ---- embed ----
  EmbedOptions embed;
  CLI::App* embed_cmd = app.add_subcommand("embed", "L2-normalised image and/or text embeddings → safetensors");
  embed_cmd->add_option("checkpoint", embed.checkpoint, "checkpoint folder")->required();
  embed_cmd->add_option("images", embed.images, "image files (optional if --text is given)");
  CLI::Option* text_opt =
      embed_cmd->add_option("--text", embed.text, "comma-separated texts to embed (\"\\,\" for a literal comma)");
  embed_cmd->add_option("-o,--output", embed.output, "output .safetensors file")->required();
  embed_cmd->add_option("--vocab", global.vocab,
                        "tokenizer: bpe_simple_vocab_16e6.txt.gz or a folder with vocab.json + merges.txt "
                        "(default: the checkpoint folder, then $QLIP_VOCAB)");
  add_batch_option(embed_cmd, embed.batch);
  embed_cmd->footer(
      "Writes image_embeds [B,P] and/or text_embeds [T,P] (F32, unit L2 norm; P = projection_dim);\n"
      "metadata lists the image file names and the texts in order.\n"
      "Examples:\n"
      "  qlip embed ckpt/QLIP-B-16-256 a.png b.png -o img.safetensors\n"
      "  qlip embed ckpt/QLIP-B-16-256 --text \"a cat,a dog\" -o text.safetensors\n"
      "  qlip embed ckpt/QLIP-B-16-256 a.png --text \"a cat\" -o both.safetensors --vocab vocab/");

  const std::string command = first_command_word(argc, argv);
  bool known = command.empty();
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; }))
    known |= sub->get_name() == command;
  if (!known) {
    print_error("unknown command '" + command + "' (commands: info, encode, decode, reconstruct, classify, embed)");
    return 2;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    print_error(e.what());
    return 2;
  }

  embed.text_given = text_opt->count() > 0;
  global.progress = progress == "always"  ? ProgressMode::always
                    : progress == "never" ? ProgressMode::never
                                          : ProgressMode::automatic;
  if (global.quiet) global.progress = ProgressMode::never;
  apply_global_options(global);

  if (info_cmd->parsed()) return run_info(global, info);
  if (encode_cmd->parsed()) return run_encode(global, encode);
  if (decode_cmd->parsed()) return run_decode(global, decode);
  if (recon_cmd->parsed()) return run_reconstruct(global, recon);
  if (classify_cmd->parsed()) return run_classify(global, classify);
  if (embed_cmd->parsed()) return run_embed(global, embed);
  print_error("no command given (try `qlip --help`)");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const UsageError& e) {
    print_error(e.what());
    return 2;
  } catch (const qlip::Error& e) {
    print_error(e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    print_error("out of memory (try a smaller --batch)");
    return 1;
  } catch (const std::exception& e) {
    print_error(e.what());
    return 1;
  } catch (...) {
    print_error("unknown exception");
    return 1;
  }
}
