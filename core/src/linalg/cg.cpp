#include <quadra/linalg/cg.hpp>

#include <algorithm>
#include <cassert>
#include <cmath>
#include <utility>

#include <fmt/format.h>

#include <quadra/error.hpp>

#include "vector_kernels.hpp"

namespace quadra::linalg {
namespace {

void validate(const CgOptions& options) {
  if (!std::isfinite(options.damping)) {
    throw Error(fmt::format("cg: damping = {}; expected a finite number", options.damping));
  }
  if (!(options.tolerance >= 0.0)) {
    throw Error(fmt::format("cg: tolerance = {}; expected a number >= 0", options.tolerance));
  }
  if (options.max_iterations < 0) {
    throw Error(
        fmt::format("cg: max_iterations = {}; expected a count >= 0", options.max_iterations));
  }
  if (options.use_martens_rule) {
    if (!(options.martens_epsilon > 0.0)) {
      throw Error(fmt::format("cg: martens_epsilon = {}; expected a number > 0",
                              options.martens_epsilon));
    }
    if (options.martens_min_window < 1) {
      throw Error(fmt::format("cg: martens_min_window = {}; expected a count >= 1",
                              options.martens_min_window));
    }
    if (!(options.martens_window_fraction >= 0.0)) {
      throw Error(fmt::format("cg: martens_window_fraction = {}; expected a number >= 0",
                              options.martens_window_fraction));
    }
  }
  if (options.record_iterates == IterateRecording::kSchedule) {
    const auto& s = options.iterate_schedule;
    for (std::size_t i = 0; i < s.size(); ++i) {
      if (s[i] < 0 || (i > 0 && s[i] <= s[i - 1])) {
        throw Error(fmt::format(
            "cg: iterate_schedule[{}] = {}; expected strictly increasing iteration numbers >= 0",
            i, s[i]));
      }
    }
  }
}

// Appends v as the next column of `store`, growing the capacity geometrically up to `cap`
// columns, so recording costs O(log K) allocations rather than one per step.
template <class Scalar>
void append_column(Matrix<Scalar>& store, Index& used, const Vector<Scalar>& v, Index cap) {
  if (used == store.cols()) {
    const Index grown = std::min(std::max<Index>(2 * used, 8), std::max(cap, used + 1));
    store.conservativeResize(v.size(), grown);
  }
  store.col(used) = v;
  ++used;
}

// Martens' rule at iteration i, given phi(x_0) .. phi(x_i).
bool relative_progress_stalled(const std::vector<double>& phi, Index i,
                               const CgOptions& options) {
  const auto window = std::max(
      options.martens_min_window,
      static_cast<Index>(std::floor(options.martens_window_fraction * static_cast<double>(i))));
  if (i <= window) return false;
  const double now = phi[static_cast<std::size_t>(i)];
  const double before = phi[static_cast<std::size_t>(i - window)];
  return now < 0.0 &&
         (now - before) / now < static_cast<double>(window) * options.martens_epsilon;
}

template <class Scalar>
class CgRun {
 public:
  CgRun(LinearOperator<Scalar>& a, ConstVectorRef<Scalar> b, const CgOptions& options,
        const Vector<Scalar>* x0, LinearOperator<Scalar>* preconditioner)
      : a_(a), b_(b), options_(options), x0_(x0), preconditioner_(preconditioner),
        n_(a.dim()), lambda_(static_cast<Scalar>(options.damping)) {}

  CgResult<Scalar> run() {
    CgResult<Scalar> result;
    solve(result);
    finish(result);
    return result;
  }

 private:
  void solve(CgResult<Scalar>& res) {
    auto& trace = res.trace;
    Vector<Scalar>& x = res.x;
    res.b_norm = static_cast<double>(b_.norm());
    if (!std::isfinite(res.b_norm)) {
      x = x0_ != nullptr ? *x0_ : Vector<Scalar>::Zero(n_);
      fail(res, Status::numerical_issue("cg: the right-hand side b has non-finite entries"));
      return;
    }
    Vector<Scalar> r(n_);
    Vector<Scalar> p(n_);
    Vector<Scalar> ap(n_);
    Vector<Scalar> z(preconditioner_ != nullptr ? n_ : 0);
    // Without a preconditioner z is r itself.
    const Vector<Scalar>& zr = preconditioner_ != nullptr ? z : r;

    if (res.b_norm == 0.0) {
      // The solution of (A + lambda I) x = 0 is x = 0 (CG assumes a definite matrix).
      x.setZero(n_);
      trace.quadratic.push_back(0.0);
      trace.residual_norms.push_back(0.0);
      record_iterate(res, 0);
      res.termination = CgTermination::kConverged;
      return;
    }
    // phi(x) = 1/2 x^T (A + lambda I) x - b^T x = -1/2 x^T (b + r).
    double phi = 0.0;
    if (x0_ != nullptr) {
      x = *x0_;
      if (!product(res, x, r)) return;
      r = b_ - r;
      phi = -0.5 * (static_cast<double>(x.dot(b_)) + static_cast<double>(x.dot(r)));
      res.warm_started = true;
      if (options_.keep_warm_start_only_if_lower && !(phi < 0.0)) {
        x.setZero(n_);
        r = b_;
        phi = 0.0;
        res.warm_started = false;
      }
    } else {
      x.setZero(n_);
      r = b_;
    }
    double r_norm = static_cast<double>(r.norm());
    trace.quadratic.push_back(phi);
    trace.residual_norms.push_back(r_norm);
    res.residual_norm = r_norm;
    record_iterate(res, 0);

    const double target = options_.tolerance * res.b_norm;
    if (r_norm <= target) {
      res.termination = CgTermination::kConverged;
      return;
    }
    if (options_.max_iterations == 0) {
      res.termination = CgTermination::kMaxIterations;
      return;
    }
    double rz = 0.0;
    if (!precondition(res, r, z, rz)) return;
    p = zr;

    for (Index i = 0;; ++i) {
      if (!product(res, p, ap)) return;
      const auto [curvature, p_dot_r] = detail::dot2(p, ap, r);
      if (!(curvature > 0.0)) {
        if (!std::isfinite(curvature)) {
          fail(res, Status::numerical_issue(fmt::format(
                        "cg: curvature p^T (A + lambda I) p = {} at iteration {}", curvature, i)));
          return;
        }
        res.negative_curvature_direction = p;
        res.negative_curvature = curvature;
        res.termination = CgTermination::kNegativeCurvature;
        res.status = Status::numerical_issue(fmt::format(
            "cg: non-positive curvature p^T (A + lambda I) p = {} at iteration {} "
            "(lambda = {}); the matrix is not positive definite",
            curvature, i, options_.damping));
        return;
      }
      const double alpha = rz / curvature;
      phi += -alpha * p_dot_r + 0.5 * alpha * alpha * curvature;
      const double r_norm2 = detail::step_and_norm2(static_cast<Scalar>(alpha), p, ap, x, r);
      r_norm = std::sqrt(r_norm2);
      res.residual_norm = r_norm;
      res.iterations = i + 1;
      if (options_.record_directions) {
        append_column(trace.directions, directions_used_, p, options_.max_iterations);
      }
      trace.curvatures.push_back(curvature);
      trace.step_lengths.push_back(alpha);
      trace.quadratic.push_back(phi);
      trace.residual_norms.push_back(r_norm);
      record_iterate(res, i + 1);

      if (r_norm <= target) {
        res.termination = CgTermination::kConverged;
        return;
      }
      if (options_.use_martens_rule &&
          relative_progress_stalled(trace.quadratic, i + 1, options_)) {
        res.termination = CgTermination::kRelativeProgress;
        return;
      }
      if (i + 1 == options_.max_iterations) {
        res.termination = CgTermination::kMaxIterations;
        return;
      }
      double rz_next = r_norm2;  // r'r, unless a preconditioner gives r'M^-1 r
      if (preconditioner_ != nullptr && !precondition(res, r, z, rz_next)) return;
      const double beta = rz_next / rz;
      rz = rz_next;
      detail::z_plus_beta_p(zr, static_cast<Scalar>(beta), p);
    }
  }

  // out = (A + lambda I) v, counting the product. False (and res failed) on trouble.
  bool product(CgResult<Scalar>& res, const Vector<Scalar>& v, Vector<Scalar>& out) {
    Status status = a_.apply(v, out);
    ++res.num_products;
    if (!status.is_ok()) {
      fail(res, std::move(status));
      return false;
    }
    if (lambda_ != Scalar(0)) out += lambda_ * v;
    return true;
  }

  // z = M^{-1} r and rz = r^T z > 0 (r^T r without a preconditioner).
  bool precondition(CgResult<Scalar>& res, const Vector<Scalar>& r, Vector<Scalar>& z,
                    double& rz) {
    if (preconditioner_ == nullptr) {
      rz = static_cast<double>(r.squaredNorm());
      return true;
    }
    Status status = preconditioner_->apply(r, z);
    if (!status.is_ok()) {
      fail(res, std::move(status));
      return false;
    }
    rz = static_cast<double>(r.dot(z));
    if (!(rz > 0.0)) {
      fail(res, Status::numerical_issue(fmt::format(
                    "cg: r^T M^-1 r = {} at iteration {}; the preconditioner must be positive "
                    "definite",
                    rz, res.iterations)));
      return false;
    }
    return true;
  }

  void fail(CgResult<Scalar>& res, Status status) {
    res.termination = CgTermination::kNumericalIssue;
    res.status = std::move(status);
  }

  void record_iterate(CgResult<Scalar>& res, Index iteration) {
    const Index cap = options_.max_iterations + 1;
    switch (options_.record_iterates) {
      case IterateRecording::kNone:
        return;
      case IterateRecording::kAll:
        break;
      case IterateRecording::kSchedule: {
        const auto& schedule = options_.iterate_schedule;
        while (next_scheduled_ < schedule.size() && schedule[next_scheduled_] < iteration) {
          ++next_scheduled_;
        }
        if (next_scheduled_ == schedule.size() || schedule[next_scheduled_] != iteration) return;
        break;
      }
    }
    append_column(res.trace.iterates, iterates_used_, res.x, cap);
    res.trace.iterate_indices.push_back(iteration);
  }

  // Keeps the final iterate in the trace and trims the trace matrices to what was recorded.
  void finish(CgResult<Scalar>& res) {
    auto& trace = res.trace;
    if (options_.record_iterates != IterateRecording::kNone &&
        (trace.iterate_indices.empty() || trace.iterate_indices.back() != res.iterations)) {
      append_column(trace.iterates, iterates_used_, res.x, options_.max_iterations + 2);
      trace.iterate_indices.push_back(res.iterations);
    }
    if (trace.directions.cols() != directions_used_) {
      trace.directions.conservativeResize(n_, directions_used_);
    }
    if (trace.iterates.cols() != iterates_used_) {
      trace.iterates.conservativeResize(n_, iterates_used_);
    }
  }

  LinearOperator<Scalar>& a_;
  ConstVectorRef<Scalar> b_;
  const CgOptions& options_;
  const Vector<Scalar>* x0_;
  LinearOperator<Scalar>* preconditioner_;
  const Index n_;
  const Scalar lambda_;
  Index directions_used_ = 0;
  Index iterates_used_ = 0;
  std::size_t next_scheduled_ = 0;
};

}  // namespace

std::vector<Index> geometric_schedule(Index max_iteration, double factor) {
  if (!(factor > 1.0) || !std::isfinite(factor)) {
    throw Error(fmt::format("geometric_schedule: factor = {}; expected a number > 1", factor));
  }
  std::vector<Index> schedule;
  for (double power = 1.0;; power *= factor) {
    const double value = std::ceil(power);
    if (value > static_cast<double>(max_iteration)) break;
    const auto i = static_cast<Index>(value);
    if (schedule.empty() || schedule.back() != i) schedule.push_back(i);
  }
  return schedule;
}

template <class Scalar>
CgResult<Scalar> conjugate_gradients(LinearOperator<Scalar>& a, ConstVectorRef<Scalar> b,
                                     const CgOptions& options, const Vector<Scalar>* x0,
                                     LinearOperator<Scalar>* preconditioner) {
  validate(options);
  assert(b.size() == a.dim());
  assert(x0 == nullptr || x0->size() == a.dim());
  assert(preconditioner == nullptr || preconditioner->dim() == a.dim());
  return CgRun<Scalar>(a, b, options, x0, preconditioner).run();
}

template CgResult<float> conjugate_gradients(LinearOperator<float>&, ConstVectorRef<float>,
                                             const CgOptions&, const Vector<float>*,
                                             LinearOperator<float>*);
template CgResult<double> conjugate_gradients(LinearOperator<double>&, ConstVectorRef<double>,
                                              const CgOptions&, const Vector<double>*,
                                              LinearOperator<double>*);

Status newton_cg(LinearOperator<double>& curvature, ConstVectorRef<double> gradient,
                 const CgRequest& request, CgOutcome& out, LinearOperator<double>* preconditioner) {
  const Index n = curvature.dim();
  if (gradient.size() != n || !std::isfinite(request.lambda) || request.max_iterations < 0 ||
      !(request.tolerance >= 0.0) ||
      (request.warm_start.size() != 0 && request.warm_start.size() != n)) {
    return Status::invalid_argument(fmt::format(
        "conjugate_gradients: lambda = {} must be finite, max_iterations = {} >= 0, tolerance = "
        "{} >= 0, the gradient ({} entries) and a warm start ({} entries; 0: none) of the "
        "model's {} parameters",
        request.lambda, request.max_iterations, request.tolerance, gradient.size(),
        request.warm_start.size(), n));
  }
  if (!gradient.allFinite())
    return Status::numerical_issue("cg: the gradient has non-finite entries");
  CgOptions options;
  options.damping = request.lambda;
  options.tolerance = request.tolerance;
  options.max_iterations = request.max_iterations;
  options.use_martens_rule = request.martens_rule;
  options.keep_warm_start_only_if_lower = true;
  options.record_directions = true;
  const Vector<double> b = -gradient;
  const Vector<double>* x0 = request.warm_start.size() != 0 ? &request.warm_start : nullptr;
  CgResult<double> result = conjugate_gradients<double>(curvature, b, options, x0, preconditioner);
  const bool negative = result.termination == CgTermination::kNegativeCurvature;
  if (!result.status.is_ok() && !negative) return result.status;
  out.x = std::move(result.x);
  out.warm_started = result.warm_started;
  out.directions = std::move(result.trace.directions);
  out.step_lengths = Eigen::Map<const Vector<double>>(
      result.trace.step_lengths.data(), static_cast<Index>(result.trace.step_lengths.size()));
  out.quadratic = std::move(result.trace.quadratic);
  out.products = static_cast<int>(result.num_products);
  out.negative_curvature = result.negative_curvature;
  out.negative_curvature_direction = std::move(result.negative_curvature_direction);
  switch (result.termination) {
    case CgTermination::kConverged:
      out.stop = CgStop::kResidual;
      break;
    case CgTermination::kRelativeProgress:
      out.stop = CgStop::kRelativeProgress;
      break;
    case CgTermination::kNegativeCurvature:
      out.stop = CgStop::kNegativeCurvature;
      break;
    case CgTermination::kMaxIterations:
    case CgTermination::kNumericalIssue:
      out.stop = CgStop::kIterationCap;
      break;
  }
  return Status::ok();
}

}  // namespace quadra::linalg
