// `levenberg-marquardt` damping: the reduction-ratio rule Martens (2010, "Deep learning via
// Hessian-free optimization", section 4.1) uses for Hessian-free training:
//   rho < 1/4: lambda *= increase (3/2)      rho > 3/4: lambda *= decrease (2/3)
// and a step is kept iff rho > min_rho. The loop measures rho on the acceptance batch: on the
// batch that chose the direction rho is optimistic, and lambda would shrink too far.

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include <quadra/sdk.hpp>

namespace {

constexpr int kLayoutVersion = 1;
// Martens' thresholds; fixed because the factors, not the thresholds, set the adaptation speed.
constexpr double kLowRho = 0.25;
constexpr double kHighRho = 0.75;

class LevenbergMarquardtDamping final : public quadra::DampingStrategy {
 public:
  explicit LevenbergMarquardtDamping(const quadra::OptionValues& options)
      : lambda_(options.get_real("initial_lambda")),
        min_lambda_(options.get_real("min_lambda")),
        max_lambda_(options.get_real("max_lambda")),
        increase_(options.get_real("increase")),
        decrease_(options.get_real("decrease")),
        min_rho_(options.get_real("min_rho")) {
    // Single options are range-checked by the host; only relations between them are left here.
    if (min_lambda_ > max_lambda_) {
      throw std::invalid_argument("option 'min_lambda' (" + quadra::format_number(min_lambda_) +
                                  ") must not exceed option 'max_lambda' (" +
                                  quadra::format_number(max_lambda_) + ")");
    }
    if (lambda_ < min_lambda_ || lambda_ > max_lambda_) {
      throw std::invalid_argument("option 'initial_lambda' (" + quadra::format_number(lambda_) +
                                  ") must lie in [min_lambda, max_lambda] = [" +
                                  quadra::format_number(min_lambda_) + ", " +
                                  quadra::format_number(max_lambda_) + "]");
    }
  }

  double lambda() const override { return lambda_; }
  bool uses_reduction_ratio() const override { return true; }

  quadra::StepVerdict step_measured(double rho) override {
    if (!std::isfinite(rho)) {  // the loop should have called step_invalid(); be safe anyway
      step_invalid();
      return quadra::StepVerdict::kReject;
    }
    const bool accept = rho > min_rho_;
    // A rejected step is retried from the same point, so lambda must grow even when
    // min_rho >= 1/4, or the loop would propose the same step again.
    if (rho < kLowRho || !accept) {
      set_lambda(lambda_ * increase_);
    } else if (rho > kHighRho) {
      set_lambda(lambda_ * decrease_);
    }
    return accept ? quadra::StepVerdict::kAccept : quadra::StepVerdict::kReject;
  }

  // A non-finite step says far more about the model than a poor rho: back off twice as hard.
  void step_invalid() override { set_lambda(lambda_ * increase_ * increase_); }

  quadra::Status save_state(std::vector<double>& out) const override {
    quadra::StateWriter(out, kLayoutVersion).real(lambda_);
    return quadra::Status::ok();
  }

  // The bounds are today's options, not the checkpoint's: a resumed run may change them.
  quadra::Status load_state(const std::vector<double>& state) override {
    quadra::StateReader reader("levenberg-marquardt", state, kLayoutVersion, "{version 1, lambda}");
    double lambda = 0.0;
    reader.real("lambda", lambda, quadra::StateRange::kPositive);
    if (quadra::Status s = reader.finish(); !s.is_ok()) return s;
    set_lambda(lambda);
    return quadra::Status::ok();
  }

 private:
  void set_lambda(double value) { lambda_ = std::clamp(value, min_lambda_, max_lambda_); }

  double lambda_;
  double min_lambda_;
  double max_lambda_;
  double increase_;
  double decrease_;
  double min_rho_;
};

void register_components(quadra::IRegistrar& registrar) {
  using quadra::OptionSpec;
  registrar.add<LevenbergMarquardtDamping>(
      {"levenberg-marquardt",
       "Martens' adaptive lambda: x3/2 if rho < 1/4, x2/3 if rho > 3/4; keeps steps with "
       "rho > min_rho (rho measured on the acceptance batch)",
       {OptionSpec::real("initial_lambda", 1.0, "lambda of the first step").greater_than(0.0),
        OptionSpec::real("min_lambda", 1e-8, "lower bound on lambda").in_range(1e-300, 1e300),
        OptionSpec::real("max_lambda", 1e8, "upper bound on lambda").in_range(1e-300, 1e300),
        OptionSpec::real("increase", 1.5,
                         "factor applied to lambda when rho < 1/4 or the step is rejected")
            .greater_than(1.0)
            .at_most(1e6),
        OptionSpec::real("decrease", 2.0 / 3.0, "factor applied to lambda when rho > 3/4")
            .greater_than(0.0)
            .at_most(1.0),
        OptionSpec::real("min_rho", 0.0,
                         "keep a step iff rho > min_rho; 0 rejects steps that raise the "
                         "acceptance loss, a very negative value keeps every finite step")
            .at_most(1.0)}});
}

}  // namespace

QUADRA_PLUGIN("levenberg-marquardt-damping", "1.0.0", register_components)
