// Guarded plugin objects: every call from the host into a plugin goes through a decorator that
// implements the same SDK interface, catches whatever the plugin throws (the SDK forbids it, but
// a plugin may break the rule) and checks what it returns. See plugin_host.hpp.
//
// What breaks the contract in a way no step can absorb (an exception, an invalid plan or
// verdict) becomes a PluginFailure naming the plugin, its library and the method; numbers that
// are not finite (products, diagonals, directions, coefficients) become a kNumericalIssue Status
// naming the same, which the training loop treats as a rejected step.

#include <cxxabi.h>
#include <fmt/format.h>
#include <fmt/std.h>

#include <cmath>
#include <cstdlib>
#include <exception>
#include <memory>
#include <quadra/plugin_host.hpp>
#include <string>
#include <typeinfo>
#include <utility>

namespace quadra {

std::string describe_plugin(PluginKind kind, std::string_view name,
                            const std::filesystem::path& file) {
  return fmt::format("{} plugin '{}' ({})", to_string(kind), name, file);
}

std::string describe_plugin(const Component& component) {
  return describe_plugin(component.kind, component.info.name, component.file);
}

namespace {

/// The name of the type of the exception in flight, demangled ("int", "std::string", ...).
std::string current_exception_type() {
  const std::type_info* type = abi::__cxa_current_exception_type();
  if (type == nullptr) return "unknown";
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> demangled(
      abi::__cxa_demangle(type->name(), nullptr, nullptr, &status), std::free);
  return status == 0 && demangled ? std::string(demangled.get()) : std::string(type->name());
}

/// "entry 3 is nan" for the first non-finite entry of a vector, "entry (3, 0) is nan" for a
/// matrix (column-major order).
template <class M>
std::string first_non_finite(const M& m) {
  for (Index j = 0; j < m.cols(); ++j) {
    for (Index i = 0; i < m.rows(); ++i) {
      const double x = static_cast<double>(m(i, j));
      if (std::isfinite(x)) continue;
      if constexpr (M::ColsAtCompileTime == 1) {
        return fmt::format("entry {} is {}", i, x);
      }
      return fmt::format("entry ({}, {}) is {}", i, j, x);
    }
  }
  return "every entry is finite";
}

/// Shared by the four decorators: who the plugin is, and the guard around each call.
class Guard {
 public:
  explicit Guard(std::string who) : who_(std::move(who)) {}

  /// Runs `call`; anything it throws becomes a PluginFailure naming the plugin and `method`.
  template <class F>
  decltype(auto) operator()(const char* method, F&& call) const {
    try {
      return call();
    } catch (const PluginFailure&) {
      throw;  // a nested plugin failed (through a host callback): it is the one to name
    } catch (const std::exception& e) {
      throw PluginFailure(fmt::format("{} threw from {}(): {}", who_, method, e.what()));
    } catch (...) {
      throw PluginFailure(
          fmt::format("{} threw from {}() an exception of type '{}', which is not "
                      "a std::exception (plugins must return a Status instead)",
                      who_, method, current_exception_type()));
    }
  }

  /// A non-ok Status when `m` has a non-finite entry after an ok call.
  template <class M>
  [[nodiscard]] Status finite(const Status& status, const char* method, const char* what,
                              const M& m) const {
    if (!status.is_ok() || m.allFinite()) return status;
    return Status::numerical_issue(fmt::format("{}: {}() returned a non-finite {} ({})", who_,
                                               method, what, first_non_finite(m)));
  }

  [[noreturn]] void broken(const char* method, const std::string& what) const {
    throw PluginFailure(fmt::format("{}: {}() {}", who_, method, what));
  }

  [[nodiscard]] const std::string& who() const { return who_; }

 private:
  std::string who_;
};

class GuardedCurvature final : public CurvatureEstimator {
 public:
  GuardedCurvature(PluginHandle<CurvatureEstimator> inner, std::string who)
      : inner_(std::move(inner)), guard_(std::move(who)) {}

  Status bind(ICurvatureBackend& batch) override {
    return guard_("bind", [&] { return inner_->bind(batch); });
  }
  Status apply(ConstVectorRef<double> v, VectorRef<double> out) override {
    return guard_.finite(guard_("apply", [&] { return inner_->apply(v, out); }), "apply", "product",
                         out);
  }
  Status apply(ConstVectorRef<float> v, VectorRef<float> out) override {
    return guard_.finite(guard_("apply", [&] { return inner_->apply(v, out); }), "apply", "product",
                         out);
  }
  Status solve(double lambda, ConstVectorRef<double> v, VectorRef<double> out) override {
    return guard_.finite(guard_("solve", [&] { return inner_->solve(lambda, v, out); }), "solve",
                         "solution", out);
  }
  [[nodiscard]] CurvatureStructure structure() const override {
    const CurvatureStructure s = guard_("structure", [&] { return inner_->structure(); });
    if (s != CurvatureStructure::kMatrixFree && s != CurvatureStructure::kDiagonal &&
        s != CurvatureStructure::kKronecker) {
      guard_.broken("structure", fmt::format("returned {}, which is no CurvatureStructure",
                                             static_cast<int>(s)));
    }
    return s;
  }
  Status diagonal(VectorRef<double> out) const override {
    return guard_.finite(guard_("diagonal", [&] { return inner_->diagonal(out); }), "diagonal",
                         "diagonal", out);
  }
  Status kronecker(std::vector<KroneckerEigen>& out) const override {
    Status status = guard_("kronecker", [&] { return inner_->kronecker(out); });
    for (std::size_t b = 0; status.is_ok() && b < out.size(); ++b) {
      const KroneckerEigen& k = out[b];
      for (const auto* m : {&k.factor.a, &k.factor.s, &k.a_eigenvectors, &k.s_eigenvectors}) {
        status = guard_.finite(status, "kronecker", "factor", *m);
      }
      status = guard_.finite(status, "kronecker", "eigenvalue", k.a_eigenvalues);
      status = guard_.finite(status, "kronecker", "eigenvalue", k.s_eigenvalues);
    }
    return status;
  }

 private:
  PluginHandle<CurvatureEstimator> inner_;
  Guard guard_;
};

class GuardedSolver final : public Solver {
 public:
  GuardedSolver(PluginHandle<Solver> inner, std::string who)
      : inner_(std::move(inner)), guard_(std::move(who)) {}

  [[nodiscard]] bool uses_curvature() const override {
    return guard_("uses_curvature", [&] { return inner_->uses_curvature(); });
  }
  Status propose(IQuadraticModel& model, double lambda, Directions& out) override {
    const Status status = guard_("propose", [&] { return inner_->propose(model, lambda, out); });
    if (!status.is_ok()) return status;
    const Index k = out.basis.cols();
    const Index n = model.num_parameters();
    if (k < 1 || out.basis.rows() != n || out.own_coefficients.size() != k) {
      return Status::invalid_argument(fmt::format(
          "{}: propose() returned {} x {} directions with {} coefficients; expected {} rows, at "
          "least one column and one coefficient per column",
          guard_.who(), out.basis.rows(), k, out.own_coefficients.size(), n));
    }
    const Status finite = guard_.finite(status, "propose", "direction", out.basis);
    return guard_.finite(finite, "propose", "coefficient", out.own_coefficients);
  }
  void step_taken(ConstVectorRef<double> step, bool accepted) override {
    guard_("step_taken", [&] { inner_->step_taken(step, accepted); });
  }
  Status save_state(std::vector<double>& out) const override {
    return guard_("save_state", [&] { return inner_->save_state(out); });
  }
  Status load_state(const std::vector<double>& state) override {
    return guard_("load_state", [&] { return inner_->load_state(state); });
  }

 private:
  PluginHandle<Solver> inner_;
  Guard guard_;
};

class GuardedDamping final : public DampingStrategy {
 public:
  GuardedDamping(PluginHandle<DampingStrategy> inner, std::string who)
      : inner_(std::move(inner)), guard_(std::move(who)) {}

  /// Passed on as it is: the training loop rejects a step whose lambda is not finite and >= 0
  /// (naming this plugin), as it rejects a non-finite loss.
  [[nodiscard]] double lambda() const override {
    return guard_("lambda", [&] { return inner_->lambda(); });
  }
  [[nodiscard]] bool uses_reduction_ratio() const override {
    return guard_("uses_reduction_ratio", [&] { return inner_->uses_reduction_ratio(); });
  }
  StepVerdict step_measured(double rho) override {
    const StepVerdict verdict = guard_("step_measured", [&] { return inner_->step_measured(rho); });
    if (verdict != StepVerdict::kAccept && verdict != StepVerdict::kReject) {
      guard_.broken("step_measured",
                    fmt::format("returned {}, which is neither kAccept nor kReject",
                                static_cast<int>(verdict)));
    }
    return verdict;
  }
  void step_invalid() override {
    guard_("step_invalid", [&] { inner_->step_invalid(); });
  }
  Status save_state(std::vector<double>& out) const override {
    return guard_("save_state", [&] { return inner_->save_state(out); });
  }
  Status load_state(const std::vector<double>& state) override {
    return guard_("load_state", [&] { return inner_->load_state(state); });
  }

 private:
  PluginHandle<DampingStrategy> inner_;
  Guard guard_;
};

class GuardedDebiasing final : public DebiasingStrategy {
 public:
  GuardedDebiasing(PluginHandle<DebiasingStrategy> inner, std::string who)
      : inner_(std::move(inner)), guard_(std::move(who)) {}

  [[nodiscard]] BatchPlan plan() const override {
    BatchPlan plan = guard_("plan", [&] { return inner_->plan(); });
    if (const std::string problem = check_plan(plan); !problem.empty()) {
      guard_.broken("plan", "returned an invalid plan: " + problem);
    }
    return plan;
  }
  Status coefficients(ConstVectorRef<double> own_coefficients, IDirectionalModel& estimate,
                      double lambda, VectorRef<double> out) override {
    const Status status = guard_("coefficients", [&] {
      return inner_->coefficients(own_coefficients, estimate, lambda, out);
    });
    return guard_.finite(status, "coefficients", "coefficient", out);
  }

 private:
  static std::string check_plan(const BatchPlan& plan) {
    const auto count = static_cast<int>(plan.draws.size());
    if (count == 0) return "no draws; expected at least one";
    for (int d = 0; d < count; ++d) {
      const double r = plan.draws[static_cast<std::size_t>(d)].relative_size;
      if (!(r > 0.0) || !std::isfinite(r)) {
        return fmt::format("draw {} has relative size {}; expected a finite number > 0", d, r);
      }
    }
    for (int r = 0; r < kNumBatchRoles; ++r) {
      const int d = plan.draw_of_role[static_cast<std::size_t>(r)];
      if (d < 0 || d >= count) {
        return fmt::format("role '{}' maps to draw {}, but the plan has {} draw{}",
                           to_string(static_cast<BatchRole>(r)), d, count, count == 1 ? "" : "s");
      }
    }
    return {};
  }

  PluginHandle<DebiasingStrategy> inner_;
  Guard guard_;
};

template <class Interface, class Decorator>
PluginHandle<Interface> decorate(const Component& component, PluginHandle<Interface> raw) {
  // The decorator is host code: its handle needs no library; the plugin object it owns keeps
  // its own library loaded.
  return PluginHandle<Interface>(new Decorator(std::move(raw), describe_plugin(component)),
                                 LibraryBoundDeleter<Interface>{});
}

}  // namespace

namespace detail {

PluginHandle<CurvatureEstimator> guard_plugin(const Component& component,
                                              PluginHandle<CurvatureEstimator> raw) {
  return decorate<CurvatureEstimator, GuardedCurvature>(component, std::move(raw));
}
PluginHandle<Solver> guard_plugin(const Component& component, PluginHandle<Solver> raw) {
  return decorate<Solver, GuardedSolver>(component, std::move(raw));
}
PluginHandle<DampingStrategy> guard_plugin(const Component& component,
                                           PluginHandle<DampingStrategy> raw) {
  return decorate<DampingStrategy, GuardedDamping>(component, std::move(raw));
}
PluginHandle<DebiasingStrategy> guard_plugin(const Component& component,
                                             PluginHandle<DebiasingStrategy> raw) {
  return decorate<DebiasingStrategy, GuardedDebiasing>(component, std::move(raw));
}

}  // namespace detail

}  // namespace quadra
