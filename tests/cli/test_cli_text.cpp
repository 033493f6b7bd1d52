/// @file test_cli_text.cpp
/// @brief `qlip classify` and `qlip embed` end to end on the small test checkpoints: output format,
///        probabilities (sorted, summing to one), unit-norm embeddings, the cross-check that
///        classify's probabilities are softmax(100·cos) of embed's vectors, labels from a file,
///        ensembled templates (checked against embed's vectors too), --json, the warning for
///        prompts longer than the text context, and `embed -o -`.
///
/// The tokenizer vocabulary (third_party_data/bpe_simple_vocab_16e6.txt.gz, fetched by
/// scripts/setup.sh) is required: without it these tests fail with a message saying so.

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

#include <nlohmann/json.hpp>

#include "cli_test_util.hpp"

namespace qlip::test::cli {
namespace {

using TextTest = VocabCliTest;

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

/// The probabilities softmax(100·cos) of image row `i` against each class row, from embeddings
/// read back from `embed`'s file (rows of width `p`).
std::vector<double> softmax_cos(const std::vector<float>& img, std::size_t i,
                                const std::vector<std::vector<double>>& cls, std::size_t p) {
  std::vector<double> logits;
  double mx = -1e30;
  for (const auto& c : cls) {
    double dot = 0, n = 0;
    for (std::size_t j = 0; j < p; ++j) {
      dot += double(img[i * p + j]) * c[j];
      n += c[j] * c[j];
    }
    logits.push_back(100.0 * dot / std::sqrt(n));
    mx = std::max(mx, logits.back());
  }
  double z = 0;
  for (double& l : logits) z += (l = std::exp(l - mx));
  for (double& l : logits) l /= z;
  return logits;
}

/// classify --json → image → label → probability, checking the document's layout on the way.
std::map<std::string, std::map<std::string, double>> parse_json(const RunResult& r, std::size_t labels) {
  std::map<std::string, std::map<std::string, double>> out;
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(r.out);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "stdout is not one JSON document: " << e.what() << "\n" << r;
    return out;
  }
  EXPECT_TRUE(doc.contains("config") && doc.contains("templates") && doc.contains("results")) << r.out;
  for (const auto& res : doc["results"]) {
    auto& rows = out[res["image"].get<std::string>()];
    double prev = 2, sum = 0;
    for (const auto& l : res["labels"]) {
      const double p = l["probability"].get<double>();
      EXPECT_LE(p, prev) << "not sorted\n" << r.out;
      prev = p;
      sum += p;
      rows[l["label"].get<std::string>()] = p;
    }
    EXPECT_EQ(rows.size(), labels) << r.out;
    if (rows.size() == labels) {
      EXPECT_NEAR(sum, 1.0, 1e-5) << r.out;
    }
  }
  return out;
}

TEST_F(TextTest, LabelsFromAFile) {
  const std::string a = make_png("cat.png", 48, 40, 1);
  // Blank lines, comments, CRLF, surrounding spaces and a comma inside a label.
  write_text(path("labels.txt"), "\xEF\xBB\xBF# classes\r\na cat\r\n\r\n   a dog, wet  \n# not a label\n\ta car\n");
  const RunResult from_file =
      run("classify " + q(kTiny) + " " + q(a) + " --labels @" + q(path("labels.txt")) + " --vocab " + q(vocab_));
  QLIP_EXPECT_CLI_OK(from_file);
  const RunResult inline_labels =
      run("classify " + q(kTiny) + " " + q(a) + " --labels 'a cat,a dog\\, wet,a car' --vocab " + q(vocab_));
  QLIP_EXPECT_CLI_OK(inline_labels);
  EXPECT_EQ(from_file.out, inline_labels.out);
  EXPECT_EQ(parse_classify(from_file.out).begin()->second.size(), 3u) << from_file;
}

TEST_F(TextTest, TemplatesAreEnsembled) {
  const std::string a = make_png("cat.png", 48, 40, 1);
  const std::string b = make_png("dog.png", 40, 52, 2);
  const std::vector<std::string> labels = {"cat", "dog", "car"};
  const std::vector<std::string> templates = {"a photo of a {}.", "a drawing of a {}", "{}"};
  // Class-major prompt list, as classify builds it.
  std::string texts;
  for (const auto& l : labels)
    for (const auto& t : templates) {
      std::string p = t;
      p.replace(p.find("{}"), 2, l);
      texts += (texts.empty() ? "" : ",") + p;
    }
  const std::string e = out("emb.safetensors");
  QLIP_EXPECT_CLI_OK(run("embed " + q(kTiny) + " " + q(a) + " " + q(b) + " --text " + q(texts) + " -o " + q(e) +
                         " --vocab " + q(vocab_)));
  // Images after the repeated --template must stay images.
  const RunResult r = run("classify " + q(kTiny) + " --labels cat,dog,car --template " + q(templates[0]) +
                          " --template " + q(templates[1]) + " --template " + q(templates[2]) + " " + q(a) + " " +
                          q(b) + " --json --vocab " + q(vocab_));
  QLIP_EXPECT_CLI_OK(r);
  const auto parsed = parse_json(r, labels.size());
  ASSERT_EQ(parsed.size(), 2u) << r;
  const nlohmann::json doc = nlohmann::json::parse(r.out);
  EXPECT_EQ(doc["templates"].get<std::vector<std::string>>(), templates);
  EXPECT_EQ(doc["config"], "qlip-test-tiny");

  const SafetensorsFile f = SafetensorsFile::open(e);
  const auto img = read_floats(f, "image_embeds"), txt = read_floats(f, "text_embeds");
  constexpr std::size_t P = 32;
  // Each class: the mean of its unit prompt embeddings (normalised again inside softmax_cos).
  std::vector<std::vector<double>> cls(labels.size(), std::vector<double>(P, 0.0));
  for (std::size_t c = 0; c < labels.size(); ++c)
    for (std::size_t k = 0; k < templates.size(); ++k)
      for (std::size_t j = 0; j < P; ++j) cls[c][j] += txt[(c * templates.size() + k) * P + j] / 3.0;
  const std::string images[2] = {a, b};
  for (std::size_t i = 0; i < 2; ++i) {
    const auto want = softmax_cos(img, i, cls, P);
    ASSERT_TRUE(parsed.count(images[i])) << r;
    for (std::size_t c = 0; c < labels.size(); ++c)
      EXPECT_NEAR(parsed.at(images[i]).at(labels[c]), want[c], 1e-5) << images[i] << " / " << labels[c];
  }

  // And it differs from using one template alone (the ensemble is not a no-op).
  const RunResult one = run("classify " + q(kTiny) + " " + q(a) + " --labels cat,dog,car --template " +
                            q(templates[0]) + " --json --vocab " + q(vocab_));
  QLIP_EXPECT_CLI_OK(one);
  EXPECT_NE(parse_json(one, 3).at(a).at("cat"), parsed.at(a).at("cat"));
}

TEST_F(TextTest, JsonMatchesTheTable) {
  const std::string a = make_png("cat.png", 48, 40, 1);
  const std::string b = make_png("dog.png", 40, 52, 2);
  const std::string args =
      "classify " + q(kTiny) + " " + q(a) + " " + q(b) + " --labels 'a cat,a dog,a \"car\"' --vocab " + q(vocab_);
  const RunResult table = run(args);
  const RunResult json = run(args + " --json");
  QLIP_EXPECT_CLI_OK(table);
  QLIP_EXPECT_CLI_OK(json);
  EXPECT_TRUE(json.err.empty()) << json;
  const auto t = parse_classify(table.out);
  const auto j = parse_json(json, 3);
  ASSERT_EQ(j.size(), 2u) << json;
  for (const auto& [image, rows] : t) {
    ASSERT_TRUE(j.count(image)) << image << "\n" << json;
    for (const auto& [label, p] : rows) EXPECT_NEAR(j.at(image).at(label), p, 5e-5) << image << " / " << label;
  }
  // --top applies to the JSON too.
  const nlohmann::json top = nlohmann::json::parse(run(args + " --json --top 1").out);
  EXPECT_EQ(top["results"][0]["labels"].size(), 1u) << top.dump();
}

TEST_F(TextTest, LongPromptIsCutWithAWarning) {
  const std::string a = make_png("cat.png", 48, 40, 1);
  std::string long_label;
  for (int i = 0; i < 90; ++i) long_label += "cat ";
  const std::string args = "classify " + q(kTiny) + " " + q(a) + " --labels " + q("a dog," + long_label) +
                           " --template 'a photo of a {}.' --vocab " + q(vocab_);
  const RunResult r = run(args);
  QLIP_EXPECT_CLI_OK(r);
  EXPECT_EQ(lines(r.err).size(), 1u) << r;
  EXPECT_EQ(r.err.rfind("qlip: warning: prompt \"a photo of a cat cat", 0), 0u) << r;
  EXPECT_NE(r.err.find("95 tokens"), std::string::npos) << r;  // "a photo of a" + 90 × "cat" + "."
  EXPECT_NE(r.err.find("77-token text context"), std::string::npos) << r;
  EXPECT_TRUE(run("--quiet " + args).err.empty());
  // Prompts that fit: no warning.
  const RunResult fits = run("classify " + q(kTiny) + " " + q(a) + " --labels 'a,b' --vocab " + q(vocab_));
  QLIP_EXPECT_CLI_OK(fits);
  EXPECT_TRUE(fits.err.empty()) << fits;
}

TEST_F(TextTest, EmbedTextsFromAFileToStandardOutput) {
  write_text(path("texts.txt"), "# captions\na cat, sleeping\n\na dog\n");
  const std::string e = path("emb.safetensors");
  QLIP_EXPECT_CLI_OK(
      run("embed " + q(kTiny) + " --text 'a cat\\, sleeping,a dog' -o " + q(e) + " --vocab " + q(vocab_)));
  const RunResult r = run("embed " + q(kTiny) + " --text @" + q(path("texts.txt")) + " -o - --vocab " + q(vocab_));
  QLIP_EXPECT_CLI_OK(r);
  EXPECT_EQ(r.out, read_text(e)) << "stdout is not the embeddings file";
  EXPECT_EQ(r.err.rfind("wrote standard output: 0 image and 2 text embeddings", 0), 0u) << r;
  QLIP_EXPECT_CLI_EXIT(*this,
                       run("embed " + q(kTiny) + " --text @" + q(path("none.txt")) + " -o - --vocab " + q(vocab_)), 1,
                       "--text @", "none.txt");
}

}  // namespace
}  // namespace qlip::test::cli
