// Dataset: layout, gathers, subsets, invariants, summaries.

#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include <quadra/data/dataset.hpp>
#include <quadra/error.hpp>

using Catch::Contains;
using quadra::data::Dataset;
using quadra::data::Task;

namespace {

Dataset small() {
  Dataset d;
  d.name = "small";
  d.sample_shape = {1, 1, 2};
  d.features = {0, 1, 10, 11, 20, 21};
  d.labels = {1, 0, 1};
  d.num_classes = 2;
  return d;
}

}  // namespace

TEST_CASE("layout, gathers and subsets", "[data][dataset]") {
  const Dataset d = small();
  CHECK(d.size() == 3);
  CHECK(d.feature_dim() == 2);
  CHECK(d.sample(2)[1] == 21);
  CHECK(d.rows(1, 3).size() == 4);
  CHECK(d.rows(1, 3).data() == d.features.data() + 2);
  const std::vector<std::int64_t> idx{2, 0};
  std::vector<float> f(4);
  std::vector<std::int64_t> l(2);
  d.gather_features(idx, f.data());
  d.gather_labels(idx, l.data());
  CHECK(f == std::vector<float>{20, 21, 0, 1});
  CHECK(l == std::vector<std::int64_t>{1, 1});
  const Dataset s = d.subset(idx, "sub");
  CHECK(s.name == "sub");
  CHECK(s.features == f);
  CHECK(s.labels == l);
  CHECK(s.sample_shape == d.sample_shape);
  CHECK(d.class_counts() == std::vector<std::int64_t>{1, 2});
  CHECK(std::string(quadra::data::to_string(Task::kRegression)) == "regression");

  Dataset r;
  r.name = "r";
  r.task = Task::kRegression;
  r.sample_shape = {1};
  r.features = {1, 2, 3};
  r.target_dim = 2;
  r.targets = {1, 2, 3, 4, 5, 6};
  r.validate();
  std::vector<float> t(2);
  const std::vector<std::int64_t> one{1};
  r.gather_targets(one, t.data());
  CHECK(t == std::vector<float>{3, 4});
  CHECK(r.subset(one, "r1").targets == t);
  const auto summary = quadra::data::summarize_targets(r);
  CHECK(summary.min == 1);
  CHECK(summary.max == 6);
  CHECK(summary.mean == 3.5);
  CHECK(summary.std == Approx(std::sqrt(35.0 / 12.0)));
}

TEST_CASE("validate names the data set and the sample", "[data][dataset][errors]") {
  Dataset d = small();
  d.validate();
  d.features[3] = std::numeric_limits<float>::quiet_NaN();
  REQUIRE_THROWS_WITH(d.validate(), Contains("data set 'small': sample 1, feature 1 is nan; expected a "
                                             "finite number"));
  d = small();
  d.labels[2] = 2;
  REQUIRE_THROWS_WITH(d.validate(), Contains("data set 'small': sample 2 has label 2; expected a class in [0, 2)"));
  d = small();
  d.labels.pop_back();
  REQUIRE_THROWS_WITH(d.validate(), Contains("data set 'small': 3 samples but 2 labels"));
  d = small();
  d.features.pop_back();
  REQUIRE_THROWS_WITH(d.validate(), Contains("5 feature values are not a whole number of samples of 2 features"));
  d = small();
  d.sample_shape = {0, 2};
  REQUIRE_THROWS_WITH(d.validate(), Contains("data set 'small': sample shape (0, 2) has a dimension < 1"));
  d = small();
  d.num_classes = quadra::data::kMaxClasses + 1;
  REQUIRE_THROWS_WITH(d.validate(),
                      Contains("data set 'small': classification with 100001 classes; "
                               "expected 1 to 100000"));
  d = small();
  d.class_names = {"a"};
  REQUIRE_THROWS_WITH(d.validate(), Contains("1 class names for 2 classes"));
  Dataset r;
  r.name = "r";
  r.task = Task::kRegression;
  r.sample_shape = {1};
  r.features = {1, 2};
  r.target_dim = 1;
  r.targets = {0, std::numeric_limits<float>::infinity()};
  REQUIRE_THROWS_WITH(r.validate(), Contains("data set 'r': sample 1, target 0 is inf"));
  r.targets = {0};
  REQUIRE_THROWS_WITH(r.validate(), Contains("data set 'r': 2 samples but 1 target values of dimension 1"));
}
