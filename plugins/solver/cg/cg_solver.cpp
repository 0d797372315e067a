// `cg`: Hessian-free Newton (Martens 2010; paper §5). Conjugate gradients (Nocedal & Wright,
// Alg. 5.2) on (C + lambda I) x = -g from x_0 = 0, or from a decayed copy of the previous
// accepted step (warm start). The proposal is the CG basis itself, so that a debiasing strategy
// can re-measure the step lengths on an independent batch:
//   columns  [x_0 if warm-started] p_0 .. p_{K-1}     (the CG search directions)
//   own      [1]                    alpha_0 .. alpha_{K-1}
// and P c is the CG iterate x_K.
//
// Stopping: K = max_iterations, relative residual |(C + lambda I) x + g| <= tolerance |g|,
// Martens' relative-progress test, or non-positive curvature p'(C + lambda I)p <= 0 (the
// directions found so far are returned). If that happens before any direction exists, the
// proposal is a steepest-descent step -g / (|g'Cg| / |g|^2 + lambda), the saddle-free step
// length along the gradient, with an ok Status: the step is still a descent step, and the
// damping strategy decides about it like about any other.
//
// A warm start is used only if it lowers the model (q(x_0) < 0); otherwise CG starts at 0, as
// a worse-than-zero start would cost iterations just to get back. With backtracking, P is cut
// to the chosen iterate; Directions::iterations still counts every CG iteration run.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <quadra/sdk.hpp>

namespace {

using quadra::Index;
using quadra::Status;
using Vec = quadra::Vector<double>;

constexpr double kStateVersion = 1.0;
constexpr double kMartensEpsilon = 5e-4;  // Martens (2010), §4.4
constexpr double kBacktrackingGrowth = 1.3;  // Martens (2010), §4.6

/// Martens' relative-progress test on the model values q_0..q_i (q_0 at x_0): stop when over
/// the last m = max(10, i/10) iterations the model improved by less than m * eps relative.
bool martens_stop(const std::vector<double>& q) {
  const std::size_t i = q.size() - 1;
  const std::size_t m = std::max<std::size_t>(10, i / 10);
  if (i <= m || !(q[i] < 0.0)) return false;
  return (q[i] - q[i - m]) / q[i] < static_cast<double>(m) * kMartensEpsilon;
}

/// Iteration counts whose iterates CG backtracking considers: ceil(1.3^j) <= k, and k.
std::vector<Index> backtracking_candidates(Index k) {
  std::vector<Index> counts;
  for (double power = 1.0; power <= static_cast<double>(k); power *= kBacktrackingGrowth) {
    const auto count = static_cast<Index>(std::ceil(power));
    if (count > k) break;
    if (counts.empty() || counts.back() != count) counts.push_back(count);
  }
  if (counts.empty() || counts.back() != k) counts.push_back(k);
  return counts;
}

class CgSolver final : public quadra::Solver {
 public:
  explicit CgSolver(const quadra::OptionValues& options)
      : max_iterations_(static_cast<Index>(options.get_int("max_iterations"))),
        tolerance_(options.get_real("tolerance")),
        martens_rule_(options.get_bool("martens_rule")),
        backtracking_(options.get_bool("backtracking")),
        warm_start_(options.get_bool("warm_start")),
        warm_start_decay_(options.get_real("warm_start_decay")) {}

  bool uses_curvature() const override { return true; }

  Status propose(quadra::IQuadraticModel& model, double lambda, quadra::Directions& out) override {
    if (!(lambda >= 0.0) || !std::isfinite(lambda)) {
      return Status::invalid_argument("cg: lambda must be finite and >= 0, found " +
                                      std::to_string(lambda));
    }
    const Index n = model.num_parameters();
    Vec g(n);
    if (Status s = model.gradient(g); !s.is_ok()) return s;
    if (!g.allFinite()) return Status::numerical_issue("cg: the gradient has non-finite entries");

    Vec x = Vec::Zero(n);
    Vec r = g;  // residual (C + lambda I) x + g, the model's gradient at x
    Vec product(n);
    bool warm = false;
    if (warm_start_ && previous_.size() != 0) {
      if (previous_.size() != n) {
        return Status::invalid_argument("cg: the warm-start vector has " +
                                        std::to_string(previous_.size()) + " entries, the model " +
                                        std::to_string(n) + " parameters");
      }
      const Vec x0 = warm_start_decay_ * previous_;
      if (x0.squaredNorm() > 0.0) {
        if (Status s = damped_product(model, lambda, x0, product, -1); !s.is_ok()) return s;
        const Vec r0 = product + g;
        if (0.5 * x0.dot(r0 + g) < 0.0) {
          x = x0;
          r = r0;
          warm = true;
        }
      }
    }

    const Index w = warm ? 1 : 0;
    // Grown on demand: CG usually stops long before max_iterations, and P is n x K.
    out.basis.resize(n, w + std::min<Index>(max_iterations_, 8));
    out.own_coefficients.resize(out.basis.cols());
    if (warm) {
      out.basis.col(0) = x;
      out.own_coefficients(0) = 1.0;
    }
    std::vector<double> q{0.5 * x.dot(r + g)};  // q(x) = g'x + x'(C + lambda I)x / 2
    const double stop_norm = tolerance_ * g.norm();
    Vec p = -r;
    double rr = r.squaredNorm();
    Index k = 0;
    bool descent_fallback = false;
    while (k < max_iterations_ && std::sqrt(rr) > stop_norm) {
      if (Status s = damped_product(model, lambda, p, product, k); !s.is_ok()) return s;
      const double curvature = p.dot(product);
      if (!std::isfinite(curvature)) {
        return Status::numerical_issue("cg: non-finite curvature along direction " +
                                       std::to_string(k));
      }
      if (!(curvature > 0.0)) {
        descent_fallback = k == 0 && !warm;
        if (descent_fallback) {
          // p = -g here: step length from |g'Cg| (saddle-free), see the file comment.
          const double denominator = std::abs(curvature - lambda * rr) + lambda * rr;
          if (!(denominator > 0.0)) {
            return Status::numerical_issue(
                "cg: zero curvature along the gradient and lambda = 0: no step length");
          }
          out.basis.col(0) = p;
          out.own_coefficients(0) = rr / denominator;
        }
        break;
      }
      const double alpha = rr / curvature;
      if (w + k == out.basis.cols()) {
        const Index columns = w + std::min<Index>(max_iterations_, 2 * k);
        out.basis.conservativeResize(n, columns);
        out.own_coefficients.conservativeResize(columns);
      }
      out.basis.col(w + k) = p;
      out.own_coefficients(w + k) = alpha;
      x += alpha * p;
      r += alpha * product;
      ++k;
      const double rr_next = r.squaredNorm();
      if (!std::isfinite(rr_next) || !std::isfinite(alpha)) {
        return Status::numerical_issue("cg: non-finite residual after iteration " +
                                       std::to_string(k));
      }
      q.push_back(0.5 * x.dot(r + g));
      if (martens_rule_ && martens_stop(q)) break;
      p = -r + (rr_next / rr) * p;
      rr = rr_next;
    }

    Index used = descent_fallback ? 1 : k;
    if (backtracking_ && !descent_fallback && k > 0) {
      if (Status s = backtrack(model, w, k, out, used); !s.is_ok()) return s;
    }
    out.basis.conservativeResize(n, w + used);
    out.own_coefficients.conservativeResize(w + used);
    out.iterations = static_cast<int>(k);
    return Status::ok();
  }

  void step_taken(quadra::ConstVectorRef<double> step, bool accepted) override {
    if (accepted && warm_start_) previous_ = step;
  }

  // Layout: {version 1, n, previous accepted step[n]}; n = 0 before the first accepted step.
  Status save_state(std::vector<double>& out) const override {
    out.clear();
    out.reserve(2 + static_cast<std::size_t>(previous_.size()));
    out.push_back(kStateVersion);
    out.push_back(static_cast<double>(previous_.size()));
    out.insert(out.end(), previous_.data(), previous_.data() + previous_.size());
    return Status::ok();
  }

  Status load_state(const std::vector<double>& state) override {
    const std::string layout = "{version 1, n, warm-start vector[n]}";
    if (state.size() < 2) {
      return Status::invalid_argument("cg: checkpoint state has " + std::to_string(state.size()) +
                                      " entries, expected at least 2: " + layout);
    }
    if (state[0] != kStateVersion) {
      return Status::invalid_argument("cg: checkpoint state has layout version " +
                                      std::to_string(state[0]) + ", expected 1");
    }
    const double n = state[1];
    if (!(n >= 0.0) || n != std::floor(n) || n + 2.0 != static_cast<double>(state.size())) {
      return Status::invalid_argument("cg: checkpoint state has " + std::to_string(state.size()) +
                                      " entries and declares n = " + std::to_string(n) +
                                      ", expected 2 + n entries: " + layout);
    }
    const Eigen::Map<const Vec> vector(state.data() + 2, static_cast<Index>(n));
    if (!vector.allFinite()) {
      return Status::invalid_argument("cg: checkpoint state has a non-finite warm-start vector");
    }
    previous_ = vector;
    return Status::ok();
  }

 private:
  /// out = (C + lambda I) v; `iteration` < 0 names the warm start in messages.
  static Status damped_product(quadra::IQuadraticModel& model, double lambda, const Vec& v,
                               Vec& out, Index iteration) {
    if (Status s = model.curvature_times(v, out); !s.is_ok()) return s;
    if (!out.allFinite()) {
      return Status::numerical_issue(
          "cg: the curvature product " +
          (iteration < 0 ? std::string("with the warm start")
                         : "along direction " + std::to_string(iteration)) +
          " has non-finite entries");
    }
    out += lambda * v;
    return Status::ok();
  }

  /// Martens' CG backtracking: from the last iterate walk back through the kept ones while the
  /// loss on the gradient batch keeps decreasing; `used` becomes the chosen iteration count.
  static Status backtrack(quadra::IQuadraticModel& model, Index w, Index k,
                          const quadra::Directions& out, Index& used) {
    const std::vector<Index> candidates = backtracking_candidates(k);
    used = k;
    if (candidates.size() < 2) return Status::ok();
    const auto loss_after = [&](Index count, double& loss) {
      // The same product the loop forms, so the measured step is the one taken.
      const Vec step = out.basis.leftCols(w + count) * out.own_coefficients.head(w + count);
      if (Status s = model.loss_at(step, loss); !s.is_ok()) return s;
      if (!std::isfinite(loss)) loss = std::numeric_limits<double>::infinity();
      return Status::ok();
    };
    double best = 0.0;
    if (Status s = loss_after(k, best); !s.is_ok()) return s;
    for (std::size_t i = candidates.size() - 1; i-- > 0;) {
      double loss = 0.0;
      if (Status s = loss_after(candidates[i], loss); !s.is_ok()) return s;
      if (!(loss < best)) break;
      best = loss;
      used = candidates[i];
    }
    return Status::ok();
  }

  Index max_iterations_;
  double tolerance_;
  bool martens_rule_;
  bool backtracking_;
  bool warm_start_;
  double warm_start_decay_;
  Vec previous_;  // the last accepted step, empty before the first
};

void register_components(quadra::IRegistrar& registrar) {
  using quadra::OptionSpec;
  registrar.add<CgSolver>(
      {"cg",
       "Hessian-free Newton: conjugate gradients on the damped quadratic (Martens 2010)",
       {OptionSpec::integer("max_iterations", 50, "most CG iterations per step").in_range(1, 100000),
        OptionSpec::real("tolerance", 1e-6,
                         "stop when |residual| <= tolerance |g| (0: never on the residual)")
            .in_range(0.0, 1.0),
        OptionSpec::boolean("martens_rule", true,
                            "stop on Martens' relative-progress test (m = max(10, k/10), "
                            "eps = 5e-4)"),
        OptionSpec::boolean("backtracking", false,
                            "choose among the iterates after ceil(1.3^j) iterations by the loss "
                            "on the gradient batch (Martens' CG backtracking)"),
        OptionSpec::boolean("warm_start", true,
                            "start CG from the previous accepted step times warm_start_decay"),
        OptionSpec::real("warm_start_decay", 0.95, "factor on the previous step for the warm start")
            .in_range(0.0, 1.0)}});
}

}  // namespace

QUADRA_PLUGIN("cg-solver", "1.0.0", register_components)
