/// @file stb.hpp
/// @brief Private copies of stb_image (decode) and stb_image_write (PNG encode) for qlip's io headers.
///
/// Why static: qlip is header-only, so there is no .cpp to hold the one stb implementation. With
/// STB_IMAGE_STATIC / STB_IMAGE_WRITE_STATIC every translation unit that includes this header gets
/// its own internal-linkage copy, so nothing clashes at link time (the cost is code size per TU).
/// stdio is disabled: qlip reads and writes files itself (clear errors, atomic writes).
/// STBI_ASSERT is a no-op: stb asserts only on caller programming errors (qlip always passes valid
/// arguments), and include/ must never abort; malformed files are reported through return codes.
///
/// A TU must not include stb_image.h / stb_image_write.h itself before this header: stb's include
/// guards would then hide our static declarations.
#pragma once

#if defined(STBI_INCLUDE_STB_IMAGE_H) && !defined(QLIP_STB_IMAGE_OWNED)
#error "stb_image.h was included before qlip/io/detail/stb.hpp; include qlip's io headers first (qlip defines private static copies of stb)"
#endif
#if defined(INCLUDE_STB_IMAGE_WRITE_H) && !defined(QLIP_STB_IMAGE_OWNED)
#error "stb_image_write.h was included before qlip/io/detail/stb.hpp; include qlip's io headers first"
#endif
#define QLIP_STB_IMAGE_OWNED 1

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wtype-limits"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wconversion"
#pragma GCC diagnostic ignored "-Wdouble-promotion"
#pragma GCC diagnostic ignored "-Wold-style-cast"
#pragma GCC diagnostic ignored "-Wuseless-cast"
#pragma GCC diagnostic ignored "-Wcast-align"
#pragma GCC diagnostic ignored "-Wpedantic"
#if defined(__clang__)
#pragma GCC diagnostic ignored "-Wunknown-warning-option"
#endif

#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_NO_STDIO
#define STBI_ASSERT(x) ((void)0)
#include <stb_image.h>

#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBI_WRITE_NO_STDIO
#define STBIW_ASSERT(x) ((void)0)
#include <stb_image_write.h>

#pragma GCC diagnostic pop
