/// @file version.hpp
/// @brief qlip's version (kept equal to project(VERSION) in CMakeLists.txt).
#pragma once

#define QLIP_VERSION_MAJOR 0
#define QLIP_VERSION_MINOR 1
#define QLIP_VERSION_PATCH 0
#define QLIP_VERSION_STRING "0.1.0"
