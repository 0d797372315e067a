// libFuzzer target: CIFAR-10 and CIFAR-100 binary records. The input is parsed as a CIFAR-10
// file and as a CIFAR-100 file with either label; quadra::Error is the only acceptable failure,
// and a file that loads must hold exactly size / record-size samples of {3, 32, 32} that
// validate (features in [0, 1], labels below the format's class count).

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <quadra/data/loaders.hpp>
#include <quadra/error.hpp>
#include <string>

namespace {

void check(const quadra::data::Dataset& data, std::size_t size, std::size_t record,
           std::int64_t classes) {
  data.validate();
  if (static_cast<std::size_t>(data.size()) * record != size || data.num_classes != classes ||
      data.feature_dim() != 3072) {
    std::abort();
  }
  for (const float v : data.features) {
    if (!(v >= 0.0f && v <= 1.0f)) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  try {
    check(quadra::data::cifar10_dataset(input, "input", "fuzz"), size, 3073, 10);
  } catch (const quadra::Error&) {
  }
  for (const auto label : {quadra::data::CifarLabel::kFine, quadra::data::CifarLabel::kCoarse}) {
    try {
      check(quadra::data::cifar100_dataset(input, "input", label, "fuzz"), size, 3074,
            label == quadra::data::CifarLabel::kFine ? 100 : 20);
    } catch (const quadra::Error&) {
    }
  }
  return 0;
}
