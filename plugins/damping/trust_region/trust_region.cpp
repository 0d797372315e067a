// `trust-region` damping: Ceres' LevenbergMarquardtStrategy (levenberg_marquardt_strategy.cc,
// trust_region_minimizer.cc) with the identity as the LM diagonal, so lambda = 1 / radius.
//   accepted (rho > min_relative_decrease):
//       radius = min(max_radius, radius / max(1/3, 1 - (2 rho - 1)^3)),  decrease_factor = 2
//   rejected or invalid:  radius /= decrease_factor,  decrease_factor *= 2
// Ceres stops the solve once the radius falls below min_trust_region_radius; a training loop
// keeps going, so here the radius is clamped to [min_radius, max_radius] instead, which bounds
// lambda to [1 / max_radius, 1 / min_radius].

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include <quadra/sdk.hpp>

namespace {

constexpr int kLayoutVersion = 1;
constexpr double kInitialDecreaseFactor = 2.0;

class TrustRegionDamping final : public quadra::DampingStrategy {
 public:
  explicit TrustRegionDamping(const quadra::OptionValues& options)
      : radius_(options.get_real("initial_radius")),
        min_radius_(options.get_real("min_radius")),
        max_radius_(options.get_real("max_radius")),
        min_relative_decrease_(options.get_real("min_relative_decrease")) {
    // Single options are range-checked by the host; only relations between them are left here.
    if (min_radius_ > max_radius_) {
      throw std::invalid_argument("option 'min_radius' (" + quadra::format_number(min_radius_) +
                                  ") must not exceed option 'max_radius' (" +
                                  quadra::format_number(max_radius_) + ")");
    }
    if (radius_ < min_radius_ || radius_ > max_radius_) {
      throw std::invalid_argument("option 'initial_radius' (" + quadra::format_number(radius_) +
                                  ") must lie in [min_radius, max_radius] = [" +
                                  quadra::format_number(min_radius_) + ", " +
                                  quadra::format_number(max_radius_) + "]");
    }
    // Once the factor reaches max_radius / min_radius, one rejection takes any radius to
    // min_radius, so doubling further changes nothing; the cap only keeps the state finite.
    max_decrease_factor_ = std::max(kInitialDecreaseFactor,
                                    std::min(4.0 * (max_radius_ / min_radius_),
                                             std::numeric_limits<double>::max()));
  }

  // radius >= min_radius >= 1e-300 (option range), so lambda is finite.
  double lambda() const override { return 1.0 / radius_; }
  bool uses_reduction_ratio() const override { return true; }

  quadra::StepVerdict step_measured(double rho) override {
    if (!std::isfinite(rho)) {  // the loop should have called step_invalid(); be safe anyway
      step_invalid();
      return quadra::StepVerdict::kReject;
    }
    if (!(rho > min_relative_decrease_)) {
      reject();
      return quadra::StepVerdict::kReject;
    }
    // Grows the radius by up to 3 when the model predicted well (rho near 1 or above), keeps
    // it at rho = 1/2 and shrinks it by up to 2 as rho approaches 0.
    const double t = 2.0 * rho - 1.0;
    set_radius(radius_ / std::max(1.0 / 3.0, 1.0 - t * t * t));
    decrease_factor_ = kInitialDecreaseFactor;
    return quadra::StepVerdict::kAccept;
  }

  // As in Ceres: an invalid step is a rejected one.
  void step_invalid() override { reject(); }

  quadra::Status save_state(std::vector<double>& out) const override {
    quadra::StateWriter(out, kLayoutVersion).real(radius_).real(decrease_factor_);
    return quadra::Status::ok();
  }

  // The bounds are today's options, not the checkpoint's: a resumed run may change them.
  quadra::Status load_state(const std::vector<double>& state) override {
    quadra::StateReader reader("trust-region", state, kLayoutVersion,
                               "{version 1, radius, decrease_factor}");
    double radius = 0.0, decrease_factor = 0.0;
    reader.real("radius", radius, quadra::StateRange::kPositive);
    const std::size_t factor_entry = reader.position();
    if (reader.real("decrease_factor", decrease_factor).is_ok() &&
        !(decrease_factor >= kInitialDecreaseFactor)) {
      reader.refuse_entry(factor_entry, "decrease_factor", decrease_factor,
                          "a finite number >= " + quadra::format_number(kInitialDecreaseFactor));
    }
    if (quadra::Status s = reader.finish(); !s.is_ok()) return s;
    set_radius(radius);
    decrease_factor_ = std::min(decrease_factor, max_decrease_factor_);
    return quadra::Status::ok();
  }

 private:
  void reject() {
    set_radius(radius_ / decrease_factor_);
    decrease_factor_ = std::min(2.0 * decrease_factor_, max_decrease_factor_);
  }
  void set_radius(double value) { radius_ = std::clamp(value, min_radius_, max_radius_); }

  double radius_;
  double min_radius_;
  double max_radius_;
  double min_relative_decrease_;
  double decrease_factor_ = kInitialDecreaseFactor;
  double max_decrease_factor_ = kInitialDecreaseFactor;
};

void register_components(quadra::IRegistrar& registrar) {
  using quadra::OptionSpec;
  registrar.add<TrustRegionDamping>(
      {"trust-region",
       "Ceres' Levenberg-Marquardt trust region, lambda = 1 / radius; keeps steps with "
       "rho > min_relative_decrease (rho measured on the acceptance batch)",
       {OptionSpec::real("initial_radius", 1.0,
                         "trust region radius of the first step (lambda = 1 / radius); Ceres "
                         "starts at 1e4 for least squares")
            .in_range(1e-300, 1e300),
        OptionSpec::real("max_radius", 1e16, "upper bound on the radius: lambda >= 1/max_radius")
            .in_range(1e-300, 1e300),
        OptionSpec::real("min_radius", 1e-32,
                         "lower bound on the radius: lambda <= 1/min_radius (Ceres stops here; "
                         "training goes on at this radius)")
            .in_range(1e-300, 1e300),
        OptionSpec::real("min_relative_decrease", 1e-3,
                         "keep a step iff rho > min_relative_decrease")
            .in_range(0.0, 1.0)}});
}

}  // namespace

QUADRA_PLUGIN("trust-region-damping", "1.0.0", register_components)
