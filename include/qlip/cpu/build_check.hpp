/// @file build_check.hpp
/// @brief Compile-time warnings for CPU translation units built in a way that makes qlip slow, and the
///        marker that a CPU backend header was included.
///
/// qlip is header-only, so the flags of the program that includes it decide its speed. Measured on
/// the QLIP-B-16-256 round trip (docs/PERFORMANCE.md): without AVX2/FMA code generation (a plain
/// Release build, no -march) it runs ~2.4x slower; without optimisation (-O0, e.g. CMake with no
/// CMAKE_BUILD_TYPE) ~50x slower. The CMake package adds -march=native unless QLIP_NATIVE_ARCH is
/// OFF (cmake/QlipArchFlags.cmake). Define QLIP_NO_BUILD_WARNINGS to silence these on purpose
/// (e.g. a portable SSE2 build).
#pragma once

/// Defined by every cpu/ header (each includes this one first), so a translation unit that must not
/// see the CPU backend can say so: tests/nn/test_trace_backend.cpp errors out when it is defined.
#define QLIP_CPU_BACKEND_HEADERS 1

#if !defined(QLIP_NO_BUILD_WARNINGS) && !defined(__CUDACC__)
#if (defined(__x86_64__) || defined(_M_X64)) && !(defined(__AVX2__) && defined(__FMA__))
#warning "qlip: this CPU translation unit is compiled without AVX2/FMA; expect ~2.4x slower code. Build with -march=native (the qlip::qlip CMake target does that unless QLIP_NATIVE_ARCH=OFF) or -mavx2 -mfma, or define QLIP_NO_BUILD_WARNINGS."
#endif
#if (defined(__GNUC__) || defined(__clang__)) && !defined(__OPTIMIZE__)
#warning "qlip: this CPU translation unit is compiled without optimisation (-O0; with CMake: no CMAKE_BUILD_TYPE); expect ~50x slower code. Use -O2/-O3 (CMAKE_BUILD_TYPE=Release), or define QLIP_NO_BUILD_WARNINGS."
#endif
#endif
