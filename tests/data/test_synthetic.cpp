// Seeded synthetic data sets.

#include <catch2/catch.hpp>

#include <cmath>
#include <numbers>

#include <quadra/data/loaders.hpp>
#include <quadra/data/random.hpp>
#include <quadra/error.hpp>

using Catch::Contains;

TEST_CASE("the random stream is portable and unbiased enough", "[data][random]") {
  // SplitMix64's reference outputs for seed 0 (Vigna's splitmix64.c).
  quadra::data::Rng rng(0);
  CHECK(rng.next() == 0xe220a8397b1dcdafULL);
  CHECK(rng.next() == 0x6e789e6aa1b965f4ULL);
  CHECK(rng.next() == 0x06c45d188009454fULL);
  quadra::data::Rng a(42);
  std::vector<int> counts(6, 0);
  double sum = 0, sq = 0;
  const int n = 60000;
  for (int i = 0; i < n; ++i) {
    ++counts[static_cast<std::size_t>(a.below(6))];
    const double z = a.normal();
    sum += z;
    sq += z * z;
  }
  for (int c : counts) CHECK(std::abs(c - n / 6) < 400);  // ~4.5 sigma
  CHECK(std::abs(sum / n) < 0.02);
  CHECK(std::abs(sq / n - 1) < 0.03);
  std::vector<std::int64_t> v{0, 1, 2, 3, 4, 5, 6, 7};
  quadra::data::Rng s(7);
  quadra::data::shuffle(std::span<std::int64_t>(v), s);
  std::vector<std::int64_t> sorted = v;
  std::sort(sorted.begin(), sorted.end());
  CHECK(sorted == std::vector<std::int64_t>{0, 1, 2, 3, 4, 5, 6, 7});
  CHECK(v != sorted);
  CHECK(quadra::data::derive_seed(1, 2, 3) != quadra::data::derive_seed(1, 2, 4));
  CHECK(quadra::data::derive_seed(1, 2, 3) != quadra::data::derive_seed(2, 2, 3));
}

TEST_CASE("two moons", "[data][synthetic]") {
  const auto d = quadra::data::make_moons(1000, 0.0, 5, "moons/train");
  CHECK(d.size() == 1000);
  CHECK(d.sample_shape == std::vector<std::int64_t>{2});
  CHECK(d.num_classes == 2);
  CHECK(d.class_counts() == std::vector<std::int64_t>{500, 500});
  d.validate();
  // Without noise every point lies on its half circle.
  for (std::int64_t i = 0; i < d.size(); ++i) {
    const double x = d.sample(i)[0];
    const double y = d.sample(i)[1];
    if (d.labels[static_cast<std::size_t>(i)] == 0) {
      CHECK(std::hypot(x, y) == Approx(1.0).epsilon(1e-6));
      CHECK(y >= -1e-6);
    } else {
      CHECK(std::hypot(1.0 - x, 0.5 - y) == Approx(1.0).epsilon(1e-6));
      CHECK(y <= 0.5 + 1e-6);
    }
  }
  // Seeded: the same seed gives the same points, another seed others.
  CHECK(quadra::data::make_moons(100, 0.1, 5, "a").features ==
        quadra::data::make_moons(100, 0.1, 5, "b").features);
  CHECK(quadra::data::make_moons(100, 0.1, 5, "a").features !=
        quadra::data::make_moons(100, 0.1, 6, "b").features);
}

TEST_CASE("spirals", "[data][synthetic]") {
  const auto d = quadra::data::make_spirals(900, 3, 0.0, 1, "spirals");
  CHECK(d.num_classes == 3);
  CHECK(d.class_counts() == std::vector<std::int64_t>{300, 300, 300});
  for (std::int64_t i = 0; i < d.size(); ++i) {
    const double r = std::hypot(d.sample(i)[0], d.sample(i)[1]);
    CHECK(r <= 1.0 + 1e-6);
    // On arm k the angle is 2 pi (k / 3 + r): recover k from the point.
    const double angle = std::atan2(d.sample(i)[1], d.sample(i)[0]);
    const double turns = angle / (2 * std::numbers::pi) - r;
    const double arm = std::fmod(std::fmod(turns * 3, 3.0) + 3.0, 3.0);
    const double k = static_cast<double>(d.labels[static_cast<std::size_t>(i)]);
    if (r > 1e-3) CHECK(std::min(std::abs(arm - k), 3 - std::abs(arm - k)) < 1e-3);
  }
  REQUIRE_THROWS_WITH(quadra::data::make_spirals(10, 1, 0.1, 0, "s"),
                      Contains("spirals: arms = 1; expected at least 2"));
}

TEST_CASE("noisy sinusoid", "[data][synthetic]") {
  const auto clean = quadra::data::make_sinusoid(500, 0.0, 3, "sin");
  CHECK(clean.task == quadra::data::Task::kRegression);
  CHECK(clean.target_dim == 1);
  for (std::int64_t i = 0; i < clean.size(); ++i) {
    const double x = clean.features[static_cast<std::size_t>(i)];
    CHECK(std::abs(x) <= std::numbers::pi);
    CHECK(clean.targets[static_cast<std::size_t>(i)] == Approx(std::sin(x)).margin(1e-6));
  }
  const auto noisy = quadra::data::make_sinusoid(20000, 0.5, 3, "sin");
  double sq = 0;
  for (std::int64_t i = 0; i < noisy.size(); ++i) {
    const double r = noisy.targets[static_cast<std::size_t>(i)] - std::sin(noisy.features[static_cast<std::size_t>(i)]);
    sq += r * r;
  }
  CHECK(std::sqrt(sq / 20000) == Approx(0.5).epsilon(0.03));
  REQUIRE_THROWS_WITH(quadra::data::make_sinusoid(10, -1, 0, "s"),
                      Contains("sinusoid: noise = -1; expected a finite number >= 0"));
  REQUIRE_THROWS_WITH(quadra::data::make_moons(-1, 0.1, 0, "m"), Contains("moons: n = -1; expected n >= 0"));
}
