/// @file qlip_cli.cpp
/// @brief The `qlip` command-line tool: inspect a QLIP checkpoint, turn images into 28-bit codes
///        and back, measure reconstructions, classify zero-shot and export embeddings.
///
///   qlip info        DIR
///   qlip encode      DIR IMG... -o codes.safetensors [--group-size G] [--batch N]
///   qlip decode      DIR codes.safetensors -o out/
///   qlip reconstruct DIR IMG... -o grid.png
///   qlip classify    DIR IMG... --labels "a dog,a cat" [--template "a photo of a {}."]... [--json]
///   qlip embed       DIR [IMG...] [--text "a,b"] -o emb.safetensors
///   qlip tokenize    [--context 77|none] [--decode] TEXT... | -
///
/// Errors: every failure exits non-zero with exactly one line on stderr, "qlip: error: <message>",
/// and leaves no output file behind (single files are written atomically by the io layer; decode's
/// PNGs go through OutputFolderTransaction). A wrong command line (UsageError) exits with 2,
/// anything that depends on the files (missing or bad inputs, a checkpoint folder that does not
/// load, an output location that cannot be written) with 1. `qlip` alone prints the help and exits
/// with 2.
/// docs/CLI.md has the full manual.

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

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

/// The options every command accepts, in a "Global options" group. They are added to the top-level
/// app and again to each subcommand (bound to the same variables), so that `qlip encode --help`
/// lists them too: CLI11 shows only a subcommand's own options. Either copy parses them, so they may
/// come before or after the command.
void add_global_options(CLI::App* app, GlobalOptions& global, std::string& progress) {
  const char* group = "Global options (before or after the command)";
  app->add_option("--threads", global.threads, "CPU threads (default: all cores, or OMP_NUM_THREADS)")
      ->check(kPositive)
      ->group(group);
  app->add_flag("-q,--quiet", global.quiet, "no progress bar, no informational lines, no warnings")->group(group);
  app->add_option("--progress", progress, "progress bar on stderr: auto (only on a terminal), always, never")
      ->check(CLI::IsMember({"auto", "always", "never"}))
      ->capture_default_str()
      ->group(group);
}

/// Adds --vocab (classify, embed, tokenize).
void add_vocab_option(CLI::App* sub, GlobalOptions& global, const char* fallback) {
  sub->add_option("--vocab", global.vocab,
                  std::string("tokenizer: bpe_simple_vocab_16e6.txt.gz, a vocab.json with merges.txt beside it, or a "
                              "folder holding either (default: ") +
                      fallback + ")");
}

/// CLI11 (2.1) reads a positional argument written "[a,b]" as the list of values a and b. A text to
/// tokenize ("[citation needed]"), a line of ids ("[320, 1125]") or a file name can look like that, so
/// such arguments are hidden behind a marker byte while CLI11 parses and the marker is removed from
/// every parsed value afterwards (restore_brackets).
constexpr char kBracketMarker = '\x1F';

std::vector<std::string> mark_brackets(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  for (std::size_t i = 1; i < args.size(); ++i) {
    if (args[i].size() >= 2 && args[i].front() == '[' && args[i].back() == ']') args[i].insert(0, 1, kBracketMarker);
  }
  return args;
}

void restore_brackets(std::string& value) {
  if (!value.empty() && value.front() == kBracketMarker) value.erase(0, 1);
}

void restore_brackets(std::vector<std::string>& values) {
  for (auto& v : values) restore_brackets(v);
}

/// CLI11's message with the markers taken out again.
std::string without_markers(std::string message) {
  message.erase(std::remove(message.begin(), message.end(), kBracketMarker), message.end());
  return message;
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
  app.require_subcommand(0, 1);  // none: print the help (and exit 2), not just "A subcommand is required"
  app.fallthrough();             // global options may follow the subcommand: `qlip info DIR --threads 2`
  app.footer(
      "Run `qlip <command> --help` for a command's options and examples.\n"
      "Examples:\n"
      "  qlip info ckpt/QLIP-B-16-256\n"
      "  qlip encode ckpt/QLIP-B-16-256 cat.png dog.jpg -o codes.safetensors --group-size 14\n"
      "  qlip decode ckpt/QLIP-B-16-256 codes.safetensors -o decoded/\n"
      "  qlip reconstruct ckpt/QLIP-B-16-256 cat.png -o grid.png\n"
      "  qlip classify ckpt/QLIP-B-16-256 cat.png --labels \"a dog,a cat\"\n"
      "  qlip embed ckpt/QLIP-B-16-256 cat.png --text \"a cat,a dog\" -o emb.safetensors\n"
      "  qlip tokenize --vocab third_party_data/bpe_simple_vocab_16e6.txt.gz \"a photo of a cat\"\n"
      "Outputs: -o - writes codes, embeddings or the grid PNG to standard output.\n"
      "Exit status: 0 success; 1 a missing or bad input, checkpoint or output location; 2 a wrong command\n"
      "line (unknown option, bad value, no command).");

  GlobalOptions global;
  std::string progress = "auto";
  add_global_options(&app, global, progress);

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
  add_global_options(info_cmd, global, progress);

  // ---- encode ----
  EncodeOptions encode;
  CLI::App* encode_cmd = app.add_subcommand("encode", "images → BSQ codes (bits, indices, group indices)");
  encode_cmd->add_option("checkpoint", encode.checkpoint, "checkpoint folder")->required();
  encode_cmd->add_option("images", encode.images, "image files (PNG, JPEG, BMP, ...)")->required();
  encode_cmd->add_option("-o,--output", encode.output, "output .safetensors file (- for standard output)")->required();
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
      "  qlip encode ckpt/QLIP-B-16-256 photos/*.jpg -o codes.safetensors --group-size 14 --batch 16\n"
      "  qlip encode ckpt/QLIP-B-16-256 cat.png -o - | ssh host 'cat > codes.safetensors'");
  add_global_options(encode_cmd, global, progress);

  // ---- decode ----
  DecodeOptions decode;
  CLI::App* decode_cmd = app.add_subcommand("decode", "codes → images (one PNG per image)");
  decode_cmd->add_option("checkpoint", decode.checkpoint, "checkpoint folder")->required();
  decode_cmd->add_option("codes", decode.codes, "codes file written by `qlip encode`")->required();
  decode_cmd->add_option("-o,--output", decode.output, "output folder (created if missing; - is refused)")->required();
  add_batch_option(decode_cmd, decode.batch);
  decode_cmd->footer(
      "Decodes from `indices` if present, else from `bits`, else from `group_indices`. Each image is\n"
      "mapped back from CLIP-normalised space (x·std + mean, clamped, rounded to uint8) and written as\n"
      "<name>.png after the source image's name (image_000.png, ... when names are unknown or clash).\n"
      "Nothing is written unless every image decodes.\n"
      "Examples:\n"
      "  qlip decode ckpt/QLIP-B-16-256 codes.safetensors -o decoded/");
  add_global_options(decode_cmd, global, progress);

  // ---- reconstruct ----
  ReconstructOptions recon;
  CLI::App* recon_cmd = app.add_subcommand("reconstruct", "encode → decode; print PSNR/SSIM; write a comparison grid");
  recon_cmd->add_option("checkpoint", recon.checkpoint, "checkpoint folder")->required();
  recon_cmd->add_option("images", recon.images, "image files")->required();
  recon_cmd
      ->add_option("-o,--output", recon.output,
                   "output grid .png (originals above reconstructions); - for PNG on standard output")
      ->required();
  recon_cmd->add_option("--columns", recon.columns, "images per row of the grid (0 = all in one row)")
      ->check(CLI::Range(0, 1 << 20))
      ->capture_default_str();
  recon_cmd->add_option("--padding", recon.padding, "pixels between grid cells")
      ->check(CLI::Range(0, 64))
      ->capture_default_str();
  add_batch_option(recon_cmd, recon.batch);
  recon_cmd->footer(
      "PSNR and SSIM follow MODEL.md §7.2: on [0,255] after the inverse normalisation, against the\n"
      "preprocessed (resized, centre-cropped) input, per image, then the mean.\n"
      "With -o - the PNG goes to standard output and the table to standard error.\n"
      "Examples:\n"
      "  qlip reconstruct ckpt/QLIP-B-16-256 cat.png dog.jpg -o grid.png\n"
      "  qlip reconstruct ckpt/QLIP-B-8-256 photos/*.png -o grid.png --quiet\n"
      "  qlip reconstruct ckpt/QLIP-B-16-256 cat.png -o - | display");
  add_global_options(recon_cmd, global, progress);

  // ---- classify ----
  ClassifyOptions classify;
  CLI::App* classify_cmd = app.add_subcommand("classify", "zero-shot classification: softmax(100·cos) over labels");
  classify_cmd->add_option("checkpoint", classify.checkpoint, "checkpoint folder")->required();
  classify_cmd->add_option("images", classify.images, "image files")->required();
  classify_cmd
      ->add_option("--labels", classify.labels,
                   "comma-separated labels (\"\\,\" for a literal comma), or @FILE: one label per line, blank "
                   "lines and # comments skipped")
      ->required();
  classify_cmd
      ->add_option("--template", classify.templates,
                   "prompt pattern, {} is replaced by each label (default: {}); repeat it to ensemble several")
      ->allow_extra_args(false);  // one value per --template, so images after it stay images
  classify_cmd->add_option("--top", classify.top, "print only the K most likely labels (0 = all)")
      ->check(CLI::Range(0, 1 << 30));
  classify_cmd->add_flag("--json", classify.json,
                         "print one JSON document: per image, the labels with their probabilities, sorted");
  add_vocab_option(classify_cmd, global, "the checkpoint folder, then $QLIP_VOCAB");
  add_batch_option(classify_cmd, classify.batch);
  classify_cmd->footer(
      "Prints, per image, the labels sorted by probability = softmax over labels of 100·cos(image, text).\n"
      "With several --template, each label's text embedding is the re-normalised mean over its prompts.\n"
      "A prompt longer than the text context (77 tokens with start and end) is cut, with a warning.\n"
      "Examples:\n"
      "  qlip classify ckpt/QLIP-B-8-256 dog.jpg --labels \"a diagram,a dog,a cat\"\n"
      "  qlip classify ckpt/QLIP-B-16-256 *.png --labels \"dog,cat,car\" --template \"a photo of a {}.\" --top 1\n"
      "  qlip classify ckpt/QLIP-B-16-256 *.png --labels @imagenet_classes.txt \\\n"
      "      --template \"a photo of a {}.\" --template \"a blurry photo of a {}.\" --json > result.json\n"
      "  qlip classify ckpt/ cat.png --labels \"cat,dog\" --vocab third_party_data/bpe_simple_vocab_16e6.txt.gz");
  add_global_options(classify_cmd, global, progress);

  // ---- embed ----
  EmbedOptions embed;
  CLI::App* embed_cmd = app.add_subcommand("embed", "L2-normalised image and/or text embeddings → safetensors");
  embed_cmd->add_option("checkpoint", embed.checkpoint, "checkpoint folder")->required();
  embed_cmd->add_option("images", embed.images, "image files (optional if --text is given)");
  CLI::Option* text_opt = embed_cmd->add_option(
      "--text", embed.text,
      "comma-separated texts to embed (\"\\,\" for a literal comma), or @FILE: one text per line");
  embed_cmd->add_option("-o,--output", embed.output, "output .safetensors file (- for standard output)")->required();
  add_vocab_option(embed_cmd, global, "the checkpoint folder, then $QLIP_VOCAB");
  add_batch_option(embed_cmd, embed.batch);
  embed_cmd->footer(
      "Writes image_embeds [B,P] and/or text_embeds [T,P] (F32, unit L2 norm; P = projection_dim);\n"
      "metadata lists the image file names and the texts in order.\n"
      "Examples:\n"
      "  qlip embed ckpt/QLIP-B-16-256 a.png b.png -o img.safetensors\n"
      "  qlip embed ckpt/QLIP-B-16-256 --text \"a cat,a dog\" -o text.safetensors\n"
      "  qlip embed ckpt/QLIP-B-16-256 a.png --text \"a cat\" -o both.safetensors --vocab vocab/\n"
      "  qlip embed ckpt/QLIP-B-16-256 --text @captions.txt -o - > text.safetensors");
  add_global_options(embed_cmd, global, progress);

  // ---- tokenize ----
  TokenizeOptions tokenize;
  CLI::App* tokenize_cmd =
      app.add_subcommand("tokenize", "texts → CLIP BPE token ids (as open_clip's tokenizer), or ids → text");
  tokenize_cmd->add_option("inputs", tokenize.inputs,
                           "texts, one output line each; - reads standard input line by line (with --decode: "
                           "lines of ids)");
  tokenize_cmd
      ->add_option("--context", tokenize.context,
                   "N: open_clip's tokenize() row of N ids (SOT ... EOT, cut to N, padded with 0); none: the raw "
                   "BPE ids, no SOT/EOT")
      ->capture_default_str();
  tokenize_cmd->add_flag("--decode", tokenize.decode,
                         "the inverse: each input is a line of ids (spaces, commas or [ ] between them) → its text");
  add_vocab_option(tokenize_cmd, global, "$QLIP_VOCAB");
  tokenize_cmd->footer(
      "Prints one line per text: its ids separated by spaces. --decode prints open_clip's decode() of each line\n"
      "(SOT skipped, stopping at the first EOT, the cleaned lower-case text with a space between pieces).\n"
      "Put -- before texts that begin with '-'. A text longer than the context is cut, with a warning.\n"
      "Examples:\n"
      "  qlip tokenize --vocab third_party_data/bpe_simple_vocab_16e6.txt.gz \"a photo of a cat\" \"a dog\"\n"
      "  qlip tokenize --context none \"a photo of a cat\"       # 320 1125 539 320 2368 (with $QLIP_VOCAB set)\n"
      "  qlip tokenize - < captions.txt > ids.txt\n"
      "  qlip tokenize --decode - < ids.txt\n"
      "  qlip tokenize --decode \"49406 320 2368 49407\"");
  add_global_options(tokenize_cmd, global, progress);

  const std::string command = first_command_word(argc, argv);
  bool known = command.empty();
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; }))
    known |= sub->get_name() == command;
  if (!known) {
    print_error("unknown command '" + command +
                "' (commands: info, encode, decode, reconstruct, classify, embed, tokenize)");
    return 2;
  }
  try {
    const std::vector<std::string> marked = mark_brackets(argc, argv);
    std::vector<const char*> marked_argv;
    for (const auto& a : marked) marked_argv.push_back(a.c_str());
    app.parse(argc, marked_argv.data());
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    print_error(without_markers(e.what()));
    return 2;
  }
  for (std::string* v : {&global.vocab, &info.checkpoint, &encode.checkpoint, &encode.output, &decode.checkpoint,
                         &decode.codes, &decode.output, &recon.checkpoint, &recon.output, &classify.checkpoint,
                         &classify.labels, &embed.checkpoint, &embed.text, &embed.output, &tokenize.context})
    restore_brackets(*v);
  for (std::vector<std::string>* v :
       {&encode.images, &recon.images, &classify.images, &classify.templates, &embed.images, &tokenize.inputs})
    restore_brackets(*v);

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
  if (tokenize_cmd->parsed()) return run_tokenize(global, tokenize);
  // No command: the help says what there is to run; exit 2 because nothing was done.
  std::fputs(app.help().c_str(), stdout);
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
