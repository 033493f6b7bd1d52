/// @file dtype.hpp
/// @brief Element types: f32, bf16 and f16 storage types with round-to-nearest-even conversion,
///        and the runtime DType tag used by file formats.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <string>

#include "qlip/core/error.hpp"
#include "qlip/core/platform.hpp"

namespace qlip {

namespace detail {
/// The IEEE bits of a float32 and back (memcpy, so it also works in CUDA device code).
QLIP_HOST_DEVICE inline std::uint32_t f32_to_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
QLIP_HOST_DEVICE inline float f32_from_bits(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
}  // namespace detail

/// bfloat16 storage: the top 16 bits of an IEEE float32. Arithmetic happens in float.
struct bf16 {
  std::uint16_t bits = 0;
  bf16() = default;
  QLIP_HOST_DEVICE explicit bf16(float value) : bits(from_float(value)) {}
  QLIP_HOST_DEVICE explicit operator float() const { return to_float(bits); }

  QLIP_HOST_DEVICE static float to_float(std::uint16_t b) {
    return detail::f32_from_bits(static_cast<std::uint32_t>(b) << 16);
  }
  /// Round to nearest, ties to even; NaN stays a quiet NaN.
  QLIP_HOST_DEVICE static std::uint16_t from_float(float f) {
    const std::uint32_t u = detail::f32_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);
    std::uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
    return static_cast<std::uint16_t>((u + rounding) >> 16);
  }
};

/// dst[i] = bf16(src[i]) for n values, rounded to nearest even (a weight copy for decoding).
inline void round_to_bf16(const float* src, bf16* dst, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) dst[i].bits = bf16::from_float(src[i]);
}

/// IEEE binary16 storage. Conversions are exact bit manipulations (no hardware half needed).
struct f16 {
  std::uint16_t bits = 0;
  f16() = default;
  QLIP_HOST_DEVICE explicit f16(float value) : bits(from_float(value)) {}
  QLIP_HOST_DEVICE explicit operator float() const { return to_float(bits); }

  QLIP_HOST_DEVICE static float to_float(std::uint16_t h) {
    std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
    std::uint32_t exp = (h >> 10) & 0x1fu;
    std::uint32_t mant = h & 0x3ffu;
    std::uint32_t u;
    if (exp == 0) {
      if (mant == 0) {
        u = sign;
      } else {  // subnormal: normalise
        int e = -1;
        do {
          ++e;
          mant <<= 1;
        } while ((mant & 0x400u) == 0);
        u = sign | (static_cast<std::uint32_t>(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
      }
    } else if (exp == 31) {
      u = sign | 0x7f800000u | (mant << 13);
    } else {
      u = sign | ((exp + 112u) << 23) | (mant << 13);
    }
    return detail::f32_from_bits(u);
  }
  /// Round to nearest, ties to even, with overflow to inf and gradual underflow.
  QLIP_HOST_DEVICE static std::uint16_t from_float(float f) {
    const std::uint32_t u = detail::f32_to_bits(f);
    std::uint32_t sign = (u >> 16) & 0x8000u;
    std::uint32_t abs = u & 0x7fffffffu;
    if (abs > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u);  // NaN
    if (abs >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // overflow → inf
    if (abs < 0x38800000u) {  // result is subnormal or zero in f16
      if (abs < 0x33000000u) return static_cast<std::uint16_t>(sign);
      std::uint32_t exp = abs >> 23;
      std::uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
      std::uint32_t shift = 126u - exp;  // 113 - exp + 13
      std::uint32_t half = mant >> shift;
      std::uint32_t rem = mant & ((1u << shift) - 1u);
      std::uint32_t mid = 1u << (shift - 1u);
      if (rem > mid || (rem == mid && (half & 1u))) ++half;
      return static_cast<std::uint16_t>(sign | half);
    }
    std::uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);
    return static_cast<std::uint16_t>(sign | ((rounded - 0x38000000u) >> 13));
  }
};

/// Runtime element type tag, as used by safetensors headers and tensor containers.
enum class DType : std::uint8_t { f32, f16, bf16, i32, i64, u8, u32 };

/// Bytes per element of a DType.
constexpr std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f16: return 2;
    case DType::bf16: return 2;
    case DType::i32: return 4;
    case DType::i64: return 8;
    case DType::u8: return 1;
    case DType::u32: return 4;
  }
  return 0;
}

/// Name of a DType, spelled as safetensors spells it ("F32", "BF16", ...).
inline std::string dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::f16: return "F16";
    case DType::bf16: return "BF16";
    case DType::i32: return "I32";
    case DType::i64: return "I64";
    case DType::u8: return "U8";
    case DType::u32: return "U32";
  }
  return "?";
}

/// Compile-time map from an element type to its DType tag.
template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::f32; };
template <> struct dtype_of<f16> { static constexpr DType value = DType::f16; };
template <> struct dtype_of<bf16> { static constexpr DType value = DType::bf16; };
template <> struct dtype_of<std::int32_t> { static constexpr DType value = DType::i32; };
template <> struct dtype_of<std::int64_t> { static constexpr DType value = DType::i64; };
template <> struct dtype_of<std::uint8_t> { static constexpr DType value = DType::u8; };
template <> struct dtype_of<std::uint32_t> { static constexpr DType value = DType::u32; };
template <class T> inline constexpr DType dtype_v = dtype_of<T>::value;

/// Converts any storage type to float (identity for float).
template <class T>
QLIP_HOST_DEVICE inline float to_float(T v) {
  return static_cast<float>(v);
}

/// Converts float to a storage type with round-to-nearest-even.
template <class T>
QLIP_HOST_DEVICE inline T from_float(float v) {
  return T(v);
}

}  // namespace qlip
