// `same-batch` debiasing: the biased baseline. Every role of a step is served by one batch, so
// the directions, the slopes and curvatures along them, and the acceptance test all see the
// same samples, and the solver's own coefficients are used unchanged.

#include <quadra/sdk.hpp>

namespace {

class SameBatch final : public quadra::DebiasingStrategy {
 public:
  explicit SameBatch(const quadra::OptionValues& /*options*/) {}

  quadra::BatchPlan plan() const override {
    quadra::BatchPlan plan;
    plan.draws.push_back(quadra::BatchDraw{1.0, false});
    plan.draw_of_role.fill(0);
    return plan;
  }

  quadra::Status coefficients(quadra::ConstVectorRef<double> own_coefficients,
                              quadra::IDirectionalModel& /*estimate*/, double /*lambda*/,
                              quadra::VectorRef<double> out) override {
    if (out.size() != own_coefficients.size()) {
      return quadra::Status::invalid_argument("same-batch: output has the wrong size");
    }
    out = own_coefficients;
    return quadra::Status::ok();
  }
};

void register_components(quadra::IRegistrar& registrar) {
  registrar.add<SameBatch>(
      {"same-batch",
       "biased baseline: one batch chooses the directions and measures along them",
       {}});
}

}  // namespace

QUADRA_PLUGIN("same-batch-debiasing", "1.0.0", register_components)
