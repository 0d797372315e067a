// Laplace posteriors against dense float64 references on tiny networks: every structure's
// curvature, precision, log-determinant, function-space covariance and samples; the debiased
// eigenvalues; the evidence against brute-force integration; probit against many-sample MC.

#include <catch2/catch.hpp>

#include <cmath>
#include <numbers>
#include <string>
#include <vector>

#include <Eigen/Eigenvalues>

#include <quadra/data/random.hpp>
#include <quadra/error.hpp>
#include <quadra/laplace/posterior.hpp>
#include <quadra/laplace/predictive.hpp>
#include <quadra/parallel.hpp>

namespace {

using quadra::Index;
using quadra::Matrix;
using quadra::Vector;
namespace lp = quadra::laplace;
namespace nn = quadra::nn;

constexpr double kN = 500.0;  // the "training set size" N of the posteriors

/// A tiny classifier with seeded parameters and a seeded batch of inputs and labels.
struct Problem {
  nn::Network network;
  Vector<double> params;
  nn::DatasetBatch<double> batch;

  Problem(const std::string& spec, nn::TensorShape shape, Index samples, std::uint64_t seed)
      : network(spec, std::move(shape)), params(network.initial_parameters<double>(seed)) {
    quadra::data::Rng rng(seed + 17);
    params *= 3.0;  // larger weights: outputs far from uniform, a less trivial GGN
    batch.inputs.resize(network.num_inputs(), samples);
    for (Index i = 0; i < batch.inputs.size(); ++i) batch.inputs.data()[i] = rng.normal();
    for (Index n = 0; n < samples; ++n) {
      batch.targets.labels.push_back(
          static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(network.num_outputs()))));
    }
  }
  [[nodiscard]] nn::BoundBatch<double> bind(const nn::DatasetBatch<double>& data) const {
    return nn::BoundBatch<double>(network, params, data.inputs, data.targets,
                                  nn::Loss::kCrossEntropy);
  }
  [[nodiscard]] Index p() const { return network.num_parameters(); }
};

/// A batch of 3-feature, 3-class samples as a data set (what the predictives evaluate).
quadra::data::Dataset as_dataset(const nn::DatasetBatch<double>& batch, const std::string& name) {
  quadra::data::Dataset set;
  set.name = name;
  set.sample_shape = {batch.inputs.rows()};
  set.num_classes = 3;
  for (Index n = 0; n < batch.inputs.cols(); ++n) {
    for (Index f = 0; f < batch.inputs.rows(); ++f) {
      set.features.push_back(static_cast<float>(batch.inputs(f, n)));
    }
  }
  set.labels = batch.targets.labels;
  return set;
}

/// Dense GGN of a bound batch (mean over samples), column by column.
Matrix<double> dense_ggn(nn::BoundBatch<double>& batch) {
  const Index p = batch.num_parameters();
  Matrix<double> g(p, p);
  Vector<double> e = Vector<double>::Zero(p), column(p);
  for (Index j = 0; j < p; ++j) {
    e(j) = 1.0;
    batch.ggn_product(e, column);
    g.col(j) = column;
    e(j) = 0.0;
  }
  return 0.5 * (g + g.transpose());
}

/// J_n (C × P) of every sample n, from JVPs with unit vectors.
std::vector<Matrix<double>> dense_jacobians(nn::BoundBatch<double>& batch) {
  const Index p = batch.num_parameters();
  const Index c = batch.num_outputs();
  std::vector<Matrix<double>> j(static_cast<std::size_t>(batch.batch_size()), Matrix<double>(c, p));
  Vector<double> e = Vector<double>::Zero(p);
  Matrix<double> out(c, batch.batch_size());
  for (Index k = 0; k < p; ++k) {
    e(k) = 1.0;
    batch.jvp(e, out);
    for (Index n = 0; n < batch.batch_size(); ++n)
      j[static_cast<std::size_t>(n)].col(k) = out.col(n);
    e(k) = 0.0;
  }
  return j;
}

/// Dense C of a curvature model (all parameters; zero outside its range).
Matrix<double> dense_curvature(const lp::CurvatureModel& m, Index p) {
  Matrix<double> c = Matrix<double>::Zero(p, p);
  for (const lp::KroneckerBlock& b : m.kronecker) {
    // The eigenvector of values(j, i) is q_S,j q_A,iᵀ in the [W b] layout.
    const Index cols = b.cols();
    auto flat_index = [&](Index o, Index i) {
      return i < b.in ? b.offset + o * b.in + i : b.offset + b.out * b.in + o;
    };
    for (Index j = 0; j < b.out; ++j) {
      for (Index i = 0; i < cols; ++i) {
        Vector<double> u = Vector<double>::Zero(p);
        for (Index o = 0; o < b.out; ++o) {
          for (Index k = 0; k < cols; ++k) {
            const double qs = b.identity ? (o == j ? 1.0 : 0.0) : b.qs(o, j);
            const double qa = b.identity ? (k == i ? 1.0 : 0.0) : b.qa(k, i);
            u(flat_index(o, k)) = qs * qa;
          }
        }
        c += b.values(j, i) * u * u.transpose();
      }
    }
  }
  for (const lp::EigenBlock& b : m.eigen) {
    c.block(b.range.offset, b.range.offset, b.range.size, b.range.size) +=
        b.basis * b.values.asDiagonal() * b.basis.transpose();
  }
  return c;
}

/// Dense posterior covariance: (N C + τ I)⁻¹ on the range, 0 elsewhere.
Matrix<double> dense_covariance(const lp::Posterior& post, Index p) {
  const lp::ParameterRange r = post.model().range;
  const Matrix<double> c =
      dense_curvature(post.model(), p).block(r.offset, r.offset, r.size, r.size);
  const Matrix<double> precision =
      post.data_size() * c + post.prior_precision() * Matrix<double>::Identity(r.size, r.size);
  Matrix<double> sigma = Matrix<double>::Zero(p, p);
  sigma.block(r.offset, r.offset, r.size, r.size) = precision.inverse();
  return sigma;
}

double dense_log_det(const lp::Posterior& post, Index p) {
  const lp::ParameterRange r = post.model().range;
  const Matrix<double> c =
      dense_curvature(post.model(), p).block(r.offset, r.offset, r.size, r.size);
  const Matrix<double> precision =
      post.data_size() * c + post.prior_precision() * Matrix<double>::Identity(r.size, r.size);
  return Eigen::LDLT<Matrix<double>>(precision).vectorD().array().log().sum();
}

quadra::PluginHost& host() {
  static quadra::PluginHost h;
  static const bool loaded = [] {
    quadra::throw_if_error(h.load_path(BUILTIN_PLUGIN_DIR));
    return true;
  }();
  (void)loaded;
  return h;
}

double max_abs_diff(const Matrix<double>& a, const Matrix<double>& b) {
  return (a - b).cwiseAbs().maxCoeff();
}

/// Σ_f from the posterior against J Σ Jᵀ with dense J and Σ, on `eval`.
void check_functional_covariances(const Problem& prob, const lp::Posterior& post,
                                  const nn::DatasetBatch<double>& eval) {
  auto batch = prob.bind(eval);
  const Matrix<double> got = post.functional_covariances(batch);
  const Matrix<double> sigma = dense_covariance(post, prob.p());
  const auto jac = dense_jacobians(batch);
  const Index c = batch.num_outputs();
  for (Index n = 0; n < batch.batch_size(); ++n) {
    const Matrix<double>& j = jac[static_cast<std::size_t>(n)];
    const Matrix<double> want = j * sigma * j.transpose();
    INFO("sample " << n);
    REQUIRE(max_abs_diff(got.middleCols(n * c, c), want) <=
            1e-9 * (1.0 + want.cwiseAbs().maxCoeff()));
  }
}

lp::FitOptions options(lp::Structure s) {
  lp::FitOptions o;
  o.structure = s;
  return o;
}

const char* kMlp = "linear(4) tanh linear(3)";
const char* kCnn = "conv(2,3,pad=1) tanh avgpool(2) flatten linear(3)";

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
