# CPU architecture flags for everything that compiles qlip's headers.
#
# qlip is header-only, so the consumer's compile flags decide its speed: without -march=native a
# Release build gets SSE2 code that runs the QLIP-B-16-256 round trip ~2.4x slower (docs/PERFORMANCE.md).
# QLIP_NATIVE_ARCH (ON by default) puts -march=native on qlip::qlip's interface, for the source
# tree, add_subdirectory and find_package alike; the flag is decided on the machine that configures
# the consumer, never baked into the installed package. Turn it OFF for portable binaries (then pick
# your own -m flags; include/qlip/cpu/build_check.hpp warns when AVX2/FMA are missing).
# Used by the source tree and by the installed qlipConfig.cmake.
include_guard(GLOBAL)
option(QLIP_NATIVE_ARCH "Compile consumers of qlip::qlip for the configuring machine's CPU (-march=native); OFF for portable binaries" ON)

# Adds the flags to `target`'s INTERFACE (CXX only; nvcc TUs do not compile the CPU backend).
function(qlip_apply_arch_flags target)
  if(NOT QLIP_NATIVE_ARCH)
    return()
  endif()
  get_property(_languages GLOBAL PROPERTY ENABLED_LANGUAGES)
  if(NOT "CXX" IN_LIST _languages)
    return()
  endif()
  include(CheckCXXCompilerFlag)
  check_cxx_compiler_flag(-march=native QLIP_COMPILER_HAS_MARCH_NATIVE)
  if(QLIP_COMPILER_HAS_MARCH_NATIVE)
    target_compile_options(${target} INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-march=native>)
  else()
    message(WARNING "qlip: the C++ compiler does not accept -march=native; pass CPU flags yourself "
                    "(AVX2 + FMA at least) or expect slow code")
  endif()
endfunction()
