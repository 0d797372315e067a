// Bias diagnostics on a problem whose truth is exact: a linear softmax model on a seeded
// Gaussian mixture held in memory, whose full-batch GGN and gradient the test forms densely.

#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <Eigen/Eigenvalues>

#include <quadra/data/sampler.hpp>
#include <quadra/diagnostics/bias.hpp>
#include <quadra/error.hpp>
#include <quadra/parallel.hpp>

namespace {

using quadra::Index;
using quadra::Matrix;
using quadra::Vector;
namespace dg = quadra::diagnostics;

constexpr Index kFeatures = 5;
constexpr Index kClasses = 3;
constexpr Index kParameters = kClasses * kFeatures + kClasses;  // linear(3): W then b

/// Three anisotropic Gaussian classes in 5 dimensions, seeded.
quadra::data::Dataset mixture(std::int64_t n, std::uint64_t seed) {
  quadra::data::Dataset set;
  set.name = "mixture/train";
  set.sample_shape = {kFeatures};
  set.num_classes = kClasses;
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  const double scale[kFeatures] = {2.0, 1.0, 0.7, 0.4, 0.2};
  for (std::int64_t i = 0; i < n; ++i) {
    const auto label = static_cast<std::int64_t>(i % kClasses);
    set.labels.push_back(label);
    for (Index f = 0; f < kFeatures; ++f) {
      const double mean = f == label ? 1.0 : 0.0;
      set.features.push_back(static_cast<float>(mean + scale[f] * normal(rng)));
    }
  }
  return set;
}

/// J_n of the linear model: d f_o / d W_oi = x_i, d f_o / d b_o = 1.
Matrix<double> jacobian(const quadra::data::Dataset& set, std::int64_t n) {
  Matrix<double> j = Matrix<double>::Zero(kClasses, kParameters);
  const auto x = set.sample(n);
  for (Index o = 0; o < kClasses; ++o) {
    for (Index i = 0; i < kFeatures; ++i) j(o, o * kFeatures + i) = x[static_cast<std::size_t>(i)];
    j(o, kClasses * kFeatures + o) = 1.0;
  }
  return j;
}

/// Dense mean GGN and gradient over `set` (or over the samples `indices` of it).
struct Dense {
  Matrix<double> ggn = Matrix<double>::Zero(kParameters, kParameters);
  Vector<double> gradient = Vector<double>::Zero(kParameters);
};

Dense dense(const quadra::data::Dataset& set, const Vector<double>& params) {
  Dense out;
  for (std::int64_t n = 0; n < set.size(); ++n) {
    const Matrix<double> j = jacobian(set, n);
    Vector<double> p = (j * params).array().exp();
    p /= p.sum();
    const Matrix<double> lambda = Matrix<double>(p.asDiagonal()) - p * p.transpose();
    Vector<double> residual = p;
    residual(set.labels[static_cast<std::size_t>(n)]) -= 1.0;
    out.ggn += j.transpose() * lambda * j;
    out.gradient += j.transpose() * residual;
  }
  out.ggn /= static_cast<double>(set.size());
  out.gradient /= static_cast<double>(set.size());
  return out;
}

/// The model, data and plugins every test shares.
struct Fixture {
  quadra::data::Dataset train = mixture(3000, 7);
  quadra::nn::Network network{"linear(3)", quadra::nn::TensorShape{{kFeatures}}};
  Vector<double> params = 2.0 * network.initial_parameters<double>(3);
  quadra::PluginHost host;

  Fixture() { quadra::throw_if_error(host.load_path(BUILTIN_PLUGIN_DIR)); }

  dg::Problem<double> problem(std::string curvature = "ggn") const {
    return dg::Problem<double>{.network = network, .params = params, .train = train,
                               .loss = quadra::nn::Loss::kCrossEntropy, .host = host,
                               .curvature = std::move(curvature), .curvature_options = {},
                               .chunk_size = 700};  // does not divide 3000: a short last chunk
  }
};

const Fixture& fixture() {
  static const Fixture f;
  return f;
}

dg::BiasReport run_bias(const dg::BiasOptions& options) {
  auto result = dg::measure_bias(fixture().problem(), options);
  REQUIRE(result.is_ok());
  return std::move(result).value();
}

}  // namespace

TEST_CASE("t quantiles match tables", "[bias][statistics]") {
  CHECK(dg::student_t_quantile(0.975, 9) == Approx(2.262157163).epsilon(1e-9));
  CHECK(dg::student_t_quantile(0.975, 1) == Approx(12.70620474).epsilon(1e-9));
  CHECK(dg::student_t_quantile(0.975, 2) == Approx(4.302652730).epsilon(1e-9));
  CHECK(dg::student_t_quantile(0.975, 4) == Approx(2.776445105).epsilon(1e-9));
  CHECK(dg::student_t_quantile(0.975, 30) == Approx(2.042272456).epsilon(1e-9));
  CHECK(dg::student_t_quantile(0.95, 5) == Approx(2.015048373).epsilon(1e-9));
  CHECK(dg::student_t_quantile(0.995, 10) == Approx(3.169272673).epsilon(1e-9));
  CHECK(dg::student_t_quantile(0.9995, 1) == Approx(636.6192488).epsilon(1e-9));
  CHECK(dg::student_t_quantile(0.975, 1e7) == Approx(1.959964).epsilon(1e-6));
  CHECK(dg::student_t_quantile(0.025, 9) == Approx(-2.262157163).epsilon(1e-9));
  CHECK(dg::student_t_quantile(0.5, 3) == Approx(0.0).margin(1e-14));
  CHECK_THROWS_AS(dg::student_t_quantile(1.0, 3), quadra::Error);
  CHECK_THROWS_AS(dg::student_t_quantile(0.9, 0.0), quadra::Error);
}

TEST_CASE("mean intervals and quartiles", "[bias][statistics]") {
  const std::vector<double> x = {1, 2, 3, 4, 5, std::nan("")};
  const dg::MeanInterval m = dg::mean_interval(x);
  CHECK(m.count == 5);
  CHECK(m.mean == Approx(3.0));
  CHECK(m.sd == Approx(std::sqrt(2.5)));
  CHECK(m.high - m.mean == Approx(2.776445105 * std::sqrt(2.5) / std::sqrt(5.0)));
  CHECK(m.contains(3.0));
  CHECK(std::isnan(dg::mean_interval(std::vector<double>{1.0}).low));
  const dg::Quartiles q = dg::quartiles(std::vector<double>{4, 1, 3, 2});  // NumPy: 1.75 2.5 3.25
  CHECK(q.q1 == Approx(1.75));
  CHECK(q.median == Approx(2.5));
  CHECK(q.q3 == Approx(3.25));
  const dg::Quartiles inf = dg::quartiles(std::vector<double>{1, INFINITY, 2, std::nan("")});
  CHECK(inf.count == 3);
  CHECK(inf.median == Approx(2.0));
}

TEST_CASE("full-batch measurements equal the dense GGN and gradient", "[bias]") {
  const Fixture& f = fixture();
  const Dense truth = dense(f.train, f.params);
  std::mt19937_64 rng(11);
  std::normal_distribution<double> normal;
  Matrix<double> u(kParameters, 4);
  for (Index i = 0; i < u.size(); ++i) u.data()[i] = normal(rng);
  auto full = dg::measure_on_training_set(f.problem(), u);
  REQUIRE(full.is_ok());
  for (Index k = 0; k < u.cols(); ++k) {
    CHECK(full.value().curvatures(k) == Approx(u.col(k).dot(truth.ggn * u.col(k))).epsilon(1e-10));
    CHECK(full.value().slopes(k) == Approx(truth.gradient.dot(u.col(k))).epsilon(1e-10));
  }
}

TEST_CASE("independent curvature is unbiased, same-batch curvature is inflated at the top", "[bias]") {
  dg::BiasOptions o;
  o.batch_size = 16;
  o.top = 6;
  o.repeats = 40;
  o.seed = 5;
  const dg::BiasReport r = run_bias(o);
  REQUIRE(r.repeats.size() == 40);
  int independent_ok = 0;
  int full_inside = 0;
  for (Index k = 0; k < o.top; ++k) {
    const auto& indep = r.row(k, dg::Quantity::kCurvature, dg::Estimator::kIndependent);
    independent_ok += indep.relative_bias.contains(0.0) ? 1 : 0;
    full_inside += indep.value.contains(r.row(k, dg::Quantity::kCurvature, dg::Estimator::kFullBatch).value.mean);
  }
  CHECK(independent_ok >= o.top - 1);
  CHECK(full_inside >= o.top - 1);
  const auto& top_independent = r.row(0, dg::Quantity::kCurvature, dg::Estimator::kIndependent);
  CHECK(top_independent.relative_bias.contains(0.0));
  const auto& top_same = r.row(0, dg::Quantity::kCurvature, dg::Estimator::kSameBatch);
  CHECK(top_same.relative_bias.low > 0.0);
  // Eigen directions: the same-batch curvature is the B1 eigenvalue.
  for (const dg::BiasRepeat& rep : r.repeats) {
    const auto& same = rep.by_estimator[static_cast<std::size_t>(dg::Estimator::kSameBatch)];
    CHECK(same.curvatures(0) == Approx(rep.ritz_values(0)).epsilon(1e-6));
    CHECK((same.slopes.array() <= 0.0).all());
  }
}

TEST_CASE("along CG directions the same-batch slope is overstated, the independent one is not",
          "[bias]") {
  dg::BiasOptions o;
  o.batch_size = 16;
  o.top = 3;
  o.repeats = 40;
  o.seed = 9;
  o.directions = dg::DirectionSource::kCg;
  const dg::BiasReport r = run_bias(o);
  // u_1 = -g_B1 / |g_B1|: same-batch slope -|g_B1|, steeper than the full batch on average.
  CHECK(r.row(0, dg::Quantity::kSlope, dg::Estimator::kSameBatch).relative_bias.high < 0.0);
  CHECK(r.row(0, dg::Quantity::kSlope, dg::Estimator::kIndependent).relative_bias.contains(0.0));
}

TEST_CASE("nominal 95% intervals cover a fixed direction's curvature", "[bias]") {
  const Fixture& f = fixture();
  const Dense truth = dense(f.train, f.params);
  std::mt19937_64 rng(3);
  std::normal_distribution<double> normal;
  Matrix<double> u(kParameters, 1);
  for (Index i = 0; i < u.size(); ++i) u.data()[i] = normal(rng);
  u.col(0).normalize();
  const double exact = u.col(0).dot(truth.ggn * u.col(0));
  quadra::BatchPlan plan;
  plan.draws = {quadra::BatchDraw{1.0, false}};
  plan.draw_of_role.fill(0);
  int covered = 0;
  constexpr int kRuns = 200;
  for (int run = 0; run < kRuns; ++run) {
    quadra::data::SamplerOptions options;
    options.batch_size = 16;
    options.seed = static_cast<std::uint64_t>(run);
    quadra::data::BatchSampler sampler(f.train.size(), options);
    std::vector<double> estimates;
    for (int repeat = 0; repeat < 10; ++repeat) {
      auto m = dg::measure_on_samples(f.problem(), sampler.next(plan).draw(0).indices(), u);
      REQUIRE(m.is_ok());
      estimates.push_back(m.value().curvatures(0));
    }
    covered += dg::mean_interval(estimates).contains(exact) ? 1 : 0;
  }
  CHECK(covered >= 180);  // 90%
  CHECK(covered <= 198);  // 99%
}

TEST_CASE("the same seed gives the same report with 1 or 2 threads", "[bias]") {
  dg::BiasOptions o;
  o.batch_size = 32;
  o.top = 3;
  o.repeats = 3;
  std::string one, two;
  {
    const quadra::ThreadLimit limit(1);
    one = dg::bias_csv(run_bias(o));
  }
  {
    const quadra::ThreadLimit limit(2);
    two = dg::bias_csv(run_bias(o));
  }
  CHECK(one == two);
  o.seed = 1;
  CHECK(dg::bias_csv(run_bias(o)) != one);
}

TEST_CASE("bias.csv and spectrum.csv have one row per direction x estimator and per repeat",
          "[bias]") {
  dg::BiasOptions o;
  o.batch_size = 32;
  o.top = 4;
  o.repeats = 3;
  const dg::BiasReport r = run_bias(o);
  const std::string bias = dg::bias_csv(r);
  const std::string spectrum = dg::spectrum_csv(r);
  CHECK(bias.rfind("direction,quantity,estimator,repeats,mean,sd,ci_low,ci_high,rel_bias,", 0) == 0);
  CHECK(std::count(bias.begin(), bias.end(), '\n') == 1 + 4 * 2 * 3);
  CHECK(spectrum.rfind("repeat,direction,same_batch,independent,full_batch\n", 0) == 0);
  CHECK(std::count(spectrum.begin(), spectrum.end(), '\n') == 1 + 3 * 4);
}

TEST_CASE("bad options throw errors that name the value", "[bias]") {
  const dg::Problem<double> p = fixture().problem();
  dg::BiasOptions o;
  o.top = kParameters + 1;
  CHECK_THROWS_WITH(dg::measure_bias(p, o), Catch::Contains("top = 19 directions; expected 1 to 18"));
  o.top = 2;
  o.repeats = 1;
  CHECK_THROWS_WITH(dg::measure_bias(p, o), Catch::Contains("repeats = 1; expected at least 2"));
  o.repeats = 2;
  o.batch_size = 1501;
  CHECK_THROWS_WITH(dg::measure_bias(p, o), Catch::Contains("two disjoint batches need 3002 samples"));
  o.batch_size = 16;
  CHECK_THROWS_WITH(dg::measure_bias(fixture().problem("ggm"), o),
                    Catch::Contains("unknown curvature plugin 'ggm'"));
  dg::NewtonStepOptions n;
  n.debiasing = {"rayleig"};
  CHECK_THROWS_WITH(dg::newton_step_experiment(p, n), Catch::Contains("unknown debiasing plugin 'rayleig'"));
  n.debiasing = {};
  n.lambdas = {0.0};
  CHECK_THROWS_WITH(dg::newton_step_experiment(p, n), Catch::Contains("lambda = 0; expected a finite number > 0"));
}

TEST_CASE("newton-step CSV has its shape, same-batch is CG, large damping makes variants agree",
          "[bias][newton]") {
  dg::NewtonStepOptions o;
  o.batch_size = 32;
  o.repeats = 3;
  o.lambdas = {1e-2, 1e4};
  o.cg_iterations = 6;
  o.eval_every = 2;
  o.debiasing = {"same-batch", "cg-line-search", "cg-projected"};
  auto result = dg::newton_step_experiment(fixture().problem(), o);
  REQUIRE(result.is_ok());
  const dg::NewtonStepReport& r = result.value();
  CHECK(r.iterations == std::vector<Index>{0, 2, 4, 6});
  REQUIRE(r.rows.size() == 2 * 4 * 4);
  const std::string csv = dg::newton_step_csv(r);
  std::istringstream lines(csv);
  std::string line;
  std::getline(lines, line);
  CHECK(line == "lambda,variant,iteration,repeats,loss_q1,loss_median,loss_q3,quadratic_q1,"
                "quadratic_median,quadratic_q3");
  int count = 0;
  while (std::getline(lines, line)) {
    ++count;
    CHECK(std::count(line.begin(), line.end(), ',') == 9);
  }
  CHECK(count == 32);
  for (const dg::NewtonStepRow& row : r.rows) {
    CHECK(row.loss.count == 3);
    if (row.iteration == 0) CHECK(row.loss.median == Approx(r.loss_at_start));
    if (row.iteration == 0) CHECK(row.quadratic.median == 0.0);
  }
  const auto find = [&](double lambda, const std::string& variant, Index k) {
    for (const dg::NewtonStepRow& row : r.rows) {
      if (row.lambda == lambda && row.variant == variant && row.iteration == k) return row;
    }
    FAIL("no row");
    return dg::NewtonStepRow{};
  };
  for (Index k : r.iterations) {
    CHECK(find(1e-2, "same-batch", k).loss.median == Approx(find(1e-2, "biased", k).loss.median).epsilon(1e-9));
    const double biased = find(1e4, "biased", k).loss.median;
    for (const std::string& v : r.variants) {
      CHECK(find(1e4, v, k).loss.median == Approx(biased).epsilon(1e-4));
    }
  }
  // A real step at small damping: the full-batch loss goes down.
  CHECK(find(1e-2, "biased", 6).loss.median < r.loss_at_start);
  CHECK(find(1e-2, "cg-line-search", 6).loss.median < r.loss_at_start);
}
