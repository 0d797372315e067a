// libFuzzer target: .npy and .npz parsing. The input is tried as both. Invariants: a parsed
// array has size() * itemsize bytes, encodes and parses back to the same array, converts to
// double; quadra::Error is the only acceptable failure.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include <quadra/error.hpp>
#include <quadra/io/npy.hpp>

namespace {

void check(const quadra::io::NpyArray& a) {
  if (a.bytes.size() != static_cast<std::size_t>(a.size()) * quadra::io::itemsize(a.dtype)) std::abort();
  const quadra::io::NpyArray back = quadra::io::parse_npy(quadra::io::encode_npy(a), "round trip");
  if (back.dtype != a.dtype || back.shape != a.shape || back.bytes != a.bytes) std::abort();
  if (static_cast<std::int64_t>(a.to_vector<double>().size()) != a.size()) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  try {
    check(quadra::io::parse_npy(bytes, "fuzz.npy"));
  } catch (const quadra::Error&) {
  }
  try {
    for (const auto& entry : quadra::io::parse_npz(bytes, "fuzz.npz")) check(entry.second);
  } catch (const quadra::Error&) {
  }
  return 0;
}
