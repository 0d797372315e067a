// The built-in plugins' contracts, exercised through the host exactly as the loop will use them.

#include <catch2/catch.hpp>

#include <quadra/plugin_host.hpp>

namespace {

/// A directional model that must not be consulted (same-batch ignores the estimate batch).
class UnusedModel final : public quadra::IDirectionalModel {
 public:
  quadra::Index num_directions() const override { return 3; }
  quadra::Status slopes(quadra::VectorRef<double>) override { return fail(); }
  quadra::Status projected_curvature(quadra::MatrixRef<double>) override { return fail(); }
  quadra::Status gram(quadra::MatrixRef<double>) override { return fail(); }
  int calls = 0;

 private:
  quadra::Status fail() {
    ++calls;
    return quadra::Status::failed("same-batch must not measure on an estimate batch");
  }
};

}  // namespace

TEST_CASE("constant damping keeps lambda and judges steps by reject_uphill", "[plugin:constant]") {
  quadra::PluginHost host;
  REQUIRE(host.load_library(BUILTIN_CONSTANT).is_ok());
  using quadra::StepVerdict;

  SECTION("defaults: lambda 1e-3, every finite step accepted") {
    auto damping = host.create<quadra::DampingStrategy>("constant", {}).value();
    CHECK(damping->lambda() == 1e-3);
    for (double rho : {-5.0, 0.0, 0.1, 1.0, 3.0}) {
      CHECK(damping->step_measured(rho) == StepVerdict::kAccept);
      CHECK(damping->lambda() == 1e-3);
    }
    damping->step_invalid();
    CHECK(damping->lambda() == 1e-3);
  }
  SECTION("reject_uphill rejects rho <= 0 only") {
    auto damping = host.create<quadra::DampingStrategy>(
                           "constant", {{"lambda", "0.5"}, {"reject_uphill", "true"}})
                       .value();
    CHECK(damping->lambda() == 0.5);
    CHECK(damping->step_measured(-0.1) == StepVerdict::kReject);
    CHECK(damping->step_measured(0.0) == StepVerdict::kReject);
    CHECK(damping->step_measured(1e-9) == StepVerdict::kAccept);
    CHECK(damping->step_measured(2.0) == StepVerdict::kAccept);
    CHECK(damping->lambda() == 0.5);
  }
  SECTION("lambda = 0 is allowed (undamped Newton)") {
    CHECK(host.create<quadra::DampingStrategy>("constant", {{"lambda", "0"}}).value()->lambda() == 0.0);
  }
}

TEST_CASE("same-batch maps every role to one draw and keeps the solver's coefficients",
          "[plugin:same-batch]") {
  quadra::PluginHost host;
  REQUIRE(host.load_library(BUILTIN_SAME_BATCH).is_ok());
  auto debiasing = host.create<quadra::DebiasingStrategy>("same-batch", {}).value();

  const quadra::BatchPlan plan = debiasing->plan();
  REQUIRE(plan.draws.size() == 1);
  CHECK(plan.draws[0].relative_size == 1.0);
  CHECK_FALSE(plan.draws[0].whole_dataset);
  for (int r = 0; r < quadra::kNumBatchRoles; ++r) {
    CHECK(plan.draw_of(static_cast<quadra::BatchRole>(r)) == 0);
  }

  quadra::Vector<double> own(3), out(3);
  own << 0.5, -2.0, 1e-8;
  UnusedModel model;
  REQUIRE(debiasing->coefficients(own, model, 0.1, out).is_ok());
  CHECK(out == own);
  CHECK(model.calls == 0);

  quadra::Vector<double> wrong(2);
  const quadra::Status status = debiasing->coefficients(own, model, 0.1, wrong);
  CHECK(status.code() == quadra::StatusCode::kInvalidArgument);
  CHECK(status.message() == "same-batch: output has the wrong size");
}

TEST_CASE("same-batch takes only curvature_size", "[plugin:same-batch]") {
  quadra::PluginHost host;
  REQUIRE(host.load_library(BUILTIN_SAME_BATCH).is_ok());
  auto r = host.create<quadra::DebiasingStrategy>("same-batch", {{"batches", "2"}});
  REQUIRE_FALSE(r.is_ok());
  CHECK(r.status().message() ==
        "unknown option 'batches' for debiasing 'same-batch'; valid options: curvature_size");
  // Subsampled curvature: the directions and their measurements on a smaller draw.
  auto sub = host.create<quadra::DebiasingStrategy>("same-batch", {{"curvature_size", "0.5"}});
  REQUIRE(sub.is_ok());
  const quadra::BatchPlan plan = sub.value()->plan();
  REQUIRE(plan.draws.size() == 2);
  CHECK(plan.draws[1].relative_size == 0.5);
  CHECK(plan.draw_of(quadra::BatchRole::kDirections) == 1);
  CHECK(plan.draw_of(quadra::BatchRole::kEstimate) == 1);
  CHECK(plan.draw_of(quadra::BatchRole::kGradient) == 0);
  CHECK(plan.draw_of(quadra::BatchRole::kAcceptance) == 0);
}
