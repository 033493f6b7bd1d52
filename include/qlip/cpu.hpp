/// @file cpu.hpp
/// @brief The CPU backend: every op overloaded on qlip::cpu_backend (Eigen GEMM + OpenMP loops).
#pragma once

#include "qlip/cpu/activation.hpp"
#include "qlip/cpu/add.hpp"
#include "qlip/cpu/attention.hpp"
#include "qlip/cpu/bsq.hpp"
#include "qlip/cpu/bsq_loss.hpp"
#include "qlip/cpu/contrastive_loss.hpp"
#include "qlip/cpu/copy.hpp"
#include "qlip/cpu/embedding.hpp"
#include "qlip/cpu/encoder_layer.hpp"
#include "qlip/cpu/gemm.hpp"
#include "qlip/cpu/l2_norm.hpp"
#include "qlip/cpu/layer_norm.hpp"
#include "qlip/cpu/mse_loss.hpp"
#include "qlip/cpu/optimizer.hpp"
#include "qlip/cpu/patchify.hpp"
#include "qlip/cpu/rms_norm.hpp"
#include "qlip/cpu/rope.hpp"
#include "qlip/cpu/softmax.hpp"
#include "qlip/cpu/threading.hpp"
