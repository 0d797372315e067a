// Classification metrics, predictive entropy and AUROC: hand-computed cases, calibration of a
// synthetic perfectly calibrated predictor, a brute-force AUROC and every error.

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <numbers>
#include <vector>

#include <Eigen/Core>

#include <quadra/data/random.hpp>
#include <quadra/error.hpp>
#include <quadra/laplace/metrics.hpp>

using Catch::Contains;
using quadra::laplace::auroc;
using quadra::laplace::classification_metrics;
using quadra::laplace::predictive_entropy;

namespace {

/// Probabilities from rows of sample-major values (one initializer row per sample).
Eigen::MatrixXd columns(std::initializer_list<std::initializer_list<double>> samples) {
  const auto n = static_cast<Eigen::Index>(samples.size());
  const auto c = static_cast<Eigen::Index>(samples.begin()->size());
  Eigen::MatrixXd p(c, n);
  Eigen::Index j = 0;
  for (const auto& sample : samples) {
    Eigen::Index i = 0;
    for (const double v : sample) p(i++, j) = v;
    ++j;
  }
  return p;
}

/// The bin holding the one sample of a one-sample metric.
int occupied_bin(const quadra::laplace::ClassificationMetrics& m) {
  for (std::size_t b = 0; b < m.bins.size(); ++b) {
    if (m.bins[b].count > 0) return static_cast<int>(b);
  }
  return -1;
}

}  // namespace

TEST_CASE("hand-computed metrics with edges, empty bins and ties", "[laplace][metrics]") {
  // sample  p                 y  argmax  conf  bin (B = 5)
  //   0     (0.7, 0.2, 0.1)   0  0 ok    0.7   3
  //   1     (0.2, 0.6, 0.2)   2  1 no    0.6   3  (interior edge 3/5 -> bin 3)
  //   2     (0.4, 0.4, 0.2)   1  0 no    0.4   2  (tie -> lowest index; edge 2/5 -> bin 2)
  //   3     (0, 0, 1)         2  2 ok    1.0   4  (1.0 -> last bin)
  //   4     (0.5, 0.25, 0.25) 0  0 ok    0.5   2
  // accuracy 3/5; NLL = -ln(0.7 * 0.2 * 0.4 * 1 * 0.5) / 5 = -ln(0.028) / 5
  // Brier: 0.14 + 1.04 + 0.56 + 0 + 0.375 = 2.115, / 5 = 0.423
  // bin 2: n 2, acc 1/2, conf 0.45, gap 0.05; bin 3: n 2, acc 1/2, conf 0.65, gap 0.15;
  // bin 4: n 1, acc 1, conf 1, gap 0; bins 0, 1 empty.
  // ECE = 2/5 0.05 + 2/5 0.15 = 0.08; MCE = 0.15.
  const Eigen::MatrixXd p = columns(
      {{0.7, 0.2, 0.1}, {0.2, 0.6, 0.2}, {0.4, 0.4, 0.2}, {0.0, 0.0, 1.0}, {0.5, 0.25, 0.25}});
  const std::vector<std::int64_t> y{0, 2, 1, 2, 0};
  const auto m = classification_metrics(p, y, 5);
  CHECK(m.count == 5);
  CHECK(m.accuracy == Approx(0.6));
  CHECK(m.nll == Approx(-std::log(0.028) / 5));
  CHECK(m.brier == Approx(0.423));
  CHECK(m.ece == Approx(0.08));
  CHECK(m.mce == Approx(0.15));
  REQUIRE(m.bins.size() == 5);
  const std::vector<std::int64_t> counts{0, 0, 2, 2, 1};
  for (std::size_t b = 0; b < 5; ++b) {
    INFO("bin " << b);
    CHECK(m.bins[b].count == counts[b]);
    CHECK(m.bins[b].lower == Approx(0.2 * static_cast<double>(b)));
    CHECK(m.bins[b].upper == Approx(0.2 * static_cast<double>(b + 1)));
  }
  CHECK(m.bins[0].accuracy == 0);  // empty bins report zeros
  CHECK(m.bins[0].confidence == 0);
  CHECK(m.bins[2].accuracy == Approx(0.5));
  CHECK(m.bins[2].confidence == Approx(0.45));
  CHECK(m.bins[3].accuracy == Approx(0.5));
  CHECK(m.bins[3].confidence == Approx(0.65));
  CHECK(m.bins[4].accuracy == Approx(1.0));
  CHECK(m.bins[4].confidence == Approx(1.0));

  // One bin: acc 0.6, mean confidence (0.7 + 0.6 + 0.4 + 1 + 0.5) / 5 = 0.64.
  const auto one = classification_metrics(p, y, 1);
  CHECK(one.ece == Approx(0.04));
  CHECK(one.mce == Approx(0.04));
  CHECK(one.bins[0].count == 5);
}

TEST_CASE("a confidence on an interior edge b/B lands in bin b", "[laplace][metrics]") {
  for (int bins = 2; bins <= 60; ++bins) {
    for (int b = (bins + 1) / 2; b < bins; ++b) {
      const double conf = static_cast<double>(b) / bins;
      const auto m =
          classification_metrics(columns({{conf, 1.0 - conf}}), std::vector<std::int64_t>{0}, bins);
      INFO(b << " / " << bins);
      CHECK(occupied_bin(m) == b);
    }
  }
  // fl(1/49) * 49 rounds below 1, so a plain floor would put 1/49 into bin 0. A uniform column
  // of 49 classes also ties everywhere: argmax is class 0.
  Eigen::MatrixXd uniform = Eigen::MatrixXd::Constant(49, 1, 1.0 / 49);
  const auto m = classification_metrics(uniform, std::vector<std::int64_t>{0}, 49);
  CHECK(occupied_bin(m) == 1);
  CHECK(m.accuracy == 1);
  CHECK(classification_metrics(uniform, std::vector<std::int64_t>{1}, 49).accuracy == 0);
}

TEST_CASE("a perfectly calibrated predictor has ECE near 0", "[laplace][metrics]") {
  // Labels drawn from the predicted probabilities themselves.
  const int n = 20000;
  const int classes = 3;
  quadra::data::Rng rng(quadra::data::derive_seed(11, 0x63616c69));
  Eigen::MatrixXd p(classes, n);
  std::vector<std::int64_t> y(n);
  for (int i = 0; i < n; ++i) {
    for (int c = 0; c < classes; ++c) p(c, i) = std::exp(2.0 * rng.normal());
    p.col(i) /= p.col(i).sum();
    const double u = rng.uniform();
    double cumulative = 0;
    y[static_cast<std::size_t>(i)] = classes - 1;
    for (int c = 0; c < classes; ++c) {
      cumulative += p(c, i);
      if (u < cumulative) {
        y[static_cast<std::size_t>(i)] = c;
        break;
      }
    }
  }
  const auto m = classification_metrics(p, y, 15);
  CHECK(m.count == n);
  CHECK(m.ece < 0.02);
  double confidence = 0;
  for (int i = 0; i < n; ++i) confidence += p.col(i).maxCoeff();
  CHECK(std::abs(m.accuracy - confidence / n) < 0.02);

  // The same predictions sharpened to one-hot are overconfident: ECE = 1 - accuracy.
  Eigen::MatrixXd hard = Eigen::MatrixXd::Zero(classes, n);
  for (int i = 0; i < n; ++i) {
    Eigen::Index best = 0;
    p.col(i).maxCoeff(&best);
    hard(best, i) = 1;
  }
  const auto h = classification_metrics(hard, y, 15);
  CHECK(h.ece == Approx(1 - h.accuracy));
  CHECK(h.ece > 0.1);
}

TEST_CASE("NLL clamps a zero probability of the label", "[laplace][metrics]") {
  // Sample 0: p_y = 1 (loss 0); sample 1: p_y = 0, clamped to 1e-300 (loss 300 ln 10).
  const auto m =
      classification_metrics(columns({{1.0, 0.0}, {1.0, 0.0}}), std::vector<std::int64_t>{0, 1});
  CHECK(std::isfinite(m.nll));
  CHECK(m.nll == Approx(300 * std::log(10.0) / 2));
  CHECK(m.brier == Approx(1.0));  // (0 + 2) / 2
  CHECK(m.accuracy == Approx(0.5));
  CHECK(m.bins.size() == 15);
}

TEST_CASE("predictive entropy", "[laplace][metrics]") {
  Eigen::MatrixXd p(4, 3);
  p.col(0).setConstant(0.25);
  p.col(1) << 0, 0, 1, 0;
  p.col(2) << 0.5, 0.5, 0, 0;
  const Eigen::VectorXd h = predictive_entropy(p);
  REQUIRE(h.size() == 3);
  CHECK(h(0) == Approx(std::log(4.0)));
  CHECK(h(1) == 0);
  CHECK(h(2) == Approx(std::numbers::ln2));
}

TEST_CASE("AUROC: extremes, ties and a hand-computed case", "[laplace][metrics]") {
  const std::vector<double> low{0, 1, 2};
  const std::vector<double> high{3, 4};
  CHECK(auroc(low, high) == 1.0);
  CHECK(auroc(high, low) == 0.0);
  CHECK(auroc(std::vector<double>{1, 1}, std::vector<double>{1, 1, 1}) == 0.5);
  // Positive 0.4 beats 0.1 and ties two 0.4s: 1 + 2/2 = 2; 0.9 beats all four: 4; 0.3 beats
  // 0.1: 1. U = 7 of 3 * 4 pairs.
  const std::vector<double> neg{0.1, 0.4, 0.4, 0.8};
  const std::vector<double> pos{0.4, 0.9, 0.3};
  CHECK(auroc(neg, pos) == Approx(7.0 / 12.0));
  CHECK(auroc(pos, neg) == Approx(5.0 / 12.0));  // the complement
}

TEST_CASE("AUROC agrees with the pairwise count", "[laplace][metrics]") {
  quadra::data::Rng rng(5);
  for (int trial = 0; trial < 20; ++trial) {
    const auto n = static_cast<std::size_t>(1 + rng.below(60));
    const auto m = static_cast<std::size_t>(1 + rng.below(60));
    std::vector<double> neg(n);
    std::vector<double> pos(m);
    // A coarse grid gives many ties; positives are shifted so that the AUC is not trivial.
    for (double& v : neg) v = std::floor(10 * rng.uniform()) / 10;
    for (double& v : pos) v = std::floor(10 * rng.uniform() + 3 * rng.uniform()) / 10;
    double pairs = 0;
    for (const double a : neg) {
      for (const double b : pos) pairs += b > a ? 1.0 : (b == a ? 0.5 : 0.0);
    }
    INFO("trial " << trial);
    CHECK(auroc(neg, pos) == Approx(pairs / static_cast<double>(n * m)).epsilon(1e-12));
  }
}

TEST_CASE("metric errors name the offending value", "[laplace][metrics]") {
  const Eigen::MatrixXd p = columns({{0.5, 0.5}, {0.25, 0.75}, {1.0, 0.0}});
  const std::vector<std::int64_t> two{0, 1};
  REQUIRE_THROWS_AS(classification_metrics(p, two), quadra::Error);
  REQUIRE_THROWS_WITH(classification_metrics(p, two),
                      Contains("3 probability columns") && Contains("2 labels"));
  REQUIRE_THROWS_WITH(classification_metrics(p, std::vector<std::int64_t>{0, 5, 1}),
                      Contains("sample 1 has label 5") && Contains("[0, 2)"));
  REQUIRE_THROWS_WITH(classification_metrics(p, std::vector<std::int64_t>{0, 1, -1}),
                      Contains("label -1"));
  const std::vector<std::int64_t> three{0, 1, 0};
  REQUIRE_THROWS_WITH(classification_metrics(p, three, 0),
                      Contains("0 calibration bins") && Contains("at least 1"));
  REQUIRE_THROWS_WITH(classification_metrics(p, three, -3), Contains("-3"));
  REQUIRE_THROWS_WITH(
      classification_metrics(columns({{0.5, 0.5}, {0.5, 0.75}}), std::vector<std::int64_t>{0, 0}),
      Contains("sample 1 sum to 1.25") && Contains("expected 1"));
  REQUIRE_THROWS_WITH(
      classification_metrics(columns({{-0.25, 1.25}}), std::vector<std::int64_t>{0}),
      Contains("sample 0, class 0") && Contains("-0.25") && Contains(">= 0"));
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  REQUIRE_THROWS_WITH(
      classification_metrics(columns({{0.5, 0.5}, {0.5, nan}}), std::vector<std::int64_t>{0, 0}),
      Contains("class 1 has probability nan"));
  REQUIRE_THROWS_WITH(classification_metrics(columns({{inf, 0.0}}), std::vector<std::int64_t>{0}),
                      Contains("inf"));

  const std::vector<double> some{0.1, 0.2};
  const std::vector<double> none;
  REQUIRE_THROWS_AS(auroc(none, some), quadra::Error);
  REQUIRE_THROWS_WITH(auroc(none, some), Contains("0 negative") && Contains("at least one"));
  REQUIRE_THROWS_WITH(auroc(some, none), Contains("0 positive"));
  REQUIRE_THROWS_WITH(auroc(std::vector<double>{0.1, nan}, some),
                      Contains("negative score 1 is nan"));
  REQUIRE_THROWS_WITH(auroc(some, std::vector<double>{-inf}), Contains("positive score 0 is -inf"));
}

TEST_CASE("no samples give zero metrics and laid-out bins", "[laplace][metrics]") {
  const auto m = classification_metrics(Eigen::MatrixXd(3, 0), std::vector<std::int64_t>{}, 4);
  CHECK(m.count == 0);
  CHECK(m.accuracy == 0);
  CHECK(m.ece == 0);
  REQUIRE(m.bins.size() == 4);
  CHECK(m.bins[3].upper == 1.0);
  CHECK(m.bins[1].lower == 0.25);
}
