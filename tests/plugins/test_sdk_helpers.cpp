// The SDK's plugin helpers: checkpoint state (StateWriter / StateReader and every refusal),
// Kronecker blocks (gather/scatter against a layout written out by hand, the damped solve
// against dense float64 inverses) and format_number.

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <Eigen/Dense>
#include <catch2/catch.hpp>

#include <quadra/sdk.hpp>

using Mat = Eigen::MatrixXd;
using Vec = Eigen::VectorXd;
using quadra::KroneckerDamping;
using quadra::KroneckerFactor;
using quadra::StateRange;
using quadra::StateReader;
using quadra::StateWriter;
using quadra::Status;
using quadra::StatusCode;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr const char* kLayout = "{version 3, x, n, v[n]}";

StateReader reader(const std::vector<double>& state) {
  return StateReader("test-component", state, 3, kLayout);
}

Mat random_spd(Eigen::Index n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal;
  Mat b(n, n + 2);
  for (Eigen::Index j = 0; j < b.cols(); ++j) {
    for (Eigen::Index i = 0; i < n; ++i) b(i, j) = normal(rng);
  }
  return b * b.transpose() / static_cast<double>(b.cols()) + 0.1 * Mat::Identity(n, n);
}

Vec random_vector(Eigen::Index n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal;
  Vec v(n);
  for (Eigen::Index i = 0; i < n; ++i) v(i) = normal(rng);
  return v;
}

/// Where W̄(i, j) sits in the flat vector, written from curvature.hpp's description rather than
/// from the SDK's code: W row-major at offset, the bias column right after W.
Eigen::Index parameter_of(const KroneckerFactor& f, Eigen::Index i, Eigen::Index j) {
  return j < f.in ? f.offset + i * f.in + j : f.offset + f.out * f.in + i;
}

/// The dense n x n matrix of S̃ ⊗ Ã + shift I on the layer's parameters (zero elsewhere):
/// (S̃ V̄ Ã)(i, j) = sum_kl S̃(i, k) V̄(k, l) Ã(l, j), and Ã is symmetric.
Mat dense_block(const KroneckerFactor& f, const Mat& a, const Mat& s, double shift,
                Eigen::Index n) {
  const Eigen::Index columns = f.in + (f.bias ? 1 : 0);
  Mat dense = Mat::Zero(n, n);
  for (Eigen::Index i = 0; i < f.out; ++i) {
    for (Eigen::Index j = 0; j < columns; ++j) {
      for (Eigen::Index k = 0; k < f.out; ++k) {
        for (Eigen::Index l = 0; l < columns; ++l) {
          dense(parameter_of(f, i, j), parameter_of(f, k, l)) = s(i, k) * a(j, l);
        }
      }
      dense(parameter_of(f, i, j), parameter_of(f, i, j)) += shift;
    }
  }
  return dense;
}

KroneckerFactor random_layer(bool bias, unsigned seed) {
  KroneckerFactor f;
  f.offset = 2;  // two parameters before the layer and three after it belong to no layer
  f.out = 3;
  f.in = 4;
  f.bias = bias;
  f.a = random_spd(f.in + (bias ? 1 : 0), seed);
  f.s = random_spd(f.out, seed + 1);
  return f;
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// State

TEST_CASE("StateWriter lays out a state that StateReader reads back exactly", "[sdk][state]") {
  Mat m(2, 3);
  m << 1.5, -2.0, 3.25, 0.1, 1e-300, -7.0;
  const Vec v = (Vec(3) << 1.0 / 3.0, -0.0, 1e300).finished();
  std::vector<double> state = {9.0, 9.0};  // the writer starts afresh
  StateWriter(state, 3).real(0.5).count(std::int64_t{3}).vector(v).matrix(m).real(kNaN);
  REQUIRE(state.size() == 1 + 1 + 1 + 3 + 2 + 6 + 1);
  CHECK(state[0] == 3.0);
  CHECK(state[2] == 3.0);
  CHECK(state[6] == 2.0);  // rows, columns, then column-major entries
  CHECK(state[7] == 3.0);
  CHECK(state[8] == 1.5);
  CHECK(state[9] == 0.1);

  StateReader r = reader(state);
  double x = 0.0, y = 0.0;
  Eigen::Index n = 0;
  Vec v_read;
  Mat m_read;
  REQUIRE(r.real("x", x).is_ok());
  REQUIRE(r.count("n", n).is_ok());
  REQUIRE(r.vector("v", n, v_read).is_ok());
  REQUIRE(r.matrix("m", 2, 3, m_read).is_ok());
  CHECK(r.position() == state.size() - 1);
  REQUIRE(r.real("y", y, StateRange::kAny).is_ok());
  REQUIRE(r.finish().is_ok());
  CHECK(x == 0.5);
  CHECK(n == 3);
  CHECK(v_read.size() == 3);
  CHECK(v_read(0) == v(0));
  CHECK(std::signbit(v_read(1)));
  CHECK(v_read(2) == v(2));
  CHECK(m_read == m);
  CHECK(std::isnan(y));
}

TEST_CASE("StateReader refuses a malformed state with a complete message", "[sdk][state]") {
  const auto first_refusal = [](const std::vector<double>& state, auto&& read) {
    StateReader r = reader(state);
    read(r);
    const Status status = r.finish();
    REQUIRE_FALSE(status.is_ok());
    CHECK(status.code() == StatusCode::kInvalidArgument);
    return status.message();
  };
  const auto real = [](StateRange range = StateRange::kFinite) {
    return [range](StateReader& r) {
      double x = 0.0;
      r.real("x", x, range);
    };
  };

  SECTION("empty, and a wrong layout version") {
    CHECK(first_refusal({}, real()) ==
          "test-component: checkpoint state is empty; expected layout version 3 first "
          "(layout: {version 3, x, n, v[n]})");
    CHECK(first_refusal({2.0, 1.0}, real()) ==
          "test-component: checkpoint state has layout version 2; expected 3 "
          "(layout: {version 3, x, n, v[n]})");
    CHECK(first_refusal({3.5, 1.0}, real()) ==
          "test-component: checkpoint state has layout version 3.5; expected 3 "
          "(layout: {version 3, x, n, v[n]})");
    CHECK(first_refusal({kNaN, 1.0}, real()) ==
          "test-component: checkpoint state has layout version nan; expected 3 "
          "(layout: {version 3, x, n, v[n]})");
  }
  SECTION("too short") {
    CHECK(first_refusal({3.0}, real()) ==
          "test-component: checkpoint state ends after 1 entry; expected entry 1 for the x "
          "(layout: {version 3, x, n, v[n]})");
    CHECK(first_refusal({3.0, 0.5, 4.0, 1.0, 2.0},
                        [](StateReader& r) {
                          double x = 0.0;
                          Eigen::Index n = 0;
                          Vec v;
                          r.real("x", x);
                          r.count("size n", n);
                          r.vector("buffer", n, v);
                        }) ==
          "test-component: checkpoint state ends after 5 entries; expected entries 3..6 for the "
          "buffer (layout: {version 3, x, n, v[n]})");
    CHECK(first_refusal({3.0, 2.0, 2.0, 1.0, 0.0},
                        [](StateReader& r) {
                          Mat m;
                          r.matrix("factor A", 2, 2, m);
                        }) ==
          "test-component: checkpoint state ends after 5 entries; expected entries 3..6 for the "
          "factor A (layout: {version 3, x, n, v[n]})");
  }
  SECTION("a matrix whose size does not fit an index") {
    CHECK(first_refusal({3.0, 4294967296.0, 4294967296.0},
                        [](StateReader& r) {
                          Mat m;
                          r.matrix("factor A", Eigen::Index{1} << 32, Eigen::Index{1} << 32, m);
                        }) ==
          "test-component: checkpoint state ends after 3 entries; expected 4294967296 x "
          "4294967296 entries from entry 3 for the factor A (layout: {version 3, x, n, v[n]})");
  }
  SECTION("counts that are not non-negative integers") {
    const auto count = [](StateReader& r) {
      Eigen::Index n = 0;
      r.count("layer input size", n);
    };
    CHECK(first_refusal({3.0, 3.5}, count) ==
          "test-component: checkpoint state entry 1 (layer input size) is 3.5; expected a "
          "non-negative integer");
    CHECK(first_refusal({3.0, -1.0}, count) ==
          "test-component: checkpoint state entry 1 (layer input size) is -1; expected a "
          "non-negative integer");
    CHECK(first_refusal({3.0, kNaN}, count) ==
          "test-component: checkpoint state entry 1 (layer input size) is nan; expected a "
          "non-negative integer");
    CHECK(first_refusal({3.0, 1e300}, count) ==
          "test-component: checkpoint state entry 1 (layer input size) is 1e+300; expected a "
          "non-negative integer");
    CHECK(first_refusal({3.0, 2.0},
                        [](StateReader& r) {
                          int flag = 0;
                          r.count("bias flag", flag, 1);
                        }) ==
          "test-component: checkpoint state entry 1 (bias flag) is 2; expected an integer from "
          "0 to 1");
  }
  SECTION("entries left over") {
    CHECK(first_refusal({3.0, 1.0, 2.0}, real()) ==
          "test-component: checkpoint state has 3 entries; expected 2 "
          "(layout: {version 3, x, n, v[n]})");
  }
  SECTION("non-finite values where finite ones are required") {
    CHECK(first_refusal({3.0, kNaN}, real()) ==
          "test-component: checkpoint state entry 1 (x) is nan; expected a finite number");
    CHECK(first_refusal({3.0, -kInf}, real()) ==
          "test-component: checkpoint state entry 1 (x) is -inf; expected a finite number");
    CHECK(first_refusal({3.0, kInf}, real(StateRange::kPositive)) ==
          "test-component: checkpoint state entry 1 (x) is inf; expected a finite number > 0");
    CHECK(first_refusal({3.0, 0.0}, real(StateRange::kPositive)) ==
          "test-component: checkpoint state entry 1 (x) is 0; expected a finite number > 0");
    CHECK(first_refusal({3.0, -1e-9}, real(StateRange::kNonNegative)) ==
          "test-component: checkpoint state entry 1 (x) is -1e-09; expected a finite number >= 0");
    CHECK(first_refusal({3.0, 1.0, kInf, 2.0},
                        [](StateReader& r) {
                          Vec v;
                          r.vector("buffer", 3, v);
                        }) ==
          "test-component: checkpoint state entry 2 (element 1 of the buffer) is inf; expected "
          "a finite number");
    CHECK(first_refusal({3.0, 2.0, 2.0, 1.0, kNaN, 0.0, 1.0},
                        [](StateReader& r) {
                          Mat m;
                          r.matrix("factor A", 2, 2, m);
                        }) ==
          "test-component: checkpoint state entry 4 (element (1, 0) of the factor A) is nan; "
          "expected a finite number");
  }
  SECTION("a matrix of another shape") {
    CHECK(first_refusal({3.0, 5.0, 4.0},
                        [](StateReader& r) {
                          Mat m;
                          r.matrix("input factor A", 4, 4, m);
                        }) ==
          "test-component: checkpoint state entries 1 and 2 (shape of the input factor A) are "
          "5 x 4; expected 4 x 4");
  }
  SECTION("a refusal the component words itself") {
    CHECK(first_refusal({3.0, 1.0},
                        [](StateReader& r) {
                          const std::size_t entry = r.position();
                          double factor = 0.0;
                          if (r.real("decrease factor", factor).is_ok() && !(factor >= 2.0)) {
                            r.refuse_entry(entry, "decrease factor", factor, "a number >= 2");
                          }
                        }) ==
          "test-component: checkpoint state entry 1 (decrease factor) is 1; expected a number "
          ">= 2");
  }
}

TEST_CASE("StateReader: the first refusal sticks and outputs stay untouched", "[sdk][state]") {
  const std::vector<double> state = {3.0, kNaN, 4.0, 1.0};
  StateReader r = reader(state);
  double x = 7.0;
  Eigen::Index n = 9;
  const Status first = r.real("x", x);
  REQUIRE_FALSE(first.is_ok());
  CHECK(x == 7.0);
  const Status second = r.count("n", n);
  CHECK(second.message() == first.message());
  CHECK(n == 9);
  CHECK(r.finish().message() == first.message());
}

// ------------------------------------------------------------------------------------------------
// Kronecker blocks

TEST_CASE("gather_block and scatter_block follow the [W b] layout", "[sdk][kronecker]") {
  KroneckerFactor f;
  f.offset = 2;
  f.out = 2;
  f.in = 3;
  Vec v(12);
  for (Eigen::Index i = 0; i < v.size(); ++i) v(i) = static_cast<double>(i);

  SECTION("without bias") {
    f.bias = false;
    CHECK(quadra::block_columns(f) == 3);
    CHECK(quadra::block_size(f) == 6);
    Mat expected(2, 3);
    expected << 2, 3, 4,  //
        5, 6, 7;
    const Mat m = quadra::gather_block(f, v);
    CHECK(m == expected);
    Vec out = Vec::Constant(12, -1.0);
    quadra::scatter_block(f, m, out);
    for (Eigen::Index i = 0; i < 12; ++i) CHECK(out(i) == (i >= 2 && i < 8 ? v(i) : -1.0));
  }
  SECTION("with bias") {
    f.bias = true;
    CHECK(quadra::block_columns(f) == 4);
    CHECK(quadra::block_size(f) == 8);
    Mat expected(2, 4);
    expected << 2, 3, 4, 8,  //
        5, 6, 7, 9;
    const Mat m = quadra::gather_block(f, v);
    CHECK(m == expected);
    Vec out = Vec::Constant(12, -1.0);
    quadra::scatter_block(f, m, out);
    for (Eigen::Index i = 0; i < 12; ++i) CHECK(out(i) == (i >= 2 && i < 10 ? v(i) : -1.0));
  }
}

TEST_CASE("pi_damping balances the factors' mean eigenvalues, 1 for a zero factor",
          "[sdk][kronecker]") {
  KroneckerFactor f;
  f.out = 2;
  f.in = 3;
  f.a = Mat::Identity(3, 3) * 8.0;  // tr A / dim A = 8
  f.s = Mat::Identity(2, 2) * 2.0;  // tr S / dim S = 2
  CHECK(quadra::pi_damping(f) == 2.0);
  f.s.setZero();
  CHECK(quadra::pi_damping(f) == 1.0);
  f.a.setZero();
  CHECK(quadra::pi_damping(f) == 1.0);
}

TEST_CASE("damped_kronecker_solve inverts the damped block like a dense float64 inverse",
          "[sdk][kronecker]") {
  const bool bias = GENERATE(false, true);
  const KroneckerDamping style = GENERATE(KroneckerDamping::kExact, KroneckerDamping::kPi);
  INFO("bias " << bias << ", pi style " << (style == KroneckerDamping::kPi));
  const KroneckerFactor f = random_layer(bias, bias ? 11 : 21);
  const Eigen::Index n = f.offset + f.out * (f.in + (bias ? 1 : 0)) + 3;
  const double lambda = 0.3;
  const Eigen::SelfAdjointEigenSolver<Mat> a(f.a), s(f.s);

  Mat dense;
  if (style == KroneckerDamping::kExact) {
    dense = dense_block(f, f.a, f.s, lambda, n);
  } else {
    const double pi = std::sqrt((f.a.trace() / static_cast<double>(f.a.rows())) /
                                (f.s.trace() / static_cast<double>(f.s.rows())));
    const Mat a_damped = f.a + pi * std::sqrt(lambda) * Mat::Identity(f.a.rows(), f.a.rows());
    const Mat s_damped = f.s + std::sqrt(lambda) / pi * Mat::Identity(f.out, f.out);
    dense = dense_block(f, a_damped, s_damped, 0.0, n);
  }
  const Vec v = random_vector(n, 31);
  Vec out = Vec::Constant(n, 42.0);
  const Status status =
      quadra::damped_kronecker_solve("test", f, a.eigenvalues(), a.eigenvectors(), s.eigenvalues(),
                                     s.eigenvectors(), lambda, style, v, out);
  REQUIRE(status.is_ok());

  const Eigen::Index first = f.offset, size = quadra::block_size(f);
  const Mat block = dense.block(first, first, size, size);
  const Vec expected = block.ldlt().solve(v.segment(first, size));
  CHECK((out.segment(first, size) - expected).norm() <= 1e-12 * expected.norm());
  for (Eigen::Index i = 0; i < n; ++i) {
    if (i < first || i >= first + size) CHECK(out(i) == 42.0);  // outside the layer: untouched
  }

  // The overload for a KroneckerEigen block gives the same bits.
  quadra::KroneckerEigen eigen{f, a.eigenvalues(), a.eigenvectors(), s.eigenvalues(),
                               s.eigenvectors()};
  Vec again = Vec::Constant(n, 42.0);
  REQUIRE(quadra::damped_kronecker_solve("test", eigen, lambda, style, v, again).is_ok());
  CHECK(again == out);

  // Negated output: the preconditioned descent direction.
  Vec negated = Vec::Constant(n, 42.0);
  REQUIRE(quadra::damped_kronecker_solve("test", eigen, lambda, style, v, negated,
                                         quadra::KroneckerOutput::kNegated)
              .is_ok());
  CHECK((negated.segment(first, size) + expected).norm() <= 1e-12 * expected.norm());
  CHECK(negated.head(first) == out.head(first));
  CHECK(negated.tail(n - first - size) == out.tail(n - first - size));
}

TEST_CASE("damped_kronecker_solve refuses a damped eigenvalue that is not positive",
          "[sdk][kronecker]") {
  KroneckerFactor f = random_layer(false, 41);
  f.a.row(0).setZero();  // singular A: with lambda = 0, s_i a_0 = 0
  f.a.col(0).setZero();
  const Eigen::SelfAdjointEigenSolver<Mat> a(f.a), s(f.s);
  Vec a_values = a.eigenvalues();
  a_values(0) = 0.0;  // exactly, as a plugin that clamps rounding at zero has it
  const Eigen::Index n = f.offset + quadra::block_size(f);
  const Vec v = random_vector(n, 42);
  Vec out = Vec::Constant(n, 42.0);

  Status status =
      quadra::damped_kronecker_solve("test", f, a_values, a.eigenvectors(), s.eigenvalues(),
                                     s.eigenvectors(), 0.0, KroneckerDamping::kExact, v, out);
  CHECK(status.code() == StatusCode::kNumericalIssue);
  CHECK(status.message() ==
        "test: damped eigenvalue 0 = s_0 a_0 + lambda of the block at parameters 2..13 is not "
        "positive; increase lambda");
  CHECK((out.array() == 42.0).all());  // nothing written

  status = quadra::damped_kronecker_solve("test", f, a_values, a.eigenvectors(), s.eigenvalues(),
                                          s.eigenvectors(), 0.0, KroneckerDamping::kPi, v, out);
  CHECK(status.code() == StatusCode::kNumericalIssue);
  CHECK_THAT(status.message(),
             Catch::StartsWith("test: damped eigenvalue 0 = (s_0 + sqrt(lambda)/pi)(a_0 + pi "
                               "sqrt(lambda)) with pi = "));
  CHECK((out.array() == 42.0).all());
  // Any lambda > 0 makes the block positive definite again.
  REQUIRE(quadra::damped_kronecker_solve("test", f, a_values, a.eigenvectors(), s.eigenvalues(),
                                         s.eigenvectors(), 1e-6, KroneckerDamping::kExact, v, out)
              .is_ok());
}

// ------------------------------------------------------------------------------------------------
// format_number

TEST_CASE("format_number prints the shortest text that reads back as the same double",
          "[sdk][format]") {
  CHECK(quadra::format_number(1e-9) == "1e-09");
  CHECK(quadra::format_number(0.1) == "0.1");
  CHECK(quadra::format_number(1.0 / 3) == "0.3333333333333333");
  CHECK(quadra::format_number(0.1 + 0.2) == "0.30000000000000004");
  CHECK(quadra::format_number(1e300) == "1e+300");
  CHECK(quadra::format_number(2.0) == "2");
  CHECK(quadra::format_number(-0.5) == "-0.5");
  CHECK(quadra::format_number(-0.0) == "-0");
  CHECK(quadra::format_number(kNaN) == "nan");
  CHECK(quadra::format_number(-kNaN) == "nan");
  CHECK(quadra::format_number(kInf) == "inf");
  CHECK(quadra::format_number(-kInf) == "-inf");

  std::mt19937_64 rng(7);
  std::uniform_int_distribution<int> exponent(-300, 300);
  std::uniform_real_distribution<double> mantissa(-1.0, 1.0);
  for (int i = 0; i < 1000; ++i) {
    const double x = std::ldexp(mantissa(rng), exponent(rng));
    const std::string text = quadra::format_number(x);
    INFO(text);
    CHECK(std::strtod(text.c_str(), nullptr) == x);
  }
  for (const double x :
       {std::numeric_limits<double>::min(), std::numeric_limits<double>::denorm_min(),
        std::numeric_limits<double>::max(), -std::numeric_limits<double>::max()}) {
    CHECK(std::strtod(quadra::format_number(x).c_str(), nullptr) == x);
  }
}
