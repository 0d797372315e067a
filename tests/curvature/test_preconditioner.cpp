// The preconditioner of preconditioned CG, M^-1 = (D + damping I)^-exponent, against dense
// float64 references: D a diagonal, or Kronecker blocks S ⊗ A in quadra's [W b] layout with
// parameters outside every block; and its refusals.

#include <Eigen/Dense>
#include <catch2/catch.hpp>
#include <cmath>
#include <quadra/curvature/preconditioner.hpp>
#include <quadra/sdk/kronecker.hpp>
#include <random>
#include <string>
#include <vector>

using Mat = Eigen::MatrixXd;
using Vec = Eigen::VectorXd;
using quadra::Index;

namespace {

Mat random_spd(Index n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal;
  Mat g(n, n);
  for (Index i = 0; i < g.size(); ++i) g.data()[i] = normal(rng);
  return g * g.transpose() / static_cast<double>(n) + 0.1 * Mat::Identity(n, n);
}

/// A structured estimator that returns what it is given.
class Fixed final : public quadra::CurvatureEstimator {
 public:
  quadra::CurvatureStructure structure_ = quadra::CurvatureStructure::kDiagonal;
  Vec diagonal_;
  std::vector<quadra::KroneckerEigen> blocks_;

  quadra::Status bind(quadra::ICurvatureBackend&) override { return quadra::Status::ok(); }
  quadra::Status apply(quadra::ConstVectorRef<double>, quadra::VectorRef<double>) override {
    return quadra::Status::unsupported("not used");
  }
  quadra::Status apply(quadra::ConstVectorRef<float>, quadra::VectorRef<float>) override {
    return quadra::Status::unsupported("not used");
  }
  quadra::Status solve(double, quadra::ConstVectorRef<double>, quadra::VectorRef<double>) override {
    return quadra::Status::unsupported("not used");
  }
  [[nodiscard]] quadra::CurvatureStructure structure() const override { return structure_; }
  quadra::Status diagonal(quadra::VectorRef<double> out) const override {
    out = diagonal_;
    return quadra::Status::ok();
  }
  quadra::Status kronecker(std::vector<quadra::KroneckerEigen>& out) const override {
    out = blocks_;
    return quadra::Status::ok();
  }
};

/// (D + damping I)^-exponent of a symmetric D, by its eigendecomposition.
Mat dense_inverse_power(const Mat& d, double damping, double exponent) {
  const Eigen::SelfAdjointEigenSolver<Mat> eig(d);
  const Vec w = (eig.eigenvalues().array() + damping).pow(-exponent).matrix();
  return eig.eigenvectors() * w.asDiagonal() * eig.eigenvectors().transpose();
}

Mat apply_to_identity(quadra::Preconditioner& m, Index n) {
  Mat out(n, n);
  for (Index k = 0; k < n; ++k) {
    Vec y(n);
    REQUIRE(m.apply(Vec::Unit(n, k), y).is_ok());
    out.col(k) = y;
  }
  return out;
}

}  // namespace

TEST_CASE("a diagonal preconditioner is (d + damping)^-exponent", "[curvature][preconditioner]") {
  Fixed diag;
  diag.diagonal_ = Vec::LinSpaced(6, 0.0, 5.0);
  auto m = quadra::Preconditioner::create(diag, 6, 0.1, 0.75, "diag-test");
  REQUIRE(m.is_ok());
  const Mat reference = dense_inverse_power(Mat(diag.diagonal_.asDiagonal()), 0.1, 0.75);
  CHECK((apply_to_identity(*m.value(), 6) - reference).norm() < 1e-14 * reference.norm());
}

TEST_CASE(
    "a Kronecker preconditioner takes powers in the factors' eigenbases, blocks in quadra's "
    "[W b] layout",
    "[curvature][preconditioner]") {
  // Parameters: 2 outside, then a 3 x 2 layer with bias (9 parameters), then 1 outside.
  const Index n = 12;
  quadra::KroneckerEigen block;
  block.factor.offset = 2;
  block.factor.out = 3;
  block.factor.in = 2;
  block.factor.bias = true;
  block.factor.a = random_spd(3, 1);
  block.factor.s = random_spd(3, 2);
  const Eigen::SelfAdjointEigenSolver<Mat> a(block.factor.a), s(block.factor.s);
  block.a_eigenvalues = a.eigenvalues();
  block.a_eigenvectors = a.eigenvectors();
  block.s_eigenvalues = s.eigenvalues();
  block.s_eigenvectors = s.eigenvectors();
  Fixed kron;
  kron.structure_ = quadra::CurvatureStructure::kKronecker;
  kron.blocks_ = {block};
  // D as a dense matrix: the block maps vec(V) to vec(S V A) in the layer's layout.
  Mat d = Mat::Zero(n, n);
  for (Index k = 0; k < n; ++k) {
    Vec out = Vec::Zero(n);
    const Vec e = Vec::Unit(n, k);
    quadra::scatter_block(
        block.factor, block.factor.s * quadra::gather_block(block.factor, e) * block.factor.a, out);
    d.col(k) = out;
  }
  for (const double exponent : {1.0, 0.75}) {
    auto m = quadra::Preconditioner::create(kron, n, 0.05, exponent, "kfac-test");
    REQUIRE(m.is_ok());
    const Mat reference = dense_inverse_power(d, 0.05, exponent);
    CHECK((apply_to_identity(*m.value(), n) - reference).norm() < 1e-12 * reference.norm());
  }
}

TEST_CASE("preconditioner refusals say what is expected", "[curvature][preconditioner]") {
  Fixed diag;
  diag.diagonal_ = Vec::Constant(3, -1.0);
  CHECK(quadra::Preconditioner::create(diag, 3, 0.5, 1.0, "diag-test").status().message() ==
        "preconditioner diag-test: damped diagonal entry -1 + 0.5 = -0.5 at 0 is not positive; "
        "raise preconditioner_damping");
  CHECK(quadra::Preconditioner::create(diag, 3, 0.0, 1.0, "diag-test").status().message() ==
        "preconditioner diag-test: damping 0 (lambda plus preconditioner_damping); expected a "
        "finite number > 0");
  CHECK(quadra::Preconditioner::create(diag, 3, 1.0, 1.5, "diag-test").status().message() ==
        "preconditioner diag-test: exponent 1.5; expected a number in (0, 1]");
  Fixed free;
  free.structure_ = quadra::CurvatureStructure::kMatrixFree;
  CHECK(quadra::Preconditioner::create(free, 3, 1.0, 1.0, "ggn").status().message() ==
        "preconditioner ggn: the curvature plugin is matrix-free; a preconditioner needs a "
        "diagonal or Kronecker-factored one (diag-ggn, diag-ef, kfac)");
}
