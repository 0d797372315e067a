// The training loop. See trainer.hpp for the protocol of a step and the files of a run.
//
// Several processes (mpirun): every rank runs this loop on the same draws, binding its share of
// each draw's samples (StepBatch), so the plugins see the same reduced numbers and take the same
// decisions everywhere. What could differ between ranks is decided on rank 0 and broadcast: the
// clock (elapsed()), an interrupt and an observer's stop. Rank 0 alone locks the run directory
// and writes its files, and a failed write is agreed on (Communicator::run_agreed) so that every
// rank ends with its message.
//
// TrainingRun owns the loop: budget, draws, evaluation and checkpoints. One step runs in the
// phases of the algorithm (attempt_step): check the loss, propose, debias, measure on the
// acceptance draw, judge. A phase that fails returns a Rejection with the reason, and the step
// is rejected; every counter the loop keeps lives in RunState, which the checkpoint stores.

#include <fmt/format.h>
#include <fmt/std.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <quadra/data/augment.hpp>
#include <quadra/data/sampler.hpp>
#include <quadra/dist/communicator.hpp>
#include <quadra/error.hpp>
#include <quadra/nn/bound_batch.hpp>
#include <quadra/nn/dataset_batch.hpp>
#include <quadra/nn/serialization.hpp>
#include <quadra/parallel.hpp>
#include <quadra/train/trainer.hpp>
#include <sstream>

#include "progress.hpp"
#include "run_files.hpp"
#include "run_state.hpp"
#include "step_models.hpp"

namespace quadra::train {

namespace fs = std::filesystem;

namespace {

/// How [model] file imports an ONNX file (batch_norm).
nn::OnnxImportOptions onnx_options(const ModelSettings& m) {
  nn::OnnxImportOptions options;
  if (!m.batch_norm.empty()) options.batch_norm = m.batch_norm;
  return options;
}

}  // namespace

data::DataSplits load_run_data(const RunSettings& settings) {
  const DataSettings& d = settings.data;
  data::LoadOptions options;
  options.validation_size = d.validation_size;
  options.split = data::parse_split_mode(d.split);
  options.normalization = data::parse_normalization(d.normalize);
  options.seed = 0;  // the same split for every run and seed, so runs are comparable
  if (!settings.model.file.empty()) {
    // The model's own preprocessing: its fitted statistics, not this data's.
    options.fitted = nn::load_model<float>(settings.model.file, onnx_options(settings.model)).preprocessing;
    if (options.fitted && d.normalize_given && options.fitted->kind != options.normalization) {
      throw Error(fmt::format(
          "data.normalize = {} conflicts with model.file {}, which was trained on inputs "
          "normalised by {}; omit data.normalize (the model's preprocessing is applied)",
          d.normalize, settings.model.file, options.fitted->describe()));
    }
  }
  return data::load_data(d.source, options);
}

namespace {

// ---- interrupts --------------------------------------------------------------------------------

std::atomic<int> g_signal{0};
extern "C" void record_signal(int signal) { g_signal.store(signal); }

/// SIGINT and SIGTERM finish the current step and checkpoint instead of killing the run.
class InterruptGuard {
 public:
  InterruptGuard() {
    g_signal.store(0);
    old_int_ = std::signal(SIGINT, record_signal);
    old_term_ = std::signal(SIGTERM, record_signal);
  }
  ~InterruptGuard() {
    std::signal(SIGINT, old_int_);
    std::signal(SIGTERM, old_term_);
  }
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;
  [[nodiscard]] static bool requested() { return g_signal.load() != 0; }

 private:
  void (*old_int_)(int);
  void (*old_term_)(int);
};

// ---- the optimizer -----------------------------------------------------------------------------

/// The plugins a run composes, created once (guarded, see plugin_host.hpp) and used by every
/// step, with what the loop needs to know about them.
struct Optimizer {
  PluginHandle<Solver> solver;
  PluginHandle<DampingStrategy> damping;
  PluginHandle<DebiasingStrategy> debiasing;
  std::vector<PluginHandle<CurvatureEstimator>> curvature;  // one per draw of the plan
  std::vector<const Component*> components;                 // for the manifest
  std::string damping_name;                                 // for messages about lambda
  std::string curvature_name;                               // the chosen curvature plugin
  BatchPlan plan;
  bool measure_rho = false;
};

/// The plugin of `Interface`'s kind that the config chooses, or `fallback` with its options.
template <class Interface>
PluginHandle<Interface> create_plugin(const PluginHost& host, const OptimizerSpec& spec,
                                      const char* fallback, const RawOptions& fallback_options,
                                      std::string* description = nullptr) {
  const PluginKind kind = kind_of<Interface>();
  const auto& choice = spec.choice(kind);
  const std::string name = choice ? choice->component->info.name : std::string(fallback);
  if (name.empty()) {
    throw Error(
        fmt::format("the config chooses no {} plugin; set optimizer.{} = NAME "
                    "(quadra plugins lists them)",
                    to_string(kind), to_string(kind)));
  }
  auto created = host.create<Interface>(name, choice ? choice->given : fallback_options);
  if (!created.is_ok()) throw Error(created.status().message());
  if (description != nullptr) *description = describe_plugin(*host.find(kind, name));
  return std::move(created).value();
}

Optimizer compose(const PluginHost& host, const OptimizerSpec& spec) {
  Optimizer o;
  for (int k = 0; k < kNumPluginKinds; ++k) {
    if (const auto& choice = spec.choice(static_cast<PluginKind>(k))) {
      o.components.push_back(choice->component);
    }
  }
  o.solver = create_plugin<Solver>(host, spec, "", {});
  o.damping =
      create_plugin<DampingStrategy>(host, spec, "constant", {{"lambda", "0"}}, &o.damping_name);
  o.debiasing = create_plugin<DebiasingStrategy>(host, spec, "same-batch", {});
  o.plan = o.debiasing->plan();
  o.measure_rho = o.damping->uses_reduction_ratio();

  const bool separate_estimate =
      o.plan.draw_of(BatchRole::kEstimate) != o.plan.draw_of(BatchRole::kDirections);
  const bool uses_curvature = o.solver->uses_curvature();
  if (!spec.choice(PluginKind::kCurvature)) {
    if (uses_curvature || o.measure_rho || separate_estimate) {
      throw Error(fmt::format(
          "the optimizer needs curvature ({}) but the config chooses no curvature plugin; set "
          "optimizer.curvature = ggn (or another: quadra plugins)",
          uses_curvature  ? "the solver uses it"
          : o.measure_rho ? "the damping strategy measures the reduction ratio"
                          : "the debiasing strategy re-estimates curvature"));
    }
    return o;
  }
  o.curvature_name = spec.choice(PluginKind::kCurvature)->component->info.name;
  for (std::size_t d = 0; d < o.plan.draws.size(); ++d) {
    o.curvature.push_back(create_plugin<CurvatureEstimator>(host, spec, "", {}));
  }
  return o;
}

/// The config lines a resumed run must share with the checkpoint: everything but the budget
/// (patience included), the output directory, the thread count and the progress display.
std::string run_identity(const std::string& resolved_config) {
  static const char* const kFree[] = {"epochs",   "max_steps", "max_seconds", "patience",
                                      "progress", "out",       "threads"};
  std::istringstream in(resolved_config);
  std::string line, out;
  while (std::getline(in, line)) {
    bool free = false;
    for (const char* key : kFree) {
      const std::string prefix = std::string(key) + " = ";
      free = free || line.rfind(prefix, 0) == 0;
    }
    // A recorded config without a data.augment line means no augmentation, its default.
    free = free || line == "augment = none  # default";
    if (!free) out += line + "\n";
  }
  return out;
}

// ---- one step ----------------------------------------------------------------------------------

/// The draws of one step, by role (several roles may share a draw).
template <class S>
struct StepDraws {
  StepBatch<S>& gradient;
  StepBatch<S>& directions;
  StepBatch<S>& estimate;
  StepBatch<S>& acceptance;
};

/// Why a phase rejected the step. `invalid`: numerical trouble (the damping strategy hears
/// step_invalid() and becomes more conservative); otherwise the damping strategy itself
/// rejected the step.
struct Rejection {
  std::string reason;
  bool invalid = true;
};

/// What the acceptance draw says about a step: whether the loss after it was checked (else the
/// step is unverified, and undone if the next loss is not finite), and rho when measured.
struct Measurement {
  bool verified = false;  ///< the loss after the step was checked on the acceptance draw
  double rho = kNaN;
};

/// Why a run stops before its budget.
struct Stop {
  std::string reason;
  bool failed = false;  ///< repeated failures, a fatal reason or an interrupt
  bool interrupted = false;
};

// ---- the run -----------------------------------------------------------------------------------

template <class S>
class TrainingRun {
 public:
  explicit TrainingRun(const RunRequest& request);
  RunSummary run();

 private:
  void setup_model();
  void setup_sampler();
  void restore(const Checkpoint& c);
  /// train.out/checkpoint.npz (rank 0 holds the directory; the others read the same path).
  [[nodiscard]] fs::path checkpoint_file() const {
    return directory_ ? *directory_ / "checkpoint.npz" : t_.out / "checkpoint.npz";
  }
  void save_checkpoint();
  void write_checkpoint_file(double seconds);
  void write_manifest(std::int64_t resumed_from);
  [[nodiscard]] std::optional<std::string> budget_reached() const;
  [[nodiscard]] std::optional<Stop> stop_requested();

  void take_step();
  std::optional<Rejection> attempt_step(StepRecord& record, StepDraws<S>& draws,
                                        Vector<double>& step, bool& proposed);
  // The phases of a step, in order.
  std::optional<Rejection> check_loss(StepRecord& record, StepBatch<S>& gradient);
  std::optional<Rejection> check_lambda(const StepRecord& record) const;
  std::optional<Rejection> propose(StepRecord& record, StepDraws<S>& draws, Directions& directions);
  std::optional<Rejection> debias(const StepRecord& record, StepBatch<S>& estimate,
                                  const Directions& directions, Vector<double>& step);
  std::optional<Rejection> measure(StepRecord& record, StepBatch<S>& acceptance,
                                   Vector<double>& step, Measurement& out);
  std::optional<Rejection> judge(StepRecord& record, const Vector<double>& step,
                                 const Measurement& m);
  void reject(StepRecord& record, const Rejection& why, const Vector<double>* step);
  Rejection rejection_of(const Status& s, std::string_view phase);
  void rethrow_plugin_failure();

  nn::DatasetBatch<S> gather(const data::StepBatches& draws, int d);
  std::pair<double, double> evaluate_on(const data::Dataset& set);
  void evaluate(bool scheduled = true);
  void after_step(const StepRecord& record);
  void keep_if_best(const EvalRecord& e);
  [[nodiscard]] const char* kept_metric() const {
    return t_.keep_best == KeepBest::kValidationAccuracy ? "validation accuracy"
                                                         : "validation loss";
  }
  [[nodiscard]] double elapsed() const;
  [[nodiscard]] double epoch_progress() const {
    return static_cast<double>(state_.gradient_samples) / static_cast<double>(train_set().size());
  }
  [[nodiscard]] const data::Dataset& train_set() const { return data_.train; }

  /// Runs `write` on rank 0 and agrees on its outcome: a failure there is every rank's.
  void on_root(const std::function<void()>& write) const {
    comm_.run_agreed([&] {
      if (comm_.is_root()) write();
    });
  }

  const RunRequest& request_;
  const dist::Communicator& comm_ = dist::Communicator::world();
  const TrainSettings& t_;
  const data::DataSplits& data_;
  std::optional<nn::Network> network_;
  std::optional<nn::Network> eval_network_;
  /// The network evaluation binds: batchnorm with its current running statistics (PyTorch's
  /// eval mode) when training uses batch statistics, otherwise the network itself.
  const nn::Network& eval_network() {
    if (!network_->has_batch_statistics()) return *network_;
    eval_network_ = *network_;
    eval_network_->set_batch_norm(nn::NormMode::kRunningStatistics);
    return *eval_network_;
  }
  nn::Loss loss_ = nn::Loss::kCrossEntropy;
  Vector<S> params_;
  std::optional<Vector<S>> previous_params_;  // before a step whose loss is not yet verified
  Optimizer optimizer_;
  std::optional<data::BatchSampler> sampler_;
  data::GatherBuffer buffer_;
  data::Augmentation augmentation_;
  std::vector<float> augmented_;

  RunState state_;
  StepTally tally_{state_.curvature_products, {}};
  bool evaluated_ = false;
  std::string fatal_;  // a reason that stops the run at once
  std::string last_rejection_;

  std::optional<RunDirectory> directory_;
  std::optional<RunLogs> logs_;
  std::vector<TrainObserver*> observers_;
  std::optional<ProgressLine> progress_;
  std::chrono::steady_clock::time_point start_;
  std::int64_t steps_this_session_ = 0;
  std::int64_t step_bytes_ = 0;  // what this rank sent in the collectives of those steps
  std::int64_t step_collectives_ = 0;  // and how many collective calls it made
};

template <class S>
TrainingRun<S>::TrainingRun(const RunRequest& request)
    : request_(request), t_(request.settings.train), data_(*request.data) {
  if (request.optimizer == nullptr || request.host == nullptr || request.data == nullptr) {
    throw Error("run_training: the request needs an optimizer, a plugin host and data");
  }
  setup_model();
  augmentation_ = data::parse_augmentation(request_.settings.data.augment);
  data::check_augmentation(augmentation_, train_set(), data_.source);
  optimizer_ = compose(*request_.host, *request_.optimizer);
  setup_sampler();
  observers_ = request_.observers;
  if (comm_.is_root() && (t_.progress == Progress::kAlways ||
                          (t_.progress == Progress::kAuto && isatty(STDERR_FILENO) != 0))) {
    progress_.emplace(request_.label, t_.epochs);
    observers_.push_back(&*progress_);
  }
}

template <class S>
void TrainingRun<S>::setup_model() {
  const ModelSettings& m = request_.settings.model;
  const data::Dataset& train = train_set();
  if (!m.file.empty()) {
    auto model = nn::load_model<S>(m.file, onnx_options(m));
    network_.emplace(std::move(model.network));
    params_ = std::move(model.params);
    const data::FeatureTransform& t = data_.transform;
    if (model.preprocessing &&
        (model.preprocessing->kind != t.kind || model.preprocessing->shift != t.shift ||
         model.preprocessing->scale != t.scale)) {
      throw Error(fmt::format(
          "model.file {} records the preprocessing {}, but the data was normalised by {}; load "
          "the data with train::load_run_data(settings), which applies the model's",
          m.file, model.preprocessing->describe(), t.describe()));
    }
  } else {
    nn::TensorShape shape;
    if (!m.input_shape.empty()) {
      shape = nn::parse_shape(m.input_shape);
    } else {
      for (std::int64_t d : train.sample_shape) shape.dims.push_back(d);
    }
    network_.emplace(m.spec, shape);
    params_ = network_->template initial_parameters<S>(t_.seed);
  }
  // An ONNX file's mode came with the import (onnx_options); a spec or model file starts with
  // running statistics unless model.batch_norm says batch.
  if (!m.batch_norm.empty()) {
    network_->set_batch_norm(nn::parse_norm_mode(m.batch_norm, "model.batch_norm"));
  }
  if (network_->num_inputs() != train.feature_dim()) {
    throw Error(fmt::format(
        "model input {} ({} features) does not fit data '{}' with {} "
        "features per sample",
        network_->input_shape().str(), network_->num_inputs(), data_.source, train.feature_dim()));
  }
  const bool classification = train.task == data::Task::kClassification;
  loss_ = m.loss.empty() ? (classification ? nn::Loss::kCrossEntropy : nn::Loss::kMse)
                         : nn::parse_loss(m.loss);
  if (classification && loss_ != nn::Loss::kCrossEntropy) {
    throw Error(
        fmt::format("model.loss = {}: data '{}' is a classification set; expected "
                    "cross-entropy",
                    m.loss, data_.source));
  }
  if (!classification && loss_ != nn::Loss::kMse) {
    throw Error(fmt::format("model.loss = {}: data '{}' is a regression set; expected mse", m.loss,
                            data_.source));
  }
  if (!classification && t_.keep_best == KeepBest::kValidationAccuracy) {
    throw Error(
        fmt::format("train.keep_best = validation_accuracy: data '{}' is a regression set; "
                    "expected validation_loss or none",
                    data_.source));
  }
  const Index want = classification ? train.num_classes : train.target_dim;
  if (network_->num_outputs() != want) {
    throw Error(fmt::format("model has {} outputs; data '{}' has {} {}", network_->num_outputs(),
                            data_.source, want, classification ? "classes" : "targets"));
  }
}

template <class S>
void TrainingRun<S>::setup_sampler() {
  data::SamplerOptions options;
  options.batch_size = t_.batch_size;
  options.seed = t_.seed;
  sampler_.emplace(train_set().size(), options);
  const BatchPlan& plan = optimizer_.plan;
  for (int d = 0; d < static_cast<int>(plan.draws.size()); ++d) {
    const std::int64_t size = sampler_->draw_size(plan, d);
    if (!plan.draws[static_cast<std::size_t>(d)].whole_dataset && size > train_set().size() / 2) {
      throw Error(
          fmt::format("train.batch_size {}: draw {} of the debiasing plan needs {} samples, "
                      "more than half of the {} training samples",
                      t_.batch_size, d, size, train_set().size()));
    }
  }
}

template <class S>
void TrainingRun<S>::write_manifest(std::int64_t resumed_from) {
  Manifest m;
  m.resumed_from_step = resumed_from;
  m.seed = t_.seed;
  m.threads = num_threads();
  m.ranks = comm_.size();
  if (comm_.size() > 1 && steps_this_session_ > 0) {
    m.bytes_sent_per_step =
        static_cast<double>(step_bytes_) / static_cast<double>(steps_this_session_);
    m.collectives_per_step =
        static_cast<double>(step_collectives_) / static_cast<double>(steps_this_session_);
  }
  m.double_precision = std::is_same_v<S, double>;
  m.model_spec = network_->spec();
  m.parameters = network_->num_parameters();
  m.data_source = data_.source;
  m.train_size = data_.train.size();
  m.validation_size = data_.validation.size();
  m.test_size = data_.test.size();
  m.plugins = optimizer_.components;
  m.config = request_.resolved_config;
  if (t_.keep_best != KeepBest::kNone && evaluated_) {
    m.best_metric =
        t_.keep_best == KeepBest::kValidationAccuracy ? "validation_accuracy" : "validation_loss";
    m.best = state_.kept;
  }
  on_root([&] { train::write_manifest(*directory_ / "manifest.json", m); });
}

template <class S>
void TrainingRun<S>::restore(const Checkpoint& c) {
  const fs::path file = checkpoint_file();
  if (c.identity != run_identity(request_.resolved_config)) {
    throw Error(
        fmt::format("cannot resume from {}: it was written with a different config (only "
                    "the budget, train.out, train.threads and train.progress may change)",
                    file));
  }
  const io::DType want = std::is_same_v<S, double> ? io::DType::kFloat64 : io::DType::kFloat32;
  if (c.params.dtype != want || c.params.size() != network_->num_parameters()) {
    throw Error(fmt::format("{}: parameters are {} x {}; the model needs {} x {}", file,
                            io::to_string(c.params.dtype), c.params.size(), io::to_string(want),
                            network_->num_parameters()));
  }
  const auto values = c.params.to_vector<S>();
  params_ = Eigen::Map<const Vector<S>>(values.data(), static_cast<Index>(values.size()));
  if (!c.buffers.empty()) {
    if (c.buffers.size() != network_->buffer_values().size()) {
      throw Error(fmt::format("{}: {} buffer values; the model has {}", file, c.buffers.size(),
                              network_->buffer_values().size()));
    }
    network_->set_buffer_values(c.buffers);
  }
  if (!c.previous_params.bytes.empty()) {
    const auto previous = c.previous_params.to_vector<S>();
    previous_params_ =
        Eigen::Map<const Vector<S>>(previous.data(), static_cast<Index>(previous.size()));
  }
  if (Status s = optimizer_.solver->load_state(c.solver_state); !s.is_ok()) {
    throw Error(fmt::format("{}: the solver refused its saved state: {}", file, s.message()));
  }
  if (Status s = optimizer_.damping->load_state(c.damping_state); !s.is_ok()) {
    throw Error(
        fmt::format("{}: the damping strategy refused its saved state: {}", file, s.message()));
  }
  state_ = c.state;
  // The sampler is a deterministic function of its seed and the plans drawn (one per step):
  // replaying the draws puts every role's permutation and cursor where the checkpoint left them.
  for (std::int64_t i = 0; i < state_.step; ++i) sampler_->next(optimizer_.plan);
  evaluated_ = true;
}

template <class S>
void TrainingRun<S>::save_checkpoint() {
  const double seconds = elapsed();  // collective: outside the writing on rank 0
  on_root([&] { write_checkpoint_file(seconds); });
}

template <class S>
void TrainingRun<S>::write_checkpoint_file(double seconds) {
  Checkpoint c;
  c.state = state_;
  c.state.seconds = seconds;
  c.log_sizes = logs_->sizes();
  c.params = io::NpyArray::from<S>({params_.size()}, params_.data());
  c.buffers = network_->buffer_values();
  if (previous_params_) {
    c.previous_params = io::NpyArray::from<S>({previous_params_->size()}, previous_params_->data());
  }
  if (Status s = optimizer_.solver->save_state(c.solver_state); !s.is_ok()) {
    throw Error("the solver could not save its state: " + s.message());
  }
  if (Status s = optimizer_.damping->save_state(c.damping_state); !s.is_ok()) {
    throw Error("the damping strategy could not save its state: " + s.message());
  }
  c.identity = run_identity(request_.resolved_config);
  c.preprocessing = data_.transform;
  write_checkpoint(checkpoint_file(), c);
}

/// Rank 0's clock on every rank (collective with several): the budget and the evaluation
/// schedule depend on it, and must be decided alike everywhere.
template <class S>
double TrainingRun<S>::elapsed() const {
  double seconds = state_.seconds +
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  comm_.broadcast(std::span<double>(&seconds, 1));
  return seconds;
}

template <class S>
std::optional<std::string> TrainingRun<S>::budget_reached() const {
  if (t_.max_steps > 0 && state_.step >= t_.max_steps) {
    return fmt::format("budget of {} steps reached", t_.max_steps);
  }
  if (t_.epochs > 0 && epoch_progress() >= t_.epochs) {
    return fmt::format("budget of {} epochs reached", t_.epochs);
  }
  if (t_.max_seconds > 0 && elapsed() >= t_.max_seconds) {
    return fmt::format("budget of {} s reached", t_.max_seconds);
  }
  return std::nullopt;
}

template <class S>
nn::DatasetBatch<S> TrainingRun<S>::gather(const data::StepBatches& draws, int d) {
  const data::BatchView view = data::gather(train_set(), draws.draw(d), buffer_);
  // Keyed by (seed, step, draw, sample): a resumed run augments as an uninterrupted one.
  return nn::dataset_batch<S>(
      train_set(),
      data::augment_draw(augmentation_, train_set(), draws, d, view, t_.seed, augmented_));
}

template <class S>
void TrainingRun<S>::take_step() {
  const std::int64_t bytes_before = comm_.bytes_sent();
  const std::int64_t collectives_before = comm_.collectives();
  const data::StepBatches& draws = sampler_->next(optimizer_.plan);
  state_.gradient_samples += draws.for_role(BatchRole::kGradient).size();
  StepRecord record;
  record.step = state_.step;
  record.lambda = optimizer_.damping->lambda();

  std::vector<std::unique_ptr<StepBatch<S>>> batches;
  for (int d = 0; d < draws.num_draws(); ++d) {
    CurvatureEstimator* estimator = optimizer_.curvature.empty()
                                        ? nullptr
                                        : optimizer_.curvature[static_cast<std::size_t>(d)].get();
    batches.push_back(std::make_unique<StepBatch<S>>(*network_, params_, gather(draws, d),
                                                     loss_, t_.weight_decay, estimator,
                                                     optimizer_.curvature_name == "ggn", tally_));
  }
  const auto batch = [&](BatchRole role) -> StepBatch<S>& {
    return *batches[static_cast<std::size_t>(draws.draw_of(role))];
  };
  StepDraws<S> roles{batch(BatchRole::kGradient), batch(BatchRole::kDirections),
                     batch(BatchRole::kEstimate), batch(BatchRole::kAcceptance)};
  Vector<double> step;
  bool proposed = false;
  if (auto rejection = attempt_step(record, roles, step, proposed)) {
    reject(record, *rejection, proposed ? &step : nullptr);
  }
  // Train mode: the gradient draw's forward pass moves the running statistics, once per step
  // (as PyTorch's one forward pass per optimizer step), whether or not the step was taken.
  if (network_->has_batch_statistics() && std::isfinite(record.loss)) {
    roles.gradient.update_running_statistics(*network_);
  }
  record.curvature_products = state_.curvature_products;
  ++state_.step;
  record.epoch = epoch_progress();
  record.seconds = elapsed();
  step_bytes_ += comm_.bytes_sent() - bytes_before;
  step_collectives_ += comm_.collectives() - collectives_before;
  ++steps_this_session_;
  after_step(record);
}

/// The step protocol on the bound draws. On success the step is applied; otherwise the
/// rejection says why (and `proposed` whether the solver must hear of the discarded `step`).
template <class S>
std::optional<Rejection> TrainingRun<S>::attempt_step(StepRecord& record, StepDraws<S>& draws,
                                                      Vector<double>& step, bool& proposed) {
  // Each phase's wall time goes to the record (the first forward pass of a draw counts where
  // it is first needed).
  const auto timed = [](double& seconds, auto&& phase) {
    const auto start = std::chrono::steady_clock::now();
    auto result = phase();
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return result;
  };
  Directions directions;
  if (auto r = timed(record.propose_seconds, [&]() -> std::optional<Rejection> {
        if (auto loss = check_loss(record, draws.gradient)) return loss;
        if (auto lambda = check_lambda(record)) return lambda;
        return propose(record, draws, directions);
      })) {
    return r;
  }
  proposed = true;
  step = Vector<double>::Zero(params_.size());
  if (auto r = timed(record.debias_seconds,
                     [&] { return debias(record, draws.estimate, directions, step); })) {
    return r;
  }
  Measurement measurement;
  if (auto r = timed(record.measure_seconds,
                     [&] { return measure(record, draws.acceptance, step, measurement); })) {
    return r;
  }
  return judge(record, step, measurement);
}

/// A phase's failed status as a rejection. An unsupported query (one the model does not define,
/// e.g. type-2 K-FAC through batch statistics) fails alike at every step: it stops the run.
template <class S>
Rejection TrainingRun<S>::rejection_of(const Status& s, std::string_view phase) {
  std::string reason = fmt::format("{}: {}", phase, s.message());
  if (s.code() == StatusCode::kUnsupported) fatal_ = reason;
  return Rejection{std::move(reason)};
}

/// The gradient draw's loss must be finite. A non-finite one after an unverified step (taken
/// without an acceptance test) undoes that step; before any such step the run cannot go on.
template <class S>
std::optional<Rejection> TrainingRun<S>::check_loss(StepRecord& record, StepBatch<S>& gradient) {
  record.loss = gradient.data_loss();
  if (!std::isfinite(record.loss)) {
    if (!previous_params_) {
      fatal_ = fmt::format(
          "the training loss is {} at step {} before any unverified step; the "
          "model or data produce non-finite values",
          record.loss, state_.step);
      return Rejection{"non-finite loss"};
    }
    params_ = *previous_params_;
    previous_params_.reset();
    return Rejection{
        fmt::format("loss {} after the previous step; that step was undone", record.loss)};
  }
  previous_params_.reset();
  state_.train_loss_sum += record.loss;
  ++state_.train_loss_count;
  return std::nullopt;
}

template <class S>
std::optional<Rejection> TrainingRun<S>::check_lambda(const StepRecord& record) const {
  if (std::isfinite(record.lambda) && record.lambda >= 0.0) return std::nullopt;
  return Rejection{fmt::format("{} returned lambda() = {}; expected a finite number >= 0",
                               optimizer_.damping_name, record.lambda)};
}

/// The solver's directions from the quadratic model (loss and gradient of the gradient draw,
/// curvature of the directions draw); the guarded solver checks their shape and finiteness.
template <class S>
std::optional<Rejection> TrainingRun<S>::propose(StepRecord& record, StepDraws<S>& draws,
                                                 Directions& directions) {
  StepQuadraticModel<S> model(draws.gradient, draws.directions, params_, state_.step, t_.seed,
                              *request_.host, optimizer_.curvature_name);
  const Status s = optimizer_.solver->propose(model, record.lambda, directions);
  rethrow_plugin_failure();
  if (!s.is_ok()) return rejection_of(s, "solver");
  record.directions = static_cast<int>(directions.basis.cols());
  record.iterations = directions.iterations;
  return std::nullopt;
}

/// The coefficients along the directions from the estimate draw; the step is
/// step_scale * P c.
template <class S>
std::optional<Rejection> TrainingRun<S>::debias(const StepRecord& record, StepBatch<S>& estimate,
                                                const Directions& directions,
                                                Vector<double>& step) {
  Vector<double> coefficients(directions.basis.cols());
  StepDirectionalModel<S> model(estimate, directions.basis);
  const Status s = optimizer_.debiasing->coefficients(directions.own_coefficients, model,
                                                      record.lambda, coefficients);
  rethrow_plugin_failure();
  if (!s.is_ok()) return rejection_of(s, "debiasing");
  step = t_.step_scale * (directions.basis * coefficients);
  if (!step.allFinite()) return Rejection{"the step is not finite"};
  return std::nullopt;
}

/// On the acceptance draw: the Armijo search (if configured) and the reduction ratio rho
/// (if the damping strategy uses it). Without either, the step stays unverified.
template <class S>
std::optional<Rejection> TrainingRun<S>::measure(StepRecord& record, StepBatch<S>& acceptance,
                                                 Vector<double>& step, Measurement& out) {
  const LineSearchSettings& search = t_.line_search;
  const bool armijo = search.method == LineSearch::kArmijo;
  if (!optimizer_.measure_rho && !armijo) return std::nullopt;
  const double before = acceptance.loss();
  const double slope = acceptance.gradient().dot(step);
  double after = acceptance.loss_at(step);
  if (armijo && slope < 0.0) {
    double t = 1.0;
    for (int shrinks = 0; !(after <= before + search.sufficient_decrease * t * slope) &&
                          shrinks < search.max_shrinks;
         ++shrinks) {
      t *= search.shrink;
      after = acceptance.loss_at(t * step);
    }
    if (t != 1.0) step *= t;
  }
  if (!std::isfinite(after)) {
    return Rejection{fmt::format("acceptance loss {} after the step", after)};
  }
  out.verified = true;
  if (!optimizer_.measure_rho) return std::nullopt;
  Matrix<double> form(1, 1);
  const Status s = acceptance.quadratic_forms(step, form);
  rethrow_plugin_failure();
  if (!s.is_ok()) return rejection_of(s, "curvature on the acceptance batch");
  const double predicted = slope + 0.5 * form(0, 0);
  if (!(predicted < 0.0)) {
    return Rejection{
        fmt::format("the acceptance model predicts no decrease ({:.3g}) for this step", predicted)};
  }
  out.rho = (after - before) / predicted;
  record.rho = out.rho;
  if (!std::isfinite(out.rho)) return Rejection{"rho is not finite"};
  return std::nullopt;
}

/// The damping strategy's verdict; an accepted step is applied and the solver told.
template <class S>
std::optional<Rejection> TrainingRun<S>::judge(StepRecord& record, const Vector<double>& step,
                                               const Measurement& m) {
  record.step_norm = step.norm();
  const StepVerdict verdict =
      optimizer_.damping->step_measured(optimizer_.measure_rho ? m.rho : kNaN);
  if (verdict == StepVerdict::kReject) {
    return Rejection{"rejected by the damping strategy", /*invalid=*/false};
  }
  if (!m.verified) previous_params_ = params_;
  params_ += step.template cast<S>();
  optimizer_.solver->step_taken(step, true);
  record.accepted = true;
  state_.consecutive_failures = 0;
  return std::nullopt;
}

template <class S>
void TrainingRun<S>::reject(StepRecord& record, const Rejection& why, const Vector<double>* step) {
  if (why.invalid) optimizer_.damping->step_invalid();
  if (step != nullptr) optimizer_.solver->step_taken(*step, false);
  record.accepted = false;
  record.note = why.reason;
  last_rejection_ = why.reason;
  ++state_.rejected;
  ++state_.consecutive_failures;
}

/// A plugin that failed inside a host callback (see StepTally) ends the run here, once the
/// plugin that called back has returned.
template <class S>
void TrainingRun<S>::rethrow_plugin_failure() {
  if (tally_.plugin_failure.empty()) return;
  throw PluginFailure(std::exchange(tally_.plugin_failure, {}));
}

template <class S>
std::pair<double, double> TrainingRun<S>::evaluate_on(const data::Dataset& set) {
  if (set.empty()) return {kNaN, kNaN};
  // A chunk's activations stay within kEvalChunkBytes: a convolutional network's hundreds of
  // kilobytes per sample would otherwise make every chunk a fresh mapping of hundreds of MB,
  // faulted in page by page and returned (ten times the forward pass's own time).
  constexpr std::int64_t kEvalChunkBytes = std::int64_t{64} << 20;
  const std::int64_t per_sample =
      std::max<std::int64_t>(1, eval_network().activations_per_sample() * std::int64_t{sizeof(S)});
  const std::int64_t chunk =
      std::min(t_.eval_chunk, std::max<std::int64_t>(16, kEvalChunkBytes / per_sample));
  const data::Draw all = data::Draw::whole(set.size(), chunk);
  double loss = 0;
  std::int64_t correct = 0;
  for (std::int64_t c = 0; c < all.num_chunks(); ++c) {
    const data::IndexRange range = all.chunk(c);
    const data::BatchView view = data::gather(set, all, range, buffer_);
    const nn::DatasetBatch<S> batch = nn::dataset_batch<S>(set, view);
    const auto& targets = batch.targets;
    // With several ranks the loss is the chunk's, and outputs() this rank's samples; a chunk
    // with fewer samples than ranks is whole on every rank, and rank 0 counts it.
    nn::BoundBatch<S> bound = nn::bind_split<S>(eval_network(), params_, batch, loss_, comm_);
    loss += static_cast<double>(bound.loss()) * static_cast<double>(view.count);
    const bool split = nn::splits_across(comm_, view.count);
    if (set.task == data::Task::kClassification && (split || comm_.is_root())) {
      const Matrix<S>& outputs = bound.outputs();
      const std::int64_t first = split ? comm_.share_of(view.count).begin : 0;
      for (Index n = 0; n < outputs.cols(); ++n) {
        Index best = 0;
        outputs.col(n).maxCoeff(&best);
        correct += best == targets.labels[static_cast<std::size_t>(first + n)] ? 1 : 0;
      }
    }
  }
  if (comm_.size() > 1 && set.task == data::Task::kClassification) {
    double count = static_cast<double>(correct);  // exact: far below 2^53
    comm_.sum(std::span<double>(&count, 1));
    correct = static_cast<std::int64_t>(count);
  }
  const double n = static_cast<double>(set.size());
  return {loss / n,
          set.task == data::Task::kClassification ? static_cast<double>(correct) / n : kNaN};
}

template <class S>
void TrainingRun<S>::evaluate(bool scheduled) {
  const double started = elapsed();
  EvalRecord e;
  e.step = state_.step;
  e.epoch = epoch_progress();
  e.train_seconds = started - state_.eval_seconds;
  e.train_loss = state_.train_loss_count > 0
                     ? state_.train_loss_sum / static_cast<double>(state_.train_loss_count)
                     : kNaN;
  std::tie(e.val_loss, e.val_accuracy) = evaluate_on(data_.validation);
  std::tie(e.test_loss, e.test_accuracy) = evaluate_on(data_.test);
  e.seconds = elapsed();
  state_.eval_seconds += e.seconds - started;
  state_.train_loss_sum = 0;
  state_.train_loss_count = 0;
  state_.last = e;
  if (!evaluated_ || (std::isfinite(e.val_loss) && !(e.val_loss >= state_.best.val_loss))) {
    state_.best = e;
  }
  evaluated_ = true;
  on_root([&] {
    logs_->evaluation(e);
    logs_->flush();
  });
  // The closing evaluation is off the schedule (a resumed run continues as if it never
  // happened), so it does not choose best.npz either.
  if (scheduled) keep_if_best(e);
  if (t_.eval_every_seconds > 0 && state_.next_eval_seconds <= e.seconds) {
    // The next multiple of the period after now, computed rather than stepped to: a period
    // far below an evaluation's duration would otherwise take billions of additions.
    const double period = t_.eval_every_seconds;
    state_.next_eval_seconds = (std::floor(e.seconds / period) + 1.0) * period;
    if (state_.next_eval_seconds <= e.seconds) state_.next_eval_seconds = e.seconds + period;
  }
  for (TrainObserver* o : observers_) o->on_evaluation(e);
}

/// best.npz and patience: is `e` better than the kept evaluation by keep_best's metric
/// (validation loss when none)? A NaN metric never is; the first finite one always is.
template <class S>
void TrainingRun<S>::keep_if_best(const EvalRecord& e) {
  const bool better =
      t_.keep_best == KeepBest::kValidationAccuracy
          ? std::isfinite(e.val_accuracy) && !(e.val_accuracy <= state_.kept.val_accuracy)
          : std::isfinite(e.val_loss) && !(e.val_loss >= state_.kept.val_loss);
  if (!better) {
    ++state_.evaluations_since_kept;
    return;
  }
  state_.kept = e;
  state_.evaluations_since_kept = 0;
  if (t_.keep_best != KeepBest::kNone) {
    on_root([&] {
      nn::save_model<S>(*directory_ / "best.npz", *network_, params_, data_.transform);
    });
  }
}

template <class S>
void TrainingRun<S>::after_step(const StepRecord& record) {
  on_root([&] { logs_->step(record); });
  for (TrainObserver* o : observers_) o->on_step(record);
  const auto whole_epochs = static_cast<std::int64_t>(std::floor(epoch_progress()));
  const bool epoch_ended = whole_epochs > state_.epochs_evaluated;
  if (epoch_ended) {
    for (TrainObserver* o : observers_) o->on_epoch_end(state_.epochs_evaluated);
  }
  if ((t_.eval_every > 0 && state_.step % t_.eval_every == 0) ||
      (t_.eval_every == 0 && epoch_ended) ||
      (t_.eval_every_seconds > 0 && elapsed() >= state_.next_eval_seconds)) {
    evaluate();
  }
  if (epoch_ended) {
    state_.epochs_evaluated = whole_epochs;
    for (TrainObserver* o : observers_) o->on_epoch_begin(whole_epochs);
  }
  if (t_.checkpoint_every > 0 && state_.step % t_.checkpoint_every == 0) save_checkpoint();
}

/// Whether the run stops after this step and why: a fatal reason, repeated failures, an
/// observer, an interrupt, in that order (the budget is checked before each step).
template <class S>
std::optional<Stop> TrainingRun<S>::stop_requested() {
  if (!fatal_.empty()) return Stop{fatal_, true, false};
  if (state_.consecutive_failures >= t_.max_failures) {
    return Stop{fmt::format("{} consecutive steps were rejected (train.max_failures); "
                            "the last one: {}",
                            state_.consecutive_failures, last_rejection_),
                true, false};
  }
  if (t_.patience > 0 && state_.evaluations_since_kept >= t_.patience) {
    return Stop{fmt::format("no better {} in {} evaluations (train.patience); the best, {:.6g}, "
                            "was at step {}",
                            kept_metric(), t_.patience,
                            t_.keep_best == KeepBest::kValidationAccuracy ? state_.kept.val_accuracy
                                                                          : state_.kept.val_loss,
                            state_.kept.step),
                false, false};
  }
  // Rank 0's observers and signals decide for every rank.
  std::string reason;
  for (TrainObserver* o : observers_) {
    if (reason = o->stop_reason(); !reason.empty()) break;
  }
  std::int64_t interrupted = InterruptGuard::requested() ? 1 : 0;
  if (comm_.size() > 1) {
    comm_.broadcast(reason);
    comm_.broadcast(std::span<std::int64_t>(&interrupted, 1));
  }
  if (!reason.empty()) return Stop{reason, false, false};
  if (interrupted != 0) return Stop{"interrupted; continue with --resume", true, true};
  return std::nullopt;
}

template <class S>
RunSummary TrainingRun<S>::run() {
  // Rank 0 locks the directory and keeps the logs; every rank reads the checkpoint (one file
  // for any number of ranks: the run's state is the same on every rank).
  on_root([&] { directory_.emplace(t_.out, request_.resume, request_.overwrite); });
  std::int64_t resumed_from = -1;
  if (request_.resume) {
    std::optional<Checkpoint> c;
    comm_.run_agreed([&] {
      c.emplace(read_checkpoint(checkpoint_file()));
      restore(*c);
    });
    on_root([&] { logs_.emplace(directory_->path(), true, c->log_sizes); });
    resumed_from = c->state.step;
  } else {
    on_root([&] {
      for (const std::string& name : run_file_names()) {  // --overwrite: nothing of the old run
        std::error_code ec;
        fs::remove(*directory_ / name.c_str(), ec);
      }
      logs_.emplace(directory_->path(), false, std::vector<std::int64_t>{});
    });
  }
  write_manifest(resumed_from);
  start_ = std::chrono::steady_clock::now();
  InterruptGuard interrupts;

  RunSummary summary;
  if (!request_.resume) {
    state_.next_eval_seconds = t_.eval_every_seconds;
    evaluate();  // the starting point, step 0
    for (TrainObserver* o : observers_) o->on_epoch_begin(0);
  }
  while (true) {
    if (auto reason = budget_reached()) {
      summary.stop_reason = *reason;
      break;
    }
    take_step();
    if (auto stop = stop_requested()) {
      summary.stop_reason = stop->reason;
      summary.failed = stop->failed;
      summary.interrupted = stop->interrupted;
      break;
    }
  }
  // The checkpoint comes first: the closing evaluation is off the schedule, and a resumed run
  // must continue as if it had never happened (its log lines are truncated away on resume).
  save_checkpoint();
  if (state_.last.step != state_.step) evaluate(/*scheduled=*/false);
  on_root([&] {
    nn::save_model<S>(*directory_ / "model.npz", *network_, params_, data_.transform);
  });
  write_manifest(resumed_from);  // now with best.npz's evaluation

  summary.steps = state_.step;
  summary.rejected_steps = state_.rejected;
  summary.curvature_products = state_.curvature_products;
  summary.seconds = elapsed();
  summary.final_eval = state_.last;
  summary.best_eval = state_.best;
  summary.out = t_.out;
  for (TrainObserver* o : observers_) o->on_run_end(summary);
  return summary;
}

}  // namespace

namespace {

template <class S>
RunSummary train_in(const RunRequest& request) {
  // Bad input is every rank's error alike; agreeing on it ends them together with its message.
  std::optional<TrainingRun<S>> run;
  dist::Communicator::world().run_agreed([&] { run.emplace(request); });
  return run->run();
}

}  // namespace

RunSummary run_training(const RunRequest& request) {
  const ThreadLimit threads(request.settings.train.threads);
  if (request.settings.model.double_precision) return train_in<double>(request);
  return train_in<float>(request);
}

}  // namespace quadra::train
