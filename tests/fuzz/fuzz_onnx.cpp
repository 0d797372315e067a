// libFuzzer target: ONNX import. Invariants: a translated file gives a non-empty spec, a sample
// shape of one or three positive dimensions, and arrays whose bytes match their shape and dtype.
// quadra::Error is the only acceptable failure.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include <quadra/error.hpp>
#include <quadra/io/npy.hpp>
#include <quadra/nn/onnx_import.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  try {
    const auto model = quadra::nn::import_onnx_bytes(bytes, "fuzz.onnx");
    if (model.spec.empty()) std::abort();
    const auto& dims = model.input_shape.dims;
    if (dims.size() != 1 && dims.size() != 3) std::abort();
    for (const auto d : dims) {
      if (d <= 0) std::abort();
    }
    for (const auto& [key, array] : model.arrays) {
      if (key.empty()) std::abort();
      if (array.bytes.size() !=
          static_cast<std::size_t>(array.size()) * quadra::io::itemsize(array.dtype)) {
        std::abort();
      }
    }
  } catch (const quadra::Error&) {
  }
  return 0;
}
