/// @file um3_sample.cpp
/// @brief `um3-sample`: a trained UM³ model at work, as llama.cpp's and LlamaGen's sample scripts
///        are used (docs/UM3.md, "um3-sample"):
///
///   um3_sample MODEL_DIR --prompt "a photo of a sneaker." [--prompt ...] [--images N]
///              [--grid out.png] [--out-dir DIR]                                 text → image
///   um3_sample MODEL_DIR --caption photo.png [--caption ...]                    image → text
///   um3_sample MODEL_DIR --text "Men are" [--max-tokens N]                      text → text
///   common: [--qlip DIR] [--temperature T] [--top-k K] [--top-p P] [--cfg S] [--seed S]
///           [--batch B] [--threads T]
///
/// Text → image draws --images images per prompt with classifier-free guidance (--cfg; the
/// unconditional rows share the batch and the KV cache), decodes them with the QLIP the model was
/// trained on (um3.json, or --qlip), and writes a PNG grid (a row per prompt) and/or one PNG per
/// image (--out-dir: prompt<P>_<I>.png). Image → text encodes each image with the QLIP (resized and
/// centre-cropped as its preprocessor_config.json says) and prints "<image>: <caption>". Text → text
/// prints the prompt's continuation. Same seed, same output. Errors: one line on stderr,
/// "um3-sample: error: <message>", exit 1 (2 for a bad command line).

#include <omp.h>

#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "cli/inputs.hpp"
#include "cli/program.hpp"
#include "cli/util.hpp"
#include "qlip/um3/generate.hpp"
#include "um3/um3_images.hpp"

namespace {

using namespace qlip;
using namespace qlip::um3_cli;

struct Options {
  std::string model, qlip, grid, out_dir, text;
  std::vector<std::string> prompts, captions;
  std::int64_t images = 8, max_tokens = 64, batch = 16;
  sample::SamplerConfig sampler{1.0f, 0, 1.0f, 3.0f};
  std::uint64_t seed = 0;
  int threads = 0;
  nn::DecodeWeights decode_weights = nn::DecodeWeights::f32;
};

template <class Tag>
void text_to_image(const LoadedUm3<Tag>& um3, const DemoQlip& qlip, const ClipPreprocessConfig& pre, const Options& o) {
  const Um3Text& text = um3.files.text;
  um3::Generator<Tag::config, cpu_backend> gen(*um3.llama.model, text.vocab, 2 * std::min(o.images, o.batch),
                                               um3.llama.config.runtime.max_positions);
  std::vector<Image> all;
  for (std::size_t p = 0; p < o.prompts.size(); ++p) {
    const std::vector<std::int32_t> caption = text.bpe.encode(o.prompts[p]);
    QLIP_CHECK(static_cast<std::int64_t>(caption.size()) <= kUm3DemoMaxCaption, "prompt ", p + 1, " is ", caption.size(),
               " tokens; the model was trained on captions of at most ", kUm3DemoMaxCaption);
    std::vector<Image> images;
    for (std::int64_t first = 0; first < o.images; first += o.batch) {
      const std::int64_t n = std::min(o.batch, o.images - first);
      // Rows are numbered across prompts and batches, so every image has its own draws.
      const auto row = static_cast<std::uint64_t>(static_cast<std::int64_t>(p) * o.images + first);
      const std::vector<std::uint32_t> codes = gen.images(caption, n, kPatches, o.sampler, o.seed, row);
      (void)decode_codes(qlip, codes, n, pre, &images);
    }
    if (!o.out_dir.empty()) {
      std::filesystem::create_directories(o.out_dir);
      for (std::size_t i = 0; i < images.size(); ++i) {
        const std::string path = o.out_dir + "/prompt" + std::to_string(p + 1) + "_" + std::to_string(i + 1) + ".png";
        write_png(path, images[i]);
      }
    }
    std::fprintf(stderr, "um3-sample: \"%s\": %lld images\n", o.prompts[p].c_str(), static_cast<long long>(o.images));
    for (Image& im : images) all.push_back(upscale_nearest(im, 3));
  }
  if (!o.grid.empty()) {
    write_png(o.grid, make_grid(all, static_cast<int>(o.images)));
    std::fprintf(stderr, "um3-sample: wrote %s (a row per prompt)\n", o.grid.c_str());
  }
}

template <class Tag>
void image_to_text(const LoadedUm3<Tag>& um3, const DemoQlip& qlip, const ClipPreprocessConfig& pre, const Options& o) {
  const Um3Text& text = um3.files.text;
  const std::int64_t batch = std::min<std::int64_t>(o.batch, static_cast<std::int64_t>(o.captions.size()));
  um3::Generator<Tag::config, cpu_backend> gen(*um3.llama.model, text.vocab, batch, um3.llama.config.runtime.max_positions);
  const int s = DemoQlip::image_size();
  Tensor<float, 4> storage({batch, 3, s, s});
  const auto count = static_cast<std::int64_t>(o.captions.size());
  for (std::int64_t first = 0; first < count; first += batch) {
    const std::int64_t n = std::min(batch, count - first);
    const cli::ImageBatch ib = cli::load_image_batch(o.captions, first, n, DemoQlip::patch_size(), pre, storage, false);
    const std::vector<std::uint32_t> codes = encode_codes(qlip, HostView<const float, 4>(ib.pixels));
    const auto caps = gen.captions(codes, n, kPatches, o.sampler, o.seed + static_cast<std::uint64_t>(first),
                                   kUm3DemoMaxCaption + 1);
    for (std::int64_t i = 0; i < n; ++i)
      std::printf("%s: %s\n", o.captions[static_cast<std::size_t>(first + i)].c_str(),
                  text.decode(caps[static_cast<std::size_t>(i)]).c_str());
  }
}

template <class Tag>
void text_to_text(const LoadedUm3<Tag>& um3, const Options& o) {
  const Um3Text& text = um3.files.text;
  std::vector<std::int32_t> prompt{text.vocab.bos};
  const std::vector<std::int32_t> ids = text.bpe.encode(o.text);
  prompt.insert(prompt.end(), ids.begin(), ids.end());
  const std::int64_t context = um3.llama.config.runtime.max_positions;
  QLIP_CHECK(static_cast<std::int64_t>(prompt.size()) + o.max_tokens <= context, "the prompt (", prompt.size(),
             " tokens with <bos>) and --max-tokens ", o.max_tokens, " exceed the context of ", context);
  um3::Generator<Tag::config, cpu_backend> gen(*um3.llama.model, text.vocab, 1, context);
  const auto out = gen.continue_text(prompt, 1, static_cast<std::int64_t>(prompt.size()), o.sampler, o.seed, o.max_tokens);
  std::printf("%s%s\n", o.text.c_str(), text.decode(out[0]).c_str());
}

template <class Tag>
int run(const Options& o) {
  const LoadedUm3<Tag> um3 = load_um3_folder<Tag>(o.model);
  um3.llama.model->set_decode_weights(o.decode_weights);
  if (!o.text.empty()) text_to_text(um3, o);
  if (o.prompts.empty() && o.captions.empty()) return 0;
  const std::string qlip_dir = o.qlip.empty() ? um3.files.qlip : o.qlip;
  const DemoQlip qlip = DemoQlip::load(qlip_dir);
  std::string note;
  const ClipPreprocessConfig pre = cli::load_preprocess_config(qlip_dir, DemoQlip::image_size(), note);
  if (!o.prompts.empty()) text_to_image(um3, qlip, pre, o);
  if (!o.captions.empty()) image_to_text(um3, qlip, pre, o);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"um3-sample: text to image, image to text and text to text with a UM3 model"};
  Options o;
  app.add_option("model", o.model, "the UM3 folder (um3_train's --out/checkpoint)")->required();
  app.add_option("--prompt", o.prompts, "text to image: a prompt (repeatable)");
  app.add_option("--caption", o.captions, "image to text: an image file (repeatable)");
  app.add_option("--text", o.text, "text to text: the start of a text to continue");
  app.add_option("--images", o.images, "images per prompt")->check(CLI::PositiveNumber);
  app.add_option("--grid", o.grid, "write the images as a PNG grid, a row per prompt");
  app.add_option("--out-dir", o.out_dir, "write each image as DIR/prompt<P>_<I>.png");
  app.add_option("--max-tokens", o.max_tokens, "text to text: most new tokens")->check(CLI::PositiveNumber);
  app.add_option("--qlip", o.qlip, "QLIP checkpoint (default: the one um3.json names)");
  cli::add_sampler_options(app, o.sampler, o.seed);
  cli::add_decode_weights_option(app, o.decode_weights);
  app.add_option("--batch", o.batch, "images decoded at once")->check(CLI::PositiveNumber);
  cli::add_threads_option(app, o.threads);
  return cli::run_program(app, argc, argv, "um3-sample", o.threads, [&] {
    sample::validate(o.sampler);
    QLIP_CHECK(!o.prompts.empty() || !o.captions.empty() || !o.text.empty(),
               "nothing to do: give --prompt (text to image), --caption (image to text) or --text (text to text)");
    return with_um3_model(open_um3_folder(o.model).config, [&](auto tag) { return run<decltype(tag)>(o); });
  });
}
