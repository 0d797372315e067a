// Image corruptions and out-of-distribution sets: names, errors, determinism, and each
// transform against its definition on hand-made images.

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numbers>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <quadra/data/dataset.hpp>
#include <quadra/data/random.hpp>
#include <quadra/error.hpp>
#include <quadra/laplace/corruptions.hpp>
#include <quadra/parallel.hpp>

using Catch::Contains;
using quadra::data::Dataset;
using quadra::laplace::Corruption;
using quadra::laplace::OodKind;
namespace lp = quadra::laplace;

namespace {

/// n images of c x h x w, every pixel `value`, labels i % 3.
Dataset constant_images(std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w,
                        float value) {
  Dataset d;
  d.name = "img";
  d.sample_shape = {c, h, w};
  d.features.assign(static_cast<std::size_t>(n * c * h * w), value);
  for (std::int64_t i = 0; i < n; ++i) d.labels.push_back(i % 3);
  d.num_classes = 3;
  return d;
}

/// n images with seeded uniform pixels in [0, 1].
Dataset random_images(std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w,
                      std::uint64_t seed) {
  Dataset d = constant_images(n, c, h, w, 0);
  quadra::data::Rng rng(seed);
  for (float& v : d.features) v = static_cast<float>(rng.uniform());
  return d;
}

/// Pixel (c, y, x) of image i.
float pixel(const Dataset& d, std::int64_t i, std::int64_t c, std::int64_t y, std::int64_t x) {
  const std::int64_t h = d.sample_shape[1];
  const std::int64_t w = d.sample_shape[2];
  return d.sample(i)[static_cast<std::size_t>((c * h + y) * w + x)];
}

std::vector<float> image(const Dataset& d, std::int64_t i) {
  const auto s = d.sample(i);
  return {s.begin(), s.end()};
}

double total(const Dataset& d, std::int64_t i) {
  double s = 0;
  for (const float v : d.sample(i)) s += v;
  return s;
}

double mean_abs_change(const Dataset& a, const Dataset& b) {
  double s = 0;
  for (std::size_t k = 0; k < a.features.size(); ++k) s += std::abs(a.features[k] - b.features[k]);
  return s / static_cast<double>(a.features.size());
}

/// Standard deviation of sigma z clipped to [-a sigma, a sigma] (a = 0.5 / sigma for a pixel at
/// 0.5 clipped to [0, 1]), in units of sigma: E[Z^2; |Z| < a] + 2 a^2 P(Z > a).
double clipped_normal_std(double a) {
  const double tail = 0.5 * std::erfc(a / std::numbers::sqrt2);
  const double density = std::exp(-0.5 * a * a) / std::sqrt(2 * std::numbers::pi);
  return std::sqrt((1 - 2 * tail) - 2 * a * density + 2 * a * a * tail);
}

}  // namespace

TEST_CASE("corruption names parse and print", "[laplace][corruptions]") {
  const auto all = lp::all_corruptions();
  REQUIRE(all.size() == 4);
  CHECK(std::string(lp::to_string(all[0])) == "gaussian-noise");
  CHECK(std::string(lp::to_string(all[1])) == "rotation");
  CHECK(std::string(lp::to_string(all[2])) == "contrast");
  CHECK(std::string(lp::to_string(all[3])) == "blur");
  for (const Corruption c : all) CHECK(lp::parse_corruption(lp::to_string(c)) == c);
  CHECK(std::string(lp::to_string(OodKind::kInverted)) == "inverted");
  CHECK(std::string(lp::to_string(OodKind::kUniformNoise)) == "uniform-noise");
  CHECK(lp::parse_ood_kind("inverted") == OodKind::kInverted);
  CHECK(lp::parse_ood_kind("uniform-noise") == OodKind::kUniformNoise);
  REQUIRE_THROWS_AS(lp::parse_corruption("fog"), quadra::Error);
  REQUIRE_THROWS_WITH(lp::parse_corruption("fog"),
                      Contains("'fog'") && Contains("gaussian-noise, rotation, contrast, blur"));
  REQUIRE_THROWS_WITH(lp::parse_corruption("Blur"), Contains("'Blur'"));
  REQUIRE_THROWS_WITH(lp::parse_ood_kind("noise"),
                      Contains("'noise'") && Contains("inverted, uniform-noise"));
}

TEST_CASE("corruption errors: severity and shape", "[laplace][corruptions]") {
  const Dataset d = constant_images(2, 1, 4, 4, 0.5f);
  for (const int bad : {0, 6, -1}) {
    REQUIRE_THROWS_AS(lp::corrupt(d, Corruption::kBlur, bad, 1), quadra::Error);
    REQUIRE_THROWS_WITH(lp::corrupt(d, Corruption::kBlur, bad, 1),
                        Contains(fmt::format("severity {}", bad)) && Contains("expected 1 to 5"));
  }
  Dataset flat = d;
  flat.sample_shape = {16};
  REQUIRE_THROWS_WITH(lp::corrupt(flat, Corruption::kContrast, 1, 1),
                      Contains("'img'") && Contains("{16}") && Contains("{C, H, W}"));
  REQUIRE_THROWS_WITH(lp::out_of_distribution(flat, OodKind::kInverted, 1),
                      Contains("{16}") && Contains("{C, H, W}"));
  Dataset four = d;
  four.sample_shape = {1, 1, 4, 4};
  REQUIRE_THROWS_WITH(lp::corrupt(four, Corruption::kContrast, 1, 1), Contains("{1, 1, 4, 4}"));
  Dataset zero = constant_images(0, 1, 4, 4, 0);
  zero.sample_shape = {1, 0, 4};
  REQUIRE_THROWS_WITH(lp::corrupt(zero, Corruption::kContrast, 1, 1), Contains("{1, 0, 4}"));
  // An inconsistent data set is reported by Dataset::validate.
  Dataset broken = d;
  broken.features.pop_back();
  REQUIRE_THROWS_AS(lp::corrupt(broken, Corruption::kRotation, 1, 1), quadra::Error);
}

TEST_CASE("corrupted sets keep shape and labels, are named and clipped", "[laplace][corruptions]") {
  Dataset d = random_images(6, 2, 5, 7, 3);
  d.name = "fm/test";
  // Extremes, where noise and blur would leave [0, 1] without clipping.
  for (std::size_t k = 0; k < d.features.size(); k += 3) d.features[k] = k % 2 ? 1.0f : 0.0f;
  for (const Corruption c : lp::all_corruptions()) {
    for (int s = 1; s <= lp::kMaxSeverity; ++s) {
      const Dataset out = lp::corrupt(d, c, s, 9);
      INFO(out.name);
      CHECK(out.name == fmt::format("fm/test+{}-{}", lp::to_string(c), s));
      CHECK(out.sample_shape == d.sample_shape);
      CHECK(out.labels == d.labels);
      CHECK(out.num_classes == d.num_classes);
      CHECK(out.features.size() == d.features.size());
      CHECK(std::all_of(out.features.begin(), out.features.end(),
                        [](float v) { return v >= 0.0f && v <= 1.0f; }));
    }
  }
  const Dataset noisy = lp::corrupt(d, Corruption::kGaussianNoise, 5, 1);
  CHECK(std::count(noisy.features.begin(), noisy.features.end(), 0.0f) > 0);
  CHECK(std::count(noisy.features.begin(), noisy.features.end(), 1.0f) > 0);
}

TEST_CASE("corruptions are deterministic and independent of threads", "[laplace][corruptions]") {
  const Dataset d = random_images(100, 1, 8, 8, 4);  // several parallel chunks
  for (const Corruption c : lp::all_corruptions()) {
    INFO(lp::to_string(c));
    const Dataset a = lp::corrupt(d, c, 3, 42);
    const Dataset b = lp::corrupt(d, c, 3, 42);
    CHECK(a.features == b.features);
    Dataset serial;
    {
      const quadra::ThreadLimit one(1);
      serial = lp::corrupt(d, c, 3, 42);
    }
    CHECK(serial.features == a.features);
  }
  // Random corruptions change with the seed (rotation through the per-image sign).
  CHECK(lp::corrupt(d, Corruption::kGaussianNoise, 3, 42).features !=
        lp::corrupt(d, Corruption::kGaussianNoise, 3, 43).features);
  CHECK(lp::corrupt(d, Corruption::kRotation, 3, 42).features !=
        lp::corrupt(d, Corruption::kRotation, 3, 43).features);
  // The OOD noise too.
  CHECK(lp::out_of_distribution(d, OodKind::kUniformNoise, 42).features ==
        lp::out_of_distribution(d, OodKind::kUniformNoise, 42).features);
  CHECK(lp::out_of_distribution(d, OodKind::kUniformNoise, 42).features !=
        lp::out_of_distribution(d, OodKind::kUniformNoise, 43).features);
}

TEST_CASE("image i's stream depends on (seed, corruption, severity, i) only",
          "[laplace][corruptions]") {
  // Streams are keyed by the index within the given set: a prefix of the set is corrupted
  // exactly as in the whole set, and other images' content does not matter. A subset in a
  // different order gets the streams of its new positions.
  const Dataset d = random_images(40, 1, 6, 6, 8);
  const Dataset whole = lp::corrupt(d, Corruption::kGaussianNoise, 2, 5);
  std::vector<std::int64_t> prefix(10);
  for (std::int64_t i = 0; i < 10; ++i) prefix[static_cast<std::size_t>(i)] = i;
  const Dataset part = lp::corrupt(d.subset(prefix, "prefix"), Corruption::kGaussianNoise, 2, 5);
  for (std::int64_t i = 0; i < 10; ++i) CHECK(image(part, i) == image(whole, i));

  Dataset changed = d;
  for (std::size_t k = 0; k < 36; ++k) changed.features[5 * 36 + k] = 0.5f;  // image 5
  const Dataset other = lp::corrupt(changed, Corruption::kGaussianNoise, 2, 5);
  for (std::int64_t i = 0; i < 40; ++i) {
    if (i != 5) CHECK(image(other, i) == image(whole, i));
  }
  CHECK(image(other, 5) != image(whole, 5));

  // Reordered: on constant images (no clipping at severity 1) the noise of position 0 is the
  // same whichever image sits there.
  const Dataset flat = constant_images(4, 1, 6, 6, 0.5f);
  const Dataset base = lp::corrupt(flat, Corruption::kGaussianNoise, 1, 5);
  const std::vector<std::int64_t> reversed{3, 2, 1, 0};
  const Dataset rev = lp::corrupt(flat.subset(reversed, "rev"), Corruption::kGaussianNoise, 1, 5);
  CHECK(rev.features == base.features);
}

TEST_CASE("gaussian noise has the severity's standard deviation", "[laplace][corruptions]") {
  const Dataset d = constant_images(200, 1, 28, 28, 0.5f);
  const double sigmas[] = {0.08, 0.12, 0.18, 0.26, 0.38};
  double previous = 0;
  for (int s = 1; s <= 5; ++s) {
    const Dataset out = lp::corrupt(d, Corruption::kGaussianNoise, s, 17);
    double sum = 0;
    double squares = 0;
    for (const float v : out.features) {
      const double e = static_cast<double>(v) - 0.5;
      sum += e;
      squares += e * e;
    }
    const auto n = static_cast<double>(out.features.size());
    const double mean = sum / n;
    const double std = std::sqrt(squares / n - mean * mean);
    const double sigma = sigmas[s - 1];
    // Clipping to [0, 1] shrinks the largest severities; compare with the clipped normal.
    const double expected = sigma * clipped_normal_std(0.5 / sigma);
    INFO("severity " << s << ": std " << std << ", expected " << expected);
    CHECK(std == Approx(expected).epsilon(0.01));
    CHECK(std::abs(mean) < 0.005);  // ~5 standard errors
    CHECK(std > previous);
    previous = std;
  }
  CHECK(clipped_normal_std(8.0) == Approx(1.0));  // the helper, far from the clip
}

TEST_CASE("contrast follows (x - m) c + m", "[laplace][corruptions]") {
  Dataset d = constant_images(2, 1, 2, 2, 0);
  d.features = {0.0f, 0.2f, 0.6f, 1.0f, 0.3f, 0.3f, 0.3f, 0.3f};
  // Image 0: m = 0.45; severity 1 (c = 0.4): 0.27, 0.35, 0.51, 0.67. Image 1 is constant.
  const Dataset out = lp::corrupt(d, Corruption::kContrast, 1, 0);
  const std::vector<float> expected{0.27f, 0.35f, 0.51f, 0.67f};
  for (std::size_t k = 0; k < 4; ++k) CHECK(out.features[k] == Approx(expected[k]).margin(1e-6));
  for (std::size_t k = 4; k < 8; ++k) CHECK(out.features[k] == Approx(0.3).margin(1e-6));
  // Severity 5 (c = 0.05): 0.45 + 0.05 (x - 0.45).
  const Dataset five = lp::corrupt(d, Corruption::kContrast, 5, 0);
  for (std::size_t k = 0; k < 4; ++k) {
    CHECK(five.features[k] == Approx(0.45 + 0.05 * (d.features[k] - 0.45)).margin(1e-6));
  }
  // The mean runs over all channels of an image.
  Dataset two = constant_images(1, 2, 1, 1, 0);
  two.features = {0.0f, 1.0f};
  const Dataset out2 = lp::corrupt(two, Corruption::kContrast, 3, 0);  // c = 0.2, m = 0.5
  CHECK(out2.features[0] == Approx(0.4).margin(1e-6));
  CHECK(out2.features[1] == Approx(0.6).margin(1e-6));
}

TEST_CASE("a 90-degree rotation maps the pixel grid onto itself", "[laplace][corruptions]") {
  for (const std::int64_t size : {5, 6}) {
    const Dataset d = random_images(16, 2, size, size, static_cast<std::uint64_t>(size));
    const Dataset out = lp::corrupt(d, Corruption::kRotation, 5, 1);
    int counter_clockwise = 0;
    int clockwise = 0;
    for (std::int64_t i = 0; i < d.size(); ++i) {
      // Counter-clockwise as displayed: out[y][x] = in[x][W-1-y]; clockwise: in[H-1-x][y].
      bool ccw = true;
      bool cw = true;
      for (std::int64_t c = 0; c < 2; ++c) {
        for (std::int64_t y = 0; y < size; ++y) {
          for (std::int64_t x = 0; x < size; ++x) {
            const float v = pixel(out, i, c, y, x);
            ccw = ccw && std::abs(v - pixel(d, i, c, x, size - 1 - y)) < 1e-6f;
            cw = cw && std::abs(v - pixel(d, i, c, size - 1 - x, y)) < 1e-6f;
          }
        }
      }
      INFO("size " << size << ", image " << i);
      CHECK(ccw != cw);
      counter_clockwise += ccw ? 1 : 0;
      clockwise += cw ? 1 : 0;
    }
    // The sign is drawn per image: both directions occur.
    CHECK(counter_clockwise > 0);
    CHECK(clockwise > 0);
    CHECK(counter_clockwise + clockwise == 16);
  }
}

TEST_CASE("rotation keeps a constant image inside the inscribed circle", "[laplace][corruptions]") {
  const std::int64_t size = 28;
  const Dataset d = constant_images(4, 1, size, size, 0.7f);
  const double centre = 0.5 * (size - 1);
  for (int s = 1; s <= 5; ++s) {
    const Dataset out = lp::corrupt(d, Corruption::kRotation, s, 3);
    for (std::int64_t i = 0; i < d.size(); ++i) {
      for (std::int64_t y = 0; y < size; ++y) {
        for (std::int64_t x = 0; x < size; ++x) {
          const double r = std::hypot(x - centre, y - centre);
          // Inside the circle the inverse-rotated point lies in the image: no zeros mix in.
          if (r <= centre) {
            INFO("severity " << s << " image " << i << " at " << y << ", " << x);
            CHECK(pixel(out, i, 0, y, x) == Approx(0.7).margin(1e-6));
          }
        }
      }
      // 45 and 60 degrees bring zeros into the corners (90 maps corners onto corners).
      if (s == 3 || s == 4) CHECK(pixel(out, i, 0, 0, 0) < 0.1f);
    }
  }
  // A structured image changes more under 90 than under 15 degrees.
  const Dataset bars = [] {
    Dataset b = constant_images(8, 1, 28, 28, 0);
    for (std::size_t k = 0; k < b.features.size(); ++k) b.features[k] = (k % 28) < 14 ? 1.0f : 0.2f;
    return b;
  }();
  const double mild = mean_abs_change(bars, lp::corrupt(bars, Corruption::kRotation, 1, 3));
  const double strong = mean_abs_change(bars, lp::corrupt(bars, Corruption::kRotation, 5, 3));
  CHECK(mild > 0);
  CHECK(strong > 2 * mild);
}

TEST_CASE("blur: constants stay, mass is preserved, impulses spread symmetrically",
          "[laplace][corruptions]") {
  const Dataset flat = constant_images(3, 2, 9, 7, 0.35f);
  for (int s = 1; s <= 5; ++s) {
    const Dataset out = lp::corrupt(flat, Corruption::kBlur, s, 0);
    for (const float v : out.features) CHECK(v == Approx(0.35).margin(1e-7));
  }

  Dataset blob = constant_images(1, 1, 28, 28, 0);
  for (std::int64_t y = 13; y <= 15; ++y) {
    for (std::int64_t x = 12; x <= 14; ++x) blob.features[static_cast<std::size_t>(y * 28 + x)] = 1;
  }
  double previous_peak = 2;
  for (int s = 1; s <= 5; ++s) {
    const Dataset out = lp::corrupt(blob, Corruption::kBlur, s, 0);
    INFO("severity " << s);
    CHECK(total(out, 0) == Approx(9.0).epsilon(1e-6));
    const float peak = pixel(out, 0, 0, 14, 13);
    CHECK(peak < 1.0f);
    CHECK(peak < previous_peak);  // a wider kernel at each severity
    previous_peak = peak;
  }

  const std::int64_t n = 15;
  const std::int64_t c = 7;
  Dataset impulse = constant_images(1, 1, n, n, 0);
  impulse.features[static_cast<std::size_t>(c * n + c)] = 1;
  const Dataset out = lp::corrupt(impulse, Corruption::kBlur, 5, 0);  // sigma 2
  for (std::int64_t dy = 0; dy <= c; ++dy) {
    for (std::int64_t dx = 0; dx <= c; ++dx) {
      const float v = pixel(out, 0, 0, c + dy, c + dx);
      INFO(dy << ", " << dx);
      CHECK(pixel(out, 0, 0, c - dy, c + dx) == v);
      CHECK(pixel(out, 0, 0, c + dy, c - dx) == v);
      CHECK(pixel(out, 0, 0, c - dy, c - dx) == v);
      CHECK(pixel(out, 0, 0, c + dx, c + dy) == Approx(v).epsilon(1e-6));
    }
  }
  // A Gaussian: neighbours fall off as exp(-d^2 / (2 sigma^2)).
  const double centre = pixel(out, 0, 0, c, c);
  CHECK(pixel(out, 0, 0, c, c + 1) / centre == Approx(std::exp(-1.0 / 8)).epsilon(1e-5));
  CHECK(pixel(out, 0, 0, c + 2, c + 2) / centre == Approx(std::exp(-8.0 / 8)).epsilon(1e-5));
  CHECK(total(out, 0) == Approx(1.0).epsilon(1e-6));
}

TEST_CASE("out-of-distribution sets", "[laplace][corruptions]") {
  Dataset d = random_images(50, 1, 28, 28, 21);
  d.name = "fm/test";
  const Dataset inverted = lp::out_of_distribution(d, OodKind::kInverted, 1);
  CHECK(inverted.name == "fm/test+inverted");
  CHECK(inverted.labels == d.labels);
  CHECK(inverted.sample_shape == d.sample_shape);
  REQUIRE(inverted.features.size() == d.features.size());
  bool exact = true;
  for (std::size_t k = 0; k < d.features.size(); ++k) {
    exact = exact && inverted.features[k] == 1.0f - d.features[k];
  }
  CHECK(exact);

  const Dataset noise = lp::out_of_distribution(d, OodKind::kUniformNoise, 1);
  CHECK(noise.name == "fm/test+uniform-noise");
  CHECK(noise.labels == d.labels);
  CHECK(noise.sample_shape == d.sample_shape);
  REQUIRE(noise.features.size() == d.features.size());
  double sum = 0;
  for (const float v : noise.features) sum += v;
  CHECK(std::all_of(noise.features.begin(), noise.features.end(),
                    [](float v) { return v >= 0.0f && v <= 1.0f; }));
  CHECK(sum / static_cast<double>(noise.features.size()) == Approx(0.5).margin(0.005));
  // Independent of the input's content.
  CHECK(lp::out_of_distribution(inverted, OodKind::kUniformNoise, 1).features == noise.features);
  noise.validate();
}

TEST_CASE("colour images: each corruption works on 3 x 32 x 32, channel by channel",
          "[laplace][corruptions]") {
  const Dataset rgb = random_images(6, 3, 32, 32, 11);
  // The same images one channel at a time, as 1 x 32 x 32 sets.
  const auto channel = [](const Dataset& d, std::int64_t c) {
    Dataset one = constant_images(d.size(), 1, 32, 32, 0);
    for (std::int64_t i = 0; i < d.size(); ++i) {
      std::copy_n(d.sample(i).begin() + c * 1024, 1024,
                  one.features.begin() + static_cast<std::ptrdiff_t>(i * 1024));
    }
    return one;
  };
  for (const Corruption corruption : lp::all_corruptions()) {
    for (int severity : {1, 5}) {
      const Dataset out = lp::corrupt(rgb, corruption, severity, 4);
      INFO(lp::to_string(corruption) << " severity " << severity);
      REQUIRE(out.sample_shape == std::vector<std::int64_t>{3, 32, 32});
      REQUIRE(out.features.size() == rgb.features.size());
      CHECK(out.labels == rgb.labels);
      CHECK(mean_abs_change(rgb, out) > 0);
      CHECK(std::all_of(out.features.begin(), out.features.end(),
                        [](float v) { return v >= 0.0f && v <= 1.0f; }));
      if (corruption != Corruption::kRotation && corruption != Corruption::kBlur) continue;
      // Rotation and blur move pixels within their own plane: each channel comes out as it
      // would alone (the rotation's direction is drawn per image, not per channel).
      for (std::int64_t c = 0; c < 3; ++c) {
        const Dataset alone = lp::corrupt(channel(rgb, c), corruption, severity, 4);
        CHECK(channel(out, c).features == alone.features);
      }
    }
  }
  // Contrast pulls every channel toward the image's one mean over all channels and pixels.
  Dataset two = constant_images(1, 3, 1, 2, 0);
  two.features = {0.0f, 0.2f, 0.4f, 0.6f, 0.8f, 1.0f};  // m = 0.5
  const Dataset contrasted = lp::corrupt(two, Corruption::kContrast, 1, 0);  // c = 0.4
  for (std::size_t k = 0; k < 6; ++k) {
    CHECK(contrasted.features[k] == Approx(0.5 + 0.4 * (two.features[k] - 0.5)).margin(1e-6));
  }
  const Dataset inverted = lp::out_of_distribution(rgb, OodKind::kInverted, 0);
  CHECK(inverted.features[2 * 1024 + 17] == Approx(1.0f - rgb.features[2 * 1024 + 17]));
}
