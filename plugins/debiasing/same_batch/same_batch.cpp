// `same-batch` debiasing: the biased baseline. Every role of a step is served by one batch, so
// the directions, the slopes and curvatures along them, and the acceptance test all see the
// same samples, and the solver's own coefficients are used unchanged.

#include <quadra/sdk.hpp>

namespace {

class SameBatch final : public quadra::DebiasingStrategy {
 public:
  explicit SameBatch(const quadra::OptionValues& options)
      : curvature_size_(options.get_real("curvature_size")) {}

  /// One draw for every role; with curvature_size below 1 (Martens' subsampled curvature) the
  /// directions and their measurements take a smaller draw of their own, and the gradient and
  /// the acceptance test keep the full batch.
  quadra::BatchPlan plan() const override {
    quadra::BatchPlan plan;
    plan.draws.push_back(quadra::BatchDraw{1.0, false});
    plan.draw_of_role.fill(0);
    if (curvature_size_ < 1.0) {
      plan.draws.push_back(quadra::BatchDraw{curvature_size_, false});
      plan.draw_of_role[static_cast<int>(quadra::BatchRole::kDirections)] = 1;
      plan.draw_of_role[static_cast<int>(quadra::BatchRole::kEstimate)] = 1;
    }
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

 private:
  double curvature_size_;
};

void register_components(quadra::IRegistrar& registrar) {
  registrar.add<SameBatch>(
      {"same-batch",
       "biased baseline: one batch chooses the directions and measures along them",
       {quadra::OptionSpec::real("curvature_size", 1.0,
                                 "directions batch as a fraction of the gradient batch (Martens' "
                                 "subsampled curvature); below 1 it is a draw of its own")
            .greater_than(0.0)
            .at_most(1.0)}});
}

}  // namespace

QUADRA_PLUGIN("same-batch-debiasing", "1.0.0", register_components)
