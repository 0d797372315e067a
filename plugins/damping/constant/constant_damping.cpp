// `constant` damping: lambda never changes. Steps are accepted unless they go uphill and the
// user asked for uphill steps to be rejected.

#include <cmath>
#include <stdexcept>

#include <quadra/sdk.hpp>

namespace {

class ConstantDamping final : public quadra::DampingStrategy {
 public:
  explicit ConstantDamping(const quadra::OptionValues& options)
      : lambda_(options.get_real("lambda")), reject_uphill_(options.get_bool("reject_uphill")) {}

  double lambda() const override { return lambda_; }
  bool uses_reduction_ratio() const override { return reject_uphill_; }

  quadra::StepVerdict step_measured(double rho) override {
    // rho <= 0: the acceptance batch's loss did not decrease.
    return (reject_uphill_ && !(rho > 0.0)) ? quadra::StepVerdict::kReject
                                            : quadra::StepVerdict::kAccept;
  }

  void step_invalid() override {}  // constant by definition; the loop still rejects the step

 private:
  double lambda_;
  bool reject_uphill_;
};

void register_components(quadra::IRegistrar& registrar) {
  registrar.add<ConstantDamping>(
      {"constant",
       "fixed Tikhonov damping lambda; optionally rejects steps that increase the loss",
       {quadra::OptionSpec::real("lambda", 1e-3, "damping added to the curvature: C + lambda I")
            .in_range(0.0, 1e12),
        quadra::OptionSpec::boolean("reject_uphill", false,
                                    "reject steps whose reduction ratio rho is <= 0")}});
}

}  // namespace

QUADRA_PLUGIN("constant-damping", "1.0.0", register_components)
