/// @file io.hpp
/// @brief Files: safetensors (mmap reader, atomic writer), JSON, images, CLIP pre/post-processing.
#pragma once

#include "qlip/io/image.hpp"
#include "qlip/io/json.hpp"
#include "qlip/io/preprocess.hpp"
#include "qlip/io/safetensors.hpp"
