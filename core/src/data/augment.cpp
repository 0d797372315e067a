// Seeded crop and flip augmentation of training batches. See augment.hpp.

#include <fmt/format.h>

#include <algorithm>
#include <quadra/data/augment.hpp>
#include <quadra/data/random.hpp>
#include <quadra/error.hpp>

#include "detail.hpp"

namespace quadra::data {

namespace {

// derive_seed purpose ("augm"), distinct from the Stream values of random.hpp.
constexpr std::uint64_t kAugmentStream = 0x6175676dULL;

[[noreturn]] void bad_augmentation(std::string_view text, std::string_view part,
                                   std::string_view why) {
  throw Error(
      fmt::format("augment '{}': {} '{}'; expected none, or crop:P (P >= 1 pixels of "
                  "padding) and/or flip, comma-separated, e.g. crop:4,flip",
                  text, why, part));
}

}  // namespace

Augmentation parse_augmentation(std::string_view text) {
  Augmentation a;
  if (text == "none") return a;
  if (text.empty()) bad_augmentation(text, text, "empty");
  bool crop_seen = false;
  std::string_view rest = text;
  while (true) {
    const auto comma = rest.find(',');
    const std::string_view part = rest.substr(0, comma);
    if (part == "flip") {
      if (a.flip) bad_augmentation(text, part, "repeated");
      a.flip = true;
    } else if (part.substr(0, 5) == "crop:") {
      std::int64_t padding = 0;
      if (crop_seen) bad_augmentation(text, part, "repeated");
      if (!detail::parse_int64(part.substr(5), padding) || padding < 1 || padding > 1024) {
        bad_augmentation(text, part, "the padding is not an integer from 1 to 1024 in");
      }
      crop_seen = true;
      a.crop_padding = padding;
    } else {
      bad_augmentation(text, part, part == "none" ? "'none' with others in" : "unknown part");
    }
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  return a;
}

std::string to_string(const Augmentation& a) {
  if (!a.enabled()) return "none";
  if (a.crop_padding == 0) return "flip";
  return fmt::format("crop:{}{}", a.crop_padding, a.flip ? ",flip" : "");
}

void check_augmentation(const Augmentation& a, const Dataset& data, const std::string& source) {
  if (!a.enabled()) return;
  const auto& s = data.sample_shape;
  if (s.size() != 3) {
    throw Error(
        fmt::format("augment = {}: data '{}' has samples of shape ({}), not images; "
                    "expected samples of shape (C, H, W), or augment = none",
                    to_string(a), source, fmt::join(s, ", ")));
  }
}

std::uint64_t augmentation_seed(std::uint64_t seed, std::int64_t step, std::uint64_t stream,
                                std::int64_t sample) noexcept {
  return derive_seed(derive_seed(seed, kAugmentStream, static_cast<std::uint64_t>(step)), stream,
                     static_cast<std::uint64_t>(sample));
}

void augment_image(const Augmentation& a, std::span<const std::int64_t> shape, const float* in,
                   float* out, std::uint64_t sample_seed) noexcept {
  const std::int64_t channels = shape[0];
  const std::int64_t h = shape[1];
  const std::int64_t w = shape[2];
  Rng rng(sample_seed);
  // The crop's offset into the padded image, relative to the original: [-P, P] in each axis.
  std::int64_t dy = 0;
  std::int64_t dx = 0;
  if (a.crop_padding > 0) {
    const auto choices = static_cast<std::uint64_t>(2 * a.crop_padding + 1);
    dy = static_cast<std::int64_t>(rng.below(choices)) - a.crop_padding;
    dx = static_cast<std::int64_t>(rng.below(choices)) - a.crop_padding;
  }
  const bool flip = a.flip && rng.below(2) == 1;
  for (std::int64_t c = 0; c < channels; ++c) {
    const float* src = in + c * h * w;
    float* dst = out + c * h * w;
    for (std::int64_t y = 0; y < h; ++y) {
      const std::int64_t sy = y + dy;
      for (std::int64_t x = 0; x < w; ++x) {
        // Crop first, then mirror the cropped window: output x reads window column w-1-x.
        const std::int64_t sx = (flip ? w - 1 - x : x) + dx;
        dst[y * w + x] = (sy < 0 || sy >= h || sx < 0 || sx >= w) ? 0.0f : src[sy * w + sx];
      }
    }
  }
}

std::uint64_t augmentation_stream(const StepBatches& draws, int d) noexcept {
  for (int r = 0; r < kNumBatchRoles; ++r) {
    if (draws.draw_of(static_cast<BatchRole>(r)) == d) return static_cast<std::uint64_t>(r);
  }
  return static_cast<std::uint64_t>(kNumBatchRoles + d);
}

BatchView augment_draw(const Augmentation& a, const Dataset& data, const StepBatches& draws, int d,
                       const BatchView& view, std::uint64_t seed, std::vector<float>& out) {
  if (!a.enabled()) return view;
  const Draw& draw = draws.draw(d);
  const auto dim = static_cast<std::size_t>(data.feature_dim());
  const auto count = static_cast<std::size_t>(view.count);
  if (out.size() < count * dim) out.resize(count * dim);
  const std::uint64_t stream = augmentation_stream(draws, d);
  for (std::size_t k = 0; k < count; ++k) {
    const std::int64_t sample = draw.sample(static_cast<std::int64_t>(k));
    augment_image(a, data.sample_shape, view.features + k * dim, out.data() + k * dim,
                  augmentation_seed(seed, draws.step(), stream, sample));
  }
  BatchView augmented = view;
  augmented.features = out.data();
  return augmented;
}

}  // namespace quadra::data
