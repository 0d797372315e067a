// libFuzzer target: .npy and .npz parsing. The input is tried as both. Invariants: a parsed
// array has size() * itemsize bytes, encodes and parses back to the same array, converts to
// double; the finiteness check agrees with first_non_finite, and conversion to float32 either
// refuses a value or gives finite floats for finite input; an .npz entry's header check sees the
// dtype and shape of the array it becomes. quadra::Error is the only acceptable failure.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <quadra/error.hpp>
#include <quadra/io/npy.hpp>

namespace {

using quadra::io::NpyArray;

void check_finite(const NpyArray& a) {
  const auto bad = quadra::io::first_non_finite(a);
  bool refused = false;
  try {
    quadra::io::require_finite(a, "fuzz.npy");
  } catch (const quadra::Error&) {
    refused = true;
  }
  if (refused != bad.has_value()) std::abort();
  if (bad) return;
  try {
    for (float v : a.to_vector<float>("fuzz.npy")) {
      if (!std::isfinite(v)) std::abort();
    }
  } catch (const quadra::Error&) {
    // Only a float64 beyond float32's range may be refused.
    if (a.dtype != quadra::io::DType::kFloat64) std::abort();
  }
}

void check(const NpyArray& a) {
  if (a.bytes.size() != static_cast<std::size_t>(a.size()) * quadra::io::itemsize(a.dtype)) std::abort();
  const NpyArray back = quadra::io::parse_npy(quadra::io::encode_npy(a), "round trip");
  if (back.dtype != a.dtype || back.shape != a.shape || back.bytes != a.bytes) std::abort();
  if (static_cast<std::int64_t>(a.to_vector<double>().size()) != a.size()) std::abort();
  check_finite(a);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  try {
    check(quadra::io::parse_npy(bytes, "fuzz.npy"));
  } catch (const quadra::Error&) {
  }
  std::map<std::string, std::pair<quadra::io::DType, std::vector<std::int64_t>>> headers;
  const auto record = [&](const std::string& key, quadra::io::DType dtype,
                          const std::vector<std::int64_t>& shape) {
    headers[key] = {dtype, shape};
  };
  try {
    for (const auto& [key, array] : quadra::io::parse_npz(bytes, "fuzz.npz", record)) {
      const auto it = headers.find(key);
      if (it == headers.end() || it->second.first != array.dtype ||
          it->second.second != array.shape) {
        std::abort();
      }
      check(array);
    }
  } catch (const quadra::Error&) {
  }
  return 0;
}
