#include <quadra/linalg/minres.hpp>

#include <cassert>
#include <cmath>
#include <utility>

#include <fmt/format.h>

#include <quadra/error.hpp>

namespace quadra::linalg {
namespace {

void validate(const MinresOptions& options) {
  if (!std::isfinite(options.damping)) {
    throw Error(fmt::format("minres: damping = {}; expected a finite number", options.damping));
  }
  if (!(options.tolerance >= 0.0)) {
    throw Error(fmt::format("minres: tolerance = {}; expected a number >= 0", options.tolerance));
  }
  if (options.max_iterations < 0) {
    throw Error(fmt::format("minres: max_iterations = {}; expected a count >= 0",
                            options.max_iterations));
  }
}

}  // namespace

// Unpreconditioned MINRES in the form of Paige & Saunders (1975) as in their reference code:
// Lanczos on (A + lambda I) with r1, r2 the last two (unnormalised) Lanczos vectors, a QR
// factorisation of the tridiagonal matrix by Givens rotations (cs, sn), and the search
// directions w, w1, w2 that let x be updated without storing the basis.
template <class Scalar>
MinresResult<Scalar> minres(LinearOperator<Scalar>& a, ConstVectorRef<Scalar> b,
                            const MinresOptions& options, const Vector<Scalar>* x0) {
  validate(options);
  const Index n = a.dim();
  assert(b.size() == n);
  assert(x0 == nullptr || x0->size() == n);
  const auto lambda = static_cast<Scalar>(options.damping);
  const double tiny = 100.0 * Eigen::NumTraits<Scalar>::epsilon();

  MinresResult<Scalar> res;
  Vector<Scalar>& x = res.x;
  Vector<Scalar> r1(n);
  Vector<Scalar> r2(n);
  Vector<Scalar> y(n);
  Vector<Scalar> v(n);
  Vector<Scalar> w = Vector<Scalar>::Zero(n);
  Vector<Scalar> w1(n);
  Vector<Scalar> w2 = Vector<Scalar>::Zero(n);

  // out = (A + lambda I) in, counted; false (res failed) on trouble.
  auto product = [&](const Vector<Scalar>& in, Vector<Scalar>& out) {
    Status status = a.apply(in, out);
    ++res.num_products;
    if (!status.is_ok()) {
      res.termination = MinresTermination::kNumericalIssue;
      res.status = std::move(status);
      return false;
    }
    if (lambda != Scalar(0)) out += lambda * in;
    return true;
  };

  res.b_norm = static_cast<double>(b.norm());
  if (!std::isfinite(res.b_norm)) {
    x = x0 != nullptr ? *x0 : Vector<Scalar>::Zero(n);
    res.termination = MinresTermination::kNumericalIssue;
    res.status = Status::numerical_issue("minres: the right-hand side b has non-finite entries");
    return res;
  }
  if (res.b_norm == 0.0) {
    x.setZero(n);
    res.residual_norms.push_back(0.0);
    res.termination = MinresTermination::kConverged;
    return res;
  }
  if (x0 != nullptr) {
    x = *x0;
    if (!product(x, y)) return res;
    r1 = b - y;
  } else {
    x.setZero(n);
    r1 = b;
  }
  r2 = r1;
  const double beta1 = static_cast<double>(r1.norm());
  res.residual_norms.push_back(beta1);
  const double target = options.tolerance * res.b_norm;
  if (beta1 <= target) {
    res.termination = MinresTermination::kConverged;
    return res;
  }

  double old_beta = 0.0;
  double beta = beta1;
  double dbar = 0.0;
  double epsilon = 0.0;
  double phibar = beta1;
  double cs = -1.0;
  double sn = 0.0;
  double t_norm2 = 0.0;  // ||T_k||_F^2, an estimate of ||A + lambda I||^2 from below

  for (Index k = 1; k <= options.max_iterations; ++k) {
    v = r2 / static_cast<Scalar>(beta);
    if (!product(v, y)) return res;
    if (k >= 2) y -= static_cast<Scalar>(beta / old_beta) * r1;
    const double alpha = static_cast<double>(v.dot(y));
    y -= static_cast<Scalar>(alpha / beta) * r2;
    r1.swap(r2);  // r1 <- r2, r2 <- y (y's old contents are overwritten next iteration)
    r2.swap(y);
    old_beta = beta;
    beta = static_cast<double>(r2.norm());
    t_norm2 += alpha * alpha + old_beta * old_beta + beta * beta;
    const double a_norm = std::sqrt(t_norm2);

    // Apply the previous rotation, then make the new one that eliminates beta.
    const double old_epsilon = epsilon;
    const double delta = cs * dbar + sn * alpha;
    const double gbar = sn * dbar - cs * alpha;
    epsilon = sn * beta;
    dbar = -cs * beta;
    const double gamma = std::hypot(gbar, beta);
    res.iterations = k;
    if (gamma <= tiny * a_norm) {
      // The projected matrix is singular on an invariant Krylov space: no direction reduces
      // the residual further; x (unchanged by this step) is a least-squares solution.
      res.residual_norms.push_back(std::abs(phibar));
      res.termination = MinresTermination::kSingular;
      return res;
    }
    cs = gbar / gamma;
    sn = beta / gamma;
    const double phi = cs * phibar;
    phibar = sn * phibar;

    w1.swap(w2);  // w1 <- w2, w2 <- w, w <- (v - epsilon w1 - delta w2) / gamma
    w2.swap(w);
    w = (v - static_cast<Scalar>(old_epsilon) * w1 - static_cast<Scalar>(delta) * w2) /
        static_cast<Scalar>(gamma);
    x += static_cast<Scalar>(phi) * w;

    const double r_norm = std::abs(phibar);
    res.residual_norms.push_back(r_norm);
    if (r_norm <= target) {
      res.termination = MinresTermination::kConverged;
      return res;
    }
    if (beta <= tiny * a_norm) {
      // Invariant Krylov space: this x minimises the residual over all of it.
      res.termination = MinresTermination::kSingular;
      return res;
    }
  }
  res.termination = MinresTermination::kMaxIterations;
  return res;
}

template MinresResult<float> minres(LinearOperator<float>&, ConstVectorRef<float>,
                                    const MinresOptions&, const Vector<float>*);
template MinresResult<double> minres(LinearOperator<double>&, ConstVectorRef<double>,
                                     const MinresOptions&, const Vector<double>*);

}  // namespace quadra::linalg
