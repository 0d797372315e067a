// The training loop through its library API, on a small seeded synthetic problem: a resumed
// run equals an uninterrupted one, thread counts do not change results, non-finite steps are
// rejected and recovered from, repeated failures stop the run, hooks fire, configs are checked.

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <functional>
#include <quadra/error.hpp>
#include <quadra/io/directory_lock.hpp>
#include <quadra/io/npy.hpp>
#include <quadra/plugin_host.hpp>
#include <quadra/train/trainer.hpp>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using quadra::Config;
using quadra::train::RunSummary;

namespace {

/// A fresh run directory. ctest runs test cases as parallel processes and helpers such as
/// failure_of() are shared between cases, so the directory is scoped by the current test case.
fs::path scratch(const std::string& name) {
  const std::string test_case = Catch::getResultCapture().getCurrentTestName();
  const fs::path dir = fs::path(QUADRA_BINARY_DIR) / "test-output" / "train" /
                       fmt::format("{:016x}", std::hash<std::string>{}(test_case)) / name;
  fs::remove_all(dir);
  return dir;
}

quadra::PluginHost& host() {
  static quadra::PluginHost h;
  static const bool loaded = [] {
    REQUIRE(h.load_path(BUILTIN_PLUGIN_DIR).is_ok());
    REQUIRE(h.load_library(FAULTY_SOLVER).is_ok());
    REQUIRE(h.load_library(MISBEHAVING).is_ok());
    return true;
  }();
  (void)loaded;
  return h;
}

/// moons, a 2-16-2 tanh network, and the given optimizer and [train] keys.
Config make_config(const fs::path& out, const std::vector<std::string>& overrides) {
  Config c;
  c.apply_override("model.spec=linear(16) tanh linear(2)");
  c.apply_override("data.source=moons:n=600,test=200,noise=0.2,seed=3");
  c.apply_override("data.normalize=standardize");
  c.apply_override("train.batch_size=50");
  c.apply_override("train.progress=never");
  c.apply_override("train.out=" + out.string());
  for (const auto& o : overrides) c.apply_override(o);
  return c;
}

RunSummary train(const Config& config, bool resume = false,
                 std::vector<quadra::train::TrainObserver*> observers = {},
                 bool overwrite = false) {
  const auto run = quadra::train::resolve_run(config, host());
  const auto data = quadra::train::load_run_data(run.settings);
  quadra::train::RunRequest request;
  request.settings = run.settings;
  request.optimizer = &run.optimizer;
  request.host = &host();
  request.data = &data;
  request.resolved_config = run.resolved_config;
  request.resume = resume;
  request.overwrite = overwrite;
  request.observers = std::move(observers);
  return quadra::train::run_training(request);
}

std::string read_text(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::vector<std::string>> read_csv(const fs::path& file) {
  std::vector<std::vector<std::string>> rows;
  std::istringstream in(read_text(file));
  std::string line;
  while (std::getline(in, line)) {
    // RFC 4180 cells: a quoted cell may hold commas, and "" is a quote.
    std::vector<std::string> cells(1);
    bool quoted = false;
    for (std::size_t i = 0; i < line.size(); ++i) {
      const char c = line[i];
      if (quoted && c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        cells.back() += '"';
        ++i;
      } else if (c == '"') {
        quoted = !quoted;
      } else if (c == ',' && !quoted) {
        cells.emplace_back();
      } else {
        cells.back() += c;
      }
    }
    rows.push_back(cells);
  }
  return rows;
}

/// The CSV without its wall-time columns (the only thing a resumed run may change).
std::vector<std::vector<std::string>> without_seconds(std::vector<std::vector<std::string>> rows) {
  for (const char* name :
       {"seconds", "train_seconds", "propose_seconds", "debias_seconds", "measure_seconds"}) {
    const auto& header = rows.front();
    const auto it = std::find(header.begin(), header.end(), name);
    if (it == header.end()) continue;
    const auto column = static_cast<std::size_t>(it - header.begin());
    for (auto& row : rows) {
      if (row.size() > column) row.erase(row.begin() + static_cast<std::ptrdiff_t>(column));
    }
  }
  REQUIRE(std::find(rows.front().begin(), rows.front().end(), "step") != rows.front().end());
  return rows;
}

std::vector<unsigned char> parameters_of(const fs::path& model) {
  const auto arrays = quadra::io::read_npz(model);
  std::vector<unsigned char> all;
  for (const auto& [name, array] : arrays) {
    if (array.dtype == quadra::io::DType::kFloat32 || array.dtype == quadra::io::DType::kFloat64) {
      all.insert(all.end(), array.bytes.begin(), array.bytes.end());
    }
  }
  return all;
}

const std::vector<std::string> kCgDebiased = {
    "optimizer.solver=cg", "optimizer.curvature=ggn", "optimizer.damping=levenberg-marquardt",
    "optimizer.debiasing=cg-line-search", "solver.max_iterations=5"};
const std::vector<std::string> kSgd = {"optimizer.solver=sgd", "solver.learning_rate=0.1",
                                       "solver.momentum=0.9"};

std::vector<std::string> with(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

}  // namespace

TEST_CASE("a resumed run equals an uninterrupted one, bitwise", "[train][resume]") {
  for (const auto& optimizer : {kSgd, kCgDebiased}) {
    const fs::path whole = scratch("resume-whole");
    const fs::path split = scratch("resume-split");
    const auto common = with(optimizer, {"train.eval_every=4"});
    const RunSummary a = train(make_config(whole, with(common, {"train.max_steps=14"})));
    REQUIRE(a.steps == 14);
    train(make_config(split, with(common, {"train.max_steps=6"})));
    const RunSummary b =
        train(make_config(split, with(common, {"train.max_steps=14"})), /*resume=*/true);
    CHECK(b.steps == 14);
    CHECK(parameters_of(whole / "model.npz") == parameters_of(split / "model.npz"));
    CHECK(without_seconds(read_csv(whole / "steps.csv")) ==
          without_seconds(read_csv(split / "steps.csv")));
    CHECK(without_seconds(read_csv(whole / "eval.csv")) ==
          without_seconds(read_csv(split / "eval.csv")));
    CHECK(a.rejected_steps == b.rejected_steps);
    CHECK(a.curvature_products == b.curvature_products);
  }
}

TEST_CASE("batch statistics: running statistics move once per step and resume bitwise",
          "[train][resume][batchnorm-train]") {
  const auto bn = with(kSgd, {"model.spec=linear(16) batchnorm tanh linear(2)",
                              "model.batch_norm=batch", "train.eval_every=4"});
  const fs::path whole = scratch("bn-whole");
  const fs::path split = scratch("bn-split");
  const RunSummary a = train(make_config(whole, with(bn, {"train.max_steps=9"})));
  REQUIRE(a.steps == 9);
  train(make_config(split, with(bn, {"train.max_steps=5"})));
  train(make_config(split, with(bn, {"train.max_steps=9"})), /*resume=*/true);
  const auto model = quadra::io::read_npz(whole / "model.npz");
  CHECK(model.at("1.num_batches_tracked").to_vector<std::int64_t>() == std::vector<std::int64_t>{9});
  const auto mean = model.at("1.running_mean").to_vector<double>();
  CHECK(std::any_of(mean.begin(), mean.end(), [](double m) { return m != 0; }));
  const auto resumed = quadra::io::read_npz(split / "model.npz");
  CHECK(resumed.at("1.num_batches_tracked").to_vector<std::int64_t>() ==
        std::vector<std::int64_t>{9});
  CHECK(parameters_of(whole / "model.npz") == parameters_of(split / "model.npz"));
  CHECK(without_seconds(read_csv(whole / "eval.csv")) ==
        without_seconds(read_csv(split / "eval.csv")));
  CHECK(without_seconds(read_csv(whole / "steps.csv")) ==
        without_seconds(read_csv(split / "steps.csv")));
}

TEST_CASE("batch statistics: K-FAC trains from the batch loss's backward pass",
          "[train][batchnorm-train]") {
  const std::vector<std::string> kfac = {"optimizer.solver=kfac", "optimizer.curvature=ggn",
                     "optimizer.damping=levenberg-marquardt", "solver.inverse_interval=3",
                     "model.spec=linear(16) batchnorm tanh linear(2)", "model.batch_norm=batch",
                     "train.max_steps=8", "train.eval_every=4"};
  for (const char* variant : {"mc", "empirical"}) {
    INFO(variant);
    const RunSummary s = train(make_config(scratch(std::string("bn-kfac-") + variant),
                                           with(kfac, {std::string("solver.variant=") + variant})));
    CHECK_FALSE(s.failed);
    CHECK(s.steps == 8);
    CHECK(std::isfinite(s.final_eval.val_loss));
  }
  // Type-2 factors are not defined there: the first step's refusal ends the run with it.
  const RunSummary refused =
      train(make_config(scratch("bn-kfac-type2"), with(kfac, {"solver.variant=type-2"})));
  CHECK(refused.failed);
  CHECK(refused.steps == 1);
  CHECK_THAT(refused.stop_reason,
             Catch::Contains("type-2 K-FAC factors") && Catch::Contains("--batch-norm running"));
}

TEST_CASE("resume refuses a checkpoint of another config", "[train][resume]") {
  const fs::path dir = scratch("resume-other");
  train(make_config(dir, with(kSgd, {"train.max_steps=3"})));
  try {
    train(make_config(dir, with(kSgd, {"train.max_steps=6", "solver.momentum=0.5"})), true);
    FAIL("resume with another config was accepted");
  } catch (const quadra::Error& e) {
    CHECK_THAT(e.what(), Catch::Contains("written with a different config"));
  }
  const fs::path empty = scratch("resume-none");
  CHECK_THROWS_WITH(train(make_config(empty, with(kSgd, {"train.max_steps=3"})), true),
                    Catch::Contains("no checkpoint"));
}

TEST_CASE("results do not depend on the thread count", "[train][threads]") {
  const fs::path one = scratch("threads-1");
  const fs::path two = scratch("threads-2");
  train(make_config(one, with(kCgDebiased, {"train.max_steps=8", "train.threads=1"})));
  train(make_config(two, with(kCgDebiased, {"train.max_steps=8", "train.threads=2"})));
  CHECK(parameters_of(one / "model.npz") == parameters_of(two / "model.npz"));
  CHECK(without_seconds(read_csv(one / "steps.csv")) ==
        without_seconds(read_csv(two / "steps.csv")));
}

TEST_CASE("a non-finite step is rejected, damping raised, and training recovers",
          "[train][failure]") {
  const fs::path dir = scratch("fault-rho");
  const RunSummary s = train(make_config(
      dir, {"optimizer.solver=test-faulty", "optimizer.curvature=ggn",
            "optimizer.damping=levenberg-marquardt", "solver.fault_step=3", "train.max_steps=8"}));
  CHECK_FALSE(s.failed);
  CHECK(s.steps == 8);
  CHECK(s.rejected_steps == 1);
  const auto rows = read_csv(dir / "steps.csv");
  // header, then steps 0..7: step 3 rejected with the reason; lambda raised for step 4.
  REQUIRE(rows.size() == 9);
  CHECK(rows[4][5] == "0");
  CHECK_THAT(rows[4][14], Catch::Contains("acceptance loss"));
  CHECK(std::stod(rows[5][3]) > std::stod(rows[4][3]));
  CHECK(rows[5][5] == "1");
  CHECK(std::isfinite(s.final_eval.val_loss));
}

TEST_CASE("an unverified step that makes the loss non-finite is undone", "[train][failure]") {
  const fs::path dir = scratch("fault-undo");
  const RunSummary s = train(make_config(
      dir, {"optimizer.solver=test-faulty", "solver.fault_step=3", "train.max_steps=8"}));
  CHECK_FALSE(s.failed);
  CHECK(s.rejected_steps == 1);
  const auto rows = read_csv(dir / "steps.csv");
  REQUIRE(rows.size() == 9);
  CHECK(rows[4][5] == "1");  // accepted without a test (constant damping measures nothing) ...
  CHECK(rows[5][5] == "0");  // ... and undone when the next loss is not finite
  CHECK_THAT(rows[5][14], Catch::Contains("that step was undone"));
  CHECK(rows[6][5] == "1");
  CHECK(std::isfinite(s.final_eval.val_loss));
}

TEST_CASE("repeated failures stop the run with the reason", "[train][failure]") {
  const fs::path dir = scratch("fault-always");
  const RunSummary s =
      train(make_config(dir, {"optimizer.solver=test-faulty", "optimizer.curvature=ggn",
                              "optimizer.damping=levenberg-marquardt", "solver.always=true",
                              "train.max_steps=50", "train.max_failures=4"}));
  CHECK(s.failed);
  CHECK(s.steps == 4);
  CHECK_THAT(s.stop_reason, Catch::Contains("4 consecutive steps were rejected") &&
                                Catch::Contains("acceptance loss"));
  CHECK(fs::exists(dir / "checkpoint.npz"));
  CHECK(fs::exists(dir / "model.npz"));
}

namespace {
class Recorder final : public quadra::train::TrainObserver {
 public:
  void on_epoch_begin(std::int64_t e) override { events.push_back("begin " + std::to_string(e)); }
  void on_epoch_end(std::int64_t e) override { events.push_back("end " + std::to_string(e)); }
  void on_step(const quadra::train::StepRecord& r) override { steps.push_back(r.step); }
  void on_evaluation(const quadra::train::EvalRecord& r) override { evals.push_back(r.step); }
  std::vector<std::string> events;
  std::vector<std::int64_t> steps, evals;
};
}  // namespace

TEST_CASE("hooks: epochs, steps and evaluations", "[train][hooks]") {
  // 500 training samples, batches of 50: an epoch is 10 steps; 2 epochs.
  Recorder r;
  const RunSummary s =
      train(make_config(scratch("hooks"), with(kSgd, {"train.epochs=2"})), false, {&r});
  CHECK(s.steps == 20);
  CHECK(r.steps.size() == 20);
  CHECK(r.evals == std::vector<std::int64_t>{0, 10, 20});
  CHECK(r.events == std::vector<std::string>{"begin 0", "end 0", "begin 1", "end 1", "begin 2"});
  CHECK(s.stop_reason == "budget of 2 epochs reached");
  // Training moons for 2 epochs with momentum SGD beats chance clearly.
  CHECK(s.final_eval.val_accuracy > 0.8);
}

TEST_CASE("run config errors name the key, the value and what is expected", "[train][config]") {
  const fs::path dir = scratch("config-errors");
  const auto message = [&](const std::vector<std::string>& overrides) {
    try {
      train(make_config(dir, overrides));
    } catch (const quadra::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK_THAT(message(kSgd), Catch::Contains("sets no budget"));
  CHECK_THAT(message(with(kSgd, {"train.max_steps=-1"})),
             Catch::Contains("max_steps") && Catch::Contains("-1"));
  CHECK_THAT(message(with(kSgd, {"train.max_steps=2", "train.bogus=1"})), Catch::Contains("bogus"));
  CHECK_THAT(message(with(kSgd, {"train.max_steps=2", "train.step_scale=nan"})),
             Catch::Contains("step_scale"));
  CHECK_THAT(message({"optimizer.solver=cg", "train.max_steps=2"}),
             Catch::Contains("no curvature plugin"));
  CHECK_THAT(message({"optimizer.curvature=ggn", "train.max_steps=2"}),
             Catch::Contains("no solver"));
  CHECK_THAT(message(with(kSgd, {"train.max_steps=2", "model.spec=linear(16) tanh linear(3)"})),
             Catch::Contains("3 outputs") && Catch::Contains("2 classes"));
  CHECK_THAT(message(with(kSgd, {"train.max_steps=2", "model.input_shape=5"})),
             Catch::Contains("does not fit"));
  CHECK_THAT(message(with(kSgd, {"train.max_steps=2", "train.batch_size=400"})),
             Catch::Contains("more than half"));
  CHECK_THAT(message(with(kSgd, {"train.max_steps=2", "model.loss=mse"})),
             Catch::Contains("classification"));
}

TEST_CASE("every solver x debiasing x damping combination trains", "[train][combinations]") {
  const char* solvers[] = {"sgd", "adam", "cg", "eigen-newton", "kfac"};
  const char* debiasings[] = {"same-batch",  "rayleigh", "cg-line-search", "cg-projected",
                              "split-batch", "averaged", "full-batch"};
  const char* dampings[] = {"constant", "levenberg-marquardt", "trust-region"};
  for (const char* solver : solvers) {
    for (const char* debiasing : debiasings) {
      for (const char* damping : dampings) {
        CAPTURE(solver, debiasing, damping);
        std::vector<std::string> o = {std::string("optimizer.solver=") + solver,
                                      "optimizer.curvature=ggn",
                                      std::string("optimizer.debiasing=") + debiasing,
                                      std::string("optimizer.damping=") + damping,
                                      "train.max_steps=4",
                                      "train.batch_size=40"};
        if (std::string(solver) == "eigen-newton") o.emplace_back("solver.rank=4");
        if (std::string(damping) == "constant") o.emplace_back("damping.lambda=0.01");
        const RunSummary s = train(make_config(scratch("combination"), o));
        CHECK_FALSE(s.failed);
        CHECK(s.steps == 4);
        CHECK(std::isfinite(s.final_eval.val_loss));
      }
    }
  }
}

TEST_CASE("the Armijo search shortens a step that does not decrease the loss enough",
          "[train][line-search]") {
  const auto first_step_norm = [](const fs::path& dir, const std::vector<std::string>& extra) {
    train(make_config(
        dir,
        with({"optimizer.solver=sgd", "solver.learning_rate=50", "train.max_steps=1"}, extra)));
    return std::stod(read_csv(dir / "steps.csv")[1][9]);
  };
  const double plain = first_step_norm(scratch("armijo-off"), {});
  const double searched = first_step_norm(scratch("armijo-on"), {"line_search.method=armijo"});
  CHECK(searched < 0.5 * plain);  // at least one halving
  // Each halving divides the step by two exactly.
  const double halvings = std::log2(plain / searched);
  CHECK(std::abs(halvings - std::round(halvings)) < 1e-9);
}

TEST_CASE("the line search's keys are validated", "[train][line-search]") {
  const auto error = [](const std::string& key) {
    try {
      train(
          make_config(scratch("armijo-keys"), {"optimizer.solver=sgd", "train.max_steps=1", key}));
    } catch (const quadra::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK_THAT(
      error("line_search.shrink=1.5"),
      Catch::Contains("option 'shrink' of config section [line_search]") && Catch::Contains("1.5"));
  CHECK_THAT(error("line_search.sufficient_decrease=0"), Catch::Contains("sufficient_decrease"));
  CHECK_THAT(error("line_search.method=wolfe"), Catch::Contains("armijo"));
  CHECK_THAT(error("line_search.tries=3"), Catch::Contains("unknown option 'tries'"));
}

namespace {

/// A moons run with the misbehaving fixture in the roles `overrides` choose; the rest default.
std::string failure_of(const std::vector<std::string>& overrides) {
  try {
    train(make_config(scratch("misbehaving"), with({"train.max_steps=3"}, overrides)));
  } catch (const quadra::PluginFailure& e) {
    return e.what();
  }
  return "no PluginFailure";
}

const std::vector<std::string> kMisbehavingSolver = {"optimizer.solver=misbehaving"};
const std::vector<std::string> kCg = {"optimizer.solver=cg", "optimizer.curvature=ggn",
                                      "solver.max_iterations=3"};

}  // namespace

TEST_CASE("a plugin that throws ends the run with one error naming it, its file and the method",
          "[train][plugins]") {
  // Matchers compose by reference in Catch2: each check builds its own.
  const auto names = [](const std::string& message, const char* kind, const char* method) {
    CHECK_THAT(message, Catch::Contains(std::string(kind) + " plugin 'misbehaving'"));
    CHECK_THAT(message, Catch::Contains("libfixture_misbehaving"));
    CHECK_THAT(message, Catch::Contains(std::string("threw from ") + method + "()"));
    return message;
  };
  CHECK_THAT(names(failure_of(with(kMisbehavingSolver, {"solver.fault=propose-throws"})), "solver",
                   "propose"),
             Catch::Contains("deliberate failure in propose"));
  CHECK_THAT(names(failure_of(with(kMisbehavingSolver, {"solver.fault=propose-throws-int"})),
                   "solver", "propose"),
             Catch::Contains("an exception of type 'int', which is not a std::exception"));
  names(failure_of(with(kMisbehavingSolver, {"solver.fault=step_taken-throws"})), "solver",
        "step_taken");
  names(failure_of(with(kMisbehavingSolver, {"solver.fault=uses_curvature-throws"})), "solver",
        "uses_curvature");
  const std::vector<std::string> damping = {"optimizer.solver=sgd", "optimizer.curvature=ggn",
                                            "optimizer.damping=misbehaving"};
  names(failure_of(with(damping, {"damping.fault=lambda-throws"})), "damping", "lambda");
  CHECK_THAT(names(failure_of(with(damping, {"damping.fault=step_measured-throws-int"})), "damping",
                   "step_measured"),
             Catch::Contains("type 'int'"));
  names(failure_of(with(damping, {"damping.fault=step_invalid-throws",
                                  "optimizer.solver=misbehaving", "solver.fault=propose-nan"})),
        "damping", "step_invalid");
  names(failure_of(with(kSgd, {"optimizer.debiasing=misbehaving", "debiasing.fault=plan-throws"})),
        "debiasing", "plan");
  names(failure_of(
            with(kSgd, {"optimizer.debiasing=misbehaving", "debiasing.fault=coefficients-throws"})),
        "debiasing", "coefficients");
  // A curvature plugin fails inside the solver's call back into the host: the run still ends
  // with the curvature plugin's failure, once the solver has returned.
  CHECK_THAT(names(failure_of(with(kCg, {"optimizer.curvature=misbehaving",
                                         "curvature.fault=bind-throws-int"})),
                   "curvature", "bind"),
             Catch::Contains("type 'int'"));
  names(failure_of(with(kCg, {"optimizer.curvature=misbehaving", "curvature.fault=apply-throws"})),
        "curvature", "apply");
}

TEST_CASE("a plugin breaking its contract without throwing ends the run naming it",
          "[train][plugins]") {
  CHECK_THAT(
      failure_of(with(kSgd, {"optimizer.debiasing=misbehaving", "debiasing.fault=plan-invalid"})),
      Catch::Contains("debiasing plugin 'misbehaving'") &&
          Catch::Contains("plan() returned an invalid plan: role 'directions' maps to "
                          "draw 3, but the plan has 1 draw"));
  CHECK_THAT(
      failure_of({"optimizer.solver=sgd", "optimizer.curvature=ggn",
                  "optimizer.damping=misbehaving", "damping.fault=step_measured-bad-verdict"}),
      Catch::Contains("damping plugin 'misbehaving'") &&
          Catch::Contains("step_measured() returned 7, which is neither kAccept nor "
                          "kReject"));
}

TEST_CASE("non-finite numbers from a plugin reject the step with the reason", "[train][plugins]") {
  const auto first_note = [](const std::vector<std::string>& overrides) {
    const fs::path dir = scratch("misbehaving-nan");
    const RunSummary s =
        train(make_config(dir, with({"train.max_steps=3", "train.max_failures=2"}, overrides)));
    CHECK(s.failed);
    CHECK(s.steps == 2);
    return read_csv(dir / "steps.csv").at(1).at(14);
  };
  CHECK_THAT(first_note({"optimizer.solver=sgd", "optimizer.curvature=ggn",
                         "optimizer.damping=misbehaving", "damping.fault=lambda-nan"}),
             Catch::Contains("damping plugin 'misbehaving'") &&
                 Catch::Contains("returned lambda() = nan; expected a finite number >= 0"));
  CHECK_THAT(first_note({"optimizer.solver=sgd", "optimizer.curvature=ggn",
                         "optimizer.damping=misbehaving", "damping.fault=lambda-negative"}),
             Catch::Contains("returned lambda() = -1"));
  CHECK_THAT(first_note(with(kMisbehavingSolver, {"solver.fault=propose-nan"})),
             Catch::Contains("solver plugin 'misbehaving'") &&
                 Catch::Contains("propose() returned a non-finite direction (entry (0, 0) is "
                                 "nan)"));
  CHECK_THAT(first_note(with(
                 kSgd, {"optimizer.debiasing=misbehaving", "debiasing.fault=coefficients-nan"})),
             Catch::Contains("debiasing: debiasing plugin 'misbehaving'") &&
                 Catch::Contains("coefficients() returned a non-finite coefficient (entry 0 is "
                                 "nan)"));
  CHECK_THAT(
      first_note(with(kCg, {"optimizer.curvature=misbehaving", "curvature.fault=apply-nan"})),
      Catch::Contains("curvature plugin 'misbehaving'") &&
          Catch::Contains("apply() returned a non-finite product (entry 0 is nan)"));
}

TEST_CASE("a run directory is locked, and a used one is refused without --resume or --overwrite",
          "[train][files]") {
  const fs::path dir = scratch("used-directory");
  train(make_config(dir, with(kSgd, {"train.max_steps=2"})));
  CHECK_THROWS_WITH(train(make_config(dir, with(kSgd, {"train.max_steps=2"}))),
                    Catch::Contains("already holds a run") && Catch::Contains("--resume") &&
                        Catch::Contains("--overwrite"));
  // --overwrite replaces the run: its files are those of the new run alone.
  CHECK(train(make_config(dir, with(kSgd, {"train.max_steps=3"})), false, {}, /*overwrite=*/true)
            .steps == 3);
  CHECK(read_csv(dir / "steps.csv").size() == 4);  // header and 3 steps
  // A stale temporary of an interrupted write is removed on --resume.
  std::ofstream(dir / ".model.npz.tmp-AbC123") << "half a file";
  train(make_config(dir, with(kSgd, {"train.max_steps=4"})), /*resume=*/true);
  CHECK_FALSE(fs::exists(dir / ".model.npz.tmp-AbC123"));
  // While one run holds the directory, another is refused with the owner's pid.
  quadra::io::DirectoryLock held(dir, "train.out");
  CHECK_THROWS_WITH(train(make_config(dir, with(kSgd, {"train.max_steps=5"})), true),
                    Catch::Contains("is in use by another quadra run (pid "));
}

TEST_CASE("best.npz keeps the best evaluation's model, patience stops the run", "[train][best]") {
  const fs::path dir = scratch("keep-best");
  // A learning rate too large: validation improves once, then gets worse.
  const RunSummary s =
      train(make_config(dir, {"optimizer.solver=sgd", "solver.learning_rate=5",
                              "train.max_steps=200", "train.eval_every=2", "train.patience=3"}));
  CHECK_FALSE(s.failed);
  CHECK_THAT(s.stop_reason, Catch::Contains("no better validation loss in 3 evaluations "
                                            "(train.patience); the best"));
  const auto rows = read_csv(dir / "eval.csv");
  // The best scheduled evaluation by validation loss, and the model written then.
  std::size_t best = 1;
  for (std::size_t r = 1; r < rows.size(); ++r) {
    if (std::stod(rows[r][4]) < std::stod(rows[best][4])) best = r;
  }
  CHECK(s.steps == std::stoll(rows[best][0]) + 3 * 2);  // three evaluations later
  const auto manifest = read_text(dir / "manifest.json");
  CHECK_THAT(manifest, Catch::Contains("\"best\": {\"file\": \"best.npz\", \"metric\": "
                                       "\"validation_loss\", \"step\": " +
                                       rows[best][0] + ","));
  // best.npz is the model at that step: retrain to it without patience and compare.
  const fs::path again = scratch("keep-best-again");
  REQUIRE(rows[best][0] != "0");
  train(make_config(again, {"optimizer.solver=sgd", "solver.learning_rate=5",
                            "train.max_steps=" + rows[best][0], "train.eval_every=2"}));
  CHECK(parameters_of(dir / "best.npz") == parameters_of(again / "model.npz"));
  CHECK(fs::exists(dir / "model.npz"));
}

TEST_CASE("keep_best by accuracy, none, and what they refuse", "[train][best]") {
  const fs::path dir = scratch("keep-best-accuracy");
  train(make_config(dir, with(kSgd, {"train.max_steps=6", "train.eval_every=2",
                                     "train.keep_best=validation_accuracy"})));
  CHECK(fs::exists(dir / "best.npz"));
  CHECK_THAT(read_text(dir / "manifest.json"),
             Catch::Contains("\"metric\": \"validation_accuracy\""));
  const fs::path none = scratch("keep-best-none");
  train(make_config(none, with(kSgd, {"train.max_steps=6", "train.keep_best=none"})));
  CHECK_FALSE(fs::exists(none / "best.npz"));
  CHECK_THAT(read_text(none / "manifest.json"), Catch::Contains("\"best\": null"));
  Config regression = make_config(
      scratch("keep-best-regression"),
      {"optimizer.solver=sgd", "train.max_steps=2", "train.keep_best=validation_accuracy",
       "model.spec=linear(1)", "data.source=sinusoid:n=200,test=50"});
  CHECK_THROWS_WITH(train(regression),
                    Catch::Contains("train.keep_best = validation_accuracy: data "
                                    "'sinusoid:n=200,test=50' is a regression set"));
}

TEST_CASE("eval_every_seconds adds evaluations on a wall-clock schedule", "[train][eval]") {
  const fs::path dir = scratch("eval-seconds");
  // A tiny period: every step passes it, so every step is evaluated.
  train(make_config(dir, with(kSgd, {"train.max_steps=5", "train.eval_every_seconds=1e-9"})));
  CHECK(read_csv(dir / "eval.csv").size() == 1 + 6);  // header, step 0, steps 1..5
}

TEST_CASE("preconditioned CG trains with every preconditioner and debiasing", "[train][pcg]") {
  for (const char* preconditioner : {"diag-ggn", "diag-ef", "kfac"}) {
    for (const char* debiasing : {"same-batch", "cg-line-search", "cg-projected"}) {
      CAPTURE(preconditioner, debiasing);
      const RunSummary s =
          train(make_config(scratch("pcg"), {"optimizer.solver=cg", "optimizer.curvature=ggn",
                                             "optimizer.damping=levenberg-marquardt",
                                             std::string("optimizer.debiasing=") + debiasing,
                                             std::string("solver.preconditioner=") + preconditioner,
                                             "solver.max_iterations=5", "train.max_steps=4"}));
      CHECK_FALSE(s.failed);
      CHECK(s.steps == 4);
      CHECK(std::isfinite(s.final_eval.val_loss));
    }
  }
}

TEST_CASE("eigen-newton through the Gram method takes the steps of Lanczos", "[train][gram]") {
  const auto run = [](const std::string& name, const char* eigensolver) {
    const fs::path dir = scratch(name);
    train(make_config(
        dir, {"optimizer.solver=eigen-newton", "optimizer.curvature=ggn",
              "optimizer.damping=levenberg-marquardt", "solver.rank=4", "solver.tolerance=1e-9",
              "solver.max_products=200", std::string("solver.eigensolver=") + eigensolver,
              "model.precision=float64", "train.weight_decay=1e-3", "train.max_steps=3"}));
    const auto arrays = quadra::io::read_npz(dir / "model.npz");
    std::vector<double> all;
    for (const auto& [key, array] : arrays) {
      if (key.rfind("__", 0) == 0) continue;
      const auto v = array.to_vector<double>();
      all.insert(all.end(), v.begin(), v.end());
    }
    return all;
  };
  const auto lanczos = run("gram-lanczos", "lanczos");
  const auto gram = run("gram-gram", "gram");
  const auto automatic = run("gram-auto", "auto");
  REQUIRE(lanczos.size() == gram.size());
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < lanczos.size(); ++i) {
    diff = std::max(diff, std::abs(lanczos[i] - gram[i]));
    norm = std::max(norm, std::abs(lanczos[i]));
  }
  CHECK(diff < 1e-6 * norm);
  CHECK(automatic == gram);  // a Linear network, small batches: auto takes the Gram method
  // The Gram method needs the GGN; asked for on the Hessian, it says so.
  const fs::path dir = scratch("gram-hessian");
  const RunSummary s = train(make_config(
      dir, {"optimizer.solver=eigen-newton", "optimizer.curvature=hessian", "solver.rank=2",
            "solver.eigensolver=gram", "train.max_steps=2", "train.max_failures=2"}));
  CHECK(s.failed);
  CHECK_THAT(s.stop_reason, Catch::Contains("the Gram method needs the ggn curvature plugin") &&
                                Catch::Contains("the curvature plugin is 'hessian', not ggn"));
}

TEST_CASE("subsampled curvature trains, biased and debiased", "[train][subsampled]") {
  for (const char* debiasing : {"same-batch", "cg-line-search"}) {
    CAPTURE(debiasing);
    const RunSummary s = train(make_config(
        scratch("subsampled"),
        {"optimizer.solver=cg", "optimizer.curvature=ggn", "optimizer.damping=levenberg-marquardt",
         std::string("optimizer.debiasing=") + debiasing, "debiasing.curvature_size=0.5",
         "solver.max_iterations=5", "train.max_steps=6"}));
    CHECK_FALSE(s.failed);
    CHECK(std::isfinite(s.final_eval.val_loss));
  }
}

namespace {

/// A CIFAR-10 directory in the official binary format: five training files of `per_file`
/// records and a test file of 10, with seeded pixels and labels.
fs::path cifar10_dir(const std::string& name, int per_file) {
  const fs::path dir = scratch(name);
  fs::create_directories(dir);
  std::uint64_t state = 12345;
  const auto next_byte = [&state] {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<char>(state >> 56);
  };
  const auto write = [&](const std::string& file, int records) {
    std::string bytes;
    for (int r = 0; r < records; ++r) {
      bytes.push_back(static_cast<char>(r % 10));
      for (int k = 0; k < 3072; ++k) bytes.push_back(next_byte());
    }
    std::ofstream(dir / file, std::ios::binary) << bytes;
  };
  for (int f = 1; f <= 5; ++f) write(fmt::format("data_batch_{}.bin", f), per_file);
  write("test_batch.bin", 10);
  return dir;
}

/// A small CNN on the CIFAR directory, standardised per channel, the given augmentation.
Config cifar_config(const fs::path& out, const fs::path& data, const std::string& augment,
                    const std::vector<std::string>& overrides) {
  Config c;
  c.apply_override("model.spec=conv(4,3,pad=1) relu maxpool(2) flatten linear(10)");
  c.apply_override("data.source=cifar10:" + data.string());
  c.apply_override("data.normalize=standardize-channel");
  c.apply_override("data.augment=" + augment);
  c.apply_override("train.batch_size=8");
  c.apply_override("train.eval_every=2");
  c.apply_override("train.progress=never");
  c.apply_override("train.out=" + out.string());
  for (const auto& o : overrides) c.apply_override(o);
  return c;
}

}  // namespace

TEST_CASE("augmented CIFAR training: bitwise across threads and resume, evaluation untouched",
          "[train][resume][threads][augment]") {
  const fs::path data = cifar10_dir("cifar-data", 12);
  const std::string augment = "crop:4,flip";
  const auto steps = [](int n) { return with(kCgDebiased, {fmt::format("train.max_steps={}", n)}); };
  const fs::path one = scratch("cifar-threads-1");
  const fs::path two = scratch("cifar-threads-2");
  const fs::path split = scratch("cifar-resume");
  const fs::path plain = scratch("cifar-plain");
  const RunSummary a =
      train(cifar_config(one, data, augment, with(steps(6), {"train.threads=1"})));
  REQUIRE(a.steps == 6);
  train(cifar_config(two, data, augment, with(steps(6), {"train.threads=2"})));
  train(cifar_config(split, data, augment, with(steps(3), {"train.threads=2"})));
  const RunSummary b =
      train(cifar_config(split, data, augment, with(steps(6), {"train.threads=1"})), true);
  CHECK(b.steps == 6);
  for (const fs::path& other : {two, split}) {
    INFO(other.filename().string());
    CHECK(parameters_of(one / "model.npz") == parameters_of(other / "model.npz"));
    CHECK(without_seconds(read_csv(one / "steps.csv")) ==
          without_seconds(read_csv(other / "steps.csv")));
    CHECK(without_seconds(read_csv(one / "eval.csv")) ==
          without_seconds(read_csv(other / "eval.csv")));
  }
  // Without augmentation the steps differ, but the starting evaluation (step 0, the same
  // initial model on the validation and test sets) is the same: evaluation is never augmented.
  train(cifar_config(plain, data, "none", steps(6)));
  CHECK(parameters_of(one / "model.npz") != parameters_of(plain / "model.npz"));
  const auto augmented_eval = without_seconds(read_csv(one / "eval.csv"));
  const auto plain_eval = without_seconds(read_csv(plain / "eval.csv"));
  REQUIRE(augmented_eval.size() > 2);
  REQUIRE(plain_eval.size() > 2);
  CHECK(augmented_eval[0] == plain_eval[0]);
  CHECK(augmented_eval[1] == plain_eval[1]);
  CHECK(augmented_eval[1][0] == "0");
  CHECK(augmented_eval[2] != plain_eval[2]);
  // The run's manifest and resolved config record the augmentation.
  CHECK_THAT(read_text(one / "manifest.json"), Catch::Contains("crop:4,flip"));
}
