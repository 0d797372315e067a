#include <algorithm>
#include <cmath>
#include <limits>

#include <catch2/catch.hpp>

#include <quadra/error.hpp>
#include <quadra/linalg/cg.hpp>

#include "support.hpp"

using namespace quadra;
using namespace quadra::linalg;
using namespace quadra::linalg::testing;

namespace {

// SPD test matrix with eigenvalues log-spaced in [lo, hi].
Mat spd(Index n, double lo, double hi, std::uint64_t seed) {
  Vec spectrum(n);
  for (Index i = 0; i < n; ++i) {
    spectrum[i] = lo * std::pow(hi / lo, static_cast<double>(i) / static_cast<double>(n - 1));
  }
  return with_spectrum(spectrum, seed);
}

double quadratic(const Mat& a_damped, const Vec& b, const Vec& x) {
  return 0.5 * x.dot(a_damped * x) - b.dot(x);
}

}  // namespace

TEST_CASE("CG matches a dense LDLT solve", "[linalg][cg]") {
  const Index n = 100;
  const Mat a = spd(n, 1e-2, 10, 1);
  const Vec b = gaussian_vector(n, 2);
  const double lambda = 0.1;
  const Mat damped = a + lambda * Mat::Identity(n, n);
  const Vec reference = damped.ldlt().solve(b);
  DenseOperator<double> op(a);

  CgOptions options;
  options.damping = lambda;
  options.tolerance = 1e-12;
  const auto result = conjugate_gradients<double>(op, b, options);
  CHECK(result.status.is_ok());
  CHECK(result.termination == CgTermination::kConverged);
  CHECK((result.x - reference).norm() <= 1e-9 * reference.norm());
  CHECK((b - damped * result.x).norm() <= 1e-11 * b.norm());
  CHECK(result.residual_norm <= 1e-12 * b.norm());
  CHECK(result.num_products == result.iterations);
  CHECK(result.b_norm == Approx(b.norm()));
  CHECK(result.trace.quadratic.size() == static_cast<std::size_t>(result.iterations) + 1);
  CHECK(result.trace.directions.cols() == 0);  // not requested
  CHECK(result.trace.iterates.cols() == 0);

  SECTION("warm start") {
    const Vec x0 = reference + 1e-3 * gaussian_vector(n, 3);
    const auto warm = conjugate_gradients<double>(op, b, options, &x0);
    CHECK(warm.termination == CgTermination::kConverged);
    CHECK((warm.x - reference).norm() <= 1e-9 * reference.norm());
    CHECK(warm.num_products == warm.iterations + 1);
    CHECK(warm.iterations < result.iterations);
    CHECK(warm.trace.quadratic[0] == Approx(quadratic(damped, b, x0)).epsilon(1e-12));

    const auto exact = conjugate_gradients<double>(op, b, options, &reference);
    CHECK(exact.iterations == 0);
    CHECK(exact.num_products == 1);
    CHECK(exact.termination == CgTermination::kConverged);
  }

  SECTION("Jacobi preconditioner on a badly scaled matrix") {
    // D^{1/2} B D^{1/2} with B well conditioned and D spanning six orders of magnitude:
    // the diagonal carries the ill-conditioning, which Jacobi removes.
    const Vec d = uniform_vector(n, -3, 3, 4).unaryExpr([](double e) { return std::pow(10, e); });
    const Mat scaled = d.cwiseSqrt().asDiagonal() * spd(n, 1, 4, 5) * d.cwiseSqrt().asDiagonal();
    DenseOperator<double> scaled_op(scaled);
    const Vec inverse_diagonal = scaled.diagonal().cwiseInverse();
    FunctionOperator<double> jacobi(n, [&](ConstVectorRef<double> x, VectorRef<double> y) {
      y = inverse_diagonal.cwiseProduct(x);
    });
    CgOptions opts;
    opts.tolerance = 1e-10;
    opts.max_iterations = 2000;
    const Vec ref = scaled.ldlt().solve(b);
    const auto plain = conjugate_gradients<double>(scaled_op, b, opts);
    const auto preconditioned = conjugate_gradients<double>(scaled_op, b, opts, nullptr, &jacobi);
    REQUIRE(preconditioned.termination == CgTermination::kConverged);
    CHECK((preconditioned.x - ref).norm() <= 1e-6 * ref.norm());
    CHECK((b - scaled * preconditioned.x).norm() <= 1e-9 * b.norm());
    CHECK(preconditioned.iterations * 4 < plain.iterations);
    CHECK(preconditioned.num_products == preconditioned.iterations);
  }
}

TEST_CASE("CG trace: conjugate directions, curvatures, step lengths, iterates, quadratic",
          "[linalg][cg][trace]") {
  const Index n = 60;
  const Mat a = spd(n, 0.5, 5, 6);
  const Vec b = gaussian_vector(n, 7);
  const double lambda = 0.05;
  const Mat damped = a + lambda * Mat::Identity(n, n);
  DenseOperator<double> op(a);
  const Vec x0 = 0.1 * gaussian_vector(n, 8);

  CgOptions options;
  options.damping = lambda;
  options.tolerance = 1e-10;
  options.record_directions = true;
  options.record_iterates = IterateRecording::kAll;
  const auto result = conjugate_gradients<double>(op, b, options, &x0);
  REQUIRE(result.termination == CgTermination::kConverged);
  const Index k = result.iterations;
  const auto& trace = result.trace;
  REQUIRE(k >= 10);
  REQUIRE(trace.directions.cols() == k);
  REQUIRE(trace.curvatures.size() == static_cast<std::size_t>(k));
  REQUIRE(trace.step_lengths.size() == static_cast<std::size_t>(k));
  REQUIRE(trace.quadratic.size() == static_cast<std::size_t>(k + 1));
  REQUIRE(trace.residual_norms.size() == static_cast<std::size_t>(k + 1));
  REQUIRE(trace.iterates.cols() == k + 1);
  REQUIRE(trace.iterate_indices.size() == static_cast<std::size_t>(k + 1));

  const Mat& p = trace.directions;
  const Mat gram = p.transpose() * damped * p;  // P^T (A + lambda I) P
  for (Index i = 0; i < k; ++i) {
    const auto si = static_cast<std::size_t>(i);
    CHECK(trace.curvatures[si] == Approx(gram(i, i)).epsilon(1e-12));
    CHECK(trace.iterate_indices[si] == i);
    const Vec xi = trace.iterates.col(i);
    const Vec next = trace.iterates.col(i + 1);
    CHECK((next - (xi + trace.step_lengths[si] * p.col(i))).norm() <= 1e-14 * next.norm());
    CHECK(trace.quadratic[si] == Approx(quadratic(damped, b, xi)).epsilon(1e-10));
    // The recurrence residual drifts from b - (A + lambda I) x_i only at roundoff level.
    CHECK(std::abs(trace.residual_norms[si] - (b - damped * xi).norm()) <= 1e-13 * b.norm());
    // CG decreases phi every step (until the decrease is below the resolution of phi).
    CHECK(trace.quadratic[si + 1] <= trace.quadratic[si] + 1e-14 * std::abs(trace.quadratic[si]));
    for (Index j = 0; j < i; ++j) {
      // A-conjugacy, normalised by the curvatures.
      CHECK(std::abs(gram(i, j)) <= 1e-8 * std::sqrt(gram(i, i) * gram(j, j)));
    }
  }
  CHECK(trace.iterates.col(0) == x0);
  CHECK(trace.iterates.col(k) == result.x);

  SECTION("iterates at a schedule") {
    CgOptions scheduled = options;
    scheduled.record_iterates = IterateRecording::kSchedule;
    scheduled.iterate_schedule = geometric_schedule(scheduled.max_iterations);
    const auto run = conjugate_gradients<double>(op, b, scheduled, &x0);
    REQUIRE(run.iterations == k);
    const auto& indices = run.trace.iterate_indices;
    REQUIRE(!indices.empty());
    CHECK(indices.back() == k);  // the final iterate is always kept
    for (std::size_t j = 0; j < indices.size(); ++j) {
      const bool in_schedule =
          std::find(scheduled.iterate_schedule.begin(), scheduled.iterate_schedule.end(),
                    indices[j]) != scheduled.iterate_schedule.end();
      CHECK((in_schedule || indices[j] == k));
      CHECK(bitwise_equal(Mat(run.trace.iterates.col(static_cast<Index>(j))),
                          Mat(trace.iterates.col(indices[j]))));
    }
    CHECK(indices.size() < static_cast<std::size_t>(k));
  }
}

TEST_CASE("geometric_schedule is ceil(1.3^j) without duplicates", "[linalg][cg]") {
  CHECK(geometric_schedule(20) == std::vector<Index>{1, 2, 3, 4, 5, 7, 9, 11, 14, 18});
  CHECK(geometric_schedule(0).empty());
  CHECK(geometric_schedule(3, 2.0) == std::vector<Index>{1, 2});
  CHECK_THROWS_AS(geometric_schedule(10, 1.0), Error);
}

TEST_CASE("Martens' rule stops earlier than the residual rule on a slow problem",
          "[linalg][cg][martens]") {
  // CG is invariant under rotations, so a diagonal matrix with eigenvalues log-spaced over
  // four orders of magnitude is as slow a problem as a dense one, and cheap.
  const Index n = 1000;
  Vec d(n);
  for (Index i = 0; i < n; ++i) d[i] = std::pow(1e-4, static_cast<double>(i) / (n - 1.0));
  const Vec b = gaussian_vector(n, 10);
  FunctionOperator<double> op(n, [&](ConstVectorRef<double> x, VectorRef<double> y) {
    y = d.cwiseProduct(x);
  });
  CgOptions options;
  options.tolerance = 1e-6;
  options.max_iterations = 3000;
  const auto by_tolerance = conjugate_gradients<double>(op, b, options);
  options.use_martens_rule = true;
  const auto by_progress = conjugate_gradients<double>(op, b, options);

  REQUIRE(by_tolerance.termination == CgTermination::kConverged);
  REQUIRE(by_progress.termination == CgTermination::kRelativeProgress);
  CHECK(by_progress.status.is_ok());
  const Index stop = by_progress.iterations;
  CHECK(stop < by_tolerance.iterations / 2);  // 122 vs 683 steps at the time of writing
  // Both runs take identical steps up to the stop.
  CHECK(bitwise_equal(Vec(Eigen::Map<const Vec>(by_progress.trace.quadratic.data(), stop + 1)),
                      Vec(Eigen::Map<const Vec>(by_tolerance.trace.quadratic.data(), stop + 1))));

  // The rule, evaluated independently on the recorded phi values, fires exactly at `stop`.
  const auto& phi = by_progress.trace.quadratic;
  auto fires = [&](Index i) {
    const Index k = std::max<Index>(10, static_cast<Index>(0.1 * static_cast<double>(i)));
    if (i <= k) return false;
    const double now = phi[static_cast<std::size_t>(i)];
    const double then = phi[static_cast<std::size_t>(i - k)];
    return now < 0 && (now - then) / now < static_cast<double>(k) * 5e-4;
  };
  CHECK(fires(stop));
  for (Index i = 0; i < stop; ++i) CHECK_FALSE(fires(i));
  // Stopping early costs little of the achievable decrease of phi.
  const double optimum = by_tolerance.trace.quadratic.back();
  CHECK((phi.back() - optimum) / std::abs(optimum) < 0.05);
}

TEST_CASE("CG reports non-positive curvature with the last good iterate",
          "[linalg][cg][negative-curvature]") {
  SECTION("exact zero curvature on the first direction") {
    const Mat a = values({1.0, -1.0}).asDiagonal();
    DenseOperator<double> op(a);
    const Vec b = values({1.0, 1.0});
    const auto result = conjugate_gradients<double>(op, b, {});
    CHECK(result.termination == CgTermination::kNegativeCurvature);
    CHECK(result.status.code() == StatusCode::kNumericalIssue);
    CHECK_THAT(result.status.message(), Catch::Contains("non-positive curvature"));
    CHECK(result.iterations == 0);
    CHECK(result.x == Vec::Zero(2));
    CHECK(result.negative_curvature == 0.0);
    CHECK(result.negative_curvature_direction == b);
  }

  SECTION("indefinite matrix") {
    const Index n = 80;
    const Mat a = with_spectrum(concat({uniform_vector(60, 0.5, 5, 11), uniform_vector(20, -1, -0.1, 12)}), 13);
    const Vec b = gaussian_vector(n, 14);
    DenseOperator<double> op(a);
    CgOptions options;
    options.tolerance = 1e-12;
    options.record_directions = true;
    options.record_iterates = IterateRecording::kAll;
    const auto result = conjugate_gradients<double>(op, b, options);
    REQUIRE(result.termination == CgTermination::kNegativeCurvature);
    CHECK(result.status.code() == StatusCode::kNumericalIssue);
    const Vec& d = result.negative_curvature_direction;
    REQUIRE(d.size() == n);
    CHECK(result.negative_curvature <= 0.0);
    CHECK(result.negative_curvature == Approx(d.dot(a * d)).epsilon(1e-10));
    // x is the last good iterate: the sum of the steps taken, and the last recorded iterate.
    Vec sum = Vec::Zero(n);
    for (Index i = 0; i < result.iterations; ++i) {
      sum += result.trace.step_lengths[static_cast<std::size_t>(i)] *
             result.trace.directions.col(i);
    }
    CHECK((result.x - sum).norm() <= 1e-12 * sum.norm());
    CHECK(result.trace.iterates.col(result.trace.iterates.cols() - 1) == result.x);
    CHECK(result.trace.directions.cols() == result.iterations);
    for (double c : result.trace.curvatures) CHECK(c > 0.0);

    // Enough damping makes the same system positive definite.
    options.damping = 1.5;
    const auto damped = conjugate_gradients<double>(op, b, options);
    CHECK(damped.termination == CgTermination::kConverged);
    const Vec reference = (a + 1.5 * Mat::Identity(n, n)).ldlt().solve(b);
    CHECK((damped.x - reference).norm() <= 1e-9 * reference.norm());
  }
}

TEST_CASE("CG edge cases: caps, zero right-hand side, failing products, bad options",
          "[linalg][cg]") {
  const Index n = 50;
  const Mat a = spd(n, 1e-3, 1, 15);
  const Vec b = gaussian_vector(n, 16);
  DenseOperator<double> dense(a);
  CountingOperator<double> op(dense);

  CgOptions options;
  options.max_iterations = 5;
  const auto capped = conjugate_gradients<double>(op, b, options);
  CHECK(capped.termination == CgTermination::kMaxIterations);
  CHECK(capped.status.is_ok());
  CHECK(capped.iterations == 5);
  CHECK(capped.num_products == 5);
  CHECK(op.num_products() == 5);

  const auto zero = conjugate_gradients<double>(op, Vec::Zero(n), options);
  CHECK(zero.termination == CgTermination::kConverged);
  CHECK(zero.x == Vec::Zero(n));
  CHECK(zero.num_products == 0);

  Index calls = 0;
  FunctionOperator<double> flaky(n, [&](ConstVectorRef<double> x, VectorRef<double> y) {
    y.noalias() = a * x;
    if (++calls == 3) y[7] = std::numeric_limits<double>::quiet_NaN();
  });
  const auto failed = conjugate_gradients<double>(flaky, b, {});
  CHECK(failed.termination == CgTermination::kNumericalIssue);
  CHECK(failed.status.code() == StatusCode::kNumericalIssue);
  CHECK(failed.iterations == 2);
  CHECK(failed.x.allFinite());

  FunctionOperator<double> indefinite_preconditioner(
      n, [](ConstVectorRef<double> x, VectorRef<double> y) { y = -x; });
  const auto bad = conjugate_gradients<double>(dense, b, {}, nullptr, &indefinite_preconditioner);
  CHECK(bad.termination == CgTermination::kNumericalIssue);
  CHECK_THAT(bad.status.message(), Catch::Contains("preconditioner must be positive definite"));

  CgOptions invalid;
  invalid.tolerance = -1e-3;
  CHECK_THROWS_WITH(conjugate_gradients<double>(dense, b, invalid),
                    Catch::Contains("tolerance = -0.001"));
  invalid = {};
  invalid.record_iterates = IterateRecording::kSchedule;
  invalid.iterate_schedule = {1, 3, 3};
  CHECK_THROWS_WITH(conjugate_gradients<double>(dense, b, invalid),
                    Catch::Contains("iterate_schedule[2] = 3"));
}

TEST_CASE("CG in float32", "[linalg][cg][float]") {
  const Index n = 80;
  const Mat a = spd(n, 0.1, 10, 17);
  const Vec b = gaussian_vector(n, 18);
  DenseOperator<float> op(a.cast<float>());
  CgOptions options;
  options.damping = 0.01;
  options.tolerance = 1e-5;
  options.record_directions = true;
  const Vector<float> bf = b.cast<float>();
  const auto result = conjugate_gradients<float>(op, bf, options);
  CHECK(result.termination == CgTermination::kConverged);
  const Vec reference = (a + 0.01 * Mat::Identity(n, n)).ldlt().solve(b);
  CHECK((result.x.cast<double>() - reference).norm() <= 1e-4 * reference.norm());
  CHECK(result.trace.directions.cols() == result.iterations);
}
