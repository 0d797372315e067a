#include <cmath>
#include <limits>

#include <catch2/catch.hpp>

#include <quadra/error.hpp>
#include <quadra/linalg/cg.hpp>
#include <quadra/linalg/minres.hpp>

#include "support.hpp"

using namespace quadra;
using namespace quadra::linalg;
using namespace quadra::linalg::testing;

namespace {

void check_history(const MinresResult<double>& result) {
  const auto& h = result.residual_norms;
  REQUIRE(h.size() == static_cast<std::size_t>(result.iterations) + 1);
  for (std::size_t i = 1; i < h.size(); ++i) CHECK(h[i] <= h[i - 1] * (1 + 1e-12));
}

}  // namespace

TEST_CASE("MINRES matches a dense solve on an indefinite matrix", "[linalg][minres]") {
  const Index n = 120;
  const Mat a = with_spectrum(
      concat({uniform_vector(70, 0.5, 5, 1), uniform_vector(50, -5, -0.5, 2)}), 3);
  const Vec b = gaussian_vector(n, 4);
  const double lambda = 0.2;
  const Mat damped = a + lambda * Mat::Identity(n, n);
  const Vec reference = damped.partialPivLu().solve(b);
  DenseOperator<double> op(a);

  MinresOptions options;
  options.damping = lambda;
  options.tolerance = 1e-10;
  const auto result = minres<double>(op, b, options);
  CHECK(result.status.is_ok());
  CHECK(result.termination == MinresTermination::kConverged);
  CHECK((result.x - reference).norm() <= 1e-8 * reference.norm());
  const double true_residual = (b - damped * result.x).norm();
  CHECK(true_residual <= 2e-10 * b.norm());
  CHECK(result.residual_norms.back() <= 1e-10 * b.norm());
  CHECK(result.residual_norms.back() == Approx(true_residual).margin(1e-12 * b.norm()));
  CHECK(result.residual_norms.front() == Approx(b.norm()));
  CHECK(result.num_products == result.iterations);
  check_history(result);

  SECTION("iteration cap") {
    MinresOptions capped = options;
    capped.max_iterations = 10;
    const auto r = minres<double>(op, b, capped);
    CHECK(r.termination == MinresTermination::kMaxIterations);
    CHECK(r.iterations == 10);
    CHECK(r.num_products == 10);
    check_history(r);
    // The recurrence residual is the true residual of the returned iterate.
    CHECK(r.residual_norms.back() == Approx((b - damped * r.x).norm()).epsilon(1e-8));
  }

  SECTION("warm start") {
    const Vec x0 = reference + 1e-4 * gaussian_vector(n, 5);
    const auto warm = minres<double>(op, b, options, &x0);
    CHECK(warm.termination == MinresTermination::kConverged);
    CHECK(warm.num_products == warm.iterations + 1);
    CHECK((warm.x - reference).norm() <= 1e-8 * reference.norm());
    CHECK(warm.residual_norms.front() == Approx((b - damped * x0).norm()).epsilon(1e-10));
  }
}

TEST_CASE("MINRES agrees with CG on an SPD system", "[linalg][minres]") {
  const Index n = 60;
  const Mat a = with_spectrum(uniform_vector(n, 0.1, 3, 6), 7);
  const Vec b = gaussian_vector(n, 8);
  DenseOperator<double> op(a);
  MinresOptions m;
  m.tolerance = 1e-12;
  CgOptions c;
  c.tolerance = 1e-12;
  const auto x_minres = minres<double>(op, b, m).x;
  const auto x_cg = conjugate_gradients<double>(op, b, c).x;
  CHECK((x_minres - x_cg).norm() <= 1e-9 * x_cg.norm());
}

TEST_CASE("MINRES on singular systems", "[linalg][minres]") {
  DenseOperator<double> op(Mat(values({1.0, 2.0, 0.0}).asDiagonal()));
  SECTION("b in the range: the solution") {
    const auto r = minres<double>(op, values({1.0, 1.0, 0.0}), {});
    CHECK(r.termination == MinresTermination::kConverged);
    CHECK((r.x - values({1.0, 0.5, 0.0})).norm() <= 1e-12);
  }
  SECTION("b not in the range: a least-squares solution") {
    // Least-squares solutions are (1, 0.5, t) for any t; MINRES's iterates stay in the Krylov
    // space of b, which contains a null-space component, so t is not 0 (unlike MINRES-QLP).
    const auto r = minres<double>(op, values({1.0, 1.0, 1.0}), {});
    CHECK(r.termination == MinresTermination::kSingular);
    CHECK(r.status.is_ok());
    CHECK((r.x.head(2) - values({1.0, 0.5})).norm() <= 1e-10);
    CHECK(r.residual_norms.back() == Approx(1.0).epsilon(1e-10));
    check_history(r);
  }
}

TEST_CASE("MINRES edge cases", "[linalg][minres]") {
  const Mat a = with_spectrum(uniform_vector(30, -2, 2, 9), 10);
  DenseOperator<double> op(a);
  const auto zero = minres<double>(op, Vec::Zero(30), {});
  CHECK(zero.termination == MinresTermination::kConverged);
  CHECK(zero.num_products == 0);
  CHECK(zero.x == Vec::Zero(30));

  Index calls = 0;
  FunctionOperator<double> flaky(30, [&](ConstVectorRef<double> x, VectorRef<double> y) {
    y.noalias() = a * x;
    if (++calls == 4) y[0] = std::numeric_limits<double>::infinity();
  });
  const auto failed = minres<double>(flaky, gaussian_vector(30, 11), {});
  CHECK(failed.termination == MinresTermination::kNumericalIssue);
  CHECK(failed.status.code() == StatusCode::kNumericalIssue);
  CHECK(failed.num_products == 4);

  MinresOptions invalid;
  invalid.max_iterations = -1;
  CHECK_THROWS_WITH(minres<double>(op, gaussian_vector(30, 12), invalid),
                    Catch::Contains("max_iterations = -1"));
}

TEST_CASE("MINRES in float32", "[linalg][minres][float]") {
  const Index n = 80;
  const Mat a = with_spectrum(
      concat({uniform_vector(40, 1, 4, 13), uniform_vector(40, -4, -1, 14)}), 15);
  const Vec b = gaussian_vector(n, 16);
  DenseOperator<float> op(a.cast<float>());
  MinresOptions options;
  options.tolerance = 1e-5;
  const Vector<float> bf = b.cast<float>();
  const auto result = minres<float>(op, bf, options);
  CHECK(result.termination == MinresTermination::kConverged);
  const Vec reference = a.partialPivLu().solve(b);
  CHECK((result.x.cast<double>() - reference).norm() <= 1e-4 * reference.norm());
}
