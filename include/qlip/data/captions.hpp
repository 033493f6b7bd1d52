/// @file captions.hpp
/// @brief Captions for labelled images (class name through a template, the template chosen
///        deterministically per (seed, epoch, sample)), and the zero-shot prompt set (every class
///        through every template) for evaluation (MODEL.md §7.1, QLIP_SPEC.md §7.1).
///
/// The default templates are a subset of OpenAI's 80 ImageNet prompt templates (the ones that fit
/// small greyscale product photos), plus two that say "grayscale". Varying the template per epoch
/// keeps the text tower from learning one fixed sentence per class.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "qlip/core/error.hpp"
#include "qlip/data/random.hpp"

namespace qlip::data {

/// The default caption templates; "{}" is replaced by the class name.
inline constexpr std::array<std::string_view, 16> kCaptionTemplates = {
    "a photo of a {}.",
    "a black and white photo of a {}.",
    "a picture of the {}.",
    "a low resolution photo of a {}.",
    "a close-up photo of a {}.",
    "a photo of the small {}.",
    "a grayscale photo of a {}.",
    "a cropped photo of the {}.",
    "a pixelated photo of the {}.",
    "a bright photo of a {}.",
    "a dark photo of the {}.",
    "a photo of one {}.",
    "itap of a {}.",
    "a good photo of the {}.",
    "a rendition of a {}.",
    "a grayscale image of the {}.",
};

/// The default templates as strings (what the functions below take).
inline std::vector<std::string> default_caption_templates() {
  return std::vector<std::string>(kCaptionTemplates.begin(), kCaptionTemplates.end());
}

/// `pattern` with every "{}" replaced by `name`. Throws when the pattern has no "{}" (the class
/// would silently be left out of the caption).
inline std::string format_caption(std::string_view pattern, std::string_view name) {
  QLIP_CHECK(pattern.find("{}") != std::string_view::npos, "caption template \"", pattern,
             "\" has no \"{}\" placeholder for the class name");
  std::string out;
  out.reserve(pattern.size() + name.size());
  for (std::size_t i = 0; i < pattern.size();) {
    if (pattern.compare(i, 2, "{}") == 0) {
      out += name;
      i += 2;
    } else {
      out += pattern[i++];
    }
  }
  return out;
}

/// Index of the template used for `sample` in `epoch`: uniform over [0, templates), from
/// Philox(seed) (random.hpp, purpose caption), independent of the order samples are visited in.
inline std::size_t caption_template_index(std::uint64_t seed, std::uint64_t epoch, std::int64_t sample, std::size_t templates) {
  QLIP_CHECK(templates > 0, "caption_template_index: no templates");
  QLIP_CHECK(sample >= 0, "caption_template_index: negative sample index ", sample);
  return static_cast<std::size_t>(
      uniform_below(templates, seed, RandomPurpose::caption, epoch, static_cast<std::uint64_t>(sample)));
}

/// The caption of `sample` (of class `class_name`) in `epoch`.
inline std::string class_caption(std::string_view class_name, std::uint64_t seed, std::uint64_t epoch, std::int64_t sample,
                                 const std::vector<std::string>& templates) {
  return format_caption(templates[caption_template_index(seed, epoch, sample, templates.size())], class_name);
}

/// Zero-shot prompts: class-major, row c · templates + k is class c through template k — the layout
/// qlip::ensemble_class_embeddings (model/qlip_model.hpp) averages per class.
struct PromptSet {
  std::vector<std::string> prompts;  // [classes · templates]
  std::int64_t classes = 0;
  std::int64_t templates = 0;

  const std::string& at(std::int64_t cls, std::int64_t tmpl) const {
    QLIP_CHECK(cls >= 0 && cls < classes && tmpl >= 0 && tmpl < templates, "PromptSet::at(", cls, ", ", tmpl,
               ") outside ", classes, " classes x ", templates, " templates");
    return prompts[static_cast<std::size_t>(cls * templates + tmpl)];
  }
};

/// Every class name through every template (default: kCaptionTemplates).
inline PromptSet zero_shot_prompts(const std::vector<std::string>& class_names,
                                   const std::vector<std::string>& templates = default_caption_templates()) {
  QLIP_CHECK(!class_names.empty(), "zero_shot_prompts: no class names");
  QLIP_CHECK(!templates.empty(), "zero_shot_prompts: no templates");
  PromptSet set;
  set.classes = static_cast<std::int64_t>(class_names.size());
  set.templates = static_cast<std::int64_t>(templates.size());
  set.prompts.reserve(class_names.size() * templates.size());
  for (const auto& name : class_names)
    for (const auto& t : templates) set.prompts.push_back(format_caption(t, name));
  return set;
}

}  // namespace qlip::data
