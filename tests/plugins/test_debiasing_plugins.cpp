// The independent-batch debiasing plugins: batch plans and re-estimation rules, against dense
// float64 references.

#include <Eigen/Dense>
#include <catch2/catch.hpp>
#include <quadra/plugin_host.hpp>
#include <set>

using quadra::BatchRole;
using Mat = Eigen::MatrixXd;
using Vec = Eigen::VectorXd;

namespace {

/// The quadratic q(d) = g'd + d'Cd/2 restricted to the columns of P, measured densely.
class DenseDirectionalModel final : public quadra::IDirectionalModel {
 public:
  DenseDirectionalModel(Mat c, Vec g, Mat p) : c_(std::move(c)), g_(std::move(g)), p_(std::move(p)) {}
  quadra::Index num_directions() const override { return p_.cols(); }
  quadra::Status slopes(quadra::VectorRef<double> out) override {
    out = p_.transpose() * g_;
    return quadra::Status::ok();
  }
  quadra::Status projected_curvature(quadra::MatrixRef<double> out) override {
    out = p_.transpose() * c_ * p_;
    return quadra::Status::ok();
  }
  quadra::Status gram(quadra::MatrixRef<double> out) override {
    out = p_.transpose() * p_;
    return quadra::Status::ok();
  }

 private:
  Mat c_;
  Vec g_;
  Mat p_;
};

Mat random_spd(int n, unsigned seed) {
  std::srand(seed);
  const Mat a = Mat::Random(n, n);
  return a * a.transpose() / n + 0.1 * Mat::Identity(n, n);
}

/// Plain CG on (C + lambda I) x = -g; returns the search directions and step lengths.
void cg_directions(const Mat& c, const Vec& g, double lambda, int k, Mat& p, Vec& alpha) {
  const int n = static_cast<int>(g.size());
  const Mat a = c + lambda * Mat::Identity(n, n);
  Vec x = Vec::Zero(n), r = g, d = -g;
  p.resize(n, k);
  alpha.resize(k);
  for (int i = 0; i < k; ++i) {
    const Vec ad = a * d;
    const double step = r.squaredNorm() / d.dot(ad);
    p.col(i) = d;
    alpha(i) = step;
    x += step * d;
    const Vec r_next = r + step * ad;
    d = -r_next + (r_next.squaredNorm() / r.squaredNorm()) * d;
    r = r_next;
  }
}

quadra::PluginHandle<quadra::DebiasingStrategy> make(const char* name, quadra::RawOptions options = {}) {
  static quadra::PluginHost host;
  if (host.components().empty()) REQUIRE(host.load_library(BUILTIN_INDEPENDENT_BATCH).is_ok());
  auto created = host.create<quadra::DebiasingStrategy>(name, options);
  REQUIRE(created.is_ok());
  return std::move(created).value();
}

Vec coefficients(quadra::DebiasingStrategy& d, quadra::IDirectionalModel& model, double lambda) {
  Vec own = Vec::Constant(model.num_directions(), 123.0), out(model.num_directions());
  const quadra::Status status = d.coefficients(own, model, lambda, out);
  INFO(status.message());
  REQUIRE(status.is_ok());
  return out;
}

}  // namespace

TEST_CASE("plans put directions and estimates on disjoint draws", "[plugin:debiasing]") {
  for (const char* name : {"rayleigh", "cg-line-search", "cg-projected", "averaged", "split-batch"}) {
    INFO(name);
    const quadra::BatchPlan plan = make(name)->plan();
    const int dir = plan.draw_of(BatchRole::kDirections);
    const int est = plan.draw_of(BatchRole::kEstimate);
    CHECK(dir != est);
    CHECK(plan.draw_of(BatchRole::kGradient) == dir);
    CHECK(plan.draw_of(BatchRole::kAcceptance) != dir);  // rho never on the direction batch
    for (int r = 0; r < quadra::kNumBatchRoles; ++r) {
      CHECK(plan.draw_of(static_cast<BatchRole>(r)) < static_cast<int>(plan.draws.size()));
    }
  }
  SECTION("sizes and acceptance") {
    const auto rayleigh = make("rayleigh", {{"estimate_size", "2"}})->plan();
    REQUIRE(rayleigh.draws.size() == 3);
    CHECK(rayleigh.draws[1].relative_size == 2.0);
    CHECK(rayleigh.draw_of(BatchRole::kAcceptance) == 2);
    const auto shared = make("cg-line-search", {{"acceptance", "estimate"}})->plan();
    CHECK(shared.draws.size() == 2);
    CHECK(shared.draw_of(BatchRole::kAcceptance) == shared.draw_of(BatchRole::kEstimate));
    const auto split = make("split-batch")->plan();
    REQUIRE(split.draws.size() == 2);
    CHECK(split.draws[0].relative_size + split.draws[1].relative_size == 1.0);  // equal budget
    CHECK(make("averaged", {{"batches", "8"}})->plan().draws[1].relative_size == 8.0);
    const auto full = make("full-batch")->plan();
    REQUIRE(full.draws.size() == 1);
    CHECK(full.draws[0].whole_dataset);
  }
  SECTION("subsampled curvature: smaller directions and estimate draws, the gradient its own") {
    const auto plan =
        make("cg-line-search", {{"curvature_size", "0.25"}, {"estimate_size", "2"}})->plan();
    REQUIRE(plan.draws.size() == 4);
    const auto size = [&](BatchRole role) {
      return plan.draws[static_cast<std::size_t>(plan.draw_of(role))].relative_size;
    };
    CHECK(size(BatchRole::kGradient) == 1.0);
    CHECK(size(BatchRole::kDirections) == 0.25);
    CHECK(size(BatchRole::kEstimate) == 0.5);
    CHECK(size(BatchRole::kAcceptance) == 1.0);
    std::set<int> draws;
    for (int r = 0; r < quadra::kNumBatchRoles; ++r) {
      draws.insert(plan.draw_of(static_cast<BatchRole>(r)));
    }
    CHECK(draws.size() == 4);  // every role its own draw
  }
}

TEST_CASE("rayleigh diagonal: -slope / (Rayleigh quotient + lambda) per eigenvector",
          "[plugin:debiasing]") {
  const int n = 12;
  const Mat c_dir = random_spd(n, 1), c_est = random_spd(n, 2);
  const Vec g = Vec::LinSpaced(n, -1.0, 2.0);
  const Eigen::SelfAdjointEigenSolver<Mat> eig(c_dir);
  const Mat u = eig.eigenvectors().rightCols(4);  // top-4 directions of the direction batch
  DenseDirectionalModel estimate(c_est, g, u);
  const double lambda = 0.3;
  const Vec c = coefficients(*make("rayleigh"), estimate, lambda);
  for (int i = 0; i < 4; ++i) {
    const double rq = u.col(i).dot(c_est * u.col(i));
    CHECK(c(i) == Approx(-g.dot(u.col(i)) / (rq + lambda)).epsilon(1e-12));
  }
}

TEST_CASE("projected rules minimise the estimate quadratic within span(P)", "[plugin:debiasing]") {
  const int n = 15;
  const Mat c_est = random_spd(n, 3);
  const Vec g = Vec::LinSpaced(n, 1.0, -2.0);
  std::srand(4);
  const Mat p = Mat::Random(n, 5);  // not orthogonal: the gram matters
  DenseDirectionalModel estimate(c_est, g, p);
  const double lambda = 0.05;
  for (const char* name : {"cg-projected", "rayleigh"}) {
    INFO(name);
    auto d = std::string(name) == "rayleigh" ? make(name, {{"form", "projected"}}) : make(name);
    const Vec c = coefficients(*d, estimate, lambda);
    const Vec step = p * c;
    // Stationarity within the span: P' ((C + lambda I) step + g) = 0.
    const Vec residual = p.transpose() * ((c_est + lambda * Mat::Identity(n, n)) * step + g);
    CHECK(residual.norm() < 1e-10 * g.norm());
  }
}

TEST_CASE("cg-line-search reproduces CG when the estimate batch equals the direction batch",
          "[plugin:debiasing]") {
  const int n = 10;
  const Mat c = random_spd(n, 5);
  const Vec g = Vec::LinSpaced(n, -3.0, 1.0);
  const double lambda = 0.2;
  Mat p;
  Vec alpha;
  cg_directions(c, g, lambda, n, p, alpha);
  DenseDirectionalModel same(c, g, p);
  const Vec coeffs = coefficients(*make("cg-line-search"), same, lambda);
  CHECK((coeffs - alpha).norm() < 1e-9 * alpha.norm());
  // n conjugate directions span everything: the step is the exact damped Newton step.
  const Vec newton = -(c + lambda * Mat::Identity(n, n)).ldlt().solve(g);
  CHECK((p * coeffs - newton).norm() < 1e-9 * newton.norm());
}

TEST_CASE("cg-line-search on an independent batch differs from CG and uses its own slopes",
          "[plugin:debiasing]") {
  const int n = 10;
  const Mat c1 = random_spd(n, 6), c2 = random_spd(n, 7);
  const Vec g1 = Vec::LinSpaced(n, -1.0, 1.0), g2 = Vec::LinSpaced(n, 1.0, 0.5);
  Mat p;
  Vec alpha;
  cg_directions(c1, g1, 0.1, 4, p, alpha);
  DenseDirectionalModel estimate(c2, g2, p);
  const Vec coeffs = coefficients(*make("cg-line-search"), estimate, 0.1);
  // Reference: sequential exact line searches on q2 along p_0..p_3.
  const Mat a2 = c2 + 0.1 * Mat::Identity(n, n);
  Vec x = Vec::Zero(n);
  for (int j = 0; j < 4; ++j) {
    const double cj = -(g2 + a2 * x).dot(p.col(j)) / p.col(j).dot(a2 * p.col(j));
    CHECK(coeffs(j) == Approx(cj).epsilon(1e-10));
    x += cj * p.col(j);
  }
  CHECK((coeffs - alpha).norm() > 1e-3);
}

TEST_CASE("indefinite estimates and mismatched sizes are reported, not hidden", "[plugin:debiasing]") {
  const int n = 6;
  const Mat c = -Mat::Identity(n, n);  // negative curvature everywhere
  const Vec g = Vec::Ones(n);
  const Mat p = Mat::Identity(n, 2);
  DenseDirectionalModel estimate(c, g, p);
  Vec own = Vec::Zero(2), out(2);
  auto rayleigh = make("rayleigh");
  quadra::Status s = rayleigh->coefficients(own, estimate, 0.5, out);
  CHECK(s.code() == quadra::StatusCode::kNumericalIssue);
  CHECK(s.message() ==
        "damped curvature -0.5 along direction 0 is not positive on the estimate batch");
  s = make("cg-projected")->coefficients(own, estimate, 0.5, out);
  CHECK(s.message() == "projected damped curvature is not positive definite on the estimate batch");
  Vec own3 = Vec::Zero(3), out3(3);
  s = rayleigh->coefficients(own3, estimate, 0.5, out3);
  CHECK(s.code() == quadra::StatusCode::kInvalidArgument);
  CHECK(s.message() == "estimate model has 2 directions, the solver proposed 3");
}

TEST_CASE("full-batch keeps the solver's own coefficients", "[plugin:debiasing]") {
  DenseDirectionalModel unused(Mat::Identity(2, 2), Vec::Ones(2), Mat::Identity(2, 2));
  Vec own(2), out(2);
  own << 0.25, -4.0;
  REQUIRE(make("full-batch")->coefficients(own, unused, 1.0, out).is_ok());
  CHECK(out == own);
}

TEST_CASE("projected rules accept linearly dependent directions (minimum-norm coefficients)",
          "[plugin:debiasing]") {
  // P = [p, p, q]: the first two columns coincide, as late CG directions nearly do in float32.
  const int n = 6;
  const Mat c = random_spd(n, 7);
  const Vec g = Vec::LinSpaced(n, -1.0, 2.0);
  Mat p(n, 3);
  p.col(0) = Vec::Unit(n, 0) + Vec::Unit(n, 1);
  p.col(1) = p.col(0);
  p.col(2) = Vec::Unit(n, 3);
  DenseDirectionalModel estimate(c, g, p);
  Vec own = Vec::Zero(3), out(3);
  const double lambda = 0.1;
  REQUIRE(make("cg-projected")->coefficients(own, estimate, lambda, out).is_ok());
  // The step equals the minimiser within span{p0, q} computed with independent columns only.
  Mat basis(n, 2);
  basis << p.col(0), p.col(2);
  const Mat damped = basis.transpose() * (c + lambda * Mat::Identity(n, n)) * basis;
  const Vec reference = basis * damped.ldlt().solve(-basis.transpose() * g);
  CHECK((p * out - reference).norm() < 1e-10 * reference.norm());
  CHECK(std::abs(out(0) - out(1)) < 1e-12);  // minimum norm splits the shared direction evenly
}
