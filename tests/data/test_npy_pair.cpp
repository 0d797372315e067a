// X.npy / y.npy pairs.

#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include <quadra/data/loaders.hpp>
#include <quadra/error.hpp>
#include <quadra/io/npy.hpp>

#include "data_test_util.hpp"

using Catch::Contains;
using quadra::data::NpyTask;
using quadra::data::Task;
using quadra::io::NpyArray;

TEST_CASE("uint8 images and integer labels", "[data][npy]") {
  std::vector<std::uint8_t> x(2 * 1 * 2 * 2);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<std::uint8_t>(i * 30);
  const std::vector<std::int64_t> y{3, 1};
  const auto d = quadra::data::npy_dataset(NpyArray::from<std::uint8_t>({2, 1, 2, 2}, x.data()), "X",
                                           NpyArray::from<std::int64_t>({2}, y.data()), "y",
                                           NpyTask::kAuto, "npy/train");
  CHECK(d.task == Task::kClassification);
  CHECK(d.sample_shape == std::vector<std::int64_t>{1, 2, 2});
  CHECK(d.features[1] == 30.0f / 255.0f);
  CHECK(d.features[7] == 210.0f / 255.0f);
  CHECK(d.labels == y);
  CHECK(d.num_classes == 4);
  d.validate();
}

TEST_CASE("float features and regression targets", "[data][npy]") {
  const std::vector<double> x{0.5, -1, 2, 4, 8, 16};
  const std::vector<float> y{1, 2, 3, 4, 5, 6};
  const auto d = quadra::data::npy_dataset(NpyArray::from<double>({3, 2}, x.data()), "X",
                                           NpyArray::from<float>({3, 2}, y.data()), "y", NpyTask::kAuto,
                                           "r");
  CHECK(d.task == Task::kRegression);
  CHECK(d.sample_shape == std::vector<std::int64_t>{2});
  CHECK(d.features == std::vector<float>{0.5f, -1, 2, 4, 8, 16});
  CHECK(d.target_dim == 2);
  CHECK(d.targets == y);
  d.validate();
  // 1-d X is one feature per sample; float y can be forced to class labels.
  const std::vector<float> labels{1, 0, 2};
  const auto c = quadra::data::npy_dataset(NpyArray::from<double>({3}, x.data()), "X",
                                           NpyArray::from<float>({3}, labels.data()), "y",
                                           NpyTask::kClassification, "c");
  CHECK(c.sample_shape == std::vector<std::int64_t>{1});
  CHECK(c.labels == std::vector<std::int64_t>{1, 0, 2});
  // uint8 targets are values, not pixels: no 1/255.
  const std::vector<std::uint8_t> yb{7, 8, 9};
  const auto r = quadra::data::npy_dataset(NpyArray::from<double>({3}, x.data()), "X",
                                           NpyArray::from<std::uint8_t>({3}, yb.data()), "y",
                                           NpyTask::kRegression, "r");
  CHECK(r.targets == std::vector<float>{7, 8, 9});
}

TEST_CASE("X.npy / y.npy files", "[data][npy]") {
  quadra::test::ScratchDir dir("npy_pair");
  const std::vector<float> x{1, 2, 3, 4};
  const std::vector<std::int32_t> y{0, 1};
  quadra::io::write_npy(dir.path() / "X.npy", NpyArray::from<float>({2, 2}, x.data()));
  quadra::io::write_npy(dir.path() / "y.npy", NpyArray::from<std::int32_t>({2}, y.data()));
  const auto d = quadra::data::load_npy_pair(dir.path() / "X.npy", dir.path() / "y.npy", NpyTask::kAuto, "p");
  CHECK(d.features == x);
  CHECK(d.labels == std::vector<std::int64_t>{0, 1});

  const std::vector<std::int32_t> y3{0, 1, 1};
  quadra::io::write_npy(dir.path() / "y3.npy", NpyArray::from<std::int32_t>({3}, y3.data()));
  REQUIRE_THROWS_WITH(
      quadra::data::load_npy_pair(dir.path() / "X.npy", dir.path() / "y3.npy", NpyTask::kAuto, "p"),
      Contains("sample counts disagree: " + (dir.path() / "X.npy").string() +
               " has shape (2, 2) (2 samples) but " + (dir.path() / "y3.npy").string() +
               " has shape (3,) (3 samples)"));
}

TEST_CASE("NumPy pair errors", "[data][npy][errors]") {
  const std::vector<double> x{1, std::numeric_limits<double>::quiet_NaN(), 3, 4};
  const std::vector<std::int64_t> y{0, 1};
  const std::vector<std::int64_t> bad_y{0, -2};
  const NpyArray good_y = NpyArray::from<std::int64_t>({2}, y.data());
  REQUIRE_THROWS_WITH(quadra::data::npy_dataset(NpyArray::from<double>({2, 2}, x.data()), "X.npy",
                                                good_y, "y.npy", NpyTask::kAuto, "n"),
                      Contains("X.npy: element 1 (index (0, 1)) is nan; expected finite numbers"));
  const std::vector<double> big{1, 1e300, 3, 4};
  REQUIRE_THROWS_WITH(
      quadra::data::npy_dataset(NpyArray::from<double>({2, 2}, big.data()), "X.npy", good_y,
                                "y.npy", NpyTask::kAuto, "n"),
      Contains("X.npy: element 1 (index (0, 1)) is 1e+300, which overflows float32"));
  const std::vector<double> ok{1, 2, 3, 4};
  const NpyArray xs = NpyArray::from<double>({2, 2}, ok.data());
  REQUIRE_THROWS_WITH(quadra::data::npy_dataset(xs, "X.npy", NpyArray::from<std::int64_t>({2}, bad_y.data()),
                                                "y.npy", NpyTask::kAuto, "n"),
                      Contains("y.npy: label 1 is -2; expected a class index (an integer >= 0)"));
  REQUIRE_THROWS_WITH(quadra::data::npy_dataset(xs, "X.npy", NpyArray::from<double>({}, ok.data()), "y.npy",
                                                NpyTask::kAuto, "n"),
                      Contains("y.npy: expected targets of shape (N,) or (N, T), found a 0-d array"));
  REQUIRE_THROWS_WITH(quadra::data::npy_dataset(NpyArray::from<double>({}, ok.data()), "X.npy", good_y,
                                                "y.npy", NpyTask::kAuto, "n"),
                      Contains("X.npy: expected features of shape (N, ...), found a 0-d array"));
  REQUIRE_THROWS_WITH(quadra::data::npy_dataset(xs, "X.npy", NpyArray::from<std::int64_t>({2, 2}, std::vector<std::int64_t>{0, 1, 0, 1}.data()),
                                                "y.npy", NpyTask::kAuto, "n"),
                      Contains("y.npy: class labels must have shape (N,) or (N, 1), found (2, 2)"));
  const std::vector<double> halves{0.5, 1};
  REQUIRE_THROWS_WITH(quadra::data::npy_dataset(xs, "X.npy", NpyArray::from<double>({2}, halves.data()),
                                                "y.npy", NpyTask::kClassification, "n"),
                      Contains("y.npy: label 0 is 0.5; expected a class index (an integer >= 0); use "
                               "task=regression"));
  const NpyArray no_y = NpyArray::from<std::int64_t>({0}, y.data());
  REQUIRE_THROWS_WITH(quadra::data::npy_dataset(NpyArray::from<double>({0, 1 << 21, 1 << 21}, ok.data()),
                                                "X.npy", no_y, "y.npy", NpyTask::kAuto, "n"),
                      Contains("X.npy: sample shape (2097152, 2097152) has more than 2^40 values per sample"));
  REQUIRE_THROWS_WITH(quadra::data::npy_dataset(NpyArray::from<double>({2, 0}, ok.data()), "X.npy", good_y,
                                                "y.npy", NpyTask::kAuto, "n"),
                      Contains("X.npy: features of shape (2, 0) have no values per sample"));
}

TEST_CASE("NumPy pairs: non-finite targets and huge labels", "[data][npy][errors]") {
  const std::vector<double> x{1, 2, 3, 4};
  const NpyArray xs = NpyArray::from<double>({4, 1}, x.data());
  const std::vector<float> targets{0, 1, std::numeric_limits<float>::infinity(), 3};
  REQUIRE_THROWS_WITH(
      quadra::data::npy_dataset(xs, "X.npy", NpyArray::from<float>({4}, targets.data()), "y.npy",
                                NpyTask::kAuto, "n"),
      "y.npy: element 2 is inf; expected finite numbers");
  const std::vector<std::int64_t> labels{0, 1, 1000000000, 2};
  REQUIRE_THROWS_WITH(
      quadra::data::npy_dataset(xs, "X.npy", NpyArray::from<std::int64_t>({4}, labels.data()),
                                "y.npy", NpyTask::kAuto, "n"),
      "y.npy: label 2 is 1000000000; expected a class index below 100000 (labels must be class "
      "indices 0..C-1 of at most 100000 classes); is this a regression target? use "
      "task=regression");
  const std::vector<std::int64_t> largest{0, 99999, 1, 2};
  const auto d = quadra::data::npy_dataset(
      xs, "X.npy", NpyArray::from<std::int64_t>({4}, largest.data()), "y.npy", NpyTask::kAuto, "n");
  CHECK(d.num_classes == quadra::data::kMaxClasses);
}
