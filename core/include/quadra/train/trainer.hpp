#pragma once
/// \file
/// The training loop: one optimizer composed of plugins (curvature, solver, damping,
/// debiasing) trained on a data set. Every step (design.md §4):
///
///   1. the debiasing strategy's plan says which independent draws the step needs and which role
///      each serves (gradient, directions, estimate, acceptance); the sampler draws them;
///   2. the solver proposes directions P and its own coefficients from the quadratic model
///      (loss and gradient of the gradient draw, curvature of the directions draw);
///   3. the debiasing strategy sets the coefficients c from slopes and curvatures along P
///      measured on the estimate draw; the step is d = step_scale * P c;
///   4. the step is measured on the acceptance draw (never the directions draw): an optional
///      Armijo search shortens it ([line_search]), and, if the damping strategy uses it,
///      rho = actual / predicted decrease is computed;
///   5. the damping strategy adapts lambda and accepts or rejects the step.
///   Non-finite steps, losses, rho or plugin results are rejected and damping is raised; after
///   train.max_failures consecutive rejections the run stops with the reason. A plugin that
///   throws (or returns an invalid plan or verdict) ends the run with a PluginFailure naming it.
///
/// The output directory is locked for the run's lifetime; a fresh run refuses a directory that
/// holds another run unless told to overwrite it.
///
/// Outputs in train.out: steps.csv (one row per step), eval.csv (validation and test after
/// every evaluation), log.jsonl (both, one JSON object per line), manifest.json (resolved
/// config, plugins and versions, seeds, build), checkpoint.npz and model.npz. Checkpoints and
/// the model are written atomically; the logs are flushed at every evaluation and checkpoint
/// and truncated back to the checkpoint on --resume, so a resumed run's files and parameters
/// equal an uninterrupted run's (bitwise, for the same thread count or any thread count: the
/// engine's results do not depend on it).

#include <cstdint>
#include <filesystem>
#include <limits>
#include <quadra/data/source.hpp>
#include <quadra/optimizer_spec.hpp>
#include <quadra/plugin_host.hpp>
#include <quadra/train/settings.hpp>
#include <string>
#include <vector>

namespace quadra::train {

inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

/// One optimizer step, as logged.
struct StepRecord {
  std::int64_t step = 0;  ///< 0-based, accepted and rejected steps alike
  double epoch = 0;       ///< epochs of the gradient draws completed after this step
  double loss = kNaN;     ///< gradient-batch data loss at the start of the step
  double lambda = kNaN;   ///< damping used
  double rho = kNaN;      ///< reduction ratio on the acceptance batch (NaN: not measured)
  bool accepted = false;
  std::string note;                     ///< why a step was rejected, or empty
  int directions = 0;                   ///< columns of P
  int iterations = 0;                   ///< the solver's inner iterations
  std::int64_t curvature_products = 0;  ///< cumulative over the run
  double step_norm = kNaN;
  double seconds = 0;  ///< wall time since the run started (resumes add up)
  /// Where the step's time went: the solver's proposal (with the forward and backward passes
  /// and curvature products it needed), the debiasing strategy's measurements, and the
  /// acceptance draw's (line search, rho). Not part of the reproducible record.
  double propose_seconds = 0;
  double debias_seconds = 0;
  double measure_seconds = 0;
};

/// One evaluation on the validation and test sets.
struct EvalRecord {
  std::int64_t step = 0;  ///< steps taken before it
  double epoch = 0;
  double seconds = 0;
  /// Wall time spent training before it: `seconds` less every earlier evaluation's time, the
  /// clock on which optimizers are compared (evaluation costs the same for all).
  double train_seconds = 0;
  double train_loss = kNaN;  ///< mean gradient-batch loss since the previous evaluation
  double val_loss = kNaN;
  double val_accuracy = kNaN;  ///< NaN for regression
  double test_loss = kNaN;     ///< NaN when the source has no test set
  double test_accuracy = kNaN;
};

struct RunSummary {
  std::string stop_reason;  ///< e.g. "budget of 3 epochs reached"
  bool failed = false;      ///< stopped by repeated failures or an interrupt, not the budget
  bool interrupted = false;
  std::int64_t steps = 0;
  std::int64_t rejected_steps = 0;
  std::int64_t curvature_products = 0;
  double seconds = 0;
  EvalRecord final_eval;
  EvalRecord best_eval;  ///< lowest validation loss
  std::filesystem::path out;
};

/// Callback hooks for examples and tools built on the loop; called on the training thread.
/// examples/early-stopping shows one that ends a run when validation stops improving.
class TrainObserver {
 public:
  virtual ~TrainObserver() = default;
  virtual void on_epoch_begin(std::int64_t /*epoch*/) {}
  virtual void on_epoch_end(std::int64_t /*epoch*/) {}
  virtual void on_step(const StepRecord& /*record*/) {}
  virtual void on_evaluation(const EvalRecord& /*record*/) {}
  /// Asked after every step: a non-empty reason ends the run there (checkpoint, model and
  /// summary are written as for a budget stop).
  [[nodiscard]] virtual std::string stop_reason() { return {}; }
  /// After the closing checkpoint, evaluation and model.
  virtual void on_run_end(const RunSummary& /*summary*/) {}
};

struct RunRequest {
  RunSettings settings;
  const OptimizerSpec* optimizer = nullptr;
  const PluginHost* host = nullptr;
  /// The data, loaded once (quadra compare shares it between runs); see load_run_data().
  const data::DataSplits* data = nullptr;
  /// The resolved config as INI text, for the manifest and the checkpoint's identity check.
  std::string resolved_config;
  /// Continue from train.out/checkpoint.npz.
  bool resume = false;
  /// Start afresh in a train.out that holds another run (its files are replaced).
  bool overwrite = false;
  std::vector<TrainObserver*> observers;
  /// Label for the progress bar (quadra compare names the optimizer and seed).
  std::string label;
};

/// Whether `dir` holds a training run (its manifest, checkpoint, model or logs).
bool holds_run(const std::filesystem::path& dir);

/// Loads and splits the data a run config names, normalised as [data] says; when [model] starts
/// from a model file that records its preprocessing, that preprocessing is applied instead
/// (data.normalize, if given, must name the same kind). Throws Error on bad input.
data::DataSplits load_run_data(const RunSettings& settings);

/// Runs the loop until the budget, repeated failure or an interrupt (SIGINT/SIGTERM: the step
/// in progress is finished and a checkpoint written). Throws Error on bad input (model and data
/// that disagree, an unusable plugin combination, a checkpoint that does not fit).
RunSummary run_training(const RunRequest& request);

}  // namespace quadra::train
