/// @file test_cli_text.cpp
/// @brief `qlip classify` and `qlip embed` end to end on the small test checkpoints: output format,
///        probabilities (sorted, summing to one), unit-norm embeddings, and the cross-check that
///        classify's probabilities are softmax(100·cos) of embed's vectors.
///
/// The tokenizer vocabulary (third_party_data/bpe_simple_vocab_16e6.txt.gz, fetched by
/// scripts/setup.sh) is required: without it these tests fail with a message saying so.

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

#include "cli_test_util.hpp"

namespace qlip::test::cli {
namespace {

class TextTest : public CliTest {
 protected:
  void SetUp() override {
    CliTest::SetUp();
    vocab_ = vocab_gz();
    ASSERT_FALSE(vocab_.empty()) << "the CLIP vocabulary bpe_simple_vocab_16e6.txt.gz is missing from QLIP_VOCAB_DIR: "
                                    "run scripts/setup.sh";
  }
  std::string vocab_;
};

/// classify's stdout → image → (label → probability), checking the layout on the way.
std::map<std::string, std::vector<std::pair<std::string, double>>> parse_classify(const std::string& out) {
  std::map<std::string, std::vector<std::pair<std::string, double>>> result;
  std::string current;
  for (const auto& line : lines(out)) {
    if (line.rfind("  ", 0) == 0) {
      char label[256] = {0};
      double p = -1;
      EXPECT_EQ(std::sscanf(line.c_str(), " %lf %255[^\n]", &p, label), 2) << line;
      result[current].push_back({label, p});
    } else {
      current = line;
      result[current];
    }
  }
  return result;
}

std::vector<float> read_floats(const SafetensorsFile& f, const std::string& name) {
  const auto& t = f.info(name);
  EXPECT_EQ(t.dtype, DType::f32);
  std::vector<float> v(static_cast<std::size_t>(t.numel()));
  std::memcpy(v.data(), f.bytes(name).data(), v.size() * sizeof(float));
  return v;
}

TEST_F(TextTest, ClassifyPrintsSortedProbabilities) {
  const std::string a = make_png("cat.png", 48, 40, 1);
  const std::string b = make_png("dog.png", 40, 52, 2);
  const RunResult r = run("classify " + q(kTiny) + " " + q(a) + " " + q(b) +
                          " --labels 'a diagram, a dog ,a cat' --template 'a photo of {}.' --vocab " + q(vocab_));
  QLIP_EXPECT_CLI_OK(r);
  const auto parsed = parse_classify(r.out);
  ASSERT_EQ(parsed.size(), 2u) << r;
  for (const auto& [image, rows] : parsed) {
    ASSERT_EQ(rows.size(), 3u) << r;
    double sum = 0;
    for (std::size_t i = 0; i < rows.size(); ++i) {
      sum += rows[i].second;
      if (i > 0) {
        EXPECT_GE(rows[i - 1].second, rows[i].second) << "not sorted\n" << r;
      }
    }
    EXPECT_NEAR(sum, 1.0, 2e-4) << r;  // three values rounded to 4 decimals
    std::vector<std::string> labels;
    for (const auto& row : rows) labels.push_back(row.first);
    std::sort(labels.begin(), labels.end());
    EXPECT_EQ(labels, (std::vector<std::string>{"a cat", "a diagram", "a dog"})) << "labels are trimmed\n" << r;
  }
}

TEST_F(TextTest, ClassifyTop) {
  const std::string a = make_png("cat.png", 48, 40, 1);
  const RunResult r = run("classify " + q(kPlain) + " " + q(a) + " --labels 'x,y,z' --top 1 --vocab " + q(vocab_));
  QLIP_EXPECT_CLI_OK(r);
  const auto parsed = parse_classify(r.out);
  ASSERT_EQ(parsed.size(), 1u) << r;
  EXPECT_EQ(parsed.begin()->second.size(), 1u) << r;
}

TEST_F(TextTest, VocabFromEnvironment) {
  const std::string a = make_png("cat.png", 48, 40, 1);
  const RunResult r = run("classify " + q(kTiny) + " " + q(a) + " --labels 'x,y'", "QLIP_VOCAB=" + q(vocab_) + " ");
  QLIP_EXPECT_CLI_OK(r);
}

TEST_F(TextTest, EmbedWritesUnitVectors) {
  const std::string a = make_png("cat.png", 48, 40, 1);
  const std::string b = make_png("dog.png", 40, 52, 2);
  const std::string e = out("emb.safetensors");
  const RunResult r = run("embed " + q(kTiny) + " " + q(a) + " " + q(b) + " --text 'a cat,a dog,a car' -o " + q(e) +
                          " --vocab " + q(vocab_));
  QLIP_EXPECT_CLI_OK(r);
  const SafetensorsFile f = SafetensorsFile::open(e);
  EXPECT_EQ(f.info("image_embeds").shape, (std::vector<std::int64_t>{2, 32}));
  EXPECT_EQ(f.info("text_embeds").shape, (std::vector<std::int64_t>{3, 32}));
  EXPECT_EQ(f.metadata().at("images"), R"(["cat.png","dog.png"])");
  EXPECT_EQ(f.metadata().at("texts"), R"(["a cat","a dog","a car"])");
  for (const char* name : {"image_embeds", "text_embeds"}) {
    const auto v = read_floats(f, name);
    for (std::size_t row = 0; row < v.size() / 32; ++row) {
      double n = 0;
      for (std::size_t j = 0; j < 32; ++j) n += double(v[row * 32 + j]) * v[row * 32 + j];
      EXPECT_NEAR(std::sqrt(n), 1.0, 1e-5) << name << " row " << row;
    }
  }
  // Images only and text only.
  QLIP_EXPECT_CLI_OK(run("embed " + q(kTiny) + " " + q(a) + " -o " + q(out("img.safetensors"))));
  EXPECT_FALSE(SafetensorsFile::open(out("img.safetensors")).contains("text_embeds"));
  QLIP_EXPECT_CLI_OK(
      run("embed " + q(kTiny) + " --text 'hello' -o " + q(out("txt.safetensors")) + " --vocab " + q(vocab_)));
  EXPECT_FALSE(SafetensorsFile::open(out("txt.safetensors")).contains("image_embeds"));
}

TEST_F(TextTest, ClassifyIsSoftmaxOfEmbedCosines) {
  const std::string a = make_png("cat.png", 48, 40, 1);
  const std::string b = make_png("dog.png", 40, 52, 2);
  const std::vector<std::string> labels = {"a cat", "a dog", "a car", "a diagram"};
  const std::string e = out("emb.safetensors");
  QLIP_EXPECT_CLI_OK(run("embed " + q(kTiny) + " " + q(a) + " " + q(b) + " --text 'a cat,a dog,a car,a diagram' -o " +
                         q(e) + " --vocab " + q(vocab_)));
  const RunResult r = run("classify " + q(kTiny) + " " + q(a) + " " + q(b) +
                          " --labels 'a cat,a dog,a car,a diagram' --vocab " + q(vocab_));
  QLIP_EXPECT_CLI_OK(r);
  const SafetensorsFile f = SafetensorsFile::open(e);
  const auto img = read_floats(f, "image_embeds"), txt = read_floats(f, "text_embeds");
  const auto parsed = parse_classify(r.out);
  const std::string images[2] = {a, b};
  for (int i = 0; i < 2; ++i) {
    std::vector<double> logits(labels.size());
    double mx = -1e30;
    for (std::size_t t = 0; t < labels.size(); ++t) {
      double dot = 0;
      for (int j = 0; j < 32; ++j) dot += double(img[i * 32 + j]) * txt[t * 32 + j];
      logits[t] = 100.0 * dot;
      mx = std::max(mx, logits[t]);
    }
    double z = 0;
    for (double& l : logits) z += (l = std::exp(l - mx));
    ASSERT_TRUE(parsed.count(images[i])) << r;
    for (const auto& [label, p] : parsed.at(images[i])) {
      const auto k = static_cast<std::size_t>(std::find(labels.begin(), labels.end(), label) - labels.begin());
      ASSERT_LT(k, labels.size()) << label;
      EXPECT_NEAR(p, logits[k] / z, 6e-5) << images[i] << " / " << label;  // printed with 4 decimals
    }
  }
}

}  // namespace
}  // namespace qlip::test::cli
