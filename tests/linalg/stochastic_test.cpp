#include <cmath>
#include <limits>

#include <catch2/catch.hpp>

#include <quadra/error.hpp>
#include <quadra/linalg/hutchinson.hpp>
#include <quadra/linalg/spectral_density.hpp>

#include "support.hpp"

using namespace quadra;
using namespace quadra::linalg;
using namespace quadra::linalg::testing;

namespace {

// Trapezoidal integral of x^power * density over the grid.
double moment(const SpectralDensity& d, int power) {
  double sum = 0.0;
  for (std::size_t i = 1; i < d.points.size(); ++i) {
    const auto& p = d.points[i - 1];
    const auto& q = d.points[i];
    sum += 0.5 * (q.x - p.x) *
           (std::pow(p.x, power) * p.density + std::pow(q.x, power) * q.density);
  }
  return sum;
}

}  // namespace

TEST_CASE("Hutchinson's estimate is within a few standard errors of the trace",
          "[linalg][hutchinson]") {
  const Mat a = with_spectrum(concat({uniform_vector(90, 0, 2, 1), uniform_vector(10, 5, 20, 2)}), 3);
  DenseOperator<double> dense(a);
  CountingOperator<double> op(dense);
  HutchinsonOptions options;
  options.num_probes = 200;
  options.seed = 5;
  const auto estimate = hutchinson_trace(op, options);
  REQUIRE(estimate.status.is_ok());
  CHECK(estimate.samples.size() == 200);
  CHECK(estimate.num_products == 200);
  CHECK(op.num_products() == 200);
  CHECK(estimate.standard_error > 0.0);
  CHECK(std::abs(estimate.mean - a.trace()) <= 4 * estimate.standard_error);
  // The standard error is about right: Var[z^T A z] = 2 (||A||_F^2 - sum A_ii^2).
  const double variance = 2 * (a.squaredNorm() - a.diagonal().squaredNorm());
  CHECK(estimate.standard_error == Approx(std::sqrt(variance / 200)).epsilon(0.25));
}

TEST_CASE("Hutchinson is exact for a diagonal matrix", "[linalg][hutchinson]") {
  const Vec d = uniform_vector(64, -1, 3, 6);
  DenseOperator<double> op(Mat(d.asDiagonal()));
  HutchinsonOptions options;
  options.num_probes = 7;
  const auto estimate = hutchinson_trace(op, options);
  CHECK(estimate.mean == Approx(d.sum()).epsilon(1e-13));
  CHECK(estimate.standard_error <= 1e-13);

  options.num_probes = 1;
  CHECK(std::isinf(hutchinson_trace(op, options).standard_error));
  options.num_probes = 0;
  CHECK_THROWS_WITH(hutchinson_trace(op, options), Catch::Contains("num_probes = 0"));
}

TEST_CASE("SLQ density integrates to one and has mean trace / n", "[linalg][slq]") {
  const Index n = 200;
  // Two clusters of equal size around 1 and 10.
  const Vec spectrum = concat({uniform_vector(100, 0.9, 1.1, 7), uniform_vector(100, 9, 11, 8)});
  const Mat a = with_spectrum(spectrum, 9);
  DenseOperator<double> dense(a);
  CountingOperator<double> op(dense);
  SlqOptions options;
  options.num_probes = 20;
  options.num_steps = 40;
  options.seed = 11;
  const auto density = stochastic_lanczos_quadrature(op, options);
  REQUIRE(density.status.is_ok());
  CHECK(density.num_products == 20 * 40);
  CHECK(op.num_products() == 20 * 40);
  REQUIRE(density.points.size() == static_cast<std::size_t>(options.num_points));
  REQUIRE(density.nodes.size() == density.weights.size());

  double weight_sum = 0.0;
  double node_mean = 0.0;
  double low_cluster = 0.0;
  for (std::size_t j = 0; j < density.nodes.size(); ++j) {
    weight_sum += density.weights[j];
    node_mean += density.weights[j] * density.nodes[j];
    if (density.nodes[j] < 5) low_cluster += density.weights[j];
    CHECK(density.nodes[j] >= spectrum.minCoeff() - 1e-10);
    CHECK(density.nodes[j] <= spectrum.maxCoeff() + 1e-10);
  }
  CHECK(weight_sum == Approx(1.0).epsilon(1e-12));
  CHECK(moment(density, 0) == Approx(1.0).epsilon(1e-6));
  CHECK(moment(density, 1) == Approx(node_mean).epsilon(1e-6));
  CHECK(low_cluster == Approx(0.5).margin(0.15));
  for (std::size_t i = 1; i < density.points.size(); ++i) {
    CHECK(density.points[i].x > density.points[i - 1].x);
    CHECK(density.points[i].density >= 0.0);
  }

  // The mean is the Hutchinson estimate with the same probes, and close to tr(A) / n.
  HutchinsonOptions h;
  h.num_probes = options.num_probes;
  h.seed = options.seed;
  const auto trace = hutchinson_trace(dense, h);
  CHECK(node_mean == Approx(trace.mean / n).epsilon(1e-12));
  CHECK(std::abs(node_mean - a.trace() / n) <= 4 * trace.standard_error / n);
}

TEST_CASE("SLQ is exact for a spectrum with three distinct values", "[linalg][slq]") {
  const Vec spectrum = concat({Vec::Constant(10, 1.0), Vec::Constant(20, 2.0), Vec::Constant(30, 4.0)});
  DenseOperator<double> op(with_spectrum(spectrum, 12));
  SlqOptions options;
  options.num_probes = 5;
  options.num_steps = 10;
  const auto density = stochastic_lanczos_quadrature(op, options);
  CHECK(density.num_products == 5 * 3);  // every probe breaks down after three steps
  REQUIRE(density.nodes.size() == 15);
  for (double node : density.nodes) {
    const double nearest = std::min({std::abs(node - 1), std::abs(node - 2), std::abs(node - 4)});
    CHECK(nearest <= 1e-10);
  }
}

TEST_CASE("Stochastic estimators are deterministic for a seed", "[linalg][slq][hutchinson][determinism]") {
  const Mat a = with_spectrum(uniform_vector(70, -1, 1, 13), 14);
  DenseOperator<double> op(a);
  SlqOptions options;
  options.num_probes = 4;
  options.num_steps = 20;
  options.seed = 99;
  const auto first = stochastic_lanczos_quadrature(op, options);
  const auto second = stochastic_lanczos_quadrature(op, options);
  REQUIRE(first.points.size() == second.points.size());
  CHECK(std::memcmp(first.points.data(), second.points.data(),
                    first.points.size() * sizeof(DensityPoint)) == 0);
  CHECK(first.nodes == second.nodes);
  CHECK(first.weights == second.weights);
  options.seed = 100;
  CHECK(stochastic_lanczos_quadrature(op, options).nodes != first.nodes);

  HutchinsonOptions h;
  h.num_probes = 10;
  h.seed = 3;
  const auto t1 = hutchinson_trace(op, h);
  const auto t2 = hutchinson_trace(op, h);
  CHECK(t1.samples == t2.samples);
  // Probe i does not depend on the number of probes.
  h.num_probes = 4;
  const auto t3 = hutchinson_trace(op, h);
  CHECK(std::equal(t3.samples.begin(), t3.samples.end(), t1.samples.begin()));
}

TEST_CASE("Stochastic estimators in float32", "[linalg][slq][hutchinson][float]") {
  const Index n = 100;
  const Mat a = with_spectrum(uniform_vector(n, 0, 4, 15), 16);
  DenseOperator<float> op(a.cast<float>());
  SlqOptions options;
  options.num_probes = 8;
  options.num_steps = 30;
  const auto density = stochastic_lanczos_quadrature(op, options);
  REQUIRE(density.status.is_ok());
  CHECK(moment(density, 0) == Approx(1.0).epsilon(1e-4));
  HutchinsonOptions h;
  h.num_probes = 100;
  const auto trace = hutchinson_trace(op, h);
  CHECK(std::abs(trace.mean - a.trace()) <= 4 * trace.standard_error);
}

TEST_CASE("SLQ reports failing products and bad options", "[linalg][slq]") {
  const Mat a = with_spectrum(uniform_vector(30, 0, 1, 17), 18);
  Index calls = 0;
  FunctionOperator<double> flaky(30, [&](ConstVectorRef<double> x, VectorRef<double> y) {
    y.noalias() = a * x;
    if (++calls == 12) y[2] = std::numeric_limits<double>::quiet_NaN();
  });
  SlqOptions options;
  options.num_probes = 3;
  options.num_steps = 10;
  const auto density = stochastic_lanczos_quadrature(flaky, options);
  CHECK(density.status.code() == StatusCode::kNumericalIssue);
  CHECK(density.num_products == 12);
  CHECK(density.points.empty());

  DenseOperator<double> op(a);
  options.num_points = 1;
  CHECK_THROWS_WITH(stochastic_lanczos_quadrature(op, options), Catch::Contains("num_points = 1"));
}
