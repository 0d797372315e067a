// The adaptive damping plugins (levenberg-marquardt, trust-region) and the constant one's
// reduction-ratio contract, driven through the host with scripted reduction ratios whose lambda
// sequences are computed by hand.

#include <cmath>
#include <filesystem>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include <quadra/plugin_host.hpp>

using Catch::Contains;
using quadra::DampingStrategy;
using quadra::RawOptions;
using quadra::StepVerdict;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr auto kAccept = StepVerdict::kAccept;
constexpr auto kReject = StepVerdict::kReject;

/// The build names only the constant plugin's file; its siblings share its directory, prefix
/// and suffix. Loading them by file keeps plugins unrelated to damping out of this test.
std::filesystem::path builtin_library(const std::string& target) {
  const std::filesystem::path constant(BUILTIN_CONSTANT);
  const std::string stem = "quadra_damping_constant";
  std::string file = constant.filename().string();
  file.replace(file.find(stem), stem.size(), target);
  return constant.parent_path() / file;
}

const quadra::PluginHost& host() {
  static quadra::PluginHost instance;
  if (instance.components().empty()) {
    for (const char* target : {"quadra_damping_constant", "quadra_damping_levenberg_marquardt",
                               "quadra_damping_trust_region"}) {
      const quadra::Status status = instance.load_library(builtin_library(target));
      INFO(status.message());
      REQUIRE(status.is_ok());
    }
  }
  return instance;
}

quadra::PluginHandle<DampingStrategy> make(const std::string& name,
                                           const RawOptions& options = {}) {
  auto created = host().create<DampingStrategy>(name, options);
  INFO(name << ": " << (created.is_ok() ? std::string() : created.status().message()));
  REQUIRE(created.is_ok());
  return std::move(created).value();
}

/// The message of a creation that must fail.
std::string creation_error(const std::string& name, const RawOptions& options) {
  auto created = host().create<DampingStrategy>(name, options);
  REQUIRE_FALSE(created.is_ok());
  return created.status().message();
}

/// One event of a script: a measured rho with the expected verdict, or step_invalid(); then the
/// expected lambda.
struct Event {
  bool invalid;
  double rho;
  StepVerdict verdict;
  double lambda;
};
Event measured(double rho, StepVerdict verdict, double lambda) {
  return {false, rho, verdict, lambda};
}
Event invalid(double lambda) { return {true, kNaN, kReject, lambda}; }

void run_script(DampingStrategy& damping, const std::vector<Event>& script) {
  for (std::size_t i = 0; i < script.size(); ++i) {
    const Event& event = script[i];
    INFO("event " << i << (event.invalid ? " step_invalid()" : " rho = ") << event.rho);
    if (event.invalid) {
      damping.step_invalid();
    } else {
      CHECK(damping.step_measured(event.rho) == event.verdict);
    }
    CHECK(damping.lambda() == Approx(event.lambda).epsilon(1e-13));
  }
}

std::vector<double> saved(const DampingStrategy& damping) {
  std::vector<double> state{-1.0};
  REQUIRE(damping.save_state(state).is_ok());
  return state;
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// levenberg-marquardt

TEST_CASE("levenberg-marquardt follows Martens' 3/2 - 2/3 rule", "[plugin:damping]") {
  SECTION("defaults") {
    auto damping = make("levenberg-marquardt");
    CHECK(damping->uses_reduction_ratio());
    CHECK(damping->lambda() == 1.0);
    run_script(*damping, {measured(0.9, kAccept, 2.0 / 3.0),   // rho > 3/4: x 2/3
                          measured(0.5, kAccept, 2.0 / 3.0),   // in [1/4, 3/4]: unchanged
                          measured(0.1, kAccept, 1.0),         // rho < 1/4: x 3/2, still kept
                          measured(-1.0, kReject, 1.5),        // uphill: rejected, x 3/2
                          measured(0.8, kAccept, 1.0),
                          measured(0.25, kAccept, 1.0),        // thresholds are strict
                          measured(0.75, kAccept, 1.0),
                          measured(0.0, kReject, 1.5),         // no decrease is not kept
                          invalid(3.375),                      // x (3/2)^2
                          measured(1e-9, kAccept, 5.0625),
                          measured(40.0, kAccept, 3.375)});    // rho > 1 is a good step
  }
  SECTION("custom factors and a negative min_rho") {
    auto damping = make("levenberg-marquardt",
                        {{"increase", "2"}, {"decrease", "0.5"}, {"min_rho", "-0.5"}});
    run_script(*damping, {measured(-0.2, kAccept, 2.0), measured(-0.5, kReject, 4.0),
                          measured(1.0, kAccept, 2.0), invalid(8.0)});
  }
  SECTION("a rejected step always raises lambda, even when min_rho >= 1/4") {
    // Otherwise the loop would retry the very same step.
    auto damping = make("levenberg-marquardt", {{"min_rho", "0.5"}});
    run_script(*damping, {measured(0.4, kReject, 1.5), measured(0.6, kAccept, 1.5),
                          measured(0.9, kAccept, 1.0), measured(0.5, kReject, 1.5)});
  }
}

TEST_CASE("levenberg-marquardt keeps lambda within its bounds", "[plugin:damping]") {
  SECTION("narrow bounds") {
    auto damping = make("levenberg-marquardt", {{"min_lambda", "0.5"}, {"max_lambda", "2"}});
    run_script(*damping, {measured(1.0, kAccept, 2.0 / 3.0), measured(1.0, kAccept, 0.5),
                          measured(1.0, kAccept, 0.5), measured(-1.0, kReject, 0.75),
                          invalid(0.75 * 2.25), invalid(2.0), measured(-3.0, kReject, 2.0),
                          invalid(2.0)});
  }
  SECTION("default bounds 1e-8 and 1e8") {
    auto damping = make("levenberg-marquardt");
    for (int i = 0; i < 200; ++i) damping->step_measured(1.0);
    CHECK(damping->lambda() == 1e-8);
    for (int i = 0; i < 200; ++i) damping->step_invalid();
    CHECK(damping->lambda() == 1e8);
  }
}

TEST_CASE("levenberg-marquardt treats a non-finite rho as an invalid step", "[plugin:damping]") {
  for (double rho : {kNaN, kInf, -kInf}) {
    INFO("rho = " << rho);
    auto damping = make("levenberg-marquardt");
    CHECK(damping->step_measured(rho) == kReject);
    CHECK(damping->lambda() == Approx(2.25).epsilon(1e-15));
  }
}

TEST_CASE("levenberg-marquardt refuses inconsistent options, naming them", "[plugin:damping]") {
  struct Case {
    RawOptions options;
    std::vector<std::string> named;
  };
  const std::vector<Case> cases = {
      {{{"min_lambda", "10"}, {"max_lambda", "1"}}, {"min_lambda", "max_lambda"}},
      {{{"initial_lambda", "0"}}, {"initial_lambda"}},
      {{{"initial_lambda", "-1"}}, {"initial_lambda"}},
      {{{"initial_lambda", "nan"}}, {"initial_lambda"}},
      {{{"initial_lambda", "1e9"}}, {"initial_lambda", "max_lambda"}},
      {{{"initial_lambda", "1e-9"}}, {"initial_lambda", "min_lambda"}},
      {{{"min_lambda", "0"}}, {"min_lambda"}},
      {{{"increase", "1"}}, {"increase"}},
      {{{"decrease", "0"}}, {"decrease"}},
      {{{"decrease", "1.5"}}, {"decrease"}},
      {{{"min_rho", "2"}}, {"min_rho"}},
  };
  for (const Case& c : cases) {
    const std::string message = creation_error("levenberg-marquardt", c.options);
    for (const std::string& name : c.named) CHECK_THAT(message, Contains(name));
  }
  // Edge values that are allowed.
  CHECK(make("levenberg-marquardt", {{"min_lambda", "1"}, {"max_lambda", "1"}})->lambda() == 1.0);
  CHECK(make("levenberg-marquardt", {{"decrease", "1"}})->lambda() == 1.0);
}

// ------------------------------------------------------------------------------------------------
// trust-region

TEST_CASE("trust-region follows Ceres' Levenberg-Marquardt radius update", "[plugin:damping]") {
  SECTION("defaults") {
    auto damping = make("trust-region");
    CHECK(damping->uses_reduction_ratio());
    CHECK(damping->lambda() == 1.0);  // initial radius 1
    // lambda = 1/radius; an accepted step divides lambda by 1/max(1/3, 1 - (2 rho - 1)^3).
    run_script(*damping,
               {measured(0.9, kAccept, 0.488),         // 1 - 0.8^3
                measured(0.5, kAccept, 0.488),         // factor 1
                measured(0.1, kAccept, 0.737856),      // x (1 + 0.8^3)
                measured(-1.0, kReject, 1.475712),     // radius / 2, factor -> 4
                measured(0.0005, kReject, 5.902848),   // below min_relative_decrease: / 4
                invalid(47.222784),                    // an invalid step is a rejection: / 8
                measured(0.8, kAccept, 37.022662656),  // x (1 - 0.6^3); factor back to 2
                measured(-1.0, kReject, 74.045325312),
                measured(5.0, kAccept, 24.681775104)});  // capped: radius x 3
  }
  SECTION("min_relative_decrease is a strict threshold") {
    auto damping = make("trust-region", {{"min_relative_decrease", "0.25"}});
    run_script(*damping, {measured(0.25, kReject, 2.0),
                          measured(0.26, kAccept, 2.221184)});  // 2 (1 + 0.48^3)
  }
  SECTION("consecutive rejections grow lambda geometrically") {
    auto damping = make("trust-region");
    run_script(*damping, {invalid(2.0), invalid(8.0), measured(-1.0, kReject, 64.0),
                          measured(0.5, kAccept, 64.0), invalid(128.0)});
  }
}

TEST_CASE("trust-region keeps the radius within its bounds", "[plugin:damping]") {
  SECTION("narrow bounds") {
    auto damping = make("trust-region", {{"min_radius", "0.01"}, {"max_radius", "4"}});
    run_script(*damping, {measured(1.0, kAccept, 1.0 / 3.0), measured(1.0, kAccept, 0.25),
                          measured(1.0, kAccept, 0.25), invalid(0.5), invalid(2.0),
                          invalid(16.0), invalid(100.0), invalid(100.0),
                          measured(1.0, kAccept, 100.0 / 3.0)});
  }
  SECTION("default bounds: lambda in [1e-16, 1e32], decrease factor stays finite") {
    auto damping = make("trust-region");
    for (int i = 0; i < 200; ++i) damping->step_measured(1.0);
    CHECK(damping->lambda() == Approx(1e-16).epsilon(1e-15));
    for (int i = 0; i < 5000; ++i) damping->step_invalid();
    CHECK(damping->lambda() == Approx(1e32).epsilon(1e-15));
    for (double value : saved(*damping)) CHECK(std::isfinite(value));
    // The capped decrease factor is still reset by an accepted step: after leaving min_radius,
    // the next rejection only halves the radius.
    damping->step_measured(0.5);
    damping->step_measured(-1.0);
    CHECK(damping->lambda() == Approx(1e32).epsilon(1e-15));  // halving min_radius is clamped
    damping->step_measured(1.0);
    const double before = damping->lambda();
    damping->step_measured(-1.0);
    CHECK(damping->lambda() == Approx(2.0 * before).epsilon(1e-15));
  }
}

TEST_CASE("trust-region treats a non-finite rho as an invalid step", "[plugin:damping]") {
  for (double rho : {kNaN, kInf, -kInf}) {
    INFO("rho = " << rho);
    auto damping = make("trust-region");
    CHECK(damping->step_measured(rho) == kReject);
    CHECK(damping->lambda() == 2.0);
    damping->step_invalid();
    CHECK(damping->lambda() == 8.0);  // the decrease factor doubled
  }
}

TEST_CASE("trust-region refuses inconsistent options, naming them", "[plugin:damping]") {
  struct Case {
    RawOptions options;
    std::vector<std::string> named;
  };
  const std::vector<Case> cases = {
      {{{"min_radius", "10"}, {"max_radius", "1"}, {"initial_radius", "5"}},
       {"min_radius", "max_radius"}},
      {{{"initial_radius", "0"}}, {"initial_radius"}},
      {{{"initial_radius", "-2"}}, {"initial_radius"}},
      {{{"initial_radius", "1e20"}}, {"initial_radius", "max_radius"}},
      {{{"initial_radius", "1e-40"}}, {"initial_radius", "min_radius"}},
      {{{"min_radius", "0"}}, {"min_radius"}},  // lambda = 1/min_radius must stay finite
      {{{"min_relative_decrease", "-0.1"}}, {"min_relative_decrease"}},
      {{{"min_relative_decrease", "1.5"}}, {"min_relative_decrease"}},
  };
  for (const Case& c : cases) {
    const std::string message = creation_error("trust-region", c.options);
    for (const std::string& name : c.named) CHECK_THAT(message, Contains(name));
  }
}

// ------------------------------------------------------------------------------------------------
// Both adaptive strategies

TEST_CASE("adaptive damping: step_invalid makes lambda larger", "[plugin:damping]") {
  for (const char* name : {"levenberg-marquardt", "trust-region"}) {
    INFO(name);
    auto damping = make(name);
    double previous = damping->lambda();
    for (int i = 0; i < 10; ++i) {
      damping->step_invalid();
      CHECK(damping->lambda() > previous);
      previous = damping->lambda();
    }
  }
}

TEST_CASE("adaptive damping: lambda stays finite, positive and bounded under any rho",
          "[plugin:damping]") {
  struct Bounds {
    const char* name;
    double lo;
    double hi;
  };
  for (const Bounds& b : {Bounds{"levenberg-marquardt", 1e-8, 1e8},
                          Bounds{"trust-region", 1e-16 * (1 - 1e-15), 1e32 * (1 + 1e-15)}}) {
    INFO(b.name);
    auto damping = make(b.name);
    std::mt19937 rng(20240611);
    std::uniform_real_distribution<double> uniform(-2.0, 2.0);
    std::uniform_int_distribution<int> kind(0, 9);
    const double extremes[] = {kNaN, kInf, -kInf, 1e300, -1e300, 0.0, 1.0, 1e-300};
    for (int i = 0; i < 20000; ++i) {
      const int k = kind(rng);
      if (k == 0) {
        damping->step_invalid();
      } else if (k == 1) {
        damping->step_measured(extremes[static_cast<std::size_t>(i) % std::size(extremes)]);
      } else {
        damping->step_measured(uniform(rng));
      }
      const double lambda = damping->lambda();
      if (!(std::isfinite(lambda) && lambda >= b.lo && lambda <= b.hi)) {
        FAIL("lambda " << lambda << " after event " << i);
      }
    }
    for (double value : saved(*damping)) CHECK(std::isfinite(value));
  }
}

TEST_CASE("adaptive damping: a restored state continues identically", "[plugin:damping]") {
  const std::vector<double> prefix = {0.9, -1.0, -1.0, 0.1};
  const std::vector<double> suffix = {-1.0, 0.3, kNaN, 0.95, -0.2, 2.0, 0.6, 1e-4};
  for (const char* name : {"levenberg-marquardt", "trust-region"}) {
    INFO(name);
    auto original = make(name);
    for (double rho : prefix) original->step_measured(rho);
    original->step_invalid();
    const std::vector<double> state = saved(*original);
    REQUIRE(state.size() == (std::string(name) == "trust-region" ? 3u : 2u));
    CHECK(state[0] == 1.0);  // layout version

    auto restored = make(name);
    auto unrestored = make(name);
    const quadra::Status status = restored->load_state(state);
    INFO(status.message());
    REQUIRE(status.is_ok());
    CHECK(restored->lambda() == original->lambda());
    CHECK(saved(*restored) == state);

    bool diverged = false;  // the state matters: a fresh instance does not follow
    for (double rho : suffix) {
      INFO("rho = " << rho);
      CHECK(restored->step_measured(rho) == original->step_measured(rho));
      unrestored->step_measured(rho);
      CHECK(restored->lambda() == original->lambda());
      diverged = diverged || unrestored->lambda() != original->lambda();
    }
    restored->step_invalid();
    original->step_invalid();
    CHECK(restored->lambda() == original->lambda());
    CHECK(diverged);
  }
}

TEST_CASE("trust-region restores its decrease factor, not only the radius", "[plugin:damping]") {
  auto original = make("trust-region");
  for (int i = 0; i < 3; ++i) original->step_invalid();  // decrease factor 16
  auto restored = make("trust-region");
  REQUIRE(restored->load_state(saved(*original)).is_ok());
  restored->step_invalid();
  CHECK(restored->lambda() == 64.0 * 16.0);
}

TEST_CASE("adaptive damping: a restored state is clamped to today's bounds", "[plugin:damping]") {
  auto lm = make("levenberg-marquardt", {{"max_lambda", "10"}});
  REQUIRE(lm->load_state({1.0, 1e6}).is_ok());
  CHECK(lm->lambda() == 10.0);
  auto tr = make("trust-region", {{"max_radius", "100"}});
  REQUIRE(tr->load_state({1.0, 1e6, 2.0}).is_ok());
  CHECK(tr->lambda() == 0.01);
}

TEST_CASE("adaptive damping: load_state refuses garbage and keeps its state",
          "[plugin:damping]") {
  struct Case {
    const char* name;
    std::vector<double> state;
    const char* mentions;
  };
  const std::vector<Case> cases = {
      {"levenberg-marquardt", {}, "checkpoint state is empty"},
      {"levenberg-marquardt", {1.0}, "ends after 1 entry; expected entry 1 for the lambda"},
      {"levenberg-marquardt", {1.0, 1.0, 2.0}, "has 3 entries; expected 2"},
      {"levenberg-marquardt", {2.0, 1.0}, "version 2"},
      {"levenberg-marquardt", {kNaN, 1.0}, "version"},
      {"levenberg-marquardt", {1.0, -1.0}, "lambda"},
      {"levenberg-marquardt", {1.0, 0.0}, "lambda"},
      {"levenberg-marquardt", {1.0, kNaN}, "lambda"},
      {"levenberg-marquardt", {1.0, kInf}, "lambda"},
      {"trust-region", {}, "checkpoint state is empty"},
      {"trust-region",
       {1.0, 1.0},
       "ends after 2 entries; expected entry 2 for the decrease_factor"},
      {"trust-region", {3.0, 1.0, 2.0}, "version 3"},
      {"trust-region", {1.0, -1.0, 2.0}, "radius"},
      {"trust-region", {1.0, 0.0, 2.0}, "radius"},
      {"trust-region", {1.0, kNaN, 2.0}, "radius"},
      {"trust-region", {1.0, kInf, 2.0}, "radius"},
      {"trust-region", {1.0, 1.0, 1.0}, "decrease_factor"},
      {"trust-region", {1.0, 1.0, kNaN}, "decrease_factor"},
      {"trust-region", {1.0, 1.0, kInf}, "decrease_factor"},
  };
  for (const Case& c : cases) {
    INFO(c.name << " state of size " << c.state.size());
    auto damping = make(c.name);
    damping->step_invalid();
    const std::vector<double> before = saved(*damping);
    const quadra::Status status = damping->load_state(c.state);
    REQUIRE_FALSE(status.is_ok());
    CHECK(status.code() == quadra::StatusCode::kInvalidArgument);
    CHECK_THAT(status.message(), Contains(c.name) && Contains(c.mentions));
    CHECK(saved(*damping) == before);
  }
}

TEST_CASE("adaptive damping: load_state messages name the entry, the value and the expectation",
          "[plugin:damping]") {
  CHECK(make("levenberg-marquardt")->load_state({2.0, 1.0}).message() ==
        "levenberg-marquardt: checkpoint state has layout version 2; expected 1 "
        "(layout: {version 1, lambda})");
  CHECK(make("levenberg-marquardt")->load_state({1.0, -1e-9}).message() ==
        "levenberg-marquardt: checkpoint state entry 1 (lambda) is -1e-09; expected a finite "
        "number > 0");
  CHECK(make("trust-region")->load_state({1.0, 1.0, 1.5}).message() ==
        "trust-region: checkpoint state entry 2 (decrease_factor) is 1.5; expected a finite "
        "number >= 2");
  CHECK(make("trust-region")->load_state({1.0, kInf, 2.0}).message() ==
        "trust-region: checkpoint state entry 1 (radius) is inf; expected a finite number > 0");
}

// ------------------------------------------------------------------------------------------------
// constant

TEST_CASE("constant damping needs rho only when it rejects uphill steps", "[plugin:damping]") {
  CHECK_FALSE(make("constant")->uses_reduction_ratio());
  CHECK_FALSE(make("constant", {{"reject_uphill", "false"}})->uses_reduction_ratio());
  auto rejecting = make("constant", {{"reject_uphill", "true"}});
  CHECK(rejecting->uses_reduction_ratio());
  CHECK(rejecting->step_measured(-1.0) == kReject);
  // Without reject_uphill the loop passes NaN, and every step is kept.
  CHECK(make("constant")->step_measured(kNaN) == kAccept);
}
