/// @file qlip.hpp
/// @brief Umbrella header: the core, the CPU backend, IO, the CLIP tokenizer and the QLIP model.
///        The CUDA side (kernels/*.cuh) is included only by nvcc-compiled files.
#pragma once

#include "qlip/core.hpp"
#include "qlip/cpu.hpp"
#include "qlip/io.hpp"
#include "qlip/model/qlip_model.hpp"
#include "qlip/text/clip_tokenizer.hpp"
#include "qlip/version.hpp"
