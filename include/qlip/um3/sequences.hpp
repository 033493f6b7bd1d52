/// @file sequences.hpp
/// @brief The UM³ training rows (docs/UM3.md, "Sequences"): text-only, image → text (captioning)
///        and text → image, each as input ids and next-token targets of one fixed length, with a
///        negative target wherever the task asks for no loss (the `cross_entropy` op's mask).
///
///   text          ids = w[0, T), targets = w[1, T]  (a window of the packed text stream)
///   image → text  <bos> <boi> v… <eoi> caption <eos> <pad>…   loss on the caption and <eos>
///   text → image  <bos> caption <boi> v… <eoi> <pad>…         loss on the visual tokens and <eoi>
///
/// For classifier-free guidance a text → image row may carry the null caption: as many <pad> as the
/// caption has tokens, so the unconditional row at sampling has the conditional row's positions.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "qlip/core/error.hpp"
#include "qlip/um3/token_layout.hpp"

namespace qlip::um3 {

/// The three tasks of a UM³ batch.
enum class Task : std::uint8_t { text = 0, caption = 1, generation = 2 };
inline constexpr int kTaskCount = 3;
inline const char* task_name(Task t) {
  return t == Task::text ? "text" : t == Task::caption ? "image-to-text" : "text-to-image";
}

/// The ids a UM³ model reads and writes: the text tokenizer's specials and the visual layout
/// (whose text_vocab is the tokenizer's size, so visual ids come after every text id).
struct Um3Vocab {
  std::int32_t bos = 0, eos = 0, pad = 0;
  VisualTokenLayout layout;

  std::int64_t size() const { return layout.vocab_size(); }
  std::int32_t text_vocab() const { return layout.text_vocab; }
  /// Checks the layout and that the specials are distinct text ids.
  void validate() const {
    layout.validate();
    for (std::int32_t id : {bos, eos, pad})
      QLIP_CHECK(id >= 0 && id < layout.text_vocab, "UM3 vocabulary: special id ", id, " is not a text id (< ",
                 layout.text_vocab, ")");
    QLIP_CHECK(bos != eos && bos != pad && eos != pad, "UM3 vocabulary: <bos>, <eos> and <pad> must be distinct ids");
  }
};

/// Length of an image row (both image tasks) for images of `image_tokens` sub-tokens and captions
/// of at most `max_caption` tokens: <bos> <boi> image <eoi> caption <eos>.
inline std::int64_t image_row_length(std::int64_t image_tokens, std::int64_t max_caption) {
  return image_tokens + max_caption + 4;
}

namespace detail {
inline void check_row(std::span<std::int32_t> ids, std::span<std::int32_t> targets, std::size_t needed,
                      const char* what) {
  QLIP_CHECK(ids.size() == targets.size(), what, ": ids has ", ids.size(), " slots, targets ", targets.size());
  QLIP_CHECK(needed <= ids.size(), what, ": the sequence needs ", needed, " positions, the row has ", ids.size());
}
/// targets[p] = ids[p + 1] for p in [first, last), −1 elsewhere.
inline void targets_between(std::span<const std::int32_t> ids, std::span<std::int32_t> targets, std::size_t first,
                            std::size_t last) {
  std::fill(targets.begin(), targets.end(), -1);
  for (std::size_t p = first; p < last; ++p) targets[p] = ids[p + 1];
}
}  // namespace detail

/// A text row from a window of T + 1 consecutive tokens of the packed stream: every position is
/// trained on the next token.
inline void text_row(std::span<const std::int32_t> window, std::span<std::int32_t> ids,
                     std::span<std::int32_t> targets) {
  detail::check_row(ids, targets, ids.size(), "UM3 text row");
  QLIP_CHECK(window.size() == ids.size() + 1, "UM3 text row: a row of ", ids.size(), " needs ", ids.size() + 1,
             " stream tokens, got ", window.size());
  std::copy(window.begin(), window.end() - 1, ids.begin());
  std::copy(window.begin() + 1, window.end(), targets.begin());
}

/// <bos> <boi> image <eoi> caption <eos> <pad>…; targets on the caption and <eos>.
inline void caption_row(const Um3Vocab& v, std::span<const std::int32_t> image, std::span<const std::int32_t> caption,
                        std::span<std::int32_t> ids, std::span<std::int32_t> targets) {
  const std::size_t m = image.size(), c = caption.size();
  detail::check_row(ids, targets, m + c + 4, "UM3 image-to-text row");
  std::fill(ids.begin(), ids.end(), v.pad);
  std::size_t p = 0;
  ids[p++] = v.bos;
  ids[p++] = v.layout.boi();
  std::copy(image.begin(), image.end(), ids.begin() + static_cast<std::ptrdiff_t>(p));
  p += m;
  ids[p++] = v.layout.eoi();
  const std::size_t first = p - 1;  // <eoi> predicts the first caption token
  std::copy(caption.begin(), caption.end(), ids.begin() + static_cast<std::ptrdiff_t>(p));
  p += c;
  ids[p] = v.eos;
  detail::targets_between(ids, targets, first, p);
}

/// <bos> caption <boi> image <eoi> <pad>…; targets on the image and <eoi>. `null_caption` writes
/// <pad> in place of each caption token (the unconditional branch of guidance).
inline void generation_row(const Um3Vocab& v, std::span<const std::int32_t> caption, std::span<const std::int32_t> image,
                           bool null_caption, std::span<std::int32_t> ids, std::span<std::int32_t> targets) {
  const std::size_t m = image.size(), c = caption.size();
  detail::check_row(ids, targets, m + c + 3, "UM3 text-to-image row");
  std::fill(ids.begin(), ids.end(), v.pad);
  std::size_t p = 0;
  ids[p++] = v.bos;
  if (!null_caption) std::copy(caption.begin(), caption.end(), ids.begin() + 1);
  p += c;
  ids[p++] = v.layout.boi();
  const std::size_t first = p - 1;  // <boi> predicts the first sub-token
  std::copy(image.begin(), image.end(), ids.begin() + static_cast<std::ptrdiff_t>(p));
  p += m;
  ids[p] = v.layout.eoi();
  detail::targets_between(ids, targets, first, p);
}

/// The prompt of text → image sampling: <bos> caption <boi> (or the null caption's <pad>s).
inline std::vector<std::int32_t> generation_prompt(const Um3Vocab& v, std::span<const std::int32_t> caption,
                                                   bool null_caption) {
  std::vector<std::int32_t> p;
  p.reserve(caption.size() + 2);
  p.push_back(v.bos);
  for (std::int32_t t : caption) p.push_back(null_caption ? v.pad : t);
  p.push_back(v.layout.boi());
  return p;
}

/// The prompt of captioning: <bos> <boi> image <eoi>.
inline std::vector<std::int32_t> caption_prompt(const Um3Vocab& v, std::span<const std::int32_t> image) {
  std::vector<std::int32_t> p;
  p.reserve(image.size() + 3);
  p.push_back(v.bos);
  p.push_back(v.layout.boi());
  p.insert(p.end(), image.begin(), image.end());
  p.push_back(v.layout.eoi());
  return p;
}

}  // namespace qlip::um3
