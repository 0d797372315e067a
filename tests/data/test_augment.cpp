// Training augmentation: the syntax, the crop and flip geometry on known images, and the
// randomness keyed by (seed, step, draw, sample) rather than by a running state.

#include <catch2/catch.hpp>
#include <map>
#include <optional>
#include <quadra/data/augment.hpp>
#include <quadra/data/sampler.hpp>
#include <quadra/error.hpp>
#include <set>
#include <tuple>

using Catch::Contains;
using quadra::data::augment_image;
using quadra::data::Augmentation;
using quadra::data::parse_augmentation;

namespace {

/// in shifted by (dy, dx) (output (y, x) reads input (y + dy, x' + dx), zero outside) where x'
/// is x or, flipped, w-1-x: the geometry augment.hpp describes, written out independently.
std::vector<float> reference(const std::vector<float>& in, const std::vector<std::int64_t>& shape,
                             std::int64_t dy, std::int64_t dx, bool flip) {
  const std::int64_t c = shape[0], h = shape[1], w = shape[2];
  std::vector<float> out(in.size(), 0.0f);
  for (std::int64_t k = 0; k < c; ++k) {
    for (std::int64_t y = 0; y < h; ++y) {
      for (std::int64_t x = 0; x < w; ++x) {
        const std::int64_t sy = y + dy;
        const std::int64_t sx = (flip ? w - 1 - x : x) + dx;
        if (sy >= 0 && sy < h && sx >= 0 && sx < w) {
          out[static_cast<std::size_t>((k * h + y) * w + x)] =
              in[static_cast<std::size_t>((k * h + sy) * w + sx)];
        }
      }
    }
  }
  return out;
}

/// An image whose every pixel is distinct and nonzero, so each crop and flip is identifiable.
std::vector<float> distinct_image(const std::vector<std::int64_t>& shape) {
  std::vector<float> image(static_cast<std::size_t>(shape[0] * shape[1] * shape[2]));
  for (std::size_t k = 0; k < image.size(); ++k) image[k] = static_cast<float>(k + 1);
  return image;
}

/// The (dy, dx, flip) that turns `in` into `out`, or an empty optional when none does.
std::optional<std::tuple<std::int64_t, std::int64_t, bool>> transform_of(
    const std::vector<float>& in, const std::vector<float>& out,
    const std::vector<std::int64_t>& shape, std::int64_t padding) {
  for (std::int64_t dy = -padding; dy <= padding; ++dy) {
    for (std::int64_t dx = -padding; dx <= padding; ++dx) {
      for (bool flip : {false, true}) {
        if (reference(in, shape, dy, dx, flip) == out) return std::make_tuple(dy, dx, flip);
      }
    }
  }
  return std::nullopt;
}

quadra::BatchPlan four_draws() {
  quadra::BatchPlan plan;
  plan.draws = {quadra::BatchDraw{1, false}, quadra::BatchDraw{1, false},
                quadra::BatchDraw{1, false}, quadra::BatchDraw{1, true}};
  plan.draw_of_role = {0, 1, 2, 3};
  return plan;
}

}  // namespace

TEST_CASE("augment syntax", "[data][augment]") {
  CHECK(!parse_augmentation("none").enabled());
  const Augmentation a = parse_augmentation("crop:4,flip");
  CHECK(a.crop_padding == 4);
  CHECK(a.flip);
  CHECK(to_string(a) == "crop:4,flip");
  CHECK(to_string(parse_augmentation("flip,crop:2")) == "crop:2,flip");
  CHECK(to_string(parse_augmentation("flip")) == "flip");
  CHECK(to_string(parse_augmentation("crop:1")) == "crop:1");
  CHECK(to_string(parse_augmentation("none")) == "none");
  const std::string expected =
      "; expected none, or crop:P (P >= 1 pixels of padding) and/or flip, comma-separated, e.g. "
      "crop:4,flip";
  REQUIRE_THROWS_WITH(parse_augmentation("crop:4,flop"),
                      "augment 'crop:4,flop': unknown part 'flop'" + expected);
  REQUIRE_THROWS_WITH(parse_augmentation("crop:0"),
                      "augment 'crop:0': the padding is not an integer from 1 to 1024 in "
                      "'crop:0'" +
                          expected);
  REQUIRE_THROWS_WITH(parse_augmentation("crop:x"), Contains("not an integer from 1 to 1024"));
  REQUIRE_THROWS_WITH(parse_augmentation("flip,flip"), Contains("repeated 'flip'"));
  REQUIRE_THROWS_WITH(parse_augmentation("crop:2,crop:3"), Contains("repeated 'crop:3'"));
  REQUIRE_THROWS_WITH(parse_augmentation("none,flip"), Contains("'none' with others in 'none'"));
  REQUIRE_THROWS_WITH(parse_augmentation(""), Contains("augment '': empty ''"));
  REQUIRE_THROWS_WITH(parse_augmentation("crop:4,"), Contains("unknown part ''"));
}

TEST_CASE("augmentation is for images only", "[data][augment]") {
  quadra::data::Dataset flat;
  flat.name = "moons/train";
  flat.sample_shape = {2};
  REQUIRE_THROWS_WITH(quadra::data::check_augmentation(parse_augmentation("flip"), flat, "moons"),
                      "augment = flip: data 'moons' has samples of shape (2), not images; "
                      "expected samples of shape (C, H, W), or augment = none");
  quadra::data::check_augmentation(parse_augmentation("none"), flat, "moons");
  quadra::data::Dataset images;
  images.sample_shape = {3, 32, 32};
  quadra::data::check_augmentation(parse_augmentation("crop:4,flip"), images, "cifar10:/d");
}

TEST_CASE("crop and flip geometry on a known image", "[data][augment]") {
  const std::vector<std::int64_t> shape = {3, 5, 6};
  const std::vector<float> in = distinct_image(shape);
  std::vector<float> out(in.size());

  SECTION("crop:2,flip reaches every offset and both flips, the same for every channel") {
    const Augmentation a = parse_augmentation("crop:2,flip");
    std::set<std::tuple<std::int64_t, std::int64_t, bool>> seen;
    for (std::uint64_t seed = 0; seed < 2000; ++seed) {
      augment_image(a, shape, in.data(), out.data(), seed);
      const auto t = transform_of(in, out, shape, 2);
      REQUIRE(t.has_value());
      seen.insert(*t);
    }
    CHECK(seen.size() == 5 * 5 * 2);
  }
  SECTION("flip alone mirrors each row or leaves the image as it is") {
    const Augmentation a = parse_augmentation("flip");
    int flipped = 0;
    for (std::uint64_t seed = 0; seed < 200; ++seed) {
      augment_image(a, shape, in.data(), out.data(), seed);
      if (out == in) continue;
      REQUIRE(out == reference(in, shape, 0, 0, true));
      ++flipped;
      // Row 0 of channel 1 read right to left.
      CHECK(out[30] == in[35]);
      CHECK(out[35] == in[30]);
    }
    CHECK(flipped > 60);
    CHECK(flipped < 140);
  }
  SECTION("crop alone never mirrors, and pads with zeros") {
    const Augmentation a = parse_augmentation("crop:1");
    bool padded = false;
    for (std::uint64_t seed = 0; seed < 200; ++seed) {
      augment_image(a, shape, in.data(), out.data(), seed);
      const auto t = transform_of(in, out, shape, 1);
      REQUIRE(t.has_value());
      CHECK(!std::get<2>(*t));
      if (std::get<0>(*t) == 1 && std::get<1>(*t) == -1) {
        // Shifted up and right: the last row and the first column are padding.
        CHECK(out[4 * 6 + 2] == 0.0f);
        CHECK(out[1 * 6 + 0] == 0.0f);
        CHECK(out[0 * 6 + 1] == in[1 * 6 + 0]);
        padded = true;
      }
    }
    CHECK(padded);
  }
}

TEST_CASE("augmented draws: keyed by seed, step, draw and sample; whole draws included",
          "[data][augment]") {
  quadra::data::Dataset data;
  data.name = "images/train";
  data.sample_shape = {2, 4, 4};
  const std::int64_t n = 40;
  for (std::int64_t i = 0; i < n * 32; ++i) data.features.push_back(static_cast<float>(i % 97 + 1));
  data.labels.assign(static_cast<std::size_t>(n), 0);
  data.num_classes = 1;
  const Augmentation a = parse_augmentation("crop:1,flip");
  quadra::data::SamplerOptions options;
  options.batch_size = 5;
  options.seed = 3;
  const auto plan = four_draws();

  // Every augmented sample of every step, by (step, draw, sample index).
  const auto run = [&](std::uint64_t seed, std::int64_t steps) {
    quadra::data::BatchSampler sampler(n, options);
    std::map<std::tuple<std::int64_t, int, std::int64_t>, std::vector<float>> out;
    quadra::data::GatherBuffer buffer;
    std::vector<float> augmented;
    for (std::int64_t s = 0; s < steps; ++s) {
      const auto& draws = sampler.next(plan);
      for (int d = 0; d < draws.num_draws(); ++d) {
        const auto view = quadra::data::gather(data, draws.draw(d), buffer);
        const auto result = quadra::data::augment_draw(a, data, draws, d, view, seed, augmented);
        CHECK(result.count == view.count);
        CHECK(result.labels == view.labels);
        for (std::int64_t k = 0; k < result.count; ++k) {
          out[{s, d, draws.draw(d).sample(k)}] =
              std::vector<float>(result.features + k * 32, result.features + (k + 1) * 32);
        }
      }
    }
    return out;
  };
  const auto a1 = run(7, 3);
  CHECK(a1 == run(7, 3));  // deterministic
  CHECK(a1 != run(8, 3));  // and seeded
  // Steps, draws and samples draw independently: the same sample in another step (the whole
  // draw has every sample each step) is augmented differently at least once.
  int differ_by_step = 0;
  int differ_by_draw = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    differ_by_step += a1.at({0, 3, i}) != a1.at({1, 3, i}) ? 1 : 0;
  }
  for (const auto& [key, values] : a1) {
    const auto& [s, d, i] = key;
    if (d != 3) differ_by_draw += values != a1.at({s, 3, i}) ? 1 : 0;
  }
  CHECK(differ_by_step > n / 2);
  CHECK(differ_by_draw > 5);
  // The data set itself is untouched (evaluation reads it as it is).
  for (std::int64_t i = 0; i < n * 32; ++i) {
    REQUIRE(data.features[static_cast<std::size_t>(i)] == static_cast<float>(i % 97 + 1));
  }
  // augment = none hands the view back unchanged.
  quadra::data::BatchSampler sampler(n, options);
  const auto& draws = sampler.next(plan);
  quadra::data::GatherBuffer buffer;
  std::vector<float> scratch;
  const auto view = quadra::data::gather(data, draws.draw(0), buffer);
  CHECK(quadra::data::augment_draw(parse_augmentation("none"), data, draws, 0, view, 7, scratch)
            .features == view.features);
  CHECK(scratch.empty());
  CHECK(quadra::data::augmentation_stream(draws, 2) == 2);
}
