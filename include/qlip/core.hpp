/// @file core.hpp
/// @brief The core layer (portable to nvcc, no Eigen): errors, dtypes, views, storage, dispatch, RNG, math.
#pragma once

#include "qlip/core/allocator.hpp"
#include "qlip/core/backend.hpp"
#include "qlip/core/dispatch.hpp"
#include "qlip/core/dtype.hpp"
#include "qlip/core/error.hpp"
#include "qlip/core/math.hpp"
#include "qlip/core/philox.hpp"
#include "qlip/core/platform.hpp"
#include "qlip/core/tensor.hpp"
