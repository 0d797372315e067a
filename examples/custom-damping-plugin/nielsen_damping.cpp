// `nielsen` damping: the Levenberg-Marquardt update of H. B. Nielsen (1999), "Damping parameter
// in Marquardt's method", IMM-REP-1999-05. Unlike the classic 2/3 - 3/2 rule it changes lambda
// smoothly with the reduction ratio rho, and grows it ever faster after consecutive rejections:
//   accepted (rho > 0):  lambda *= max(1/3, 1 - (2 rho - 1)^3),  nu = 2
//   rejected:            lambda *= nu,                            nu *= 2
//
// This file is a complete out-of-tree plugin: it includes only the quadra SDK and is built with
// quadra_add_plugin() from the installed CMake package (see CMakeLists.txt beside it).

#include <algorithm>
#include <cmath>
#include <vector>

#include <quadra/sdk.hpp>

namespace {

class NielsenDamping final : public quadra::DampingStrategy {
 public:
  explicit NielsenDamping(const quadra::OptionValues& options)
      : lambda_(options.get_real("initial_lambda")),
        min_lambda_(options.get_real("min_lambda")),
        max_lambda_(options.get_real("max_lambda")) {
    lambda_ = std::clamp(lambda_, min_lambda_, max_lambda_);
  }

  double lambda() const override { return lambda_; }
  bool uses_reduction_ratio() const override { return true; }

  quadra::StepVerdict step_measured(double rho) override {
    if (rho > 0.0) {
      const double t = 2.0 * rho - 1.0;
      set_lambda(lambda_ * std::max(1.0 / 3.0, 1.0 - t * t * t));
      nu_ = 2.0;
      return quadra::StepVerdict::kAccept;
    }
    grow();
    return quadra::StepVerdict::kReject;
  }

  void step_invalid() override { grow(); }

  // Checkpoints carry lambda and nu, so a resumed run adapts exactly as an uninterrupted one.
  quadra::Status save_state(std::vector<double>& out) const override {
    out = {lambda_, nu_};
    return quadra::Status::ok();
  }
  quadra::Status load_state(const std::vector<double>& state) override {
    if (state.size() != 2 || !(state[0] >= 0.0) || !(state[1] >= 2.0)) {
      return quadra::Status::invalid_argument("nielsen: expected the state {lambda >= 0, nu >= 2}");
    }
    set_lambda(state[0]);
    nu_ = std::min(state[1], 1e6);
    return quadra::Status::ok();
  }

 private:
  void grow() {
    set_lambda(lambda_ * nu_);
    nu_ = std::min(2.0 * nu_, 1e6);  // bounded so lambda stays finite
  }
  void set_lambda(double value) { lambda_ = std::clamp(value, min_lambda_, max_lambda_); }

  double lambda_;
  double min_lambda_;
  double max_lambda_;
  double nu_ = 2.0;
};

void register_components(quadra::IRegistrar& registrar) {
  using quadra::OptionSpec;
  registrar.add<NielsenDamping>(
      {"nielsen",
       "Levenberg-Marquardt damping with Nielsen's smooth update (out-of-tree example)",
       {OptionSpec::real("initial_lambda", 1.0, "lambda of the first step").greater_than(0.0),
        OptionSpec::real("min_lambda", 1e-8, "lower bound on lambda").greater_than(0.0),
        OptionSpec::real("max_lambda", 1e8, "upper bound on lambda").greater_than(0.0)}});
}

}  // namespace

QUADRA_PLUGIN("nielsen-damping", "1.0.0", register_components)
