#include <cmath>
#include <limits>

#include <catch2/catch.hpp>

#include <quadra/error.hpp>
#include <quadra/linalg/lanczos.hpp>
#include <quadra/parallel.hpp>

#include "support.hpp"

using namespace quadra;
using namespace quadra::linalg;
using namespace quadra::linalg::testing;

namespace {

// The k reference eigenvalues/vectors from the wanted end, in the order lanczos() returns.
Reference wanted_reference(const Reference& all, Index k, SpectrumEnd which) {
  const Index n = all.values.size();
  Reference out{Vec(k), Mat(n, k)};
  for (Index i = 0; i < k; ++i) {
    const Index idx = which == SpectrumEnd::kLargest ? n - 1 - i : i;
    out.values[i] = all.values[idx];
    out.vectors.col(i) = all.vectors.col(idx);
  }
  return out;
}

// Checks every property of a converged result against Eigen's dense eigensolver:
// eigenvalues, orthonormal vectors, true residuals, the residual estimates, and (when the
// wanted eigenvalues are separated from each other by more than `gap`) eigenvector angles.
void check_against_reference(const Mat& a, const LanczosResult<double>& result, Index k,
                             SpectrumEnd which, double tolerance, bool separated) {
  const Reference all = reference_eigen(a);
  const Reference ref = wanted_reference(all, k, which);
  const double norm = all.values.cwiseAbs().maxCoeff();
  REQUIRE(result.status.is_ok());
  REQUIRE(result.converged);
  REQUIRE(result.eigenvalues.size() == k);
  REQUIRE(result.eigenvectors.cols() == k);
  REQUIRE(result.residual_norms.size() == k);
  for (Index i = 0; i < k; ++i) {
    INFO("pair " << i << ": lanczos " << result.eigenvalues[i] << ", reference "
                 << ref.values[i]);
    CHECK(std::abs(result.eigenvalues[i] - ref.values[i]) <= 10 * tolerance * norm);
    const Vec y = result.eigenvectors.col(i);
    const double true_residual = (a * y - result.eigenvalues[i] * y).norm();
    CHECK(true_residual <= 10 * tolerance * norm);
    CHECK(std::abs(true_residual - result.residual_norms[i]) <= 1e-12 * norm);
    if (separated) CHECK(std::abs(y.dot(ref.vectors.col(i))) >= 1.0 - 1e-8);
  }
  const Mat gram = result.eigenvectors.transpose() * result.eigenvectors;
  CHECK((gram - Mat::Identity(k, k)).norm() <= 1e-12);
  // Sorted from the wanted end inwards.
  for (Index i = 1; i < k; ++i) {
    if (which == SpectrumEnd::kLargest) {
      CHECK(result.eigenvalues[i] <= result.eigenvalues[i - 1]);
    } else {
      CHECK(result.eigenvalues[i] >= result.eigenvalues[i - 1]);
    }
  }
}

}  // namespace

TEST_CASE("Lanczos top-k and bottom-k match a dense eigensolver", "[linalg][lanczos]") {
  LanczosOptions options;
  options.tolerance = 1e-10;
  options.max_products = 200;
  options.seed = 7;

  SECTION("SPD, well-separated ends") {
    const Vec spectrum = concat({values({50, 40, 32, 25, 20}), uniform_vector(140, 3, 10, 1),
                                 values({2, 1.5, 1, 0.5, 0.01})});
    const Mat a = with_spectrum(spectrum, 2);
    DenseOperator<double> op(a);
    for (auto which : {SpectrumEnd::kLargest, SpectrumEnd::kSmallest}) {
      const auto result = lanczos(op, 4, which, options);
      check_against_reference(a, result, 4, which, options.tolerance, true);
      CHECK(result.stop == LanczosStop::kConverged);
      CHECK(result.num_products < a.rows());  // converged, not just exhausted the space
      CHECK(result.num_restarts == 0);
    }
  }

  SECTION("indefinite") {
    const Vec spectrum = concat({values({25, 21, 18, 16, 15}), uniform_vector(110, -10, 10, 3),
                                 values({-12, -14, -17, -22, -30})});
    const Mat a = with_spectrum(spectrum, 4);
    DenseOperator<double> op(a);
    for (auto which : {SpectrumEnd::kLargest, SpectrumEnd::kSmallest}) {
      const auto result = lanczos(op, 5, which, options);
      check_against_reference(a, result, 5, which, options.tolerance, true);
      CHECK(result.stop == LanczosStop::kConverged);
      CHECK(result.num_products < a.rows());
    }
  }

  SECTION("clustered top of the spectrum") {
    // Five eigenvalues within 4e-3 of each other, well apart from the rest: Lanczos resolves
    // them only together, after more steps; the subspace is what is well determined.
    const Vec spectrum = concat({values({10.0, 9.999, 9.998, 9.997, 9.996}),
                                 uniform_vector(195, 0, 9, 5)});
    const Mat a = with_spectrum(spectrum, 6);
    DenseOperator<double> op(a);
    const auto result = lanczos(op, 5, SpectrumEnd::kLargest, options);
    check_against_reference(a, result, 5, SpectrumEnd::kLargest, options.tolerance, false);
    const Reference ref = wanted_reference(reference_eigen(a), 5, SpectrumEnd::kLargest);
    // The computed vectors span the reference eigenspace of the cluster.
    const Mat y = result.eigenvectors;
    CHECK((y - ref.vectors * (ref.vectors.transpose() * y)).norm() <= 1e-7);
  }
}

TEST_CASE("Lanczos finds all copies of an exactly repeated eigenvalue",
          "[linalg][lanczos][invariant]") {
  // Three distinct eigenvalues: every Krylov space breaks down after three steps, and each
  // restart finds one more copy of 5.
  const Vec spectrum =
      concat({Vec::Constant(3, 5.0), Vec::Constant(27, 2.0), Vec::Constant(30, 1.0)});
  const Mat a = with_spectrum(spectrum, 8);
  DenseOperator<double> op(a);
  LanczosOptions options;
  options.tolerance = 1e-10;
  options.seed = 3;
  const Reference ref = reference_eigen(a);
  const Mat top_space = ref.vectors.rightCols(3);  // eigenspace of 5

  const auto top3 = lanczos(op, 3, SpectrumEnd::kLargest, options);
  check_against_reference(a, top3, 3, SpectrumEnd::kLargest, options.tolerance, false);
  CHECK(top3.num_restarts >= 2);
  CHECK((top3.eigenvectors - top_space * (top_space.transpose() * top3.eigenvectors)).norm() <=
        1e-9);

  const auto top4 = lanczos(op, 4, SpectrumEnd::kLargest, options);
  check_against_reference(a, top4, 4, SpectrumEnd::kLargest, options.tolerance, false);
  CHECK(top4.eigenvalues[3] == Approx(2.0).margin(1e-9));

  const auto bottom3 = lanczos(op, 3, SpectrumEnd::kSmallest, options);
  check_against_reference(a, bottom3, 3, SpectrumEnd::kSmallest, options.tolerance, false);
  CHECK(bottom3.num_products < 30);
}

TEST_CASE("Lanczos on a low-rank matrix restarts in the null space",
          "[linalg][lanczos][invariant]") {
  const Index n = 80;
  const Mat u = random_orthogonal(n, 9).leftCols(6);
  const Mat a = u * values({9, 7, 5, 3, 2, 1}).asDiagonal() * u.transpose();
  DenseOperator<double> op(a);
  LanczosOptions options;
  options.tolerance = 1e-10;

  const auto top = lanczos(op, 3, SpectrumEnd::kLargest, options);
  check_against_reference(a, top, 3, SpectrumEnd::kLargest, options.tolerance, true);
  CHECK(top.num_products <= 8);

  const auto bottom = lanczos(op, 3, SpectrumEnd::kSmallest, options);
  check_against_reference(a, bottom, 3, SpectrumEnd::kSmallest, options.tolerance, false);
  CHECK(bottom.eigenvalues.cwiseAbs().maxCoeff() <= 1e-12);
  CHECK((u.transpose() * bottom.eigenvectors).norm() <= 1e-10);  // in the null space
  CHECK(bottom.num_restarts >= 1);
  CHECK(bottom.num_products < 20);
}

TEST_CASE("Lanczos handles the zero operator and an exhausted space", "[linalg][lanczos]") {
  SECTION("zero operator") {
    DenseOperator<double> zero(Mat::Zero(10, 10));
    const auto result = lanczos(zero, 2, SpectrumEnd::kLargest, {});
    CHECK(result.converged);
    CHECK(result.eigenvalues.cwiseAbs().maxCoeff() == 0.0);
    CHECK(result.num_products <= 3);
  }
  SECTION("k = n") {
    const Mat a = with_spectrum(uniform_vector(6, -3, 3, 10), 11);
    DenseOperator<double> op(a);
    LanczosOptions options;
    options.tolerance = 0.0;  // only breakdown or exhaustion can end the run
    const auto result = lanczos(op, 6, SpectrumEnd::kSmallest, options);
    CHECK(result.stop == LanczosStop::kSpaceExhausted);
    CHECK(result.num_products == 6);
    check_against_reference(a, result, 6, SpectrumEnd::kSmallest, 1e-13, true);
  }
}

TEST_CASE("Lanczos respects its product budget", "[linalg][lanczos][budget]") {
  const Vec spectrum = concat({values({10.0, 9.999, 9.998, 9.997}), uniform_vector(196, 0, 9, 5)});
  const Mat a = with_spectrum(spectrum, 12);
  DenseOperator<double> dense(a);
  CountingOperator<double> op(dense);
  LanczosOptions options;
  options.max_products = 30;
  options.tolerance = 1e-12;
  const auto result = lanczos(op, 4, SpectrumEnd::kLargest, options);
  CHECK(result.stop == LanczosStop::kBudget);
  CHECK_FALSE(result.converged);
  CHECK(result.status.is_ok());
  CHECK(result.num_products == 30);
  CHECK(op.num_products() == 30);
  REQUIRE(result.eigenvalues.size() == 4);
  // Still the best available estimates: Ritz values lie inside the spectrum, the top one close.
  CHECK(result.eigenvalues[0] <= 10.0 + 1e-12);
  CHECK(result.eigenvalues[0] >= 9.9);
  CHECK(result.residual_norms.maxCoeff() > options.tolerance * result.norm_estimate);
}

TEST_CASE("Lanczos reports a failing product", "[linalg][lanczos]") {
  const Mat a = with_spectrum(uniform_vector(40, 1, 2, 13), 14);
  Index calls = 0;
  FunctionOperator<double> op(40, [&](ConstVectorRef<double> x, VectorRef<double> y) {
    y.noalias() = a * x;
    if (++calls == 5) y[0] = std::numeric_limits<double>::infinity();
  });
  const auto result = lanczos(op, 2, SpectrumEnd::kLargest, {});
  CHECK(result.stop == LanczosStop::kNumericalIssue);
  CHECK(result.status.code() == StatusCode::kNumericalIssue);
  CHECK(result.num_products == 5);
  CHECK(result.eigenvalues.size() == 2);  // from the four good steps
  calls = 0;
  const auto early = lanczos(op, 6, SpectrumEnd::kLargest, {});
  CHECK(early.stop == LanczosStop::kNumericalIssue);
  CHECK(early.eigenvalues.size() == 0);
}

TEST_CASE("Lanczos rejects invalid arguments", "[linalg][lanczos]") {
  DenseOperator<double> op(Mat::Identity(5, 5));
  CHECK_THROWS_WITH(lanczos(op, 0, SpectrumEnd::kLargest, {}),
                    Catch::Contains("k = 0 is out of range"));
  CHECK_THROWS_AS(lanczos(op, 6, SpectrumEnd::kLargest, {}), Error);
  LanczosOptions options;
  options.max_products = 2;
  CHECK_THROWS_WITH(lanczos(op, 3, SpectrumEnd::kLargest, options),
                    Catch::Contains("max_products = 2"));
  options = {};
  options.tolerance = -1;
  CHECK_THROWS_WITH(lanczos(op, 1, SpectrumEnd::kLargest, options),
                    Catch::Contains("tolerance = -1"));
}

TEST_CASE("Lanczos in float32", "[linalg][lanczos][float]") {
  const Vec spectrum = concat({values({50, 40, 32, 25, 20}), uniform_vector(115, -10, 10, 15)});
  const Mat a = with_spectrum(spectrum, 16);
  DenseOperator<float> op(a.cast<float>());
  LanczosOptions options;
  options.tolerance = 1e-5;
  const auto result = lanczos(op, 3, SpectrumEnd::kLargest, options);
  REQUIRE(result.converged);
  const Reference ref = wanted_reference(reference_eigen(a), 3, SpectrumEnd::kLargest);
  for (Index i = 0; i < 3; ++i) {
    CHECK(std::abs(result.eigenvalues[i] - ref.values[i]) <= 1e-4 * 50);
    const Vec y = result.eigenvectors.col(i).cast<double>();
    CHECK(std::abs(y.dot(ref.vectors.col(i))) >= 1 - 1e-4);
  }
  const Mat y = result.eigenvectors.cast<double>();
  CHECK((y.transpose() * y - Mat::Identity(3, 3)).norm() <= 1e-5);
}

TEST_CASE("Lanczos is deterministic for a seed", "[linalg][lanczos][determinism]") {
  const Mat a = with_spectrum(uniform_vector(100, -1, 1, 17), 18);
  DenseOperator<double> op(a);
  LanczosOptions options;
  options.seed = 42;
  options.max_products = 40;  // budget-limited: the result depends on every step
  const auto first = lanczos(op, 3, SpectrumEnd::kSmallest, options);
  const auto second = lanczos(op, 3, SpectrumEnd::kSmallest, options);
  CHECK(bitwise_equal(first.eigenvalues, second.eigenvalues));
  CHECK(bitwise_equal(first.eigenvectors, second.eigenvectors));
  CHECK(bitwise_equal(first.residual_norms, second.residual_norms));
  options.seed = 43;
  const auto other = lanczos(op, 3, SpectrumEnd::kSmallest, options);
  CHECK_FALSE(bitwise_equal(first.eigenvalues, other.eigenvalues));
}

TEST_CASE("Lanczos is invariant to the scale of the operator", "[linalg][lanczos]") {
  // Tolerances are relative to ||A|| and T is scaled before its eigenproblem, so a GGN with
  // tiny or huge entries behaves like a unit one.
  const Vec spectrum = concat({values({3, 2.5, 2.2}), uniform_vector(57, -1, 1, 19)});
  const Mat a = with_spectrum(spectrum, 20);
  LanczosOptions options;
  options.tolerance = 1e-10;
  DenseOperator<double> unit(a);
  const auto reference = lanczos_largest(unit, 3, options);
  REQUIRE(reference.converged);
  for (double scale : {1e-30, 1e30}) {
    DenseOperator<double> scaled(Mat(scale * a));
    const auto result = lanczos_largest(scaled, 3, options);
    REQUIRE(result.converged);
    CHECK(result.num_products == reference.num_products);
    for (Index i = 0; i < 3; ++i) {
      CHECK(result.eigenvalues[i] == Approx(scale * reference.eigenvalues[i]).epsilon(1e-12));
    }
  }
}

TEST_CASE("Thick-restart Lanczos matches a dense eigensolver", "[linalg][lanczos][restart]") {
  LanczosOptions options;
  options.tolerance = 1e-10;
  options.max_products = 400;
  options.seed = 21;

  SECTION("default basis, both ends") {
    // Gaps of a few percent of the spread: tens of steps, more than a basis of 20 holds.
    const Vec spectrum = concat({values({12, 11.6, 11.3, 11.1}), uniform_vector(292, 1, 10.6, 22),
                                 values({0.6, 0.45, 0.3, 0.2})});
    const Mat a = with_spectrum(spectrum, 23);
    DenseOperator<double> op(a);
    for (auto which : {SpectrumEnd::kLargest, SpectrumEnd::kSmallest}) {
      const auto result = lanczos(op, 4, which, options);
      check_against_reference(a, result, 4, which, options.tolerance, true);
      CHECK(result.stop == LanczosStop::kConverged);
      CHECK(result.basis_size == 20);  // max(2k + 1, 20)
      CHECK(result.num_thick_restarts >= 1);
      CHECK(result.num_products > result.basis_size);
      CHECK(result.num_restarts == 0);
    }
  }

  SECTION("small basis, indefinite, both ends") {
    // Interior eigenvalues dense in [-10, 10]: the wanted ones converge slowly, over many
    // restarts of a basis of k + 3 vectors.
    const Vec spectrum = concat({values({25, 21, 18, 16, 15}), uniform_vector(290, -10, 10, 24),
                                 values({-12, -14, -17, -22, -30})});
    const Mat a = with_spectrum(spectrum, 25);
    DenseOperator<double> op(a);
    options.max_basis = 8;
    for (auto which : {SpectrumEnd::kLargest, SpectrumEnd::kSmallest}) {
      const auto result = lanczos(op, 5, which, options);
      check_against_reference(a, result, 5, which, options.tolerance, true);
      CHECK(result.stop == LanczosStop::kConverged);
      CHECK(result.basis_size == 8);
      CHECK(result.num_thick_restarts >= 5);
    }
  }

  SECTION("clustered top of the spectrum") {
    const Vec spectrum =
        concat({values({10.0, 9.999, 9.998, 9.997, 9.996}), uniform_vector(295, 0, 9, 26)});
    const Mat a = with_spectrum(spectrum, 27);
    DenseOperator<double> op(a);
    options.max_basis = 12;
    const auto result = lanczos(op, 5, SpectrumEnd::kLargest, options);
    check_against_reference(a, result, 5, SpectrumEnd::kLargest, options.tolerance, false);
    CHECK(result.num_thick_restarts >= 2);
    const Reference ref = wanted_reference(reference_eigen(a), 5, SpectrumEnd::kLargest);
    const Mat y = result.eigenvectors;
    CHECK((y - ref.vectors * (ref.vectors.transpose() * y)).norm() <= 1e-7);
  }

  SECTION("restarts cost few extra products") {
    const Vec spectrum =
        concat({values({50, 40, 32, 25, 20, 18, 17}), uniform_vector(293, 0, 10, 28)});
    const Mat a = with_spectrum(spectrum, 29);
    DenseOperator<double> op(a);
    options.max_basis = 300;  // no restarts
    const auto plain = lanczos(op, 6, SpectrumEnd::kLargest, options);
    REQUIRE(plain.converged);
    CHECK(plain.num_thick_restarts == 0);
    options.max_basis = 0;
    const auto restarted = lanczos(op, 6, SpectrumEnd::kLargest, options);
    check_against_reference(a, restarted, 6, SpectrumEnd::kLargest, options.tolerance, true);
    CHECK(restarted.num_thick_restarts >= 1);
    CHECK(restarted.num_products <= 2 * plain.num_products);
    for (Index i = 0; i < 6; ++i) {
      CHECK(std::abs(restarted.eigenvalues[i] - plain.eigenvalues[i]) <= 1e-9 * 50);
    }
  }
}

TEST_CASE("Thick restarts combine with breakdowns", "[linalg][lanczos][restart][invariant]") {
  LanczosOptions options;
  options.tolerance = 1e-10;
  options.seed = 30;

  SECTION("repeated eigenvalue, basis smaller than the blocks found") {
    // Four distinct eigenvalues: every block breaks down after four steps; a basis of six
    // vectors is full in the middle of the second block.
    const Vec spectrum = concat({Vec::Constant(3, 5.0), Vec::Constant(20, 3.0),
                                 Vec::Constant(20, 2.0), Vec::Constant(17, 1.0)});
    const Mat a = with_spectrum(spectrum, 31);
    DenseOperator<double> op(a);
    options.max_basis = 6;
    const auto top = lanczos(op, 3, SpectrumEnd::kLargest, options);
    check_against_reference(a, top, 3, SpectrumEnd::kLargest, options.tolerance, false);
    CHECK(top.num_restarts >= 2);
    CHECK(top.num_thick_restarts >= 1);
    const Mat top_space = reference_eigen(a).vectors.rightCols(3);
    CHECK((top.eigenvectors - top_space * (top_space.transpose() * top.eigenvectors)).norm() <=
          1e-9);
  }

  SECTION("low rank, bottom end in the null space, basis full at breakdowns") {
    // The first block breaks down after 7 steps (6 eigenvalues and the null space); later
    // blocks are 1x1 in the null space, and the basis of 8 is compressed at a breakdown. (A
    // basis too small for the first invariant subspace would converge to 0, 1, 2 before any
    // breakdown: the single-vector limitation of the file comment.)
    const Index n = 80;
    const Mat u = random_orthogonal(n, 32).leftCols(6);
    const Mat a = u * values({9, 7, 5, 3, 2, 1}).asDiagonal() * u.transpose();
    DenseOperator<double> op(a);
    options.max_basis = 8;
    const auto bottom = lanczos(op, 3, SpectrumEnd::kSmallest, options);
    check_against_reference(a, bottom, 3, SpectrumEnd::kSmallest, options.tolerance, false);
    CHECK(bottom.eigenvalues.cwiseAbs().maxCoeff() <= 1e-12);
    CHECK((u.transpose() * bottom.eigenvectors).norm() <= 1e-10);
    CHECK(bottom.num_restarts >= 2);
    CHECK(bottom.num_thick_restarts >= 1);
  }
}

TEST_CASE("Thick-restart Lanczos respects the budget and validates max_basis",
          "[linalg][lanczos][restart][budget]") {
  const Vec spectrum = concat({values({10.0, 9.999, 9.998, 9.997}), uniform_vector(196, 0, 9, 33)});
  const Mat a = with_spectrum(spectrum, 34);
  DenseOperator<double> dense(a);
  CountingOperator<double> op(dense);
  LanczosOptions options;
  options.max_products = 45;
  options.max_basis = 10;
  options.tolerance = 1e-12;
  const auto result = lanczos(op, 4, SpectrumEnd::kLargest, options);
  CHECK(result.stop == LanczosStop::kBudget);
  CHECK(result.num_products == 45);
  CHECK(op.num_products() == 45);
  CHECK(result.num_thick_restarts >= 3);
  REQUIRE(result.eigenvalues.size() == 4);
  CHECK(result.eigenvalues[0] <= 10.0 + 1e-12);
  CHECK(result.eigenvalues[0] >= 9.9);
  // The residual estimates stay true after restarts, converged or not.
  for (Index i = 0; i < 4; ++i) {
    const Vec y = result.eigenvectors.col(i);
    CHECK((a * y - result.eigenvalues[i] * y).norm() ==
          Approx(result.residual_norms[i]).margin(1e-12 * 10));
  }
  options.max_basis = 5;
  CHECK_THROWS_WITH(lanczos(op, 4, SpectrumEnd::kLargest, options),
                    Catch::Contains("max_basis = 5"));
}

TEST_CASE("Thick-restart Lanczos in float32 and across thread counts",
          "[linalg][lanczos][restart][determinism]") {
  // Large enough for several row chunks of the basis kernels; a diagonal operator keeps the
  // products cheap and its eigenpairs known.
  const Index n = 30000;
  Vector<float> d(n);
  for (Index i = 0; i < n; ++i) d[i] = static_cast<float>(std::sin(0.37 * i));
  d.head(6) << 3.0f, 2.9f, 2.8f, 2.5f, 2.45f, 2.0f;
  FunctionOperator<float> op(
      n, [&](ConstVectorRef<float> x, VectorRef<float> y) { y = d.cwiseProduct(x); });
  LanczosOptions options;
  options.tolerance = 1e-5;
  options.max_products = 300;
  options.max_basis = 9;
  options.seed = 35;
  LanczosResult<float> one;
  {
    ThreadLimit limit(1);
    one = lanczos(op, 5, SpectrumEnd::kLargest, options);
  }
  const auto all = lanczos(op, 5, SpectrumEnd::kLargest, options);
  REQUIRE(one.converged);
  CHECK(one.num_thick_restarts >= 1);
  CHECK(bitwise_equal(one.eigenvalues, all.eigenvalues));
  CHECK(bitwise_equal(one.eigenvectors, all.eigenvectors));
  CHECK(bitwise_equal(one.residual_norms, all.residual_norms));
  const double expected[] = {3.0, 2.9, 2.8, 2.5, 2.45};
  for (Index i = 0; i < 5; ++i) {
    CHECK(std::abs(one.eigenvalues[i] - expected[i]) <= 1e-5 * 3);
    CHECK(std::abs(one.eigenvectors(i, i)) >= 1 - 1e-4);
  }
  const Matrix<double> y = one.eigenvectors.cast<double>();
  CHECK((y.transpose() * y - Matrix<double>::Identity(5, 5)).norm() <= 1e-5);
}
