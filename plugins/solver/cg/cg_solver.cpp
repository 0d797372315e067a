// `cg`: Hessian-free Newton (Martens 2010; paper §5). Conjugate gradients on
// (C + lambda I) x = -g from x_0 = 0, or from a decayed copy of the previous accepted step (warm
// start), through the host's CG (IQuadraticModel::conjugate_gradients: quadra's one CG, with its
// stopping rules: relative residual, Martens' relative progress, the iteration cap, non-positive
// curvature). The proposal is the CG basis itself, so that a debiasing strategy can re-measure
// the step lengths on an independent batch:
//   columns  [x_0 if warm-started] p_0 .. p_{K-1}     (the CG search directions)
//   own      [1]                    alpha_0 .. alpha_{K-1}
// and P c is the CG iterate x_K.
//
// Non-positive curvature ends CG with the directions found so far. If that happens before any
// direction exists, the proposal is a steepest-descent step -g / (|g'Cg| / |g|^2 + lambda), the
// saddle-free step length along the gradient, with an ok Status: the step is still a descent
// step, and the damping strategy decides about it like about any other.
//
// The host keeps a warm start only if it lowers the model (q(x_0) < 0); otherwise CG starts at 0.
// With a preconditioner (diag-ggn, diag-ef or kfac on the directions batch), the directions are
// those of preconditioned CG; the debiasing strategies re-measure them like any others.
// With backtracking, P is cut to the chosen iterate; Directions::iterations still counts every
// CG iteration run.

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

constexpr int kStateVersion = 1;
constexpr double kBacktrackingGrowth = 1.3;  // Martens (2010), §4.6

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
        warm_start_decay_(options.get_real("warm_start_decay")),
        preconditioner_(options.get_string("preconditioner")),
        preconditioner_damping_(options.get_real("preconditioner_damping")),
        preconditioner_exponent_(options.get_real("preconditioner_exponent")) {
    if (preconditioner_ == "none") preconditioner_.clear();
  }

  bool uses_curvature() const override { return true; }

  Status propose(quadra::IQuadraticModel& model, double lambda, quadra::Directions& out) override {
    if (!(lambda >= 0.0) || !std::isfinite(lambda)) {
      return Status::invalid_argument("cg: lambda must be finite and >= 0, found " +
                                      quadra::format_number(lambda));
    }
    const Index n = model.num_parameters();
    quadra::CgRequest request;
    request.lambda = lambda;
    request.max_iterations = max_iterations_;
    request.tolerance = tolerance_;
    request.martens_rule = martens_rule_;
    request.preconditioner = preconditioner_;
    request.preconditioner_damping = preconditioner_damping_;
    request.preconditioner_exponent = preconditioner_exponent_;
    if (warm_start_ && previous_.size() != 0) {
      if (previous_.size() != n) {
        return Status::invalid_argument("cg: the warm-start vector has " +
                                        std::to_string(previous_.size()) + " entries, the model " +
                                        std::to_string(n) + " parameters");
      }
      if (previous_.squaredNorm() > 0.0) request.warm_start = warm_start_decay_ * previous_;
    }
    quadra::CgOutcome cg;
    if (Status s = model.conjugate_gradients(request, cg); !s.is_ok()) return s;

    const Index w = cg.warm_started ? 1 : 0;
    const Index k = cg.directions.cols();
    if (k == 0 && w == 0 && cg.stop == quadra::CgStop::kNegativeCurvature) {
      return descent_step(lambda, cg, out);
    }
    out.basis.resize(n, w + k);
    out.own_coefficients.resize(w + k);
    if (w == 1) {
      out.basis.col(0) = request.warm_start;
      out.own_coefficients(0) = 1.0;
    }
    out.basis.rightCols(k) = cg.directions;
    out.own_coefficients.tail(k) = cg.step_lengths;
    Index used = k;
    if (backtracking_ && k > 0) {
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
    quadra::StateWriter(out, kStateVersion).count(previous_.size()).vector(previous_);
    return Status::ok();
  }

  Status load_state(const std::vector<double>& state) override {
    quadra::StateReader reader("cg", state, kStateVersion, "{version 1, n, warm-start vector[n]}");
    Index n = 0;
    Vec previous;
    reader.count("warm-start size n", n);
    reader.vector("warm-start vector", n, previous);
    if (Status s = reader.finish(); !s.is_ok()) return s;
    previous_ = std::move(previous);
    return Status::ok();
  }

 private:
  /// Non-positive curvature along p_0 = -g: a gradient step with the saddle-free step length
  /// g'g / (|g'Cg| + lambda g'g), from p'(C + lambda I)p = g'Cg + lambda g'g.
  static Status descent_step(double lambda, const quadra::CgOutcome& cg, quadra::Directions& out) {
    const Vec& p = cg.negative_curvature_direction;
    const double rr = p.squaredNorm();
    const double denominator = std::abs(cg.negative_curvature - lambda * rr) + lambda * rr;
    if (!(denominator > 0.0)) {
      return Status::numerical_issue(
          "cg: zero curvature along the gradient and lambda = 0: no step length");
    }
    out.basis = p;
    out.own_coefficients = Vec::Constant(1, rr / denominator);
    out.iterations = 0;
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
  std::string preconditioner_;  // empty: plain CG
  double preconditioner_damping_;
  double preconditioner_exponent_;
  Vec previous_;  // the last accepted step, empty before the first
};

void register_components(quadra::IRegistrar& registrar) {
  using quadra::OptionSpec;
  registrar.add<CgSolver>(
      {"cg",
       "Hessian-free Newton: conjugate gradients on the damped quadratic (Martens 2010)",
       {OptionSpec::integer("max_iterations", 50, "most CG iterations per step")
            .in_range(1, 100000),
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
            .in_range(0.0, 1.0),
        OptionSpec::choice("preconditioner", "none", {"none", "diag-ggn", "diag-ef", "kfac"},
                           "preconditioned CG with M = (D + (lambda + preconditioner_damping) I)"
                           "^preconditioner_exponent, D from this curvature plugin on the "
                           "directions batch (Martens 2010: diag-ef, exponent 0.75)"),
        OptionSpec::real("preconditioner_damping", 1e-3, "added to lambda inside M").at_least(0.0),
        OptionSpec::real("preconditioner_exponent", 0.75, "the power of M")
            .greater_than(0.0)
            .at_most(1.0)}});
}

}  // namespace

QUADRA_PLUGIN("cg-solver", "1.0.0", register_components)
