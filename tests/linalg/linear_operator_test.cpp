#include <cmath>
#include <limits>
#include <string>

#include <catch2/catch.hpp>

#include <quadra/linalg/linear_operator.hpp>

#include "support.hpp"

using namespace quadra;
using namespace quadra::linalg;
using namespace quadra::linalg::testing;

TEST_CASE("DenseOperator multiplies by its matrix", "[linalg][operator]") {
  const Mat a = with_spectrum(values({3.0, -1.0, 2.0, 0.5}), 11);
  DenseOperator<double> op(a);
  const Vec x = gaussian_vector(4, 12);
  Vec y(4);
  REQUIRE(op.dim() == 4);
  REQUIRE(op.apply(x, y).is_ok());
  CHECK((y - a * x).norm() <= 1e-14 * (a * x).norm());
}

TEST_CASE("FunctionOperator accepts void and Status callables", "[linalg][operator]") {
  const Vec d = values({1.0, 2.0, 3.0});
  const Vec x = values({1.0, -1.0, 2.0});
  Vec y(3);

  FunctionOperator<double> plain(3, [&](ConstVectorRef<double> in, VectorRef<double> out) {
    out = d.cwiseProduct(in);
  });
  REQUIRE(plain.apply(x, y).is_ok());
  CHECK(y == values({1.0, -2.0, 6.0}));

  FunctionOperator<double> failing(3, [](ConstVectorRef<double>, VectorRef<double> out) {
    out.setZero();
    return Status::failed("backend lost");
  });
  const Status status = failing.apply(x, y);
  CHECK(status.code() == StatusCode::kFailed);
  CHECK(status.message() == "backend lost");
}

TEST_CASE("apply reports a non-finite product as a numerical issue", "[linalg][operator]") {
  FunctionOperator<float> op(5, [](ConstVectorRef<float> in, VectorRef<float> out) {
    out = in;
    out[3] = std::numeric_limits<float>::quiet_NaN();
  });
  Vector<float> x = Vector<float>::Ones(5);
  Vector<float> y(5);
  const Status status = op.apply(x, y);
  CHECK(status.code() == StatusCode::kNumericalIssue);
  CHECK_THAT(status.message(), Catch::Contains("y[3] = nan"));
}

TEST_CASE("DampedOperator adds lambda x and CountingOperator counts", "[linalg][operator]") {
  const Mat a = with_spectrum(values({1.0, 2.0, 4.0}), 5);
  DenseOperator<double> base(a);
  CountingOperator<double> counted(base);
  DampedOperator<double> damped(counted, 0.25);
  const Vec x = gaussian_vector(3, 6);
  Vec y(3);
  REQUIRE(damped.apply(x, y).is_ok());
  CHECK((y - (a * x + 0.25 * x)).norm() <= 1e-14);
  damped.set_lambda(0.0);
  REQUIRE(damped.apply(x, y).is_ok());
  CHECK((y - a * x).norm() <= 1e-14);
  CHECK(counted.num_products() == 2);
  counted.reset();
  CHECK(counted.num_products() == 0);
}
