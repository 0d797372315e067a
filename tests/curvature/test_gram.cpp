// The GGN through its Gram matrix: K against (1/N) B Bᵀ with B assembled from exact forward-mode
// Jacobians, eigenpairs against the dense GGN (float64), float32, determinism, refusals.

#include <catch2/catch.hpp>
#include <Eigen/Dense>

#include <quadra/curvature/gram.hpp>
#include <quadra/error.hpp>
#include <quadra/parallel.hpp>

#include "../nn/nn_test_utils.hpp"

using namespace quadra::nn;
using namespace quadra::nn::test;
using quadra::Index;
using quadra::curvature::ggn_gram_matrix;
using quadra::curvature::ggn_top_eigenpairs_gram;

namespace {

/// (1/N) B Bᵀ with row (n, c) of B = Q_n[:, c]ᵀ J_n, J from JVPs with unit vectors.
Mat reference_gram(BoundBatch<double>& batch) {
  const Index n = batch.batch_size();
  const Index c = batch.num_outputs();
  const Index p = batch.num_parameters();
  Mat jac(n * c, p);  // row s·C + o: ∂f_so/∂θ
  Vec e = Vec::Zero(p);
  Mat out(c, n);
  for (Index i = 0; i < p; ++i) {
    e[i] = 1;
    batch.jvp(e, out);
    for (Index s = 0; s < n; ++s) jac.block(s * c, i, c, 1) = out.col(s);
    e[i] = 0;
  }
  Mat b(n * c, p);
  Mat column(c, n);
  for (Index k = 0; k < c; ++k) {
    batch.loss_hessian_factor_column(k, column);
    for (Index s = 0; s < n; ++s)
      b.row(s * c + k) = column.col(s).transpose() * jac.middleRows(s * c, c);
  }
  return b * b.transpose() / static_cast<double>(n);
}

Mat dense_ggn(BoundBatch<double>& batch) {
  return dense_of(batch.num_parameters(),
                  [&](const Vec& v, Vec& out) { batch.ggn_product(v, out); });
}

/// The problem's dense GGN (float64) and its eigenvalues, largest first.
struct DenseSpectrum {
  Mat g;
  Vec values;
  [[nodiscard]] double top() const { return values(0); }
};

DenseSpectrum dense_spectrum(const Problem& p) {
  auto batch = bind(p);
  DenseSpectrum out{dense_ggn(batch), Vec()};
  out.values = Eigen::SelfAdjointEigenSolver<Mat>(out.g).eigenvalues().reverse();
  return out;
}

/// The Gram method on the problem in float32, with `threads` threads.
quadra::curvature::GramEigenResult<float> float_eigenpairs(
    const Problem& p, Index k, int threads, const quadra::curvature::GramEigenOptions& options = {}) {
  quadra::ThreadLimit limit(threads);
  BoundBatch<float> batch(p.net, p.theta.cast<float>(), p.x.cast<float>(),
                          Targets<float>::from_labels(p.targets.labels), p.loss);
  return ggn_top_eigenpairs_gram(batch, k, options);
}

}  // namespace

TEST_CASE("the Gram matrix equals (1/N) B B^T built from exact Jacobians", "[gram]") {
  SECTION("mse: the factor is sqrt(2/C) I, the same B") {
    const Problem p = make_problem(all_cases()[1], 7, 3);
    auto batch = bind(p);
    const Mat k = ggn_gram_matrix(batch);
    REQUIRE(k.rows() == 7 * batch.num_outputs());
    CHECK(rel_err(k, reference_gram(batch)) <= 1e-12);
    CHECK(k.trace() == Approx(dense_ggn(batch).trace()).epsilon(1e-12));
  }
  SECTION("cross-entropy: the thin factor has C - 1 columns, same nonzero spectrum") {
    const Problem p = make_problem(all_cases()[0], 7, 3);
    auto batch = bind(p);
    const Mat k = ggn_gram_matrix(batch);
    const Mat ref = reference_gram(batch);
    REQUIRE(k.rows() == 7 * (batch.num_outputs() - 1));
    const Vec thin = Eigen::SelfAdjointEigenSolver<Mat>(k).eigenvalues().reverse();
    const Vec full = Eigen::SelfAdjointEigenSolver<Mat>(ref).eigenvalues().reverse();
    CHECK((thin - full.head(thin.size())).cwiseAbs().maxCoeff() <= 1e-12 * full(0));
    CHECK(full.tail(full.size() - thin.size()).cwiseAbs().maxCoeff() <= 1e-12 * full(0));
    CHECK(k.trace() == Approx(dense_ggn(batch).trace()).epsilon(1e-12));
  }
}

TEST_CASE("Gram eigenpairs are the dense GGN's top eigenpairs", "[gram]") {
  // Block sizes: 1 (thick-restart Lanczos), 2 (block Lanczos, two-vector kernel; MSE's 27 rows
  // end on a narrower block) and 3 (a pair and a single vector per pass over K).
  for (const Index block : {1, 2, 3}) {
  for (const Case& c : {all_cases()[0], all_cases()[1]}) {
    INFO(c.name << ", block size " << block);
    const Problem p = make_problem(c, 9, 4);
    auto batch = bind(p);
    const Mat g = dense_ggn(batch);
    const Eigen::SelfAdjointEigenSolver<Mat> dense(g);
    const Index k = 5;
    quadra::curvature::GramEigenOptions options;
    options.tolerance = 1e-12;
    options.block_size = block;
    const auto r = ggn_top_eigenpairs_gram(batch, k, options);
    CHECK(r.converged);
    const Index m = c.loss == Loss::kCrossEntropy ? batch.num_outputs() - 1 : batch.num_outputs();
    CHECK(r.gram_size == 9 * m);
    CHECK(r.trace == Approx(g.trace()).epsilon(1e-12));
    const double top = dense.eigenvalues()(g.rows() - 1);
    for (Index i = 0; i < k; ++i) {
      INFO("eigenpair " << i);
      CHECK(std::abs(r.eigenvalues(i) - dense.eigenvalues()(g.rows() - 1 - i)) <= 1e-10 * top);
      const Vec u = r.eigenvectors.col(i);
      CHECK(u.norm() == Approx(1.0).epsilon(1e-12));
      CHECK((g * u - r.eigenvalues(i) * u).norm() <= 1e-9 * top);
    }
    const Mat overlap = r.eigenvectors.transpose() * r.eigenvectors;
    CHECK((overlap - Mat::Identity(k, k)).cwiseAbs().maxCoeff() <= 1e-9);
  }
  }
}

TEST_CASE("block Lanczos on a Gram matrix of several tiles", "[gram][block]") {
  // 200 samples, 2 factor columns: 400 rows, two 256-row tiles (and a partial one).
  const Problem p = make_problem(all_cases()[0], 200, 8);
  auto batch = bind(p);
  const DenseSpectrum dense = dense_spectrum(p);
  const Index k = 6;
  quadra::curvature::GramEigenOptions options;
  options.tolerance = 1e-10;
  options.block_size = 2;
  const auto r = ggn_top_eigenpairs_gram(batch, k, options);
  CHECK(r.converged);
  CHECK(r.num_products % 2 == 0);
  for (Index i = 0; i < k; ++i) {
    INFO("eigenpair " << i);
    CHECK(std::abs(r.eigenvalues(i) - dense.values(i)) <= 1e-9 * dense.top());
    CHECK(r.residual_norms(i) <= 1e-10 * r.eigenvalues(0));
    const Vec u = r.eigenvectors.col(i);
    CHECK((dense.g * u - r.eigenvalues(i) * u).norm() <= 1e-7 * dense.top());
  }

  // float32, one and two threads: the same bits.
  quadra::curvature::GramEigenOptions blocked;
  blocked.block_size = 2;
  const auto one = float_eigenpairs(p, 4, 1, blocked);
  const auto two = float_eigenpairs(p, 4, 2, blocked);
  CHECK(one.eigenvalues == two.eigenvalues);
  CHECK(one.eigenvectors == two.eigenvectors);
  for (Index i = 0; i < 4; ++i) CHECK(std::abs(one.eigenvalues(i) - r.eigenvalues(i)) <= 1e-5 * dense.top());
}

TEST_CASE("float32 Gram products, one to four vectors per pass over K", "[gram][block][float32]") {
  // 201 samples x 2 factor columns: 402 rows, a full tile and a partial one whose 146 rows end
  // off the kernel's eight-row steps. Float tiles go through the float block kernel.
  const Problem p = make_problem(all_cases()[0], 201, 12);
  const DenseSpectrum dense = dense_spectrum(p);
  for (const Index block : {1, 2, 3, 4}) {
    INFO("block size " << block);
    quadra::curvature::GramEigenOptions options;
    options.tolerance = 1e-5;
    options.block_size = block;
    const auto one = float_eigenpairs(p, 5, 1, options);
    const auto two = float_eigenpairs(p, 5, 2, options);
    CHECK(one.converged);
    for (Index i = 0; i < 5; ++i) {
      INFO("eigenpair " << i);
      CHECK(std::abs(one.eigenvalues(i) - dense.values(i)) <= 1e-5 * dense.top());
      const Vec u = one.eigenvectors.col(i).cast<double>();
      CHECK((dense.g * u - one.eigenvalues(i) * u).norm() <= 1e-4 * dense.top());
    }
    CHECK(one.eigenvalues == two.eigenvalues);
    CHECK(one.eigenvectors == two.eigenvectors);
  }
}

TEST_CASE("Gram eigenpairs in float32 and across thread counts", "[gram]") {
  const Problem p = make_problem(all_cases()[0], 40, 5);
  auto batch = bind(p);
  const auto reference = ggn_top_eigenpairs_gram(batch, 4);
  const auto one = float_eigenpairs(p, 4, 1);
  const auto two = float_eigenpairs(p, 4, 2);
  for (Index i = 0; i < 4; ++i) {
    CHECK(std::abs(one.eigenvalues(i) - reference.eigenvalues(i)) <=
          1e-5 * reference.eigenvalues(0));
  }
  // Exact equality: same bits with one and two threads.
  CHECK(one.eigenvalues == two.eigenvalues);
  CHECK(one.eigenvectors == two.eigenvectors);
}

TEST_CASE("the Gram method refuses what it cannot do", "[gram]") {
  {
    const Problem p = make_problem(all_cases()[2], 3, 1);  // a CNN
    auto batch = bind(p);
    CHECK_THROWS_WITH(ggn_gram_matrix(batch),
                      Catch::Contains("every parameter layer to be Linear; layer 1 ('conv(3,3") &&
                          Catch::Contains("use Lanczos"));
  }
  {
    const Problem p = make_problem(all_cases()[0], 4, 2);  // cross-entropy, C = 3
    auto batch = bind(p);
    CHECK_THROWS_WITH(
        ggn_top_eigenpairs_gram(batch, 9),
        Catch::Contains("k = 9 is out of range; the Gram matrix has 8 rows (4 samples x 2 "
                        "loss-Hessian factor columns)"));
  }
  // 40 samples give a Gram matrix of 80 rows, but this network has only 73 parameters.
  const Problem p = make_problem(all_cases()[0], 40, 2);
  auto batch = bind(p);
  REQUIRE(batch.num_parameters() == 73);
  CHECK_THROWS_WITH(ggn_top_eigenpairs_gram(batch, 75), Catch::Contains("zero to roundoff"));
  quadra::curvature::GramEigenOptions options;
  options.block_size = -1;
  CHECK_THROWS_WITH(ggn_top_eigenpairs_gram(batch, 3, options),
                    Catch::Contains("block size -1 is out of range; expected 0 (automatic) or at least 1"));
}
