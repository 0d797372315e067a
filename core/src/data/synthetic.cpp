// Seeded synthetic data sets. See loaders.hpp. They use quadra::data::Rng, not <random>, so
// that a seed gives the same samples with every standard library.

#include <cmath>
#include <numbers>

#include <fmt/format.h>

#include <quadra/data/loaders.hpp>
#include <quadra/data/random.hpp>
#include <quadra/error.hpp>

namespace quadra::data {

namespace {

void check_common(const char* what, std::int64_t n, double noise) {
  if (n < 0) throw Error(fmt::format("{}: n = {}; expected n >= 0", what, n));
  if (!(noise >= 0) || !std::isfinite(noise)) {
    throw Error(fmt::format("{}: noise = {}; expected a finite number >= 0", what, noise));
  }
}

Dataset two_dimensional(std::string name, std::int64_t n, std::int64_t classes) {
  Dataset data;
  data.name = std::move(name);
  data.task = Task::kClassification;
  data.sample_shape = {2};
  data.features.resize(static_cast<std::size_t>(n) * 2);
  data.labels.resize(static_cast<std::size_t>(n));
  data.num_classes = classes;
  return data;
}

}  // namespace

Dataset make_moons(std::int64_t n, double noise, std::uint64_t seed, std::string dataset_name) {
  check_common("moons", n, noise);
  Dataset data = two_dimensional(std::move(dataset_name), n, 2);
  Rng rng(seed);
  for (std::int64_t i = 0; i < n; ++i) {
    const auto k = static_cast<std::size_t>(i);
    const double t = std::numbers::pi * rng.uniform();
    const std::int64_t cls = i % 2;
    double x = std::cos(t);
    double y = std::sin(t);
    if (cls == 1) {
      x = 1.0 - x;
      y = 0.5 - y;
    }
    x += noise * rng.normal();
    y += noise * rng.normal();
    data.features[2 * k] = static_cast<float>(x);
    data.features[2 * k + 1] = static_cast<float>(y);
    data.labels[k] = cls;
  }
  return data;
}

Dataset make_spirals(std::int64_t n, std::int64_t arms, double noise, std::uint64_t seed,
                     std::string dataset_name) {
  check_common("spirals", n, noise);
  if (arms < 2) throw Error(fmt::format("spirals: arms = {}; expected at least 2", arms));
  Dataset data = two_dimensional(std::move(dataset_name), n, arms);
  Rng rng(seed);
  for (std::int64_t i = 0; i < n; ++i) {
    const auto k = static_cast<std::size_t>(i);
    const std::int64_t arm = i % arms;
    const double r = rng.uniform();
    // One full turn from the centre outwards; arms are rotated copies of each other.
    const double angle = 2.0 * std::numbers::pi * (static_cast<double>(arm) / static_cast<double>(arms) + r);
    data.features[2 * k] = static_cast<float>(r * std::cos(angle) + noise * rng.normal());
    data.features[2 * k + 1] = static_cast<float>(r * std::sin(angle) + noise * rng.normal());
    data.labels[k] = arm;
  }
  return data;
}

Dataset make_sinusoid(std::int64_t n, double noise, std::uint64_t seed, std::string dataset_name) {
  check_common("sinusoid", n, noise);
  Dataset data;
  data.name = std::move(dataset_name);
  data.task = Task::kRegression;
  data.sample_shape = {1};
  data.target_dim = 1;
  data.features.resize(static_cast<std::size_t>(n));
  data.targets.resize(static_cast<std::size_t>(n));
  Rng rng(seed);
  for (std::size_t k = 0; k < static_cast<std::size_t>(n); ++k) {
    const double x = std::numbers::pi * (2.0 * rng.uniform() - 1.0);
    data.features[k] = static_cast<float>(x);
    data.targets[k] = static_cast<float>(std::sin(x) + noise * rng.normal());
  }
  return data;
}

}  // namespace quadra::data
