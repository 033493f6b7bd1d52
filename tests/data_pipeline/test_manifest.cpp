/// @file test_manifest.cpp
/// @brief ManifestSource: a TSV manifest and a folder with .txt captions, over generated PNG/JPEG
///        files; a broken image is skipped, warned about (one line naming the file and why) and
///        counted by the loader, never fatal; malformed manifests fail naming file and line.

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/compare.hpp"
#include "common/data_pipeline_util.hpp"
#include "qlip/data/loader.hpp"
#include "qlip/data/manifest.hpp"
#include "qlip/io/image.hpp"

namespace qlip::data::test {
namespace {

using qlip::test::expect_error_naming;

Image pattern_image(int w, int h, int seed) {
  Image im = Image::zeros(w, h, 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) im.at(y, x, c) = static_cast<std::uint8_t>((x * 7 + y * 3 + c * 50 + seed * 31) % 256);
  return im;
}

/// a.png, b.jpg, c.png (40×30, 30×40, 25×25) and broken.png (a PNG cut in half), plus
/// manifest.tsv listing all four with captions.
struct Fixture {
  ScratchDir dir;
  Fixture() {
    write_png(dir.file("a.png"), pattern_image(40, 30, 1));
    write_jpeg(dir.file("b.jpg"), pattern_image(30, 40, 2));
    std::filesystem::create_directories(dir.file("sub"));
    write_png(dir.file("sub/c.png"), pattern_image(25, 25, 3));
    std::vector<std::uint8_t> png = encode_png(pattern_image(40, 40, 4));
    png.resize(png.size() / 2);
    write_bytes(dir.file("broken.png"), png);
    write_text(dir.file("manifest.tsv"),
               "\xEF\xBB\xBF" "a.png\ta red thing\r\n"
               "b.jpg\t  a blue thing  \n"
               "\n"
               "broken.png\ta broken thing\n" +
                   dir.file("sub/c.png") + "\tan absolute path\n");
  }
};

TEST(Manifest, TsvEntries) {
  Fixture f;
  const ManifestSource m = ManifestSource::from_tsv(f.dir.file("manifest.tsv"), {.resolution = 16});
  ASSERT_EQ(m.size(), 4);
  EXPECT_FALSE(m.has_labels());
  EXPECT_EQ(m.resolution(), 16);
  EXPECT_EQ(m.name(), "manifest " + f.dir.file("manifest.tsv"));
  EXPECT_EQ(m.entries()[0].path, f.dir.file("a.png"));
  EXPECT_EQ(m.entries()[0].caption, "a red thing");  // BOM and CR gone
  EXPECT_EQ(m.entries()[1].caption, "a blue thing");  // trimmed
  EXPECT_EQ(m.entries()[2].path, f.dir.file("broken.png"));
  EXPECT_EQ(m.entries()[3].path, f.dir.file("sub/c.png"));
}

TEST(Manifest, ImagesArePreprocessedAsClipDoes) {
  Fixture f;
  const ManifestSource m = ManifestSource::from_tsv(f.dir.file("manifest.tsv"), {.resolution = 16});
  ClipPreprocessConfig cfg;
  cfg.shortest_edge = cfg.crop_height = cfg.crop_width = 16;
  Tensor<float, 3> got(Extents<3>{3, 16, 16}), want(Extents<3>{3, 16, 16});
  for (std::int64_t i : {0, 1, 3}) {
    const SampleLoad s = m.load(i, 0, got.view());
    ASSERT_TRUE(s.ok) << s.error;
    EXPECT_EQ(s.caption, m.entries()[static_cast<std::size_t>(i)].caption);
    EXPECT_EQ(s.label, -1);
    preprocess_clip(read_image(m.entries()[static_cast<std::size_t>(i)].path), cfg, want.view());
    for (std::int64_t k = 0; k < got.numel(); ++k) ASSERT_EQ(got.data()[k], want.data()[k]) << "entry " << i << " element " << k;
  }
}

TEST(Manifest, BrokenImageIsAFailureNamingTheFile) {
  Fixture f;
  const ManifestSource m = ManifestSource::from_tsv(f.dir.file("manifest.tsv"), {.resolution = 16});
  Tensor<float, 3> px(Extents<3>{3, 16, 16});
  const SampleLoad s = m.load(2, 0, px.view());
  EXPECT_FALSE(s.ok);
  EXPECT_NE(s.error.find("truncated PNG file: " + f.dir.file("broken.png")), std::string::npos) << s.error;
  EXPECT_EQ(s.error.find(".hpp:"), std::string::npos) << "source location left in: " << s.error;
  EXPECT_EQ(s.error.find('\n'), std::string::npos) << s.error;
  // A file that is gone by the time it is read is a failure too, not an exception.
  const ManifestSource gone = ManifestSource::from_entries({{f.dir.file("nope.png"), "x"}}, {.resolution = 16});
  const SampleLoad g = gone.load(0, 0, px.view());
  EXPECT_FALSE(g.ok);
  EXPECT_NE(g.error.find(f.dir.file("nope.png")), std::string::npos) << g.error;
  EXPECT_NE(g.error.find("No such file"), std::string::npos) << g.error;
}

TEST(Manifest, LoaderSkipsWarnsAndCountsTheBrokenImage) {
  Fixture f;
  auto m = std::make_shared<ManifestSource>(ManifestSource::from_tsv(f.dir.file("manifest.tsv"), {.resolution = 16}));
  LoaderOptions o;
  o.batch_size = 2;
  o.context_length = 12;
  o.seed = 1;
  o.threads = 2;
  BatchLoader l(m, tokenizer(), o);
  ASSERT_EQ(l.batches_per_epoch(), 2);
  std::int64_t skipped = 0;
  for (int b = 0; b < 6; ++b) {  // three epochs: the broken image is met, and skipped, in each
    const Batch x = l.next();
    ASSERT_EQ(x.size(), 2);
    EXPECT_EQ(x.labels.numel(), 0);  // no labels in a manifest
    for (std::int64_t s : x.samples) EXPECT_NE(s, 2) << "the broken image is in a batch";
    for (std::size_t i = 0; i < x.captions.size(); ++i)
      EXPECT_EQ(x.captions[i], m->entries()[static_cast<std::size_t>(x.samples[i])].caption);
    for (const auto& w : x.warnings) {
      EXPECT_EQ(w.find("skipped sample 2 of manifest " + f.dir.file("manifest.tsv") + ": "), 0u) << w;
      EXPECT_NE(w.find("truncated PNG file: " + f.dir.file("broken.png")), std::string::npos) << w;
      EXPECT_EQ(w.find('\n'), std::string::npos) << w;
    }
    EXPECT_EQ(static_cast<std::int64_t>(x.warnings.size()), x.skipped);
    skipped += x.skipped;
  }
  EXPECT_EQ(skipped, 3);  // once per epoch: its substitutes are all readable
  EXPECT_EQ(l.skipped_total(), 3);
}

TEST(Manifest, FolderWithTxtCaptions) {
  ScratchDir dir;
  write_png(dir.file("z.png"), pattern_image(20, 20, 5));
  write_text(dir.file("z.txt"), "a zebra\n");
  write_jpeg(dir.file("A.JPG"), pattern_image(20, 30, 6));
  write_text(dir.file("A.txt"), "  an apple ");
  write_png(dir.file("m.png"), pattern_image(20, 20, 7));  // no caption file
  write_png(dir.file("e.png"), pattern_image(20, 20, 8));
  write_text(dir.file("e.txt"), " \n ");  // empty caption
  write_text(dir.file("notes.txt"), "not an image's caption");
  write_text(dir.file("readme.md"), "ignored");
  const ManifestSource m = ManifestSource::open(dir.str(), {.resolution = 8});
  ASSERT_EQ(m.size(), 2);
  EXPECT_EQ(m.entries()[0].path, dir.file("A.JPG"));  // sorted by name (byte order)
  EXPECT_EQ(m.entries()[0].caption, "an apple");
  EXPECT_EQ(m.entries()[1].path, dir.file("z.png"));
  EXPECT_EQ(m.entries()[1].caption, "a zebra");
  ASSERT_EQ(m.scan_skipped(), 2);
  EXPECT_EQ(m.scan_warnings()[0], "skipped " + dir.file("e.png") + ": caption file " + dir.file("e.txt") + " is empty");
  EXPECT_EQ(m.scan_warnings()[1], "skipped " + dir.file("m.png") + ": no caption file " + dir.file("m.txt"));
  Tensor<float, 3> px(Extents<3>{3, 8, 8});
  EXPECT_TRUE(m.load(0, 0, px.view()).ok);
}

TEST(Manifest, MalformedManifestsFailNamingTheLine) {
  ScratchDir dir;
  write_text(dir.file("notab.tsv"), "a.png\tfine\nb.png only a path\n");
  expect_error_naming([&] { (void)ManifestSource::from_tsv(dir.file("notab.tsv")); },
                      dir.file("notab.tsv") + ":2: expected 'path<TAB>caption', found no TAB");
  write_text(dir.file("nocap.tsv"), "a.png\t \n");
  expect_error_naming([&] { (void)ManifestSource::from_tsv(dir.file("nocap.tsv")); }, dir.file("nocap.tsv") + ":1: empty caption for a.png");
  write_text(dir.file("nopath.tsv"), "\n\n\tcaption\n");
  expect_error_naming([&] { (void)ManifestSource::from_tsv(dir.file("nopath.tsv")); }, dir.file("nopath.tsv") + ":3: empty image path");
  write_text(dir.file("empty.tsv"), "\n  \n");
  expect_error_naming([&] { (void)ManifestSource::from_tsv(dir.file("empty.tsv")); }, "manifest has no entries");
  expect_error_naming([&] { (void)ManifestSource::from_tsv(dir.file("missing.tsv")); }, dir.file("missing.tsv"));
  std::filesystem::create_directories(dir.file("nothing"));
  expect_error_naming([&] { (void)ManifestSource::from_folder(dir.file("nothing")); }, "no images with a caption");
  expect_error_naming([&] { (void)ManifestSource::from_folder(dir.file("absent")); }, "does not exist or is not a folder");
  expect_error_naming([&] { (void)ManifestSource::from_entries({{"x.png", "x"}}, {.resolution = 0}); }, "resolution must be positive");
}

}  // namespace
}  // namespace qlip::data::test
