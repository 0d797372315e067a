// Laplace posteriors of networks with normalization layers: their weights and biases get
// diagonal K-FAC blocks (the exact GGN diagonal), and every structure matches its dense
// counterpart.

#include <algorithm>
#include <vector>

#include <catch2/catch.hpp>

#include <quadra/laplace/posterior.hpp>

#include "posterior_test_utils.hpp"

namespace {

using namespace laplace_test;  // NOLINT(google-build-using-namespace)

}  // namespace

TEST_CASE("Laplace posteriors over normalization layers match dense references", "[laplace][norm]") {
  const auto structure = GENERATE(lp::Structure::kDiagonal, lp::Structure::kKfac, lp::Structure::kFull);
  const auto eigenvalues = GENERATE(lp::KfacEigenvalues::kKronecker, lp::KfacEigenvalues::kPerSample);
  if (structure != lp::Structure::kKfac && eigenvalues == lp::KfacEigenvalues::kPerSample) return;
  INFO(lp::to_string(structure) << ", " << lp::to_string(eigenvalues));
  Problem prob("linear(4) layernorm tanh linear(4) batchnorm groupnorm(2) linear(3)", nn::parse_shape("3"), 30, 4);
  std::vector<double> buffers = prob.network.buffer_values();
  buffers[0] = 0.3;  // running mean and variance of the batchnorm away from 0 and 1
  buffers[5] = 2.0;
  prob.network.set_buffer_values(buffers);
  lp::FitOptions o = options(structure);
  o.kfac_eigenvalues = eigenvalues;
  const lp::CurvatureModel model = lp::fit_curvature<double>(
      host(), prob.network, prob.params, nn::Loss::kCrossEntropy, prob.batch, nullptr, o);
  auto bound = prob.bind(prob.batch);
  const Matrix<double> ggn = dense_ggn(bound);
  const Matrix<double> c = dense_curvature(model, prob.p());
  if (structure == lp::Structure::kFull) {
    REQUIRE(max_abs_diff(c, ggn) <= 1e-10);
  } else {
    REQUIRE(model.kronecker.size() == 6);
    // A normalization layer's block is the GGN's diagonal on its [γ; β], in either eigenvalue
    // rule (its eigenbasis is the identity, so per-sample eigenvalues are the same diagonal).
    for (const nn::ParameterInfo& p : prob.network.parameters()) {
      if (!prob.network.layers()[static_cast<std::size_t>(p.layer)].is_normalization()) continue;
      for (Index i = p.offset; i < p.offset + p.size; ++i) {
        REQUIRE(c(i, i) == Approx(ggn(i, i)).epsilon(1e-10).margin(1e-14));
        for (Index j = p.offset; j < p.offset + p.size; ++j) {
          if (j != i) REQUIRE(std::abs(c(i, j)) <= 1e-12);
        }
      }
    }
    if (structure == lp::Structure::kDiagonal) REQUIRE(max_abs_diff(c.diagonal(), ggn.diagonal()) <= 1e-12);
  }
  lp::Posterior post(model, prob.params, kN, 2.5);
  REQUIRE(post.log_det_precision() == Approx(dense_log_det(post, prob.p())).epsilon(1e-10));
  const Problem other("linear(4) layernorm tanh linear(4) batchnorm groupnorm(2) linear(3)", nn::parse_shape("3"), 5, 99);
  check_functional_covariances(prob, post, other.batch);
}
