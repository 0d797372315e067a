// Seeded image corruptions and out-of-distribution sets. See quadra/laplace/corruptions.hpp.

#include <quadra/laplace/corruptions.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <numbers>
#include <span>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <quadra/data/random.hpp>
#include <quadra/error.hpp>
#include <quadra/parallel.hpp>

#include "names.hpp"

namespace quadra::laplace {

namespace {

constexpr std::array<Corruption, 4> kCorruptions = {
    Corruption::kGaussianNoise, Corruption::kRotation, Corruption::kContrast, Corruption::kBlur};
constexpr std::array<OodKind, 2> kOodKinds = {OodKind::kInverted, OodKind::kUniformNoise};

// Parameters per severity 1..5.
constexpr std::array<double, kMaxSeverity> kNoiseSigma = {0.08, 0.12, 0.18, 0.26, 0.38};
constexpr std::array<double, kMaxSeverity> kRotationDegrees = {15, 30, 45, 60, 90};
constexpr std::array<double, kMaxSeverity> kContrast = {0.4, 0.3, 0.2, 0.1, 0.05};
constexpr std::array<double, kMaxSeverity> kBlurSigma = {0.5, 0.8, 1.1, 1.5, 2.0};

// derive_seed purposes ("corr", "ood"), distinct from the data layer's Stream values; the
// corruption and severity (or the OOD kind) sit in the low bits.
constexpr std::uint64_t kCorruptionStream = 0x636f7272ULL << 16;
constexpr std::uint64_t kOodStream = 0x6f6f64ULL << 16;

/// Images per parallel chunk: enough work per task, and boundaries independent of threads.
constexpr std::int64_t kImagesPerChunk = 32;

struct ImageShape {
  std::int64_t channels = 0;
  std::int64_t height = 0;
  std::int64_t width = 0;
  [[nodiscard]] std::int64_t plane() const { return height * width; }
};

/// Throws unless `images` is a consistent data set of {C, H, W} samples.
ImageShape check_images(const data::Dataset& images, const char* what) {
  const auto& s = images.sample_shape;
  if (s.size() != 3 || std::any_of(s.begin(), s.end(), [](std::int64_t d) { return d < 1; })) {
    throw Error(
        fmt::format("{}: data set '{}' has sample shape {{{}}}; expected an image shape "
                    "{{C, H, W}} with every dimension >= 1",
                    what, images.name, fmt::join(s, ", ")));
  }
  images.validate();
  return {s[0], s[1], s[2]};
}

float clip(double v) { return static_cast<float>(std::clamp(v, 0.0, 1.0)); }

void gaussian_noise(std::span<const float> in, std::span<float> out, double sigma, data::Rng& rng) {
  for (std::size_t k = 0; k < in.size(); ++k) out[k] = clip(in[k] + sigma * rng.normal());
}

void contrast(std::span<const float> in, std::span<float> out, double factor) {
  // One mean over all channels: the image's overall brightness is what stays put.
  double sum = 0.0;
  for (const float v : in) sum += v;
  const double mean = sum / static_cast<double>(in.size());
  for (std::size_t k = 0; k < in.size(); ++k) out[k] = clip((in[k] - mean) * factor + mean);
}

/// Rotation by `degrees` counter-clockwise as displayed (row 0 at the top) about the centre
/// ((W-1)/2, (H-1)/2), which maps the pixel grid onto itself for quarter turns of square images.
/// Each output pixel samples the input bilinearly at its inverse-rotated position, with zeros
/// outside the image.
void rotate(std::span<const float> in, std::span<float> out, const ImageShape& shape,
            double degrees) {
  const double theta = degrees * std::numbers::pi / 180.0;
  const double cos_t = std::cos(theta);
  const double sin_t = std::sin(theta);
  const double cx = 0.5 * static_cast<double>(shape.width - 1);
  const double cy = 0.5 * static_cast<double>(shape.height - 1);
  for (std::int64_t c = 0; c < shape.channels; ++c) {
    const float* src = in.data() + c * shape.plane();
    float* dst = out.data() + c * shape.plane();
    const auto at = [&](std::int64_t x, std::int64_t y) -> double {
      if (x < 0 || x >= shape.width || y < 0 || y >= shape.height) return 0.0;
      return src[y * shape.width + x];
    };
    for (std::int64_t y = 0; y < shape.height; ++y) {
      for (std::int64_t x = 0; x < shape.width; ++x) {
        const double dx = static_cast<double>(x) - cx;
        const double dy = static_cast<double>(y) - cy;
        // Inverse rotation (by -theta) of the output offset, in y-down image coordinates.
        const double sx = cx + dx * cos_t - dy * sin_t;
        const double sy = cy + dx * sin_t + dy * cos_t;
        const double fx = std::floor(sx);
        const double fy = std::floor(sy);
        const double wx = sx - fx;
        const double wy = sy - fy;
        const auto x0 = static_cast<std::int64_t>(fx);
        const auto y0 = static_cast<std::int64_t>(fy);
        const double v = (1.0 - wy) * ((1.0 - wx) * at(x0, y0) + wx * at(x0 + 1, y0)) +
                         wy * ((1.0 - wx) * at(x0, y0 + 1) + wx * at(x0 + 1, y0 + 1));
        dst[y * shape.width + x] = clip(v);
      }
    }
  }
}

/// Normalised Gaussian weights w[0..r] (w[k] for offsets +-k), r = ceil(3 sigma).
std::vector<double> gaussian_kernel(double sigma) {
  const auto radius = static_cast<std::size_t>(std::ceil(3.0 * sigma));
  std::vector<double> w(radius + 1);
  double total = 0.0;
  for (std::size_t k = 0; k <= radius; ++k) {
    const auto d = static_cast<double>(k);
    w[k] = std::exp(-d * d / (2.0 * sigma * sigma));
    total += k == 0 ? w[k] : 2.0 * w[k];
  }
  for (double& v : w) v /= total;
  return w;
}

/// Separable blur, rows then columns, with indices clamped to the image (replicated edges).
void blur(std::span<const float> in, std::span<float> out, const ImageShape& shape,
          const std::vector<double>& kernel, std::vector<double>& scratch) {
  const auto radius = static_cast<std::int64_t>(kernel.size()) - 1;
  const std::int64_t w = shape.width;
  const std::int64_t h = shape.height;
  scratch.resize(static_cast<std::size_t>(shape.plane()));
  const auto weight = [&](std::int64_t k) {
    return kernel[static_cast<std::size_t>(k < 0 ? -k : k)];
  };
  for (std::int64_t c = 0; c < shape.channels; ++c) {
    const float* src = in.data() + c * shape.plane();
    float* dst = out.data() + c * shape.plane();
    for (std::int64_t y = 0; y < h; ++y) {
      for (std::int64_t x = 0; x < w; ++x) {
        double s = 0.0;
        for (std::int64_t k = -radius; k <= radius; ++k) {
          s += weight(k) * src[y * w + std::clamp<std::int64_t>(x + k, 0, w - 1)];
        }
        scratch[static_cast<std::size_t>(y * w + x)] = s;
      }
    }
    for (std::int64_t y = 0; y < h; ++y) {
      for (std::int64_t x = 0; x < w; ++x) {
        double s = 0.0;
        for (std::int64_t k = -radius; k <= radius; ++k) {
          s += weight(k) *
               scratch[static_cast<std::size_t>(std::clamp<std::int64_t>(y + k, 0, h - 1) * w + x)];
        }
        dst[y * w + x] = clip(s);
      }
    }
  }
}

/// Runs `body(i, in, out, rng)` for every image i of `images` in parallel, writing into `out`;
/// image i's stream is seeded by (seed, purpose, i) alone.
template <class Body>
void for_each_image(const data::Dataset& images, data::Dataset& out, std::uint64_t seed,
                    std::uint64_t purpose, Body&& body) {
  const std::int64_t n = images.size();
  const auto d = static_cast<std::size_t>(images.feature_dim());
  parallel_for_chunks(n, kImagesPerChunk, [&](const ChunkRange& chunk) {
    for (std::int64_t i = chunk.begin; i < chunk.end; ++i) {
      data::Rng rng(data::derive_seed(seed, purpose, static_cast<std::uint64_t>(i)));
      const std::span<float> target(out.features.data() + static_cast<std::size_t>(i) * d, d);
      body(images.sample(i), target, rng);
    }
  });
}

}  // namespace

const char* to_string(Corruption corruption) {
  switch (corruption) {
    case Corruption::kGaussianNoise:
      return "gaussian-noise";
    case Corruption::kRotation:
      return "rotation";
    case Corruption::kContrast:
      return "contrast";
    case Corruption::kBlur:
      return "blur";
  }
  return "unknown";
}

const char* to_string(OodKind kind) {
  switch (kind) {
    case OodKind::kInverted:
      return "inverted";
    case OodKind::kUniformNoise:
      return "uniform-noise";
  }
  return "unknown";
}

Corruption parse_corruption(std::string_view text) {
  return detail::parse_name<Corruption>(text, kCorruptions, "corruption");
}

OodKind parse_ood_kind(std::string_view text) {
  return detail::parse_name<OodKind>(text, kOodKinds, "out-of-distribution kind");
}

std::vector<Corruption> all_corruptions() { return {kCorruptions.begin(), kCorruptions.end()}; }

data::Dataset corrupt(const data::Dataset& images, Corruption corruption, int severity,
                      std::uint64_t seed) {
  if (severity < 1 || severity > kMaxSeverity) {
    throw Error(fmt::format("corruption {} of data set '{}': severity {}; expected 1 to {}",
                            to_string(corruption), images.name, severity, kMaxSeverity));
  }
  const ImageShape shape = check_images(images, "corruption");
  data::Dataset out = images;
  out.name = fmt::format("{}+{}-{}", images.name, to_string(corruption), severity);
  const auto level = static_cast<std::size_t>(severity - 1);
  const std::uint64_t purpose = kCorruptionStream | (static_cast<std::uint64_t>(corruption) << 8) |
                                static_cast<std::uint64_t>(severity);
  switch (corruption) {
    case Corruption::kGaussianNoise:
      for_each_image(images, out, seed, purpose,
                     [&](std::span<const float> in, std::span<float> dst, data::Rng& rng) {
                       gaussian_noise(in, dst, kNoiseSigma[level], rng);
                     });
      break;
    case Corruption::kRotation:
      for_each_image(images, out, seed, purpose,
                     [&](std::span<const float> in, std::span<float> dst, data::Rng& rng) {
                       const double sign = rng.uniform() < 0.5 ? -1.0 : 1.0;
                       rotate(in, dst, shape, sign * kRotationDegrees[level]);
                     });
      break;
    case Corruption::kContrast:
      for_each_image(images, out, seed, purpose,
                     [&](std::span<const float> in, std::span<float> dst, data::Rng&) {
                       contrast(in, dst, kContrast[level]);
                     });
      break;
    case Corruption::kBlur: {
      const std::vector<double> kernel = gaussian_kernel(kBlurSigma[level]);
      for_each_image(images, out, seed, purpose,
                     [&](std::span<const float> in, std::span<float> dst, data::Rng&) {
                       // One scratch plane per call keeps images independent across threads.
                       std::vector<double> scratch;
                       blur(in, dst, shape, kernel, scratch);
                     });
      break;
    }
  }
  return out;
}

data::Dataset out_of_distribution(const data::Dataset& images, OodKind kind, std::uint64_t seed) {
  check_images(images, fmt::format("out-of-distribution set {}", to_string(kind)).c_str());
  data::Dataset out = images;
  out.name = fmt::format("{}+{}", images.name, to_string(kind));
  const std::uint64_t purpose = kOodStream | static_cast<std::uint64_t>(kind);
  switch (kind) {
    case OodKind::kInverted:
      for_each_image(images, out, seed, purpose,
                     [](std::span<const float> in, std::span<float> dst, data::Rng&) {
                       for (std::size_t k = 0; k < in.size(); ++k) {
                         dst[k] = std::clamp(1.0f - in[k], 0.0f, 1.0f);
                       }
                     });
      break;
    case OodKind::kUniformNoise:
      for_each_image(images, out, seed, purpose,
                     [](std::span<const float> in, std::span<float> dst, data::Rng& rng) {
                       for (std::size_t k = 0; k < in.size(); ++k) {
                         dst[k] = clip(rng.uniform());
                       }
                     });
      break;
  }
  return out;
}

}  // namespace quadra::laplace
