/// @file test_checkpoint_io.cpp
/// @brief train/checkpoint_writer.hpp: a ParameterStore written as an official checkpoint folder
///        and loaded back. Without training, the round trip gives back the source files (weights
///        byte for byte) and the inference model's outputs bit for bit; config.json is the full form
///        of what was loaded; loading names the missing tensor, the wrong shape, the config field
///        that differs; a write that fails at any point leaves the previous checkpoint loadable.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "common/compare.hpp"
#include "common/train_tiny.hpp"
#include "model/fixtures.hpp"
#include "qlip/core/philox.hpp"
#include "qlip/model/qlip_model.hpp"
#include "qlip/train/checkpoint_writer.hpp"
#include "train/train_io_util.hpp"

namespace qlip {
namespace {

namespace fs = std::filesystem;
using test::file_bytes;
using test::load_rig;
using test::ScratchDir;
using test::train_data;

const std::string kSource = train_data("train-tiny");

/// The names of everything beside `dir` that starts with "<dir>." (temporary or old folders).
std::vector<std::string> leftovers(const std::string& dir) {
  std::vector<std::string> out;
  const fs::path p(dir);
  const std::string prefix = p.filename().string() + ".";
  for (const auto& e : fs::directory_iterator(p.parent_path()))
    if (e.path().filename().string().starts_with(prefix)) out.push_back(e.path().filename().string());
  return out;
}

/// Every tensor of `a` is in `b` with the same dtype, shape and bytes, and vice versa.
void expect_same_tensors(const std::string& a_path, const std::string& b_path) {
  const SafetensorsFile a = SafetensorsFile::open(a_path), b = SafetensorsFile::open(b_path);
  EXPECT_EQ(a.tensors().size(), b.tensors().size());
  for (const auto& t : a.tensors()) {
    ASSERT_TRUE(b.contains(t.name)) << t.name;
    const auto& u = b.info(t.name);
    EXPECT_EQ(t.dtype, u.dtype) << t.name;
    EXPECT_EQ(t.shape, u.shape) << t.name;
    const auto x = a.bytes(t.name), y = b.bytes(t.name);
    EXPECT_TRUE(x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size()) == 0) << t.name << " differs";
  }
}

/// Pixels in the CLIP-normalised range, from a fixed Philox stream.
Tensor<float, 4> random_pixels(std::int64_t batch, int size) {
  Tensor<float, 4> p({batch, 3, size, size});
  const Philox rng(11);
  for (std::int64_t i = 0; i < p.numel(); ++i) p.data()[i] = 2.0f * rng.uniform(static_cast<std::uint64_t>(i)) - 1.0f;
  return p;
}

template <class T, int R>
bool same_bytes(const HostView<T, R>& a, const HostView<T, R>& b) {
  return a.shape() == b.shape() && a.is_contiguous() && b.is_contiguous() &&
         std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.numel()) * sizeof(T)) == 0;
}

TEST(CheckpointIo, RoundTripWithoutTrainingGivesBackTheSourceFiles) {
  ScratchDir scratch("roundtrip");
  train::LoadedCheckpoint loaded;
  auto rig = load_rig(kSource, &loaded);
  EXPECT_FALSE(loaded.recovered);
  // The RoPE buffers are the file's only tensors that are not parameters.
  std::vector<std::string> extra;
  for (const auto& t : loaded.extra_tensors) extra.push_back(t.name);
  EXPECT_EQ(extra, (std::vector<std::string>{"vision_decoder.rope.freqs_cos", "vision_decoder.rope.freqs_sin",
                                             "vision_model.rope.freqs_cos", "vision_model.rope.freqs_sin"}));

  const std::string out = scratch.path("ckpt");
  train::write_checkpoint(out, rig->store, loaded.contents());
  // Same tensor order, header and metadata as the Python writer: the same bytes.
  EXPECT_TRUE(file_bytes(out + "/model.safetensors") == file_bytes(kSource + "/model.safetensors"));
  expect_same_tensors(kSource + "/model.safetensors", out + "/model.safetensors");
  EXPECT_EQ(SafetensorsFile::open(out + "/model.safetensors").info("logit_scale").shape, std::vector<std::int64_t>{});
  EXPECT_TRUE(file_bytes(out + "/preprocessor_config.json") == file_bytes(kSource + "/preprocessor_config.json"));
  // The source config.json is already in the full form: written back unchanged.
  EXPECT_EQ(read_json(out + "/config.json"), read_json(kSource + "/config.json"));
  EXPECT_TRUE(leftovers(out).empty());

  const Checkpoint a = open_checkpoint(kSource), b = open_checkpoint(out);
  EXPECT_TRUE(b.structure == TrainTinyQlip::config);
  EXPECT_TRUE(b.defaulted_fields.empty()) << b.defaulted_fields.front();
  for (auto [x, y] : {std::pair{a.runtime.vision, b.runtime.vision}, std::pair{a.runtime.decoder, b.runtime.decoder},
                      std::pair{a.runtime.text, b.runtime.text}}) {
    EXPECT_EQ(x.layer_norm_eps, y.layer_norm_eps);
    EXPECT_EQ(x.act, y.act);
    EXPECT_EQ(x.rope, y.rope);
  }
  EXPECT_EQ(a.runtime.group_size, b.runtime.group_size);
  EXPECT_EQ(a.runtime.eos_token_id, b.runtime.eos_token_id);
  EXPECT_EQ(a.runtime.logit_scale, b.runtime.logit_scale);

  // load → save → load → save: the second generation is the same again, folder replaced in place.
  train::LoadedCheckpoint again;
  auto rig2 = load_rig(out, &again);
  EXPECT_TRUE(test::same_bits(rig2->store.values().data(), rig->store.values().data(), rig->store.buffer_size()));
  train::write_checkpoint(out, rig2->store, again.contents());
  EXPECT_TRUE(file_bytes(out + "/model.safetensors") == file_bytes(kSource + "/model.safetensors"));
  EXPECT_TRUE(leftovers(out).empty());
}

TEST(CheckpointIo, RoundTripGivesTheSameInferenceOutputs) {
  ScratchDir scratch("inference");
  train::LoadedCheckpoint loaded;
  auto rig = load_rig(kSource, &loaded);
  const std::string out = scratch.path("ckpt");
  train::write_checkpoint(out, rig->store, loaded.contents());

  using Model = QlipModel<TrainTinyQlip>;
  const Model src = Model::load(kSource), dst = Model::load(out);
  EXPECT_EQ(src.warnings(), dst.warnings());
  const auto pixels = random_pixels(3, Model::image_size());
  Arena ws_a(src.workspace_bytes(3)), ws_b(dst.workspace_bytes(3));
  const auto ea = src.encode_image(ws_a, pixels.view());
  const auto eb = dst.encode_image(ws_b, pixels.view());
  EXPECT_TRUE(same_bytes(ea.image_embeds, eb.image_embeds));
  EXPECT_TRUE(same_bytes(ea.u, eb.u));
  EXPECT_TRUE(same_bytes(ea.bits, eb.bits));
  EXPECT_TRUE(same_bytes(ea.indices, eb.indices));
  EXPECT_TRUE(same_bytes(src.decode(ws_a, ea.indices).pixels, dst.decode(ws_b, eb.indices).pixels));

  Tensor<std::int32_t, 2> ids({2, Model::context_length()});
  for (std::int64_t i = 0; i < ids.numel(); ++i) ids.data()[i] = 0;
  const std::int32_t tokens[2][4] = {{510, 17, 301, 511}, {510, 9, 511, 0}};
  for (int r = 0; r < 2; ++r)
    for (int i = 0; i < 4; ++i) ids(r, i) = tokens[r][i];
  Arena ts_a(Model::encode_text_workspace_bytes(2, Model::context_length()));
  Arena ts_b(Model::encode_text_workspace_bytes(2, Model::context_length()));
  EXPECT_TRUE(same_bytes(src.encode_text(ts_a, ids.view()).text_embeds, dst.encode_text(ts_b, ids.view()).text_embeds));
}

// QLIP_TRAIN_IO_OUT=<folder>: also writes <folder>/roundtrip (no training) and <folder>/trained
// (3 LAMB steps) for the PyTorch check, tools/check_trained_checkpoint.py (run by hand).
TEST(CheckpointIo, WritesFoldersForThePyTorchCheckWhenAsked) {
  const char* dir = std::getenv("QLIP_TRAIN_IO_OUT");
  if (dir == nullptr) GTEST_SKIP() << "QLIP_TRAIN_IO_OUT not set";
  train::LoadedCheckpoint loaded;
  auto rig = load_rig(kSource, &loaded);
  train::write_checkpoint(std::string(dir) + "/roundtrip", rig->store, loaded.contents());
  for (int s = 0; s < 3; ++s) rig->step(s);
  train::write_checkpoint(std::string(dir) + "/trained", rig->store, loaded.contents());
  const Checkpoint ck = open_checkpoint(std::string(dir) + "/trained");
  EXPECT_TRUE(ck.structure == TrainTinyQlip::config);
}

TEST(CheckpointIo, ConfigFromTheDiffFormIsTheFullForm) {
  const Checkpoint full = open_checkpoint(test::qlip_fixture_dir("qlip-test-tiny"));
  const nlohmann::json diff = read_json(test::qlip_fixture_dir("qlip-test-tiny-diff") + "/config.json");
  const nlohmann::json written = train::full_config_json(diff, full.structure);
  // Every field of the full form, with its value; the diff form's bookkeeping fields may remain.
  for (const auto& [key, value] : full.config_json.items()) {
    ASSERT_TRUE(written.contains(key)) << key;
    if (!value.is_object()) {
      EXPECT_EQ(written[key], value) << key;
      continue;
    }
    for (const auto& [k, v] : value.items()) EXPECT_EQ(written[key][k], v) << key << "." << k;
    for (const auto& [k, v] : written[key].items())
      EXPECT_TRUE(value.contains(k) || k == "model_type") << key << "." << k << " is not in the full form";
  }
  for (const auto& [key, value] : written.items())
    EXPECT_TRUE(full.config_json.contains(key) || key == "transformers_version") << key;
}

TEST(CheckpointIo, BuiltConfigLoadsWithTheSameStructureAndRuntimeValues) {
  ScratchDir scratch("built");
  train::LoadedCheckpoint loaded;
  auto rig = load_rig(kSource, &loaded);
  const Checkpoint& src = loaded.checkpoint;
  train::CheckpointContents c;
  c.config = train::config_json_from(TrainTinyQlip::config, src.runtime);
  c.structure = TrainTinyQlip::config;
  c.extra_tensors = loaded.extra_tensors;  // no files: the preprocessor config is generated
  const std::string out = scratch.path("ckpt");
  train::write_checkpoint(out, rig->store, c);
  const Checkpoint b = open_checkpoint(out);
  EXPECT_TRUE(b.structure == TrainTinyQlip::config);
  for (auto [x, y] : {std::pair{src.runtime.vision, b.runtime.vision},
                      std::pair{src.runtime.decoder, b.runtime.decoder}, std::pair{src.runtime.text, b.runtime.text}}) {
    EXPECT_EQ(x.layer_norm_eps, y.layer_norm_eps);
    EXPECT_EQ(x.act, y.act);
    EXPECT_EQ(x.rope, y.rope);
  }
  EXPECT_EQ(src.runtime.group_size, b.runtime.group_size);
  EXPECT_EQ(src.runtime.quantizer_l2_norm, b.runtime.quantizer_l2_norm);
  EXPECT_EQ(src.runtime.code_scale_l2, b.runtime.code_scale_l2);
  EXPECT_EQ(src.runtime.eos_token_id, b.runtime.eos_token_id);
  EXPECT_EQ(src.runtime.logit_scale, b.runtime.logit_scale);
  EXPECT_EQ(read_json(out + "/config.json").at("vision_config").at("layer_norm_eps").dump(), "1e-06");
  // The generated preprocessor config is what io/preprocess.hpp reads, for this image size.
  const ClipPreprocessConfig pc = ClipPreprocessConfig::load(out + "/preprocessor_config.json");
  const ClipPreprocessConfig want = ClipPreprocessConfig::load(kSource + "/preprocessor_config.json");
  EXPECT_EQ(pc.shortest_edge, want.shortest_edge);
  EXPECT_EQ(pc.crop_height, want.crop_height);
  EXPECT_EQ(pc.mean, want.mean);
  EXPECT_EQ(pc.std, want.std);
  expect_same_tensors(kSource + "/model.safetensors", out + "/model.safetensors");
}

TEST(CheckpointIo, TokenizerAndGeneratedFilesAreWritten) {
  ScratchDir scratch("files");
  train::LoadedCheckpoint loaded;
  auto rig = load_rig(kSource, &loaded);
  train::CheckpointContents c = loaded.contents();
  c.files.push_back({"vocab.json", "{\"a</w>\": 0}"});
  c.files.push_back({"merges.txt", "#version: 0.2\n"});
  c.generated_files.push_back(
      {"notes.txt", [](const std::string& path) { qlip::detail::write_file_atomic(path, "note", 4); }});
  const std::string out = scratch.path("ckpt");
  train::write_checkpoint(out, rig->store, c);
  EXPECT_EQ(file_bytes(out + "/vocab.json"), "{\"a</w>\": 0}");
  EXPECT_EQ(file_bytes(out + "/notes.txt"), "note");
  // Loading picks the tokenizer files up again, so the next save carries them on.
  train::LoadedCheckpoint again;
  auto rig2 = load_rig(out, &again);
  std::vector<std::string> names;
  for (const auto& f : again.files) names.push_back(f.name);
  EXPECT_EQ(names, (std::vector<std::string>{"preprocessor_config.json", "vocab.json", "merges.txt"}));
  test::expect_error_naming(
      [&] {
        c.files.push_back({"config.json", "{}"});
        train::write_checkpoint(out, rig->store, c);
      },
      "'config.json' is written by write_checkpoint itself");
}

TEST(CheckpointIo, CheckpointOfAnotherConfigNamesTheField) {
  auto rig = std::make_unique<test::TrainTinyRig>(open_checkpoint(kSource).runtime);
  try {
    train::load_checkpoint(test::qlip_fixture_dir("qlip-test-tiny"), rig->store, TrainTinyQlip::config,
                           TrainTinyQlip::name);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("is not a train-tiny checkpoint: vision_config.image_size = 32 in the checkpoint, 16 in "
                     "train-tiny (and "),
              std::string::npos)
        << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  }
  // Nothing was loaded.
  for (float v : std::vector<float>(rig->store.values().data(), rig->store.values().data() + 64)) EXPECT_EQ(v, 0.0f);
}

/// A copy of the train-tiny folder whose model.safetensors is rewritten by `edit`.
template <class Edit>
std::string edited_source(const ScratchDir& scratch, const std::string& name, Edit edit) {
  const std::string dir = scratch.path(name);
  fs::create_directories(dir);
  fs::copy_file(kSource + "/config.json", dir + "/config.json");
  const SafetensorsFile f = SafetensorsFile::open(kSource + "/model.safetensors");
  SafetensorsWriter w;
  for (const auto& t : f.tensors()) edit(f, t, w);
  w.write(dir + "/model.safetensors");
  return dir;
}

TEST(CheckpointIo, LoadErrorsNameTheTensor) {
  ScratchDir scratch("errors");
  auto rig = std::make_unique<test::TrainTinyRig>(open_checkpoint(kSource).runtime);
  auto load = [&](const std::string& dir) {
    train::load_checkpoint(dir, rig->store, TrainTinyQlip::config, TrainTinyQlip::name);
  };
  const std::string missing = edited_source(scratch, "missing", [](const auto& f, const auto& t, auto& w) {
    if (t.name != "vision_model.post_layernorm.bias") w.add_raw(t.name, t.dtype, t.shape, f.bytes(t.name).data());
  });
  test::expect_error_naming([&] { load(missing); },
                            "model.safetensors: missing tensor 'vision_model.post_layernorm.bias' (a parameter of the "
                            "train-tiny model)");
  const std::string shape = edited_source(scratch, "shape", [](const auto& f, const auto& t, auto& w) {
    if (t.name == "vision_model.post_layernorm.weight") {
      const std::vector<float> v(31, 1.0f);
      w.add_raw(t.name, DType::f32, {31}, v.data());
    } else {
      w.add_raw(t.name, t.dtype, t.shape, f.bytes(t.name).data());
    }
  });
  test::expect_error_naming([&] { load(shape); },
                            "tensor 'vision_model.post_layernorm.weight' has shape [31], the train-tiny model expects "
                            "[32]");
  const std::string dtype = edited_source(scratch, "dtype", [](const auto& f, const auto& t, auto& w) {
    if (t.name == "vision_model.post_layernorm.weight") {
      const std::vector<std::int32_t> v(32, 1);
      w.add_raw(t.name, DType::i32, {32}, v.data());
    } else {
      w.add_raw(t.name, t.dtype, t.shape, f.bytes(t.name).data());
    }
  });
  test::expect_error_naming([&] { load(dtype); }, "tensor 'vision_model.post_layernorm.weight' has dtype I32");
  test::expect_error_naming([&] { load(scratch.path("nothing")); }, "does not exist");
}

TEST(CheckpointIo, WriteErrorsNameTheFieldOrFileAndWriteNothing) {
  ScratchDir scratch("write-errors");
  train::LoadedCheckpoint loaded;
  auto rig = load_rig(kSource, &loaded);
  const std::string out = scratch.path("ckpt");
  {
    train::CheckpointContents c = loaded.contents();
    c.config["vision_config"]["hidden_size"] = 64;
    test::expect_error_naming([&] { train::write_checkpoint(out, rig->store, c); },
                              "config.json: config field vision_config.hidden_size = 64 contradicts the weights, "
                              "which have 32");
    EXPECT_FALSE(fs::exists(out));
  }
  {
    train::CheckpointContents c = loaded.contents();
    c.files = {{"preprocessor_config.json", "{\"crop_size\": 224, \"size\": 224}"}};
    test::expect_error_naming([&] { train::write_checkpoint(out, rig->store, c); },
                              "preprocessor_config.json: crop size 224x224 is not the model's image size 16");
    EXPECT_FALSE(fs::exists(out));
  }
  {
    // Tensors that are not of the structure config.json is written for: the written folder does
    // not load, so it is not committed.
    train::ParameterStore other;
    for (const auto& info : rig->store.infos())
      other.add(info.name, info.name == "visual_projection.weight" ? std::vector<std::int64_t>{17, 32} : info.shape,
                info.group, info.decay);
    other.freeze();
    test::expect_error_naming([&] { train::write_checkpoint(out, other, loaded.contents()); },
                              "visual_projection.weight");
    EXPECT_FALSE(fs::exists(out));
    EXPECT_TRUE(leftovers(out).empty());
  }
  // A folder that is not a checkpoint is never replaced.
  const std::string other = scratch.path("my-notes");
  fs::create_directories(other);
  qlip::detail::write_file_atomic(other + "/notes.txt", "keep", 4);
  test::expect_error_naming([&] { train::write_checkpoint(other, rig->store, loaded.contents()); },
                            "holds neither config.json nor model.safetensors; refusing to replace it");
  EXPECT_EQ(file_bytes(other + "/notes.txt"), "keep");
  // The parent "folder" is a file.
  qlip::detail::write_file_atomic(scratch.path("file"), "x", 1);
  test::expect_error_naming([&] { train::write_checkpoint(scratch.path("file/ckpt"), rig->store, loaded.contents()); },
                            "file/ckpt");
}

/// The store's values equal the train-tiny source tensors, bit for bit.
void expect_source_values(const std::string& dir) {
  auto rig = load_rig(dir);
  const SafetensorsFile f = SafetensorsFile::open(kSource + "/model.safetensors");
  for (const auto& info : rig->store.infos()) {
    const std::vector<float> v = f.to_float_vector(info.name);
    EXPECT_TRUE(test::same_bits(rig->store.values().data() + info.offset, v.data(), info.numel)) << info.name;
  }
}

TEST(CheckpointIo, InterruptedWriteLeavesThePreviousCheckpoint) {
  ScratchDir scratch("interrupted");
  train::LoadedCheckpoint loaded;
  auto rig = load_rig(kSource, &loaded);
  const std::string out = scratch.path("ckpt");
  train::CheckpointContents contents = loaded.contents();
  train::write_checkpoint(out, rig->store, contents);
  for (const auto& info : rig->store.infos())  // "trained" (the padding between tensors stays zero)
    for (std::int64_t i = 0; i < info.numel; ++i) rig->store.values().data()[info.offset + i] += 1.0f;

  // A generated file that fails halfway through writing (as a full disk would).
  contents.generated_files.push_back({"training_state.safetensors", [](const std::string& path) {
                                        qlip::detail::write_file_atomic(path, [&](const auto& write) {
                                          write("half", 4);
                                          QLIP_THROW("error writing ", path, ": No space left on device (simulated)");
                                        });
                                      }});
  test::expect_error_naming([&] { train::write_checkpoint(out, rig->store, contents); },
                            "training_state.safetensors: No space left on device (simulated)");
  EXPECT_TRUE(leftovers(out).empty());
  expect_source_values(out);
  contents.generated_files.clear();

  // Two generated files of one name: refused before anything is written.
  for (int i = 0; i < 2; ++i)
    contents.generated_files.push_back(
        {"state.safetensors", [](const std::string& path) { qlip::detail::write_file_atomic(path, "x", 1); }});
  test::expect_error_naming([&] { train::write_checkpoint(out, rig->store, contents); },
                            "two generated files are named 'state.safetensors'");
  EXPECT_TRUE(leftovers(out).empty());
  expect_source_values(out);
  contents.generated_files.clear();

  // A failure injected before every step, the swap between the two renames included.
  for (const std::string at :
       {"model.safetensors", "config.json", "preprocessor_config.json", "verify", "commit", "swap"}) {
    SCOPED_TRACE(at);
    train::CheckpointWriteOptions o;
    o.before_step = [&](const std::string& s) {
      if (s == at) QLIP_THROW("injected failure before ", s);
    };
    test::expect_error_naming([&] { train::write_checkpoint(out, rig->store, contents, o); }, "injected failure");
    EXPECT_TRUE(leftovers(out).empty());
    expect_source_values(out);
  }

  // The process dies between the two renames: only <dir>.old (and its temporary folder) remain.
  fs::rename(out, out + ".old");
  fs::create_directories(out + ".tmp-999999");
  train::LoadedCheckpoint recovered;
  auto rig2 = load_rig(out, &recovered);
  EXPECT_TRUE(fs::is_directory(out));
  EXPECT_FALSE(fs::exists(out + ".old"));
  expect_source_values(out);
  fs::remove_all(out + ".tmp-999999");

  // A leftover <dir>.old beside a complete <dir> is garbage: a load removes it.
  fs::create_directories(out + ".old");
  EXPECT_FALSE(train::recover_checkpoint_dir(out));
  EXPECT_FALSE(fs::exists(out + ".old"));

  // And the write that succeeds replaces the folder.
  train::write_checkpoint(out, rig->store, contents);
  EXPECT_TRUE(leftovers(out).empty());
  auto rig3 = load_rig(out);
  EXPECT_TRUE(test::same_bits(rig3->store.values().data(), rig->store.values().data(), rig->store.buffer_size()));
}

TEST(CheckpointIo, FileSizeLimitIsAWriteErrorNamingTheFile) {
  // A real failing write(2): RLIMIT_FSIZE below the size of model.safetensors makes it fail with
  // EFBIG (SIGXFSZ ignored), as ENOSPC would on a full disk.
  ScratchDir scratch("fsize");
  train::LoadedCheckpoint loaded;
  auto rig = load_rig(kSource, &loaded);
  const std::string out = scratch.path("ckpt");
  train::write_checkpoint(out, rig->store, loaded.contents());
  rig->store.values().data()[0] += 1.0f;
  rlimit old{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old), 0);
  rlimit small = old;
  small.rlim_cur = 100000;
  auto* previous = ::signal(SIGXFSZ, SIG_IGN);
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  std::string message;
  try {
    train::write_checkpoint(out, rig->store, loaded.contents());
  } catch (const Error& e) {
    message = e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &old);
  ::signal(SIGXFSZ, previous);
  EXPECT_NE(message.find("error writing "), std::string::npos) << message;
  EXPECT_NE(message.find("model.safetensors"), std::string::npos) << message;
  EXPECT_TRUE(leftovers(out).empty());
  expect_source_values(out);
}

}  // namespace
}  // namespace qlip
