#pragma once
/// \file
/// Matrix-free symmetric linear operators on parameter-sized vectors. An operator knows its
/// dimension n and computes y = A x; it never exposes A. Every algorithm in quadra/linalg
/// (Lanczos, CG, MINRES, Hutchinson, SLQ) talks to A only through LinearOperator::apply, because
/// a product may be a GGN- or Hessian-vector product on a batch and cost as much as a few
/// backward passes; they count products and accept budgets.
///
/// apply() is non-virtual: it checks shapes (asserts), calls the implementation, and turns a
/// product with NaN or Inf entries into a StatusCode::kNumericalIssue status, so no algorithm
/// has to remember to check. Numerical trouble is a Status, never an exception.
///
/// Adapters: DenseOperator (an owned dense matrix), FunctionOperator (any callable),
/// DampedOperator (a view of A + lambda I) and CountingOperator (counts the products it
/// forwards). Views hold a reference to the wrapped operator, which must outlive them.
///
/// Thread safety: apply() is non-const because a product may use scratch space or caches; do
/// not call apply() on one operator from several threads at once.

#include <cassert>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <functional>
#include <type_traits>
#include <utility>

#include <Eigen/Core>

#include <quadra/sdk/status.hpp>
#include <quadra/sdk/types.hpp>

namespace quadra::linalg {

namespace detail {
/// The status apply() returns for a product with a non-finite entry; names the first one.
Status non_finite_product_status(Index dim, Index index, double value);

template <class Scalar>
bool ranges_overlap(const Scalar* a, Index a_size, const Scalar* b, Index b_size) {
  const auto a0 = reinterpret_cast<std::uintptr_t>(a);
  const auto b0 = reinterpret_cast<std::uintptr_t>(b);
  const auto a1 = a0 + static_cast<std::uintptr_t>(a_size) * sizeof(Scalar);
  const auto b1 = b0 + static_cast<std::uintptr_t>(b_size) * sizeof(Scalar);
  return a0 < b1 && b0 < a1;
}
}  // namespace detail

/// A symmetric linear operator A: R^n -> R^n over float or double.
template <class Scalar>
class LinearOperator {
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>,
                "quadra::linalg operators are defined for float and double");

 public:
  using ScalarType = Scalar;

  virtual ~LinearOperator() = default;

  /// n, the length of the vectors the operator acts on.
  [[nodiscard]] virtual Index dim() const = 0;

  /// y = A x.
  /// \pre x.size() == y.size() == dim(), and x and y do not overlap in memory.
  /// \return ok; or the implementation's non-ok status (y is then unspecified); or
  ///         kNumericalIssue naming the first non-finite entry of y.
  Status apply(ConstVectorRef<Scalar> x, VectorRef<Scalar> y) {
    assert(x.size() == dim() && y.size() == dim());
    assert(!detail::ranges_overlap(x.data(), x.size(), y.data(), y.size()));
    Status status = apply_impl(x, y);
    if (!status.is_ok()) return status;
    // One pass over y: a cheap guard next to a product that costs O(n) at least.
    if (!y.allFinite()) {
      for (Index i = 0; i < y.size(); ++i) {
        if (!std::isfinite(y[i])) {
          return detail::non_finite_product_status(dim(), i, static_cast<double>(y[i]));
        }
      }
    }
    return status;
  }

 protected:
  LinearOperator() = default;
  LinearOperator(const LinearOperator&) = default;
  LinearOperator& operator=(const LinearOperator&) = default;

  /// Computes y = A x. Called by apply() with checked shapes; need not check finiteness.
  virtual Status apply_impl(ConstVectorRef<Scalar> x, VectorRef<Scalar> y) = 0;
};

/// A dense symmetric matrix as an operator (tests, small problems, projected systems).
template <class Scalar>
class DenseOperator final : public LinearOperator<Scalar> {
 public:
  /// \pre matrix is square and symmetric (checked approximately by an assert).
  explicit DenseOperator(Matrix<Scalar> matrix) : matrix_(std::move(matrix)) {
    assert(matrix_.rows() == matrix_.cols());
    assert(matrix_.isApprox(matrix_.transpose(),
                            Scalar(64) * Eigen::NumTraits<Scalar>::epsilon()) ||
           matrix_.size() == 0 || matrix_.isZero());
  }

  [[nodiscard]] Index dim() const override { return matrix_.rows(); }
  [[nodiscard]] const Matrix<Scalar>& matrix() const noexcept { return matrix_; }

 protected:
  Status apply_impl(ConstVectorRef<Scalar> x, VectorRef<Scalar> y) override {
    y.noalias() = matrix_ * x;
    return Status::ok();
  }

 private:
  Matrix<Scalar> matrix_;
};

/// Callables FunctionOperator accepts: f(x, y) computing y = A x, returning Status or void.
template <class F, class Scalar>
concept OperatorFunction =
    std::invocable<F&, ConstVectorRef<Scalar>, VectorRef<Scalar>> &&
    (std::same_as<std::invoke_result_t<F&, ConstVectorRef<Scalar>, VectorRef<Scalar>>, Status> ||
     std::is_void_v<std::invoke_result_t<F&, ConstVectorRef<Scalar>, VectorRef<Scalar>>>);

/// An operator given by a callable, e.g. a curvature-vector product on a bound batch.
template <class Scalar>
class FunctionOperator final : public LinearOperator<Scalar> {
 public:
  using Function = std::function<Status(ConstVectorRef<Scalar>, VectorRef<Scalar>)>;

  /// \pre dim >= 0; f computes y = A x for a symmetric A and writes all of y.
  template <OperatorFunction<Scalar> F>
  FunctionOperator(Index dim, F f) : dim_(dim) {
    assert(dim >= 0);
    if constexpr (std::is_void_v<std::invoke_result_t<F&, ConstVectorRef<Scalar>,
                                                      VectorRef<Scalar>>>) {
      function_ = [g = std::move(f)](ConstVectorRef<Scalar> x, VectorRef<Scalar> y) mutable {
        g(x, y);
        return Status::ok();
      };
    } else {
      function_ = std::move(f);
    }
  }

  [[nodiscard]] Index dim() const override { return dim_; }

 protected:
  Status apply_impl(ConstVectorRef<Scalar> x, VectorRef<Scalar> y) override {
    return function_(x, y);
  }

 private:
  Index dim_;
  Function function_;
};

/// A view of A + lambda I. Holds a reference: `base` must outlive the view.
template <class Scalar>
class DampedOperator final : public LinearOperator<Scalar> {
 public:
  DampedOperator(LinearOperator<Scalar>& base, double lambda) : base_(&base), lambda_(lambda) {}

  [[nodiscard]] Index dim() const override { return base_->dim(); }
  [[nodiscard]] double lambda() const noexcept { return lambda_; }
  void set_lambda(double lambda) noexcept { lambda_ = lambda; }

 protected:
  Status apply_impl(ConstVectorRef<Scalar> x, VectorRef<Scalar> y) override {
    Status status = base_->apply(x, y);
    if (status.is_ok() && lambda_ != 0.0) y += static_cast<Scalar>(lambda_) * x;
    return status;
  }

 private:
  LinearOperator<Scalar>* base_;
  double lambda_;
};

/// Forwards to `base` and counts the products (every call, failed ones included, since each
/// costs a product). Holds a reference: `base` must outlive the wrapper.
template <class Scalar>
class CountingOperator final : public LinearOperator<Scalar> {
 public:
  explicit CountingOperator(LinearOperator<Scalar>& base) : base_(&base) {}

  [[nodiscard]] Index dim() const override { return base_->dim(); }
  [[nodiscard]] Index num_products() const noexcept { return count_; }
  void reset() noexcept { count_ = 0; }

 protected:
  Status apply_impl(ConstVectorRef<Scalar> x, VectorRef<Scalar> y) override {
    ++count_;
    return base_->apply(x, y);
  }

 private:
  LinearOperator<Scalar>* base_;
  Index count_ = 0;
};

}  // namespace quadra::linalg
