// Preconditioners from structured curvature plugins. See preconditioner.hpp.

#include <fmt/format.h>

#include <cmath>
#include <quadra/curvature/preconditioner.hpp>
#include <quadra/sdk/kronecker.hpp>
#include <utility>

namespace quadra {

Result<std::unique_ptr<Preconditioner>> Preconditioner::create(const CurvatureEstimator& estimator,
                                                               Index dim, double damping,
                                                               double exponent,
                                                               const std::string& name) {
  if (!(damping > 0.0) || !std::isfinite(damping)) {
    return Status::invalid_argument(fmt::format(
        "preconditioner {}: damping {} (lambda plus preconditioner_damping); expected a finite "
        "number > 0",
        name, damping));
  }
  if (!(exponent > 0.0 && exponent <= 1.0)) {
    return Status::invalid_argument(
        fmt::format("preconditioner {}: exponent {}; expected a number in (0, 1]", name, exponent));
  }
  std::unique_ptr<Preconditioner> p(new Preconditioner());
  p->dim_ = dim;
  p->outside_ = std::pow(damping, -exponent);
  const auto power = [&](double value, const char* what, Index at) -> Result<double> {
    const double damped = value + damping;
    if (!(damped > 0.0) || !std::isfinite(damped)) {
      return Status::numerical_issue(
          fmt::format("preconditioner {}: damped {} {} + {} = {} at {} is not positive; raise "
                      "preconditioner_damping",
                      name, what, value, damping, damped, at));
    }
    return std::pow(damped, -exponent);
  };
  switch (estimator.structure()) {
    case CurvatureStructure::kDiagonal: {
      Vector<double> d(dim);
      if (Status s = estimator.diagonal(d); !s.is_ok()) return s;
      p->inverse_diagonal_.resize(dim);
      for (Index i = 0; i < dim; ++i) {
        auto w = power(d(i), "diagonal entry", i);
        if (!w.is_ok()) return w.status();
        p->inverse_diagonal_(i) = w.value();
      }
      return p;
    }
    case CurvatureStructure::kKronecker: {
      if (Status s = estimator.kronecker(p->blocks_); !s.is_ok()) return s;
      for (const KroneckerEigen& b : p->blocks_) {
        Matrix<double> scale(b.s_eigenvalues.size(), b.a_eigenvalues.size());
        for (Index j = 0; j < scale.cols(); ++j) {
          for (Index i = 0; i < scale.rows(); ++i) {
            auto w = power(b.s_eigenvalues(i) * b.a_eigenvalues(j), "eigenvalue", b.factor.offset);
            if (!w.is_ok()) return w.status();
            scale(i, j) = w.value();
          }
        }
        p->scales_.push_back(std::move(scale));
      }
      return p;
    }
    case CurvatureStructure::kMatrixFree:
      break;
  }
  return Status::invalid_argument(
      fmt::format("preconditioner {}: the curvature plugin is matrix-free; a preconditioner needs "
                  "a diagonal or Kronecker-factored one (diag-ggn, diag-ef, kfac)",
                  name));
}

Result<std::unique_ptr<Preconditioner>> Preconditioner::create(const PluginHost& host,
                                                               const std::string& name,
                                                               ICurvatureBackend& batch,
                                                               double damping, double exponent) {
  auto created = host.create<CurvatureEstimator>(name, {});
  if (!created.is_ok()) return created.status();
  PluginHandle<CurvatureEstimator> estimator = std::move(created).value();
  if (Status s = estimator->bind(batch); !s.is_ok()) return s;
  return create(*estimator, batch.num_parameters(), damping, exponent, name);
}

Status Preconditioner::apply_impl(ConstVectorRef<double> x, VectorRef<double> y) {
  if (inverse_diagonal_.size() != 0) {
    y = inverse_diagonal_.cwiseProduct(x);
    return Status::ok();
  }
  y = outside_ * x;  // parameters outside every block; the blocks overwrite theirs
  for (std::size_t b = 0; b < blocks_.size(); ++b) {
    const KroneckerEigen& k = blocks_[b];
    Matrix<double> rotated =
        k.s_eigenvectors.transpose() * gather_block(k.factor, x) * k.a_eigenvectors;
    rotated = rotated.cwiseProduct(scales_[b]);
    scatter_block(k.factor, k.s_eigenvectors * rotated * k.a_eigenvectors.transpose(), y);
  }
  return Status::ok();
}

}  // namespace quadra
