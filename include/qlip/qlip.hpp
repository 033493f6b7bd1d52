/// @file qlip.hpp
/// @brief Umbrella header: the core, the CPU backend, IO, the tokenizer and the QLIP model.
///        The CUDA side (kernels/*.cuh) is included only by nvcc-compiled files.
#pragma once

#include "qlip/core.hpp"
#include "qlip/version.hpp"
