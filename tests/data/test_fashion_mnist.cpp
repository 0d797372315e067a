// The real Fashion-MNIST from Debian's dataset-fashion-mnist (installed by scripts/setup.sh).

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <set>

#include <quadra/data/loaders.hpp>
#include <quadra/data/source.hpp>

TEST_CASE("Fashion-MNIST: counts, classes and pixel statistics", "[data][fashion-mnist]") {
  const auto data = quadra::data::load_fashion_mnist();
  const auto& train = data.train;
  const auto& test = data.test;
  REQUIRE(train.size() == 60000);
  REQUIRE(test.size() == 10000);
  CHECK(train.sample_shape == std::vector<std::int64_t>{1, 28, 28});
  CHECK(test.sample_shape == std::vector<std::int64_t>{1, 28, 28});
  CHECK(train.num_classes == 10);
  CHECK(train.class_names == quadra::data::fashion_mnist_class_names());
  CHECK(train.class_names.front() == "T-shirt/top");
  // The label histogram: exactly balanced.
  CHECK(train.class_counts() == std::vector<std::int64_t>(10, 6000));
  CHECK(test.class_counts() == std::vector<std::int64_t>(10, 1000));
  // The first labels of each file (checked against numpy on the same files).
  CHECK(std::vector<std::int64_t>(train.labels.begin(), train.labels.begin() + 10) ==
        std::vector<std::int64_t>{9, 0, 0, 3, 0, 2, 7, 2, 5, 5});
  CHECK(std::vector<std::int64_t>(test.labels.begin(), test.labels.begin() + 10) ==
        std::vector<std::int64_t>{9, 2, 1, 1, 6, 1, 4, 6, 5, 7});
  const auto s = quadra::data::summarize_features(train);
  CHECK(s.count == 60000 * 784);
  CHECK(s.min == 0.0);
  CHECK(s.max == 1.0);
  CHECK(s.mean == Approx(0.2860406021939525).epsilon(1e-9));
  CHECK(s.std == Approx(0.35302424451492237).epsilon(1e-6));
  const auto st = quadra::data::summarize_features(test);
  CHECK(st.mean == Approx(0.2868492807122849).epsilon(1e-6));
  train.validate();
  test.validate();
}

TEST_CASE("Fashion-MNIST splits: 50000 / 10000 / 10000, disjoint", "[data][fashion-mnist]") {
  for (auto mode : {quadra::data::SplitMode::kRandom, quadra::data::SplitMode::kLast}) {
    quadra::data::LoadOptions options;
    options.split = mode;
    options.seed = 3;
    const auto splits = quadra::data::load_data("fashion-mnist", options);
    CHECK(splits.train.size() == 50000);
    CHECK(splits.validation.size() == 10000);
    CHECK(splits.test.size() == 10000);
    CHECK(splits.train.name == "fashion-mnist/train");
    CHECK(splits.validation.name == "fashion-mnist/validation");
    // Disjoint and complete: the class counts of train and validation add up to the file's.
    const auto a = splits.train.class_counts();
    const auto b = splits.validation.class_counts();
    for (std::size_t c = 0; c < 10; ++c) CHECK(a[c] + b[c] == 6000);
    // Disjoint rows: no validation image equals a training image of the same position in the
    // file; check via the pixel sums' multiset, which is exact for these integer-valued sums.
    auto sums = [](const quadra::data::Dataset& d) {
      std::multiset<double> out;
      for (std::int64_t i = 0; i < d.size(); ++i) {
        double s = 0;
        for (float v : d.sample(i)) s += static_cast<double>(v) * 255.0;
        out.insert(std::round(s));
      }
      return out;
    };
    const auto all = quadra::data::load_fashion_mnist();
    auto expected = sums(all.train);
    auto got = sums(splits.train);
    const auto val = sums(splits.validation);
    got.insert(val.begin(), val.end());
    CHECK(got == expected);
    if (mode == quadra::data::SplitMode::kLast) {
      CHECK(std::equal(splits.validation.features.begin(), splits.validation.features.end(),
                       all.train.features.begin() + 50000 * 784));
      CHECK(splits.train.labels.front() == 9);
    }
  }
}
