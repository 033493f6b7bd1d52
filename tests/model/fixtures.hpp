/// @file fixtures.hpp
/// @brief Access to the committed QLIP reference fixtures (tests/data/qlip/<config>/, written by
///        tools/qlip_reference.py, see docs/REFERENCE.md): float tensors as Tensor<float, R>,
///        integer tensors converted to the element type the C++ API uses.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

#include "qlip/core/allocator.hpp"
#include "qlip/io/safetensors.hpp"

namespace qlip::test {

/// The folder of a committed test checkpoint.
inline std::string qlip_fixture_dir(const std::string& config) {
  return std::string(QLIP_TEST_DATA_DIR) + "/qlip/" + config;
}

/// fixtures.safetensors of a test checkpoint.
class Fixtures {
 public:
  explicit Fixtures(const std::string& config)
      : file_(SafetensorsFile::open(qlip_fixture_dir(config) + "/fixtures.safetensors")) {}

  bool has(const std::string& name) const { return file_.contains(name); }

  template <int R>
  Tensor<float, R> f32(const std::string& name) const {
    return file_.to_float<R>(name);
  }

  /// An integer tensor (I64 or U8 in the file) converted to E.
  template <class E, int R>
  Tensor<E, R> ints(const std::string& name) const {
    const auto& info = file_.info(name);
    Extents<R> shape{};
    QLIP_CHECK(static_cast<int>(info.shape.size()) == R, name, ": rank ", info.shape.size(), " != ", R);
    for (int d = 0; d < R; ++d) shape[d] = info.shape[static_cast<std::size_t>(d)];
    Tensor<E, R> out(shape);
    const auto bytes = file_.bytes(name);
    for (std::int64_t i = 0; i < out.numel(); ++i) {
      if (info.dtype == DType::i64) {
        std::int64_t v;
        std::memcpy(&v, bytes.data() + 8 * i, 8);
        out.data()[i] = static_cast<E>(v);
      } else if (info.dtype == DType::u8) {
        out.data()[i] = static_cast<E>(static_cast<std::uint8_t>(bytes[static_cast<std::size_t>(i)]));
      } else {
        QLIP_THROW(name, ": unexpected dtype ", dtype_name(info.dtype));
      }
    }
    return out;
  }

 private:
  SafetensorsFile file_;
};

}  // namespace qlip::test
