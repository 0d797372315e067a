// Conformance suite for every registered curvature plugin, on tiny networks in float64:
// symmetry, linearity, positive semi-definiteness where the matrix must be PSD, agreement with
// the dense matrices they claim to represent, damping respected by solve(), and bitwise
// determinism across thread counts.

#include <Eigen/Dense>
#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <quadra/curvature/engine_backend.hpp>
#include <quadra/parallel.hpp>
#include <quadra/plugin_host.hpp>

using Mat = Eigen::MatrixXd;
using Vec = Eigen::VectorXd;
using quadra::CurvatureEstimator;
using quadra::CurvatureStructure;

namespace {

const quadra::PluginHost& host() {
  static quadra::PluginHost h;
  static const bool loaded = [] {
    REQUIRE(h.load_path(BUILTIN_PLUGIN_DIR).is_ok());
    REQUIRE(h.refused().empty());
    return true;
  }();
  static_cast<void>(loaded);
  return h;
}

/// A tiny problem: network, parameters, a batch, bound.
struct Problem {
  quadra::nn::Network network;
  Vec params;
  Mat inputs;
  std::vector<std::int64_t> labels;
  quadra::nn::BoundBatch<double> batch;
  quadra::EngineCurvatureBackend<double> backend;

  Problem(const char* spec, quadra::nn::TensorShape shape, int n, unsigned seed)
      : network(spec, shape),
        params(network.initial_parameters<double>(seed)),
        inputs(make_inputs(network.num_inputs(), n, seed)),
        labels(make_labels(network.num_outputs(), n)),
        batch(network, params, inputs, quadra::nn::Targets<double>::from_labels(labels),
              quadra::nn::Loss::kCrossEntropy),
        backend(batch) {}

  static Mat make_inputs(quadra::Index rows, int n, unsigned seed) {
    std::srand(seed);
    return Mat::Random(rows, n);
  }
  static std::vector<std::int64_t> make_labels(quadra::Index classes, int n) {
    std::vector<std::int64_t> y(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) y[static_cast<std::size_t>(i)] = i % classes;
    return y;
  }
  [[nodiscard]] quadra::Index dim() const { return network.num_parameters(); }
};

quadra::PluginHandle<CurvatureEstimator> bind(const std::string& name, Problem& p,
                                              quadra::RawOptions options = {}) {
  auto created = host().create<CurvatureEstimator>(name, options);
  REQUIRE(created.is_ok());
  auto estimator = std::move(created).value();
  const quadra::Status status = estimator->bind(p.backend);
  INFO(status.message());
  REQUIRE(status.is_ok());
  return estimator;
}

/// The dense matrix of a bound estimator, one column per unit vector.
Mat densify(CurvatureEstimator& c, quadra::Index n) {
  Mat m(n, n);
  Vec e = Vec::Zero(n), col(n);
  for (quadra::Index j = 0; j < n; ++j) {
    e(j) = 1.0;
    REQUIRE(c.apply(e, col).is_ok());
    m.col(j) = col;
    e(j) = 0.0;
  }
  return m;
}

/// Dense GGN from finite-difference Jacobians of the outputs (independent of the engine's
/// JVP/VJP) and the softmax cross-entropy Hessian diag(p) - p p'.
Mat reference_ggn(Problem& p) {
  const quadra::Index n = p.dim(), c = p.network.num_outputs(), batch = p.inputs.cols();
  const double h = 1e-6;
  std::vector<Mat> jac(static_cast<std::size_t>(batch), Mat(c, n));
  for (quadra::Index j = 0; j < n; ++j) {
    Vec plus = p.params, minus = p.params;
    plus(j) += h;
    minus(j) -= h;
    const Mat fp = p.network.forward<double>(plus, p.inputs);
    const Mat fm = p.network.forward<double>(minus, p.inputs);
    for (quadra::Index s = 0; s < batch; ++s) jac[static_cast<std::size_t>(s)].col(j) = (fp.col(s) - fm.col(s)) / (2 * h);
  }
  const Mat f = p.network.forward<double>(p.params, p.inputs);
  Mat g = Mat::Zero(n, n);
  for (quadra::Index s = 0; s < batch; ++s) {
    const Vec z = f.col(s).array() - f.col(s).maxCoeff();
    const Vec prob = z.array().exp() / z.array().exp().sum();
    const Mat lambda = Mat(prob.asDiagonal()) - prob * prob.transpose();
    const Mat& js = jac[static_cast<std::size_t>(s)];
    g += js.transpose() * lambda * js;
  }
  return g / static_cast<double>(batch);
}

const std::vector<std::string> kAll = {"ggn", "hessian", "empirical-fisher", "mc-fisher",
                                       "kfac", "diag-ggn", "diag-ef"};

}  // namespace

TEST_CASE("every curvature plugin is registered", "[curvature][conformance]") {
  auto names = host().names(quadra::PluginKind::kCurvature);
  for (const std::string& name : kAll) {
    INFO(name);
    CHECK(std::find(names.begin(), names.end(), name) != names.end());
  }
}

TEST_CASE("conformance: symmetric, linear, PSD where required, deterministic", "[curvature][conformance]") {
  for (const char* spec : {"linear(5) tanh linear(3)", "conv(2,3,pad=1) relu maxpool(2) flatten linear(3)"}) {
    const bool conv = std::string(spec).rfind("conv", 0) == 0;
    Problem p(spec, conv ? quadra::nn::TensorShape{{1, 6, 6}} : quadra::nn::TensorShape{{4}}, 7, 3);
    for (const std::string& name : kAll) {
      INFO(spec << " / " << name);
      auto c = bind(name, p);
      const Mat m = densify(*c, p.dim());
      CHECK((m - m.transpose()).norm() <= 1e-10 * (1.0 + m.norm()));  // symmetric
      std::srand(11);
      const Vec u = Vec::Random(p.dim()), v = Vec::Random(p.dim());
      Vec cu(p.dim()), cv(p.dim()), cuv(p.dim());
      REQUIRE(c->apply(u, cu).is_ok());
      REQUIRE(c->apply(v, cv).is_ok());
      REQUIRE(c->apply(Vec(2.0 * u - 3.0 * v), cuv).is_ok());
      CHECK((cuv - (2.0 * cu - 3.0 * cv)).norm() <= 1e-10 * (1.0 + cuv.norm()));  // linear
      if (name != "hessian") {
        const double min_eigenvalue = Eigen::SelfAdjointEigenSolver<Mat>(0.5 * (m + m.transpose())).eigenvalues()(0);
        CHECK(min_eigenvalue >= -1e-10 * (1.0 + m.norm()));  // positive semi-definite
      }
      // Same result with one and two threads, to the bit.
      Vec one(p.dim()), two(p.dim());
      {
        quadra::ThreadLimit limit(1);
        auto c1 = bind(name, p);
        REQUIRE(c1->apply(u, one).is_ok());
      }
      {
        quadra::ThreadLimit limit(2);
        auto c2 = bind(name, p);
        REQUIRE(c2->apply(u, two).is_ok());
      }
      CHECK(one == two);
    }
  }
}

TEST_CASE("ggn matches a dense J'HJ from finite-difference Jacobians", "[curvature]") {
  Problem p("linear(4) tanh linear(3)", {{3}}, 5, 1);
  const Mat dense = densify(*bind("ggn", p), p.dim());
  const Mat reference = reference_ggn(p);
  CHECK((dense - reference).norm() <= 1e-6 * reference.norm());
}

TEST_CASE("hessian matches finite differences of the gradient", "[curvature]") {
  Problem p("linear(4) tanh linear(3)", {{3}}, 5, 2);
  const Mat dense = densify(*bind("hessian", p), p.dim());
  Mat reference(p.dim(), p.dim());
  const double h = 1e-5;
  for (quadra::Index j = 0; j < p.dim(); ++j) {
    Vec plus = p.params, minus = p.params, gp(p.dim()), gm(p.dim());
    plus(j) += h;
    minus(j) -= h;
    quadra::nn::BoundBatch<double> bp(p.network, plus, p.inputs, quadra::nn::Targets<double>::from_labels(p.labels), quadra::nn::Loss::kCrossEntropy);
    quadra::nn::BoundBatch<double> bm(p.network, minus, p.inputs, quadra::nn::Targets<double>::from_labels(p.labels), quadra::nn::Loss::kCrossEntropy);
    bp.gradient(gp);
    bm.gradient(gm);
    reference.col(j) = (gp - gm) / (2 * h);
  }
  CHECK((dense - reference).norm() <= 1e-6 * reference.norm());
}

TEST_CASE("diagonal plugins are the diagonals of the full matrices", "[curvature]") {
  Problem p("linear(4) sigmoid linear(3)", {{3}}, 6, 4);
  const Mat ggn = densify(*bind("ggn", p), p.dim());
  const Mat ef = densify(*bind("empirical-fisher", p), p.dim());
  for (const auto& [name, full] : {std::pair{"diag-ggn", ggn}, std::pair{"diag-ef", ef}}) {
    INFO(name);
    auto diag = bind(name, p);
    CHECK(diag->structure() == CurvatureStructure::kDiagonal);
    Vec d(p.dim());
    REQUIRE(diag->diagonal(d).is_ok());
    CHECK((d - full.diagonal()).norm() <= 1e-10 * full.diagonal().norm());
    CHECK((densify(*diag, p.dim()) - Mat(d.asDiagonal())).norm() == 0.0);
    // solve() inverts C + lambda I.
    const Vec v = Vec::LinSpaced(p.dim(), -1, 1);
    Vec x(p.dim());
    REQUIRE(diag->solve(0.1, v, x).is_ok());
    CHECK((d.cwiseProduct(x) + 0.1 * x - v).norm() <= 1e-12 * v.norm());
  }
}

TEST_CASE("mc-fisher approaches the GGN as samples grow", "[curvature]") {
  Problem p("linear(4) tanh linear(3)", {{3}}, 8, 5);
  const Mat ggn = densify(*bind("ggn", p), p.dim());
  const double few = (densify(*bind("mc-fisher", p, {{"samples", "1"}}), p.dim()) - ggn).norm();
  const double many = (densify(*bind("mc-fisher", p, {{"samples", "400"}}), p.dim()) - ggn).norm();
  CHECK(many < 0.3 * few);
  CHECK(many < 0.1 * ggn.norm());
  // The seed fixes the sampled labels.
  const Mat a = densify(*bind("mc-fisher", p, {{"seed", "3"}}), p.dim());
  const Mat b = densify(*bind("mc-fisher", p, {{"seed", "3"}}), p.dim());
  const Mat c = densify(*bind("mc-fisher", p, {{"seed", "4"}}), p.dim());
  CHECK(a == b);
  CHECK(a != c);
}

TEST_CASE("kfac equals the GGN for one linear layer and one sample", "[curvature][kfac]") {
  Problem p("linear(3)", {{4}}, 1, 6);
  const Mat ggn = densify(*bind("ggn", p), p.dim());
  auto kfac = bind("kfac", p);
  CHECK(kfac->structure() == CurvatureStructure::kKronecker);
  const Mat dense = densify(*kfac, p.dim());
  CHECK((dense - ggn).norm() <= 1e-10 * ggn.norm());
}

TEST_CASE("kfac exposes its blocks and solves with both damping styles", "[curvature][kfac]") {
  Problem p("linear(5) relu linear(3)", {{4}}, 9, 7);
  for (const char* style : {"exact", "pi"}) {
    INFO(style);
    auto kfac = bind("kfac", p, {{"damping_style", style}});
    std::vector<quadra::KroneckerEigen> blocks;
    REQUIRE(kfac->kronecker(blocks).is_ok());
    REQUIRE(blocks.size() == 2);
    // Dense block-diagonal reference built from the factors, in the parameter layout.
    const double lambda = 0.3;
    Mat damped = Mat::Zero(p.dim(), p.dim());
    for (const quadra::KroneckerEigen& b : blocks) {
      const quadra::KroneckerFactor& f = b.factor;
      CHECK((b.a_eigenvectors * b.a_eigenvalues.asDiagonal() * b.a_eigenvectors.transpose() - f.a).norm() < 1e-10 * (1 + f.a.norm()));
      const quadra::Index cols = f.in + (f.bias ? 1 : 0);
      Mat a = f.a, s = f.s;
      if (std::string(style) == "pi") {
        const double pi = std::sqrt((a.trace() / static_cast<double>(a.rows())) / (s.trace() / static_cast<double>(s.rows())));
        a += pi * std::sqrt(lambda) * Mat::Identity(a.rows(), a.cols());
        s += std::sqrt(lambda) / pi * Mat::Identity(s.rows(), s.cols());
      }
      // Map (o, i) of [W b] to the flat parameter index.
      auto index = [&](quadra::Index o, quadra::Index i) {
        return i < f.in ? f.offset + o * f.in + i : f.offset + f.out * f.in + o;
      };
      for (quadra::Index o = 0; o < f.out; ++o)
        for (quadra::Index i = 0; i < cols; ++i)
          for (quadra::Index o2 = 0; o2 < f.out; ++o2)
            for (quadra::Index i2 = 0; i2 < cols; ++i2)
              damped(index(o, i), index(o2, i2)) =
                  std::string(style) == "pi" ? s(o, o2) * a(i, i2) : f.s(o, o2) * f.a(i, i2);
    }
    if (std::string(style) == "exact") damped += lambda * Mat::Identity(p.dim(), p.dim());
    const Vec v = Vec::LinSpaced(p.dim(), -2, 1);
    Vec x(p.dim());
    REQUIRE(kfac->solve(lambda, v, x).is_ok());
    CHECK((damped * x - v).norm() <= 1e-9 * v.norm());
  }
}

TEST_CASE("matrix-free plugins refuse structure queries clearly", "[curvature]") {
  Problem p("linear(3)", {{2}}, 2, 8);
  auto ggn = bind("ggn", p);
  Vec out(p.dim());
  CHECK(ggn->structure() == CurvatureStructure::kMatrixFree);
  CHECK(ggn->diagonal(out).code() == quadra::StatusCode::kUnsupported);
  CHECK(ggn->solve(1.0, out, out).message() == "ggn is matrix-free: solve with CG or MINRES instead");
  std::vector<quadra::KroneckerEigen> blocks;
  CHECK(ggn->kronecker(blocks).message() == "ggn exposes no Kronecker factors; use kfac");
}

TEST_CASE("an unbound plugin reports instead of crashing", "[curvature]") {
  auto kfac = host().create<CurvatureEstimator>("kfac", {}).value();
  Vec v = Vec::Ones(3), out(3);
  CHECK(kfac->apply(v, out).message() == "kfac: not bound to a batch");
  auto diag = host().create<CurvatureEstimator>("diag-ggn", {}).value();
  CHECK(diag->apply(v, out).message() == "diag-ggn: not bound to a batch");
}
