// libFuzzer target: gzip + IDX. The input is an IDX file, raw or gzip-compressed. It is parsed
// as images (with generated labels) and as labels (with generated images); quadra::Error is
// the only acceptable failure, and every data set that loads must validate (finite features, at
// most kMaxClasses classes). idx_dataset inflates gzip input header first (the buffer sized from
// the header), so it is also run with the input as both files.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include <quadra/data/loaders.hpp>
#include <quadra/error.hpp>

namespace {

std::string be32(std::uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>((v >> 16) & 0xff),
          static_cast<char>((v >> 8) & 0xff), static_cast<char>(v & 0xff)};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  std::int64_t count = -1;
  try {
    const std::string raw = quadra::data::gunzip_if_compressed(input, "input");
    const quadra::data::IdxArray array = quadra::data::parse_idx(raw, "input");
    count = array.dims.at(0);
  } catch (const quadra::Error&) {
    return 0;
  }
  try {
    (void)quadra::data::idx_dataset(input, "images", input, "labels", "fuzz");
  } catch (const quadra::Error&) {
  }
  if (count > 4096) return 0;  // the generated companion file stays small
  const auto n = static_cast<std::uint32_t>(count);
  const std::string labels = std::string("\0\0\x08\x01", 4) + be32(n) + std::string(n, '\x01');
  const std::string images = std::string("\0\0\x08\x03", 4) + be32(n) + be32(1) + be32(2) +
                             std::string(2 * std::size_t{n}, '\x7f');
  // A data set that loads is valid: an exception from validate() is a bug (a crash here).
  quadra::data::Dataset parsed;
  try {
    parsed = quadra::data::idx_dataset(input, "images", labels, "labels", "fuzz");
  } catch (const quadra::Error&) {
    parsed = {};
  }
  if (!parsed.sample_shape.empty()) parsed.validate();
  parsed = {};
  try {
    parsed = quadra::data::idx_dataset(images, "images", input, "labels", "fuzz");
  } catch (const quadra::Error&) {
    parsed = {};
  }
  if (!parsed.sample_shape.empty()) parsed.validate();
  return 0;
}
