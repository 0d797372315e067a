// Debiasing by independent batches (paper §4): the solver's directions come from the
// `directions` draw; the slopes g^T p and curvatures p^T C p that set the step along them are
// re-measured on a disjoint `estimate` draw. Slopes and curvatures always come from the same
// draw: mixing them across batches blows up (paper §4.5).
//
// One library, several components that differ in their batch plan and re-estimation rule:
//   rayleigh        eigen directions; diagonal or projected Rayleigh-quotient Newton step
//   cg-line-search  CG directions; one exact line search per direction, in order
//   cg-projected    CG directions; Newton step of the estimate quadratic within span(P)
//   split-batch     equal budget: one batch split in halves, directions / estimate
//   averaged        estimate over M independent batches (one draw M times the batch size:
//                   the mean over M*B samples is the average of the M batch means)
//   full-batch      oracle: every role served by the whole training set (diagnostics)

#include <cmath>
#include <string>

#include <Eigen/Eigenvalues>
#include <quadra/sdk.hpp>

namespace {

using quadra::BatchPlan;
using quadra::BatchRole;
using quadra::Status;

enum class Rule { kDiagonal, kProjected, kLineSearch, kOwn };

Rule parse_rule(const std::string& name) {
  if (name == "diagonal") return Rule::kDiagonal;
  if (name == "projected") return Rule::kProjected;
  return Rule::kLineSearch;  // the schema admits nothing else
}

/// Slopes s, projected curvature M = P^T C P and gram G = P^T P on the estimate draw.
struct Measured {
  quadra::Vector<double> slopes;
  quadra::Matrix<double> curvature;
  quadra::Matrix<double> gram;
};

Status measure(quadra::IDirectionalModel& model, quadra::Index k, Measured& out) {
  if (model.num_directions() != k) {
    return Status::invalid_argument("estimate model has " + std::to_string(model.num_directions()) +
                                    " directions, the solver proposed " + std::to_string(k));
  }
  out.slopes.resize(k);
  out.curvature.resize(k, k);
  out.gram.resize(k, k);
  if (Status s = model.slopes(out.slopes); !s.is_ok()) return s;
  if (Status s = model.projected_curvature(out.curvature); !s.is_ok()) return s;
  if (Status s = model.gram(out.gram); !s.is_ok()) return s;
  if (!out.slopes.allFinite() || !out.curvature.allFinite() || !out.gram.allFinite()) {
    return Status::numerical_issue("non-finite slope or curvature on the estimate batch");
  }
  return Status::ok();
}

/// c_i = -s_i / (p_i^T C p_i + lambda p_i^T p_i), each direction on its own.
Status diagonal(const Measured& m, double lambda, quadra::VectorRef<double> c) {
  for (quadra::Index i = 0; i < c.size(); ++i) {
    const double curvature = m.curvature(i, i) + lambda * m.gram(i, i);
    if (!(curvature > 0.0)) {
      return Status::numerical_issue("damped curvature " + quadra::format_number(curvature) +
                                     " along direction " + std::to_string(i) +
                                     " is not positive on the estimate batch");
    }
    c(i) = -m.slopes(i) / curvature;
  }
  return Status::ok();
}

/// (P^T C P + lambda P^T P) c = -s: the minimiser of the estimate quadratic within span(P).
/// Late CG directions can be numerically dependent (P^T P singular up to rounding), so the
/// system is solved by its eigendecomposition: eigenvalues below kRelativeRank times the
/// largest are the null space of P, where c changes nothing of P c, and are left out
/// (minimum-norm solution); clearly negative ones mean the estimate is not convex in span(P).
Status projected(const Measured& m, double lambda, quadra::VectorRef<double> c) {
  constexpr double kRelativeRank = 1e-10;
  quadra::Matrix<double> system = m.curvature + lambda * m.gram;
  system = 0.5 * (system + system.transpose()).eval();  // products are symmetric up to rounding
  const Eigen::SelfAdjointEigenSolver<quadra::Matrix<double>> eigen(system);
  if (eigen.info() != Eigen::Success) {
    return Status::numerical_issue("projected damped curvature: eigendecomposition failed");
  }
  const quadra::Vector<double>& values = eigen.eigenvalues();  // ascending
  const double largest = values.cwiseAbs().maxCoeff();
  if (!(largest > 0.0) || values(0) < -kRelativeRank * largest) {
    return Status::numerical_issue(
        "projected damped curvature is not positive definite on the estimate batch");
  }
  const quadra::Vector<double> rotated = eigen.eigenvectors().transpose() * (-m.slopes);
  quadra::Vector<double> scaled = quadra::Vector<double>::Zero(values.size());
  for (quadra::Index i = 0; i < values.size(); ++i) {
    if (values(i) > kRelativeRank * largest) scaled(i) = rotated(i) / values(i);
  }
  c = eigen.eigenvectors() * scaled;
  return Status::ok();
}

/// Exact line search along p_0, p_1, ... in order; the slope of p_j is taken at the iterate
/// reached so far: s_j + sum_{i<j} c_i (M + lambda G)_{ij}.
Status line_search(const Measured& m, double lambda, quadra::VectorRef<double> c) {
  const quadra::Matrix<double> damped = m.curvature + lambda * m.gram;
  for (quadra::Index j = 0; j < c.size(); ++j) {
    const double curvature = damped(j, j);
    if (!(curvature > 0.0)) {
      return Status::numerical_issue("damped curvature " + quadra::format_number(curvature) +
                                     " along CG direction " + std::to_string(j) +
                                     " is not positive on the estimate batch");
    }
    const double slope = m.slopes(j) + damped.row(j).head(j).dot(c.head(j));
    c(j) = -slope / curvature;
  }
  return Status::ok();
}

/// A debiasing component: a batch plan and a coefficient rule.
class IndependentBatch : public quadra::DebiasingStrategy {
 public:
  IndependentBatch(BatchPlan plan, Rule rule) : plan_(std::move(plan)), rule_(rule) {}

  BatchPlan plan() const override { return plan_; }

  Status coefficients(quadra::ConstVectorRef<double> own, quadra::IDirectionalModel& estimate,
                      double lambda, quadra::VectorRef<double> out) override {
    if (out.size() != own.size()) return Status::invalid_argument("output has the wrong size");
    if (rule_ == Rule::kOwn) {
      out = own;
      return Status::ok();
    }
    if (Status s = measure(estimate, own.size(), measured_); !s.is_ok()) return s;
    switch (rule_) {
      case Rule::kDiagonal: return diagonal(measured_, lambda, out);
      case Rule::kProjected: return projected(measured_, lambda, out);
      case Rule::kLineSearch: return line_search(measured_, lambda, out);
      case Rule::kOwn: break;
    }
    return Status::failed("unknown rule");
  }

 private:
  BatchPlan plan_;
  Rule rule_;
  Measured measured_;  // reused across steps
};

/// Draws: 0 directions (+ gradient), 1 estimate, 2 acceptance unless it shares the estimate.
/// With `curvature_size` below 1 (Martens' subsampled curvature), the directions and estimate
/// draws are that fraction of their size and the gradient gets a full-size draw of its own.
BatchPlan three_way_plan(double directions_size, double estimate_size, bool separate_acceptance,
                         double curvature_size = 1.0) {
  BatchPlan plan;
  plan.draws = {{directions_size * curvature_size, false}, {estimate_size * curvature_size, false}};
  if (separate_acceptance) plan.draws.push_back({1.0, false});
  plan.draw_of_role[static_cast<int>(BatchRole::kDirections)] = 0;
  plan.draw_of_role[static_cast<int>(BatchRole::kEstimate)] = 1;
  plan.draw_of_role[static_cast<int>(BatchRole::kAcceptance)] = separate_acceptance ? 2 : 1;
  if (curvature_size < 1.0) {
    plan.draws.push_back({directions_size, false});
    plan.draw_of_role[static_cast<int>(BatchRole::kGradient)] =
        static_cast<int>(plan.draws.size()) - 1;
  } else {
    plan.draw_of_role[static_cast<int>(BatchRole::kGradient)] = 0;
  }
  return plan;
}

bool separate(const quadra::OptionValues& o) { return o.get_string("acceptance") == "separate"; }
double curvature(const quadra::OptionValues& o) { return o.get_real("curvature_size"); }

struct Rayleigh : IndependentBatch {
  explicit Rayleigh(const quadra::OptionValues& o)
      : IndependentBatch(
            three_way_plan(1.0, o.get_real("estimate_size"), separate(o), curvature(o)),
            parse_rule(o.get_string("form"))) {}
};
struct CgLineSearch : IndependentBatch {
  explicit CgLineSearch(const quadra::OptionValues& o)
      : IndependentBatch(
            three_way_plan(1.0, o.get_real("estimate_size"), separate(o), curvature(o)),
            Rule::kLineSearch) {}
};
struct CgProjected : IndependentBatch {
  explicit CgProjected(const quadra::OptionValues& o)
      : IndependentBatch(
            three_way_plan(1.0, o.get_real("estimate_size"), separate(o), curvature(o)),
            Rule::kProjected) {}
};
struct SplitBatch : IndependentBatch {
  // Equal budget: both halves together are one batch; rho is measured on the estimate half.
  explicit SplitBatch(const quadra::OptionValues& o)
      : IndependentBatch(three_way_plan(0.5, 0.5, false), parse_rule(o.get_string("rule"))) {}
};
struct Averaged : IndependentBatch {
  explicit Averaged(const quadra::OptionValues& o)
      : IndependentBatch(three_way_plan(1.0, static_cast<double>(o.get_int("batches")), separate(o),
                                        curvature(o)),
                         parse_rule(o.get_string("rule"))) {}
};
struct FullBatch : IndependentBatch {
  explicit FullBatch(const quadra::OptionValues&)
      : IndependentBatch(full_plan(), Rule::kOwn) {}
  static BatchPlan full_plan() {
    BatchPlan plan;
    plan.draws = {{1.0, true}};
    plan.draw_of_role.fill(0);
    return plan;
  }
};

void register_components(quadra::IRegistrar& registrar) {
  using quadra::OptionSpec;
  const auto estimate_size = [] {
    return OptionSpec::real("estimate_size", 1.0,
                            "estimate batch size as a multiple of the batch size")
        .greater_than(0.0)
        .at_most(64.0);
  };
  const auto acceptance = [] {
    return OptionSpec::choice("acceptance", "separate", {"separate", "estimate"},
                              "batch that measures rho: a third independent one, or the "
                              "estimate batch");
  };
  const auto curvature_size = [] {
    return OptionSpec::real("curvature_size", 1.0,
                            "directions and estimate batches as a fraction of the gradient "
                            "batch (Martens' subsampled curvature); below 1 the gradient gets a "
                            "draw of its own")
        .greater_than(0.0)
        .at_most(1.0);
  };
  const auto rule = [](const char* def) {
    return OptionSpec::choice("rule", def, {"diagonal", "projected", "line-search"},
                              "re-estimation rule: per direction, k x k projected solve, or "
                              "sequential line searches");
  };
  registrar.add<Rayleigh>(
      {"rayleigh",
       "directions from one batch, Rayleigh quotients and slopes along them from another",
       {OptionSpec::choice("form", "diagonal", {"diagonal", "projected"},
                           "diagonal: -s_i/(p_i'Cp_i + lambda); projected: k x k solve"),
        estimate_size(), acceptance(), curvature_size()}});
  registrar.add<CgLineSearch>({"cg-line-search",
                               "CG directions from one batch, each step length from another",
                               {estimate_size(), acceptance(), curvature_size()}});
  registrar.add<CgProjected>({"cg-projected",
                              "CG directions from one batch, projected Newton step on another",
                              {estimate_size(), acceptance(), curvature_size()}});
  registrar.add<SplitBatch>(
      {"split-batch", "equal budget: one batch split in halves for directions and estimates",
       {rule("line-search")}});
  registrar.add<Averaged>(
      {"averaged",
       "slopes and curvatures averaged over M independent batches",
       {OptionSpec::integer("batches", 4, "M, the number of independent estimate batches")
            .in_range(2, 64),
        rule("line-search"), acceptance(), curvature_size()}});
  registrar.add<FullBatch>(
      {"full-batch", "oracle: every role on the whole training set (diagnostics only)", {}});
}

}  // namespace

QUADRA_PLUGIN("independent-batch-debiasing", "1.0.0", register_components)
