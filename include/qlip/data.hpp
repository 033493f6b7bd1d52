/// @file data.hpp
/// @brief Training data: IDX files, Fashion-MNIST, caption templates, image–caption manifests,
///        the deterministic batch loader and the fortunes text corpus.
#pragma once

#include "qlip/data/captions.hpp"
#include "qlip/data/fashion_mnist.hpp"
#include "qlip/data/idx.hpp"
#include "qlip/data/loader.hpp"
#include "qlip/data/manifest.hpp"
#include "qlip/data/random.hpp"
#include "qlip/data/source.hpp"
#include "qlip/data/text_corpus.hpp"
