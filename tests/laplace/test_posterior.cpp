// Laplace posteriors against dense float64 references on tiny networks: every structure's
// curvature, precision, log-determinant, function-space covariance and samples; the debiased
// eigenvalues; the evidence against brute-force integration; probit against many-sample MC;
// per-layer prior precisions against the dense evidence maximised by brute force.

#include <catch2/catch.hpp>

#include <cmath>
#include <functional>
#include <limits>
#include <numbers>
#include <string>
#include <vector>

#include <Eigen/Eigenvalues>

#include <quadra/data/random.hpp>
#include <quadra/error.hpp>
#include <quadra/laplace/posterior.hpp>
#include <quadra/laplace/predictive.hpp>
#include <quadra/parallel.hpp>

#include "posterior_test_utils.hpp"

namespace {

using namespace laplace_test;  // NOLINT(google-build-using-namespace)

}  // namespace

TEST_CASE("every structure's Laplace posterior matches its dense counterpart", "[laplace]") {
  const auto [spec, shape] =
      GENERATE(table<const char*, const char*>({{kMlp, "3"}, {kCnn, "1x4x4"}}));
  const auto structure =
      GENERATE(lp::Structure::kDiagonal, lp::Structure::kKfac, lp::Structure::kLowRank,
               lp::Structure::kFull, lp::Structure::kLastLayerFull);
  const auto subset = GENERATE(lp::Subset::kAll, lp::Subset::kLastLayer);
  INFO(spec << ", " << lp::to_string(structure) << ", subset " << lp::to_string(subset));
  const Problem prob(spec, nn::parse_shape(shape), 40, 3);
  lp::FitOptions o = options(structure);
  o.subset = subset;
  o.rank = 5;
  const lp::CurvatureModel model = lp::fit_curvature<double>(
      host(), prob.network, prob.params, nn::Loss::kCrossEntropy, prob.batch, nullptr, o);
  REQUIRE(model.range.size == lp::subset_range(prob.network, lp::effective_subset(o)).size);

  auto bound = prob.bind(prob.batch);
  const Matrix<double> ggn = dense_ggn(bound);
  const lp::ParameterRange r = model.range;
  const Matrix<double> c =
      dense_curvature(model, prob.p()).block(r.offset, r.offset, r.size, r.size);
  const Matrix<double> g = ggn.block(r.offset, r.offset, r.size, r.size);
  if (structure == lp::Structure::kDiagonal) {
    REQUIRE(max_abs_diff(c.diagonal(), g.diagonal()) <= 1e-12);
    REQUIRE(max_abs_diff(Matrix<double>(c.diagonal().asDiagonal()), c) == 0.0);
  } else if (structure == lp::Structure::kFull || structure == lp::Structure::kLastLayerFull) {
    REQUIRE(max_abs_diff(c, g) <= 1e-10);
  } else if (structure == lp::Structure::kLowRank) {
    // The top-5 eigenpairs of the GGN block.
    Eigen::SelfAdjointEigenSolver<Matrix<double>> eig(g);
    const Vector<double> top = eig.eigenvalues().tail(5).reverse();
    REQUIRE(max_abs_diff(model.eigen.front().values, top) <= 1e-6 * top(0));
  } else {
    // K-FAC: each block is S ⊗ A of the engine's type-2 factors.
    auto factors = bound.kfac_factors(nn::KfacType::kType2);
    for (const lp::KroneckerBlock& b : model.kronecker) {
      const auto f = std::find_if(factors.begin(), factors.end(),
                                  [&](const auto& x) { return x.layer == b.layer; });
      REQUIRE(f != factors.end());
      Eigen::SelfAdjointEigenSolver<Matrix<double>> ea(f->a), es(f->s);
      const Matrix<double> values = es.eigenvalues() * ea.eigenvalues().transpose();
      REQUIRE(max_abs_diff(values.cwiseMax(0.0), b.values) <=
              1e-12 * (1.0 + values.cwiseAbs().maxCoeff()));
    }
  }

  lp::Posterior post(model, prob.params, kN, 2.5);
  const Matrix<double> sigma = dense_covariance(post, prob.p());
  SECTION("log-determinant and evidence") {
    REQUIRE(post.log_det_precision() == Approx(dense_log_det(post, prob.p())).epsilon(1e-10));
    const double nll = 123.0;
    const double want = -nll - 0.5 * 2.5 * prob.params.segment(r.offset, r.size).squaredNorm() +
                        0.5 * static_cast<double>(r.size) * std::log(2.5) -
                        0.5 * dense_log_det(post, prob.p());
    REQUIRE(post.log_marginal_likelihood(nll) == Approx(want).epsilon(1e-10));
  }
  SECTION("function-space covariance J Σ Jᵀ on unseen inputs") {
    const Problem other(spec, nn::parse_shape(shape), 6, 99);
    check_functional_covariances(prob, post, other.batch);
  }
  SECTION("samples have covariance Σ and vanish outside the range") {
    quadra::data::Rng rng(5);
    const int draws = 20000;
    Matrix<double> second = Matrix<double>::Zero(prob.p(), prob.p());
    for (int k = 0; k < draws; ++k) {
      const Vector<double> d = post.sample_deviation(rng);
      REQUIRE(d.head(r.offset).isZero(0.0));
      REQUIRE(d.tail(prob.p() - r.offset - r.size).isZero(0.0));
      second += d * d.transpose();
    }
    second /= draws;
    // Monte-Carlo error of a second moment: about sqrt(2/draws) of the scale.
    const double scale = sigma.diagonal().maxCoeff();
    REQUIRE(max_abs_diff(second, sigma) <= 0.05 * scale);
  }
}

TEST_CASE("debiased eigenvalues are measured along bases chosen on the other set", "[laplace]") {
  const Problem prob(kMlp, nn::parse_shape("3"), 40, 3);
  const Problem second(kMlp, nn::parse_shape("3"), 30, 8);  // same network, other samples
  auto b2 = prob.bind(second.batch);
  const Matrix<double> g2 = dense_ggn(b2);

  SECTION("lowrank and full: Rayleigh quotients u'G2u") {
    for (auto structure : {lp::Structure::kLowRank, lp::Structure::kFull}) {
      lp::FitOptions o = options(structure);
      o.debiasing = lp::Debiasing::kIndependent;
      o.rank = 4;
      const auto same =
          lp::fit_curvature<double>(host(), prob.network, prob.params, nn::Loss::kCrossEntropy,
                                    prob.batch, nullptr, options(structure));
      const auto debiased = lp::fit_curvature<double>(
          host(), prob.network, prob.params, nn::Loss::kCrossEntropy, prob.batch, &second.batch, o);
      const lp::EigenBlock& b = debiased.eigen.front();
      const Vector<double> want = (b.basis.transpose() * g2 * b.basis).diagonal().cwiseMax(0.0);
      REQUIRE(max_abs_diff(b.values, want) <= 1e-10);
      // The bases are those of the first set.
      const lp::EigenBlock& s = same.eigen.front();
      REQUIRE(max_abs_diff((b.basis.transpose() * s.basis.leftCols(b.basis.cols())).cwiseAbs(),
                           Matrix<double>::Identity(b.basis.cols(), b.basis.cols())) <= 1e-6);
    }
  }
  SECTION("kfac per-sample: the exact GGN's Rayleigh quotient along q_S,j ⊗ q_A,i") {
    lp::FitOptions o = options(lp::Structure::kKfac);
    o.debiasing = lp::Debiasing::kIndependent;
    o.kfac_eigenvalues = lp::KfacEigenvalues::kPerSample;
    const auto model = lp::fit_curvature<double>(
        host(), prob.network, prob.params, nn::Loss::kCrossEntropy, prob.batch, &second.batch, o);
    for (const lp::KroneckerBlock& b : model.kronecker) {
      for (Index j = 0; j < b.out; ++j) {
        for (Index i = 0; i < b.cols(); ++i) {
          Vector<double> u = Vector<double>::Zero(prob.p());
          for (Index oo = 0; oo < b.out; ++oo) {
            for (Index k = 0; k < b.cols(); ++k) {
              const Index flat = k < b.in ? b.offset + oo * b.in + k : b.offset + b.out * b.in + oo;
              u(flat) = b.qs(oo, j) * b.qa(k, i);
            }
          }
          REQUIRE(b.values(j, i) == Approx(std::max(0.0, u.dot(g2 * u))).margin(1e-12));
        }
      }
    }
  }
  SECTION("kfac kronecker: factor-wise Rayleigh quotients of the second set's factors") {
    lp::FitOptions o = options(lp::Structure::kKfac);
    o.debiasing = lp::Debiasing::kIndependent;
    const auto model = lp::fit_curvature<double>(
        host(), prob.network, prob.params, nn::Loss::kCrossEntropy, prob.batch, &second.batch, o);
    const auto factors = b2.kfac_factors(nn::KfacType::kType2);
    for (const lp::KroneckerBlock& b : model.kronecker) {
      const auto f = std::find_if(factors.begin(), factors.end(),
                                  [&](const auto& x) { return x.layer == b.layer; });
      const Vector<double> a = (b.qa.transpose() * f->a * b.qa).diagonal();
      const Vector<double> s = (b.qs.transpose() * f->s * b.qs).diagonal();
      REQUIRE(max_abs_diff(b.values, (s * a.transpose()).cwiseMax(0.0)) <= 1e-12);
    }
  }
}

TEST_CASE("the Laplace evidence equals brute-force integration where Laplace is exact",
          "[laplace]") {
  // One weight, MSE loss, no bias: Σ_n ℓ_n(θ) = Σ_n (θ x_n - y_n)² is quadratic, so the Laplace
  // approximation of ∫ exp(-Σ ℓ_n) N(θ; 0, 1/τ) dθ is exact.
  nn::Network net("linear(1,bias=false)", nn::parse_shape("1"));
  const std::vector<double> x = {0.5, -1.0, 1.5, 2.0, -0.3};
  const std::vector<double> y = {0.2, -0.9, 1.1, 2.3, 0.1};
  const double tau = 0.7;
  double sxx = 0, sxy = 0;
  for (std::size_t n = 0; n < x.size(); ++n) {
    sxx += x[n] * x[n];
    sxy += x[n] * y[n];
  }
  const double theta = 2.0 * sxy / (2.0 * sxx + tau);  // mode of Σ ℓ + τ/2 θ²
  auto total_loss = [&](double t) {
    double s = 0;
    for (std::size_t n = 0; n < x.size(); ++n) s += (t * x[n] - y[n]) * (t * x[n] - y[n]);
    return s;
  };
  const double n = static_cast<double>(x.size());
  lp::CurvatureModel model;
  model.structure = lp::Structure::kFull;
  model.range = {0, 1};
  model.eigen.push_back(
      {{0, 1}, Matrix<double>::Identity(1, 1), Vector<double>::Constant(1, 2.0 * sxx / n)});
  lp::Posterior post(model, Vector<double>::Constant(1, theta), n, tau);
  // Brute force: the trapezoid rule over ±12 posterior standard deviations.
  const double sd = 1.0 / std::sqrt(2.0 * sxx + tau);
  double integral = 0;
  const int steps = 200000;
  const double h = 24.0 * sd / steps;
  for (int k = 0; k <= steps; ++k) {
    const double t = theta - 12.0 * sd + k * h;
    const double prior = std::sqrt(tau / (2.0 * std::numbers::pi)) * std::exp(-0.5 * tau * t * t);
    integral += (k == 0 || k == steps ? 0.5 : 1.0) * std::exp(-total_loss(t)) * prior * h;
  }
  // (The (2π)^{d/2} of the prior's density and of the Gaussian integral cancel.)
  REQUIRE(post.log_marginal_likelihood(total_loss(theta)) ==
          Approx(std::log(integral)).epsilon(1e-9));

  SECTION("maximising over τ finds the brute-force optimum") {
    const double best = lp::maximize_marginal_likelihood(post, total_loss(theta), 1e-4, 1e4);
    double brute_best = 0, brute_value = -1e300;
    for (int k = 0; k <= 80000; ++k) {
      const double t = std::exp(std::log(1e-4) + k * (std::log(1e8)) / 80000);
      post.set_prior_precision(t);
      const double v = post.log_marginal_likelihood(total_loss(theta));
      if (v > brute_value) {
        brute_value = v;
        brute_best = t;
      }
    }
    REQUIRE(best == Approx(brute_best).epsilon(1e-3));
  }
}

TEST_CASE(
    "probit agrees with many-sample GLM Monte Carlo; predictives are seeded and thread-independent",
    "[laplace]") {
  const Problem prob(kMlp, nn::parse_shape("3"), 40, 3);
  const auto model =
      lp::fit_curvature<double>(host(), prob.network, prob.params, nn::Loss::kCrossEntropy,
                                prob.batch, nullptr, options(lp::Structure::kKfac));
  lp::Posterior post(model, prob.params, kN, 20.0);
  nn::DatasetBatch<double> samples;
  samples.inputs.resize(3, 50);
  quadra::data::Rng rng(4);
  for (Index n = 0; n < 50; ++n) {
    for (Index f = 0; f < 3; ++f) samples.inputs(f, n) = static_cast<float>(rng.normal());
    samples.targets.labels.push_back(n % 3);
  }
  const quadra::data::Dataset test = as_dataset(samples, "test");
  lp::PredictiveOptions o;
  o.kind = lp::PredictiveKind::kProbit;
  const Matrix<double> probit = lp::predict<double>(prob.network, prob.params, &post, test, o);
  o.kind = lp::PredictiveKind::kGlmMc;
  o.samples = 20000;
  const Matrix<double> mc = lp::predict<double>(prob.network, prob.params, &post, test, o);
  // The probit approximation is close but not exact for softmax; MC error is ~0.004.
  REQUIRE(max_abs_diff(probit, mc) <= 0.03);
  SECTION("columns are distributions; probit on the MAP mean with Σ_f = 0 is the MAP softmax") {
    REQUIRE(((probit.colwise().sum().array() - 1.0).abs() < 1e-12).all());
    lp::Posterior tight(model, prob.params, kN, 1e12);
    o.kind = lp::PredictiveKind::kProbit;
    const Matrix<double> p = lp::predict<double>(prob.network, prob.params, &tight, test, o);
    o.kind = lp::PredictiveKind::kMap;
    REQUIRE(max_abs_diff(p, lp::predict<double>(prob.network, prob.params, nullptr, test, o)) <=
            1e-9);
  }
  SECTION("same seed, same probabilities: bitwise with 1 or 2 threads, to roundoff for any chunk") {
    for (auto kind : {lp::PredictiveKind::kGlmMc, lp::PredictiveKind::kNnMc}) {
      o.kind = kind;
      o.samples = 50;
      o.chunk = 16;
      quadra::set_num_threads(1);
      const Matrix<double> one = lp::predict<double>(prob.network, prob.params, &post, test, o);
      quadra::set_num_threads(2);
      const Matrix<double> two = lp::predict<double>(prob.network, prob.params, &post, test, o);
      REQUIRE(one == two);
      o.chunk = 7;
      REQUIRE(max_abs_diff(lp::predict<double>(prob.network, prob.params, &post, test, o), one) <=
              1e-12);
      quadra::set_num_threads(0);
      o.seed = 1;
      REQUIRE(max_abs_diff(lp::predict<double>(prob.network, prob.params, &post, test, o), one) >
              1e-6);
      o.seed = 0;
    }
  }
  SECTION("weight-space MC approaches the GLM predictive for a tight posterior") {
    lp::Posterior tight(model, prob.params, kN, 2000.0);
    o.kind = lp::PredictiveKind::kNnMc;
    o.samples = 400;
    const Matrix<double> nn_mc = lp::predict<double>(prob.network, prob.params, &tight, test, o);
    o.kind = lp::PredictiveKind::kGlmMc;
    const Matrix<double> glm = lp::predict<double>(prob.network, prob.params, &tight, test, o);
    REQUIRE(max_abs_diff(nn_mc, glm) <= 0.03);
  }
}

TEST_CASE("validation tuning picks the grid's best prior precision", "[laplace]") {
  const Problem prob(kMlp, nn::parse_shape("3"), 40, 3);
  const auto model =
      lp::fit_curvature<double>(host(), prob.network, prob.params, nn::Loss::kCrossEntropy,
                                prob.batch, nullptr, options(lp::Structure::kDiagonal));
  lp::Posterior post(model, prob.params, kN, 1.0);
  const quadra::data::Dataset val = as_dataset(prob.batch, "validation");
  lp::PredictiveOptions o;
  const auto grid = lp::log_grid(1e-2, 1e4, 13);
  const lp::PriorSearch search =
      lp::tune_prior_by_validation<double>(post, prob.network, prob.params, val, o, grid);
  REQUIRE(search.objective.size() == grid.size());
  const auto best =
      std::min_element(search.objective.begin(), search.objective.end()) - search.objective.begin();
  REQUIRE(search.best == grid[static_cast<std::size_t>(best)]);
  REQUIRE(post.prior_precision() == search.best);
}

TEST_CASE("bad Laplace inputs give one clear error each", "[laplace]") {
  const Problem prob(kMlp, nn::parse_shape("3"), 20, 3);
  const auto fit = [&](lp::FitOptions o, const nn::DatasetBatch<double>* second = nullptr) {
    return lp::fit_curvature<double>(host(), prob.network, prob.params, nn::Loss::kCrossEntropy,
                                     prob.batch, second, o);
  };
  using Catch::Contains;
  REQUIRE_THROWS_WITH(lp::parse_structure("kron"),
                      Contains("structure 'kron' is unknown") && Contains("kfac"));
  REQUIRE_THROWS_WITH(lp::parse_debiasing("split"), Contains("'split'") && Contains("independent"));
  const auto model = fit(options(lp::Structure::kDiagonal));
  REQUIRE_THROWS_WITH(lp::Posterior(model, prob.params, kN, 0.0), Contains("prior precision 0"));
  REQUIRE_THROWS_WITH(lp::Posterior(model, prob.params, kN, -1.0), Contains("prior precision -1"));
  REQUIRE_THROWS_WITH(lp::Posterior(model, prob.params, 0.0, 1.0), Contains("data size N = 0"));
  lp::FitOptions dense = options(lp::Structure::kFull);
  dense.max_dense = 10;
  REQUIRE_THROWS_WITH(fit(dense), Contains("31 parameters") && Contains("limit is 10"));
  lp::FitOptions diag = options(lp::Structure::kDiagonal);
  diag.debiasing = lp::Debiasing::kIndependent;
  REQUIRE_THROWS_WITH(fit(diag, &prob.batch), Contains("fixed basis"));
  lp::FitOptions wrong = options(lp::Structure::kDiagonal);
  wrong.curvature = "ggn";
  REQUIRE_THROWS_WITH(fit(wrong), Contains("'ggn' is not diagonal"));
  lp::FitOptions unknown = options(lp::Structure::kKfac);
  unknown.curvature = "no-such-plugin";
  REQUIRE_THROWS_WITH(fit(unknown), Contains("no-such-plugin"));
  lp::FitOptions rank = options(lp::Structure::kLowRank);
  rank.rank = 40;
  REQUIRE_THROWS_WITH(fit(rank), Contains("rank 40") && Contains("1 to 31"));
  lp::FitOptions per_sample = options(lp::Structure::kKfac);
  per_sample.kfac_eigenvalues = lp::KfacEigenvalues::kPerSample;
  per_sample.curvature_options["type"] = "empirical";
  REQUIRE_THROWS_WITH(fit(per_sample), Contains("type=empirical"));
  lp::FitOptions independent = options(lp::Structure::kKfac);
  independent.debiasing = lp::Debiasing::kIndependent;
  REQUIRE_THROWS_WITH(fit(independent), Contains("second, independent curvature set"));
  REQUIRE_THROWS_WITH(lp::log_grid(0.0, 1.0, 5), Contains("0 < LOW < HIGH"));
}

namespace {

/// The Laplace evidence from a dense curvature (range × range) with the per-layer diagonal prior
/// exp(log_taus) on `layers` (sizes, tiling the range), by LDLT.
double dense_evidence(const Matrix<double>& curvature, const Vector<double>& theta,
                      const std::vector<Index>& layers, const std::vector<double>& log_taus,
                      double total_nll) {
  Matrix<double> precision = kN * curvature;
  double value = -total_nll;
  Index at = 0;
  for (std::size_t l = 0; l < layers.size(); ++l) {
    const double tau = std::exp(log_taus[l]);
    precision.diagonal().segment(at, layers[l]).array() += tau;
    value += -0.5 * tau * theta.segment(at, layers[l]).squaredNorm() +
             0.5 * static_cast<double>(layers[l]) * log_taus[l];
    at += layers[l];
  }
  return value - 0.5 * Eigen::LDLT<Matrix<double>>(precision).vectorD().array().log().sum();
}

/// Brute force over two log τ: a 151 × 151 grid over [1e-6, 1e9], then four zooms of 21 × 21
/// around the best point, each ten times finer.
std::vector<double> brute_force_best(const std::function<double(const std::vector<double>&)>& f) {
  const double low = std::log(1e-6), high = std::log(1e9);
  std::vector<double> best{low, low};
  double best_value = -std::numeric_limits<double>::infinity();
  double step = (high - low) / 150.0;
  std::vector<double> center{0.5 * (low + high), 0.5 * (low + high)};
  int half = 75;
  for (int round = 0; round < 5; ++round) {
    const std::vector<double> around = center;
    for (int i = -half; i <= half; ++i) {
      for (int j = -half; j <= half; ++j) {
        const std::vector<double> x{std::clamp(around[0] + i * step, low, high),
                                    std::clamp(around[1] + j * step, low, high)};
        const double v = f(x);
        if (v > best_value) {
          best_value = v;
          best = x;
        }
      }
    }
    center = best;
    step /= 10.0;
    half = 10;
  }
  return best;
}

}  // namespace

TEST_CASE("per-layer prior precisions match a dense float64 reference", "[laplace][per-layer]") {
  const auto [spec, shape] =
      GENERATE(table<const char*, const char*>({{kMlp, "3"}, {kCnn, "1x4x4"}}));
  const auto structure =
      GENERATE(lp::Structure::kDiagonal, lp::Structure::kKfac, lp::Structure::kFull);
  INFO(spec << ", " << lp::to_string(structure));
  const Problem prob(spec, nn::parse_shape(shape), 40, 3);
  const lp::CurvatureModel model =
      lp::fit_curvature<double>(host(), prob.network, prob.params, nn::Loss::kCrossEntropy,
                                prob.batch, nullptr, options(structure));
  REQUIRE(model.layers.size() == 2);
  lp::Posterior post(model, prob.params, kN, 1.0);
  const double nll = 37.0;

  SECTION("log-determinant, evidence, J Σ Jᵀ and samples under a per-layer prior") {
    post.set_prior_precisions({0.3, 7.0});
    REQUIRE(post.per_layer_prior());
    REQUIRE(post.log_det_precision() == Approx(dense_log_det(post, prob.p())).epsilon(1e-10));
    const std::vector<Index> sizes{model.layers[0].size, model.layers[1].size};
    const Matrix<double> c = dense_curvature(model, prob.p());
    REQUIRE(post.log_marginal_likelihood(nll) ==
            Approx(dense_evidence(c, prob.params, sizes, {std::log(0.3), std::log(7.0)}, nll))
                .epsilon(1e-10));
    const Problem other(spec, nn::parse_shape(shape), 6, 99);
    check_functional_covariances(prob, post, other.batch);
    quadra::data::Rng rng(5);
    const int draws = 20000;
    Matrix<double> second = Matrix<double>::Zero(prob.p(), prob.p());
    for (int k = 0; k < draws; ++k) {
      const Vector<double> d = post.sample_deviation(rng);
      second += d * d.transpose();
    }
    second /= draws;
    const Matrix<double> sigma = dense_covariance(post, prob.p());
    REQUIRE(max_abs_diff(second, sigma) <= 0.05 * sigma.diagonal().maxCoeff());
  }
  SECTION("equal per-layer values are the scalar prior") {
    const double scalar = post.log_marginal_likelihood(nll);
    post.set_prior_precisions({1.0, 1.0});
    REQUIRE(post.log_marginal_likelihood(nll) == scalar);
  }
  SECTION("the maximiser agrees with brute force on the dense evidence") {
    const std::vector<double> taus = lp::maximize_marginal_likelihood_per_layer(post, nll);
    REQUIRE(post.prior_precisions() == taus);
    // full: the dense GGN itself; diag and kfac: their own C, densely.
    auto bound = prob.bind(prob.batch);
    const Matrix<double> c =
        structure == lp::Structure::kFull ? dense_ggn(bound) : dense_curvature(model, prob.p());
    const std::vector<Index> sizes{model.layers[0].size, model.layers[1].size};
    auto f = [&](const std::vector<double>& x) {
      return dense_evidence(c, prob.params, sizes, x, nll);
    };
    const std::vector<double> best = brute_force_best(f);
    INFO("found " << taus[0] << ", " << taus[1] << "; brute force " << std::exp(best[0]) << ", "
                  << std::exp(best[1]));
    REQUIRE(std::log(taus[0]) == Approx(best[0]).margin(1e-3));
    REQUIRE(std::log(taus[1]) == Approx(best[1]).margin(1e-3));
    const double found = f({std::log(taus[0]), std::log(taus[1])});
    REQUIRE(found >= f(best) - 1e-9 * std::abs(f(best)));
    REQUIRE(post.log_marginal_likelihood(nll) == Approx(found).epsilon(1e-10));
    // Interior optima (the test would prove little at the ends of the search range).
    for (double tau : taus) REQUIRE((tau > 1e-5 && tau < 1e8));
  }
}

TEST_CASE("per-layer marginal likelihood on three layers is a stationary maximum",
          "[laplace][per-layer]") {
  const Problem prob("linear(3) tanh linear(3) tanh linear(3)", nn::parse_shape("3"), 40, 3);
  lp::Posterior post(
      lp::fit_curvature<double>(host(), prob.network, prob.params, nn::Loss::kCrossEntropy,
                                prob.batch, nullptr, options(lp::Structure::kFull)),
      prob.params, kN, 1.0);
  const std::vector<double> taus = lp::maximize_marginal_likelihood_per_layer(post, 0.0);
  REQUIRE(taus.size() == 3);
  auto bound = prob.bind(prob.batch);
  const Matrix<double> c = dense_ggn(bound);
  std::vector<Index> sizes;
  for (const lp::ParameterRange& l : post.prior_layers()) sizes.push_back(l.size);
  std::vector<double> x;
  for (double tau : taus) x.push_back(std::log(tau));
  const double at = dense_evidence(c, prob.params, sizes, x, 0.0);
  const double h = 1e-4;
  for (std::size_t l = 0; l < 3; ++l) {
    std::vector<double> up = x, down = x;
    up[l] += h;
    down[l] -= h;
    const double fu = dense_evidence(c, prob.params, sizes, up, 0.0);
    const double fd = dense_evidence(c, prob.params, sizes, down, 0.0);
    INFO("layer " << l << ", tau " << taus[l]);
    REQUIRE(std::abs(fu - fd) / (2 * h) <= 1e-5 * (1.0 + std::abs(at)));  // gradient 0
    REQUIRE(fu <= at);
    REQUIRE(fd <= at);
  }
}

TEST_CASE("a per-layer prior is refused where it does not fit, saying why",
          "[laplace][per-layer]") {
  using Catch::Contains;
  const Problem prob(kMlp, nn::parse_shape("3"), 20, 3);
  lp::FitOptions o = options(lp::Structure::kLowRank);
  o.rank = 4;
  lp::Posterior lowrank(lp::fit_curvature<double>(host(), prob.network, prob.params,
                                                  nn::Loss::kCrossEntropy, prob.batch, nullptr, o),
                        prob.params, kN, 1.0);
  REQUIRE_THROWS_WITH(lp::check_per_layer_prior(lp::Structure::kLowRank),
                      Contains("does not work with structure lowrank") && Contains("complement") &&
                          Contains("not diagonal in that basis"));
  REQUIRE_THROWS_WITH(lowrank.set_prior_precisions({1.0, 2.0}),
                      Contains("does not work with structure lowrank"));
  REQUIRE_THROWS_WITH(lp::maximize_marginal_likelihood_per_layer(lowrank, 0.0),
                      Contains("does not work with structure lowrank"));
  lp::Posterior kfac(
      lp::fit_curvature<double>(host(), prob.network, prob.params, nn::Loss::kCrossEntropy,
                                prob.batch, nullptr, options(lp::Structure::kKfac)),
      prob.params, kN, 1.0);
  REQUIRE_THROWS_WITH(kfac.set_prior_precisions({1.0, 2.0, 3.0}),
                      Contains("3 per-layer prior precisions for 2 layers"));
  REQUIRE_THROWS_WITH(kfac.set_prior_precisions({1.0, -1.0}),
                      Contains("prior precision -1 of layer 1; expected a finite number > 0"));
  REQUIRE_THROWS_WITH(lp::maximize_marginal_likelihood_per_layer(kfac, 0.0, 1.0, 0.5),
                      Contains("expected 0 < low < high"));
}
