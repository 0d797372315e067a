// Source strings, train/validation splits and normalisation.

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>

#include <quadra/data/source.hpp>
#include <quadra/error.hpp>
#include <quadra/io/npy.hpp>

#include "data_test_util.hpp"

using Catch::Contains;
using quadra::data::Dataset;
using quadra::data::Normalization;
using quadra::data::parse_data_source;
using quadra::data::SplitMode;

namespace {

/// n samples whose single feature is the sample's index, labels index % 3.
Dataset indexed(std::int64_t n) {
  Dataset d;
  d.name = "idx/train";
  d.sample_shape = {1};
  d.num_classes = 3;
  for (std::int64_t i = 0; i < n; ++i) {
    d.features.push_back(static_cast<float>(i));
    d.labels.push_back(i % 3);
  }
  return d;
}

std::vector<std::int64_t> ids(const Dataset& d) {
  std::vector<std::int64_t> out;
  for (float v : d.features) out.push_back(static_cast<std::int64_t>(v));
  return out;
}

}  // namespace

TEST_CASE("source strings", "[data][source]") {
  auto s = parse_data_source("fashion-mnist");
  CHECK(s.kind == "fashion-mnist");
  CHECK(s.paths.empty());
  s = parse_data_source("fashion-mnist:/data/fm");
  CHECK(s.paths == std::vector<std::string>{"/data/fm"});
  s = parse_data_source("csv:train.csv,test.csv,label=species,header=yes");
  CHECK(s.paths == std::vector<std::string>{"train.csv", "test.csv"});
  CHECK(s.options.at("label") == "species");
  CHECK(s.options.at("header") == "yes");
  s = parse_data_source("moons:n=200,noise=0.05,seed=7");
  CHECK(s.options.size() == 3);
  s = parse_data_source("npy:X.npy,y.npy,task=regression");
  CHECK(s.paths.size() == 2);
  CHECK(parse_data_source("spirals").kind == "spirals");
  CHECK(parse_data_source("sinusoid:test=0").options.at("test") == "0");
  CHECK(parse_data_source("cifar10:/data/cifar").paths == std::vector<std::string>{"/data/cifar"});
  s = parse_data_source("cifar100:/data/c100,label=coarse");
  CHECK(s.paths == std::vector<std::string>{"/data/c100"});
  CHECK(s.options.at("label") == "coarse");
  CHECK(std::string(quadra::data::data_source_help()).find("csv:FILE") != std::string::npos);
}

TEST_CASE("source string errors", "[data][source][errors]") {
  REQUIRE_THROWS_WITH(parse_data_source("cifar:/x"),
                      Contains("data source 'cifar:/x': unknown kind 'cifar'; expected one of: "
                               "fashion-mnist, mnist, idx, cifar10, cifar100, csv, npy, moons, "
                               "spirals, sinusoid"));
  REQUIRE_THROWS_WITH(parse_data_source("moons:n=10,nosie=0.1"),
                      Contains("data source 'moons:n=10,nosie=0.1': unknown option 'nosie' for moons; "
                               "expected n, test, noise, seed"));
  REQUIRE_THROWS_WITH(parse_data_source("idx:a"),
                      Contains("data source 'idx:a': idx takes idx:IMAGES,LABELS[,TEST_IMAGES,TEST_LABELS], "
                               "found 1 path"));
  REQUIRE_THROWS_WITH(parse_data_source("moons:x.csv"),
                      Contains("data source 'moons:x.csv': moons takes no paths, found 1 path"));
  REQUIRE_THROWS_WITH(parse_data_source("csv:a.csv,label=y,b.csv"),
                      Contains("path 'b.csv' after an option; paths come first"));
  REQUIRE_THROWS_WITH(parse_data_source("csv:a.csv,,label=y"), Contains("empty argument"));
  REQUIRE_THROWS_WITH(parse_data_source("moons:n=5,n=6"), Contains("option 'n' is given twice"));
  REQUIRE_THROWS_WITH(parse_data_source("moons:n=ten"),
                      Contains("data source 'moons:n=ten': n=ten is not valid; expected an integer >= 1"));
  REQUIRE_THROWS_WITH(parse_data_source("spirals:arms=1"),
                      Contains("arms=1 is not valid; expected an integer >= 2"));
  REQUIRE_THROWS_WITH(
      parse_data_source("spirals:arms=1000000000"),
      Contains("data source 'spirals:arms=1000000000': arms=1000000000 is not valid; "
               "expected an integer from 2 to 100000 (one class per arm)"));
  REQUIRE_THROWS_WITH(parse_data_source("sinusoid:noise=-0.5"),
                      Contains("noise=-0.5 is not valid; expected a finite number >= 0"));
  REQUIRE_THROWS_WITH(parse_data_source("csv:a.csv,header=maybe"),
                      Contains("header=maybe is not valid; expected one of: auto, yes, no"));
  REQUIRE_THROWS_WITH(parse_data_source("npy:x,y,task=ranking"),
                      Contains("task=ranking is not valid; expected one of: auto, classification, regression"));
  REQUIRE_THROWS_WITH(quadra::data::load_data("idx:a,b,c", {}),
                      Contains("idx takes 2 or 4 files (train images and labels, then optionally test "
                               "images and labels), found 3"));
  REQUIRE_THROWS_WITH(quadra::data::parse_split_mode("first"),
                      Contains("split 'first' is not valid; expected random or last"));
  REQUIRE_THROWS_WITH(quadra::data::parse_normalization("zscore"),
                      Contains("normalization 'zscore' is not valid; expected none, minmax, "
                               "standardize, standardize-channel or standardize-global"));
  REQUIRE_THROWS_WITH(parse_data_source("cifar100:/d,label=both"),
                      Contains("data source 'cifar100:/d,label=both': label=both is not valid; "
                               "expected one of: fine, coarse"));
  REQUIRE_THROWS_WITH(parse_data_source("cifar10:/d,label=fine"),
                      Contains("unknown option 'label' for cifar10; expected none"));
  REQUIRE_THROWS_WITH(parse_data_source("cifar10"),
                      Contains("data source 'cifar10': cifar10 takes cifar10:DIR, found 0 paths"));
}

TEST_CASE("train/validation splits are disjoint, complete and seeded", "[data][split]") {
  SECTION("random") {
    auto [train, val] = quadra::data::split_train_validation(indexed(100), 20, SplitMode::kRandom, 1);
    CHECK(train.size() == 80);
    CHECK(val.size() == 20);
    CHECK(train.name == "idx/train");
    CHECK(val.name == "idx/validation");
    auto a = ids(train);
    auto b = ids(val);
    CHECK(std::is_sorted(a.begin(), a.end()));  // file order kept
    CHECK(std::is_sorted(b.begin(), b.end()));
    std::vector<std::int64_t> both;
    std::set_union(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(both));
    std::vector<std::int64_t> all(100);
    std::iota(all.begin(), all.end(), 0);
    CHECK(both == all);
    std::vector<std::int64_t> common;
    std::set_intersection(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(common));
    CHECK(common.empty());
    for (std::size_t i = 0; i < val.labels.size(); ++i) CHECK(val.labels[i] == b[i] % 3);
    // Seeded.
    auto again = quadra::data::split_train_validation(indexed(100), 20, SplitMode::kRandom, 1);
    CHECK(ids(again.second) == b);
    auto other = quadra::data::split_train_validation(indexed(100), 20, SplitMode::kRandom, 2);
    CHECK(ids(other.second) != b);
    CHECK(b != std::vector<std::int64_t>(all.end() - 20, all.end()));
  }
  SECTION("last") {
    auto [train, val] = quadra::data::split_train_validation(indexed(10), 3, SplitMode::kLast, 1);
    CHECK(ids(train) == std::vector<std::int64_t>{0, 1, 2, 3, 4, 5, 6});
    CHECK(ids(val) == std::vector<std::int64_t>{7, 8, 9});
    CHECK(train.labels.size() == 7);
  }
  SECTION("sizes") {
    REQUIRE_THROWS_WITH(quadra::data::split_train_validation(indexed(10), 10, SplitMode::kLast, 1),
                        Contains("cannot take a validation split of 10 samples from the 10 samples of "
                                 "'idx/train'; expected 0 <= size < 10"));
    auto [train, val] = quadra::data::split_train_validation(indexed(10), 0, SplitMode::kRandom, 1);
    CHECK(train.size() == 10);
    CHECK(val.empty());
  }
}

TEST_CASE("load_data on synthetic sources", "[data][source]") {
  quadra::data::LoadOptions o;
  const auto s = quadra::data::load_data("moons:n=600,test=300,seed=4", o);
  CHECK(s.train.size() == 500);  // one sixth to validation
  CHECK(s.validation.size() == 100);
  CHECK(s.test.size() == 300);
  CHECK(s.source == "moons:n=600,test=300,seed=4");
  CHECK(s.test.name == "moons/test");
  // The test set is an independent draw, not a copy of training points.
  CHECK(s.test.features[0] != s.train.features[0]);
  const auto again = quadra::data::load_data("moons:n=600,test=300,seed=4", o);
  CHECK(again.train.features == s.train.features);
  CHECK(again.validation.labels == s.validation.labels);
  const auto no_test = quadra::data::load_data("sinusoid:n=60,test=0", o);
  CHECK(no_test.test.empty());
  CHECK(no_test.test.task == quadra::data::Task::kRegression);
  CHECK(no_test.test.target_dim == 1);
  o.validation_size = 7;
  CHECK(quadra::data::load_data("spirals:n=60,arms=4", o).validation.size() == 7);
  CHECK(quadra::data::load_data("spirals:n=60,arms=4", o).train.num_classes == 4);
}

TEST_CASE("normalisation uses training statistics for every split", "[data][normalize]") {
  quadra::data::LoadOptions o;
  o.normalization = Normalization::kStandardize;
  const auto s = quadra::data::load_data("moons:n=1200,noise=0.2,seed=1", o);
  for (std::size_t j = 0; j < 2; ++j) {
    double sum = 0, sq = 0;
    for (std::int64_t i = 0; i < s.train.size(); ++i) sum += s.train.sample(i)[j];
    const double mean = sum / static_cast<double>(s.train.size());
    for (std::int64_t i = 0; i < s.train.size(); ++i) sq += std::pow(s.train.sample(i)[j] - mean, 2);
    CHECK(mean == Approx(0).margin(1e-5));
    CHECK(std::sqrt(sq / static_cast<double>(s.train.size())) == Approx(1).epsilon(1e-5));
  }
  // Validation and test were transformed with the training shift and scale.
  o.normalization = Normalization::kNone;
  const auto raw = quadra::data::load_data("moons:n=1200,noise=0.2,seed=1", o);
  for (std::size_t k = 0; k < raw.test.features.size(); ++k) {
    const std::size_t j = k % 2;
    CHECK(s.test.features[k] == (raw.test.features[k] - s.transform.shift[j]) * s.transform.scale[j]);
  }
  CHECK(s.validation.features[3] ==
        (raw.validation.features[3] - s.transform.shift[1]) * s.transform.scale[1]);

  o.normalization = Normalization::kMinMax;
  const auto m = quadra::data::load_data("moons:n=1200,noise=0.2,seed=1", o);
  CHECK(*std::min_element(m.train.features.begin(), m.train.features.end()) == Approx(0).margin(1e-6));
  CHECK(*std::max_element(m.train.features.begin(), m.train.features.end()) == Approx(1).epsilon(1e-6));

  o.normalization = Normalization::kStandardizeGlobal;
  const auto g = quadra::data::load_data("moons:n=1200,noise=0.2,seed=1", o);
  CHECK(g.transform.shift.size() == 1);
  const auto summary = quadra::data::summarize_features(g.train);
  CHECK(summary.mean == Approx(0).margin(1e-5));
  CHECK(summary.std == Approx(1).epsilon(1e-5));
}

TEST_CASE("a constant feature normalises to zero, not NaN", "[data][normalize]") {
  Dataset d = indexed(5);
  d.sample_shape = {2};
  d.features = {1, 7, 2, 7, 3, 7, 4, 7, 5, 7};
  d.labels.resize(5);
  for (auto kind : {Normalization::kMinMax, Normalization::kStandardize}) {
    const auto t = quadra::data::FeatureTransform::fit(d, kind);
    Dataset copy = d;
    t.apply(copy);
    for (std::int64_t i = 0; i < copy.size(); ++i) CHECK(copy.sample(i)[1] == 0.0f);
    copy.validate();
  }
}

TEST_CASE("load_data on files: csv with a test file, npy pairs", "[data][source]") {
  quadra::test::ScratchDir dir("source");
  dir.write("train.csv", "a,b,kind\n1,2,x\n3,4,y\n5,6,x\n7,8,y\n9,10,x\n11,12,y\n");
  dir.write("test.csv", "a,b,kind\n1,1,y\n");
  const std::string spec = "csv:" + (dir.path() / "train.csv").string() + "," +
                           (dir.path() / "test.csv").string() + ",label=kind";
  quadra::data::LoadOptions o;
  o.split = SplitMode::kLast;
  const auto s = quadra::data::load_data(spec, o);
  CHECK(s.train.size() == 5);
  CHECK(s.validation.size() == 1);
  CHECK(s.test.labels == std::vector<std::int64_t>{1});
  CHECK(s.test.class_names == std::vector<std::string>{"x", "y"});

  dir.write("numeric.csv", "a,b,kind\n1,2,0\n3,4,1\n");
  REQUIRE_THROWS_WITH(quadra::data::load_data("csv:" + (dir.path() / "numeric.csv").string() + "," +
                                                  (dir.path() / "test.csv").string(),
                                              o),
                      Contains((dir.path() / "test.csv").string() +
                               ": the labels are text (y, ...) but the training file " +
                               (dir.path() / "numeric.csv").string() + " has integer class labels"));

  const std::vector<float> x{1, 2, 3, 4, 5, 6};
  const std::vector<std::int64_t> y{0, 1, 2};
  const std::vector<std::int64_t> yt{4};
  quadra::io::write_npy(dir.path() / "X.npy", quadra::io::NpyArray::from<float>({3, 2}, x.data()));
  quadra::io::write_npy(dir.path() / "y.npy", quadra::io::NpyArray::from<std::int64_t>({3}, y.data()));
  quadra::io::write_npy(dir.path() / "Xt.npy", quadra::io::NpyArray::from<float>({1, 2}, x.data()));
  quadra::io::write_npy(dir.path() / "yt.npy", quadra::io::NpyArray::from<std::int64_t>({1}, yt.data()));
  const std::string d = dir.path().string() + "/";
  const auto n = quadra::data::load_data("npy:" + d + "X.npy," + d + "y.npy," + d + "Xt.npy," + d + "yt.npy", o);
  // The classes cover both files.
  CHECK(n.train.num_classes == 5);
  CHECK(n.test.num_classes == 5);
  const std::vector<float> x3{1, 2, 3};
  quadra::io::write_npy(dir.path() / "X3.npy", quadra::io::NpyArray::from<float>({1, 3}, x3.data()));
  REQUIRE_THROWS_WITH(
      quadra::data::load_data("npy:" + d + "X.npy," + d + "y.npy," + d + "X3.npy," + d + "yt.npy", o),
      Contains("the training samples have shape (2) and classification targets, but the test samples "
               "have shape (3) and classification targets"));
}

TEST_CASE("the sources are one table: no kind falls through to another", "[data][source]") {
  quadra::data::DataSource hand_made;
  hand_made.kind = "cifar";
  hand_made.spec = "cifar";
  REQUIRE_THROWS_WITH(quadra::data::load_data(hand_made, {}),
                      "data source 'cifar': unknown kind 'cifar'");
  const std::string help = quadra::data::data_source_help();
  for (const char* kind : {"fashion-mnist[:DIR]", "mnist:DIR", "idx:IMAGES,LABELS", "cifar10:DIR",
                           "cifar100:DIR[,label=fine|coarse]", "csv:FILE",
                           "npy:X.npy,y.npy", "moons[:", "spirals[:", "sinusoid[:"}) {
    CHECK_THAT(help, Contains(std::string("\n  ") + kind));
  }
  CHECK_THAT(help,
             Contains("  mnist:DIR                 the MNIST file layout in DIR (raw or .gz)\n"));
  CHECK_THAT(help, Contains("  cifar10:DIR               CIFAR-10's binary version in DIR (or "
                            "DIR/cifar-10-batches-bin):\n"
                            "                            data_batch_1..5.bin (training) and "
                            "test_batch.bin\n"));
  CHECK_THAT(help,
             Contains("\n                            any MNIST-style IDX pair (raw or gzip)\n"));
  CHECK_THAT(help,
             Contains("header=auto: the first line is a header only when none of its cells is "
                      "a number"));
}
