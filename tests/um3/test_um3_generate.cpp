/// @file test_um3_generate.cpp
/// @brief UM³ inference (um3/generate.hpp) on a small random Llama: generated images hold only
///        ids of each position's group (so they decode to codes), seeds reproduce, guidance changes
///        the draws; captions hold only text ids other than <bos>/<pad>; the held-out NLL equals the
///        training forward's cross-entropy of the same windows.
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "common/compare.hpp"
#include "llama/llama_test_util.hpp"
#include "qlip/cpu.hpp"
#include "qlip/model/llama_checkpoint.hpp"
#include "qlip/um3/generate.hpp"
#include "um3/um3_test_util.hpp"

namespace qlip::um3 {
namespace {

// The 20 ids of test::small_um3_vocab().
inline constexpr LlamaConfig kTiny{.vocab_size = 20, .hidden = 16, .layers = 1, .heads = 2, .kv_heads = 1,
                                   .head_dim = 8, .intermediate = 24, .tied = true};
using Model = nn::LlamaModel<kTiny, cpu_backend>;

Um3Vocab vocab() { return test::small_um3_vocab(); }

struct Fixture {
  std::unique_ptr<Model> model;
  train::ParameterStore store;
  Fixture() {
    LlamaRuntime rt;
    rt.max_positions = 32;
    model = std::make_unique<Model>(rt);
    bind_llama(*model, store, train::Gradients::allocate);
    test::randomise_llama_store(store, 5, 0.5f);
  }
};

TEST(Um3Generate, ImagesHoldOnlyTheirGroupsIdsAndReproduce) {
  Fixture f;
  Generator<kTiny, cpu_backend> gen(*f.model, vocab(), 8, 32);
  const std::vector<std::int32_t> caption{1, 2, 3};
  sample::SamplerConfig plain;
  sample::SamplerConfig guided;
  guided.cfg_scale = 3.0f;
  // codes_from_tokens inside images() throws on an id outside its position's group.
  const std::vector<std::uint32_t> a = gen.images(caption, 4, 5, plain, 9);
  const std::vector<std::uint32_t> b = gen.images(caption, 4, 5, plain, 9);
  const std::vector<std::uint32_t> c = gen.images(caption, 4, 5, guided, 9);
  ASSERT_EQ(a.size(), 20u);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  for (std::uint32_t code : c) EXPECT_LT(code, 16u);
  test::expect_error_naming([&] { (void)gen.images(caption, 5, 5, guided, 9); }, "10 rows, the generator was made for 8");
  test::expect_error_naming([&] { (void)gen.images(caption, 1, 14, plain, 9); }, "33 positions exceed the context of 32");
}

TEST(Um3Generate, CaptionsAndTextHoldOnlyTextIds) {
  Fixture f;
  Generator<kTiny, cpu_backend> gen(*f.model, vocab(), 4, 32);
  const std::vector<std::uint32_t> codes{1, 5, 9, 15, 0, 3, 12, 7};  // 2 images of 4 codes
  const auto caps = gen.captions(codes, 2, 4, {}, 3, 10);
  ASSERT_EQ(caps.size(), 2u);
  for (const auto& cap : caps) {
    EXPECT_LE(cap.size(), 10u);
    for (std::int32_t id : cap) {
      EXPECT_TRUE(id >= 0 && id < 10) << id;
      EXPECT_TRUE(id != 7 && id != 9 && id != 8) << id;  // no <bos>, <pad>, and <eos> ends the caption
    }
  }
  sample::SamplerConfig greedy;
  greedy.temperature = 0.0f;
  EXPECT_EQ(gen.captions(codes, 2, 4, greedy, 1, 10), gen.captions(codes, 2, 4, greedy, 2, 10));
  test::expect_error_naming([&] { (void)gen.captions(codes, 3, 4, {}, 3, 10); }, "8 codes for 3 images of 4");
}

TEST(Um3Generate, TextNllEqualsTheTrainingCrossEntropy) {
  Fixture f;
  Generator<kTiny, cpu_backend> gen(*f.model, vocab(), 4, 32);
  std::vector<std::int32_t> stream;
  for (int i = 0; i < 21; ++i) stream.push_back((i * 7 + 3) % 10);
  const TextNll nll = gen.text_nll(stream, 10);  // two full windows of 10
  ASSERT_EQ(nll.tokens, 20);
  std::vector<std::int32_t> ids, targets;
  for (int w = 0; w < 2; ++w)
    for (int t = 0; t < 10; ++t) {
      ids.push_back(stream[static_cast<std::size_t>(w * 10 + t)]);
      targets.push_back(stream[static_cast<std::size_t>(w * 10 + t + 1)]);
    }
  std::vector<float> saved(static_cast<std::size_t>(Model::activation_elements(2, 10)));
  Arena arena(Model::kOpScratchBytes);
  const CrossEntropyResult ce =
      f.model->forward_train(arena, HostView<const std::int32_t, 1>(ids.data(), {20}),
                             HostView<const std::int32_t, 1>(targets.data(), {20}), saved.data(),
                             static_cast<std::int64_t>(saved.size()), 2, 10);
  EXPECT_NEAR(nll.nll, ce.loss, test::kF32Op.atol + test::kF32Op.rtol * std::abs(ce.loss));
  // A last partial window is scored too: 23 tokens give 22 targets.
  stream.push_back(1);
  stream.push_back(2);
  EXPECT_EQ(gen.text_nll(stream, 10).tokens, 22);
}

}  // namespace
}  // namespace qlip::um3
