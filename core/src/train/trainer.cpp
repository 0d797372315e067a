// The training loop. See trainer.hpp for the protocol of a step and the files of a run.

#include <fmt/format.h>
#include <fmt/std.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <memory>
#include <optional>
#include <quadra/data/sampler.hpp>
#include <quadra/error.hpp>
#include <quadra/io/atomic_file.hpp>
#include <quadra/nn/bound_batch.hpp>
#include <quadra/nn/dataset_batch.hpp>
#include <quadra/nn/serialization.hpp>
#include <quadra/parallel.hpp>
#include <quadra/sdk/build_key.hpp>
#include <quadra/sdk/version.hpp>
#include <quadra/train/trainer.hpp>
#include <sstream>

#include "run_files.hpp"
#include "step_models.hpp"

namespace quadra::train {

namespace fs = std::filesystem;

data::DataSplits load_run_data(const DataSettings& settings) {
  data::LoadOptions options;
  options.validation_size = settings.validation_size;
  options.split = data::parse_split_mode(settings.split);
  options.normalization = data::parse_normalization(settings.normalize);
  options.seed = 0;  // the same split for every run and seed, so runs are comparable
  return data::load_data(settings.source, options);
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

// ---- setup helpers -----------------------------------------------------------------------------

template <class Interface>
PluginHandle<Interface> create_plugin(const PluginHost& host, const OptimizerSpec& spec,
                                      PluginKind kind, const char* fallback,
                                      const RawOptions& fallback_options) {
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
  return std::move(created).value();
}

/// The config lines a resumed run must share with the checkpoint: everything but the budget,
/// the output directory, the thread count and the progress display.
std::string run_identity(const std::string& resolved_config) {
  static const char* const kFree[] = {"epochs",   "max_steps", "max_seconds",
                                      "progress", "out",       "threads"};
  std::istringstream in(resolved_config);
  std::string line, out;
  while (std::getline(in, line)) {
    bool free = false;
    for (const char* key : kFree) {
      const std::string prefix = std::string(key) + " = ";
      free = free || line.rfind(prefix, 0) == 0;
    }
    if (!free) out += line + "\n";
  }
  return out;
}

std::string iso_time_now() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return buffer;
}

template <class M>
bool finite(const M& m) {
  return m.allFinite();
}

// ---- the run -----------------------------------------------------------------------------------

template <class S>
class TrainingRun {
 public:
  explicit TrainingRun(const RunRequest& request);
  RunSummary run();

 private:
  void setup_model();
  void setup_plugins();
  void write_manifest(std::int64_t resumed_from);
  void restore(const Checkpoint& c);
  void save_checkpoint();
  [[nodiscard]] std::optional<std::string> budget_reached() const;
  void take_step();
  /// The step protocol on the bound draws; fills `record` and applies or rejects the step.
  void attempt_step(StepRecord& record, StepBatch<S>& gradient, StepBatch<S>& directions_batch,
                    StepBatch<S>& estimate_batch, StepBatch<S>& acceptance);
  void reject(StepRecord& record, const std::string& why, bool invalid, const Vector<double>* step);
  nn::DatasetBatch<S> gather(const data::Draw& draw);
  std::pair<double, double> evaluate_on(const data::Dataset& set);
  void evaluate();
  void after_step(const StepRecord& record);
  void show_progress(bool final);
  [[nodiscard]] double elapsed() const;
  [[nodiscard]] double epoch_progress() const {
    return static_cast<double>(gradient_samples_) / static_cast<double>(train_set().size());
  }
  [[nodiscard]] const data::Dataset& train_set() const { return data_.train; }

  const RunRequest& request_;
  const TrainSettings& t_;
  const data::DataSplits& data_;
  std::optional<nn::Network> network_;
  nn::Loss loss_ = nn::Loss::kCrossEntropy;
  Vector<S> params_;

  PluginHandle<Solver> solver_;
  PluginHandle<DampingStrategy> damping_;
  PluginHandle<DebiasingStrategy> debiasing_;
  std::vector<PluginHandle<CurvatureEstimator>> curvature_;  // one per draw of the plan
  bool measure_rho_ = false;
  BatchPlan plan_;
  std::optional<data::BatchSampler> sampler_;
  data::GatherBuffer buffer_;
  ProductCounter counter_;

  std::int64_t step_ = 0;
  std::int64_t rejected_ = 0;
  std::int64_t consecutive_failures_ = 0;
  std::int64_t gradient_samples_ = 0;
  std::int64_t epochs_evaluated_ = 0;
  double train_loss_sum_ = 0;
  std::int64_t train_loss_count_ = 0;
  std::optional<Vector<S>> previous_params_;  // before a step whose loss is not yet verified
  EvalRecord best_, last_;
  bool evaluated_ = false;
  std::string fatal_;  // a reason that stops the run at once
  std::string last_rejection_;

  std::optional<RunLogs> logs_;
  std::chrono::steady_clock::time_point start_;
  double seconds_offset_ = 0;
  bool show_progress_ = false;
  double last_progress_ = -1;
};

template <class S>
TrainingRun<S>::TrainingRun(const RunRequest& request)
    : request_(request), t_(request.settings.train), data_(*request.data) {
  if (request.optimizer == nullptr || request.host == nullptr || request.data == nullptr) {
    throw Error("run_training: the request needs an optimizer, a plugin host and data");
  }
  setup_model();
  setup_plugins();
  data::SamplerOptions options;
  options.batch_size = t_.batch_size;
  options.seed = t_.seed;
  sampler_.emplace(train_set().size(), options);
  for (int d = 0; d < static_cast<int>(plan_.draws.size()); ++d) {
    const std::int64_t size = sampler_->draw_size(plan_, d);
    if (!plan_.draws[static_cast<std::size_t>(d)].whole_dataset && size > train_set().size() / 2) {
      throw Error(
          fmt::format("train.batch_size {}: draw {} of the debiasing plan needs {} samples, "
                      "more than half of the {} training samples",
                      t_.batch_size, d, size, train_set().size()));
    }
  }
  show_progress_ = t_.progress == Progress::kAlways ||
                   (t_.progress == Progress::kAuto && isatty(STDERR_FILENO) != 0);
}

template <class S>
void TrainingRun<S>::setup_model() {
  const ModelSettings& m = request_.settings.model;
  const data::Dataset& train = train_set();
  if (!m.file.empty()) {
    auto model = nn::load_model<S>(m.file);
    network_.emplace(std::move(model.network));
    params_ = std::move(model.params);
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
  const Index want = classification ? train.num_classes : train.target_dim;
  if (network_->num_outputs() != want) {
    throw Error(fmt::format("model has {} outputs; data '{}' has {} {}", network_->num_outputs(),
                            data_.source, want, classification ? "classes" : "targets"));
  }
}

template <class S>
void TrainingRun<S>::setup_plugins() {
  const PluginHost& host = *request_.host;
  const OptimizerSpec& spec = *request_.optimizer;
  solver_ = create_plugin<Solver>(host, spec, PluginKind::kSolver, "", {});
  damping_ = create_plugin<DampingStrategy>(host, spec, PluginKind::kDamping, "constant",
                                            {{"lambda", "0"}});
  debiasing_ =
      create_plugin<DebiasingStrategy>(host, spec, PluginKind::kDebiasing, "same-batch", {});
  plan_ = debiasing_->plan();
  measure_rho_ = damping_->uses_reduction_ratio();

  const bool separate_estimate =
      plan_.draw_of(BatchRole::kEstimate) != plan_.draw_of(BatchRole::kDirections);
  const bool needs_curvature = solver_->uses_curvature() || measure_rho_ || separate_estimate;
  if (!spec.choice(PluginKind::kCurvature)) {
    if (needs_curvature) {
      throw Error(fmt::format(
          "the optimizer needs curvature ({}) but the config chooses no curvature plugin; set "
          "optimizer.curvature = ggn (or another: quadra plugins)",
          solver_->uses_curvature() ? "the solver uses it"
          : measure_rho_            ? "the damping strategy measures the reduction ratio"
                                    : "the debiasing strategy re-estimates curvature"));
    }
    return;
  }
  for (std::size_t d = 0; d < plan_.draws.size(); ++d) {
    curvature_.push_back(
        create_plugin<CurvatureEstimator>(host, spec, PluginKind::kCurvature, "", {}));
  }
}

template <class S>
void TrainingRun<S>::write_manifest(std::int64_t resumed_from) {
  std::string plugins;
  for (int k = 0; k < kNumPluginKinds; ++k) {
    const auto& choice = request_.optimizer->choice(static_cast<PluginKind>(k));
    if (!choice) continue;
    const Component& c = *choice->component;
    plugins += fmt::format(
        "{}    {{\"kind\": {}, \"name\": {}, \"library\": {}, \"version\": {}, "
        "\"file\": {}}}",
        plugins.empty() ? "" : ",\n", json_string(to_string(c.kind)), json_string(c.info.name),
        json_string(c.library_name), json_string(c.library_version), json_string(c.file.string()));
  }
  const std::string text = fmt::format(
      "{{\n  \"quadra\": {},\n  \"plugin_abi\": {},\n  \"build_key\": {},\n  \"written\": {},\n"
      "  \"resumed_from_step\": {},\n  \"seed\": {},\n  \"threads\": {},\n  \"precision\": {},\n"
      "  \"model\": {{\"spec\": {}, \"parameters\": {}}},\n"
      "  \"data\": {{\"source\": {}, \"train\": {}, \"validation\": {}, \"test\": {}}},\n"
      "  \"plugins\": [\n{}\n  ],\n  \"config\": {}\n}}\n",
      json_string(QUADRA_SDK_VERSION_STRING), QUADRA_PLUGIN_ABI_VERSION,
      json_string(QUADRA_BUILD_KEY), json_string(iso_time_now()),
      resumed_from < 0 ? "null" : std::to_string(resumed_from), t_.seed, num_threads(),
      json_string(std::is_same_v<S, double> ? "float64" : "float32"), json_string(network_->spec()),
      network_->num_parameters(), json_string(data_.source), data_.train.size(),
      data_.validation.size(), data_.test.size(), plugins, json_string(request_.resolved_config));
  io::write_file_atomically(t_.out / "manifest.json", text);
}

template <class S>
void TrainingRun<S>::restore(const Checkpoint& c) {
  const fs::path file = t_.out / "checkpoint.npz";
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
  if (!c.previous_params.bytes.empty()) {
    const auto previous = c.previous_params.to_vector<S>();
    previous_params_ =
        Eigen::Map<const Vector<S>>(previous.data(), static_cast<Index>(previous.size()));
  }
  if (Status s = solver_->load_state(c.solver_state); !s.is_ok()) {
    throw Error(fmt::format("{}: the solver refused its saved state: {}", file, s.message()));
  }
  if (Status s = damping_->load_state(c.damping_state); !s.is_ok()) {
    throw Error(
        fmt::format("{}: the damping strategy refused its saved state: {}", file, s.message()));
  }
  // The sampler is a deterministic function of its seed and the plans drawn: replaying the
  // draws puts every role's permutation and cursor where the checkpoint left them.
  for (std::int64_t i = 0; i < c.sampler_steps; ++i) sampler_->next(plan_);
  step_ = c.step;
  rejected_ = c.rejected;
  consecutive_failures_ = c.consecutive_failures;
  counter_.products = c.curvature_products;
  gradient_samples_ = c.gradient_samples;
  epochs_evaluated_ = c.epochs_evaluated;
  train_loss_sum_ = c.train_loss_sum;
  train_loss_count_ = c.train_loss_count;
  best_ = c.best;
  last_ = c.last;
  evaluated_ = true;
  seconds_offset_ = c.seconds;
}

template <class S>
void TrainingRun<S>::save_checkpoint() {
  Checkpoint c;
  c.step = step_;
  c.rejected = rejected_;
  c.consecutive_failures = consecutive_failures_;
  c.curvature_products = counter_.products;
  c.sampler_steps = sampler_->steps();
  c.gradient_samples = gradient_samples_;
  c.epochs_evaluated = epochs_evaluated_;
  c.train_loss_count = train_loss_count_;
  c.seconds = elapsed();
  c.train_loss_sum = train_loss_sum_;
  c.log_sizes = logs_->sizes();
  c.best = best_;
  c.last = last_;
  c.params = io::NpyArray::from<S>({params_.size()}, params_.data());
  if (previous_params_) {
    c.previous_params = io::NpyArray::from<S>({previous_params_->size()}, previous_params_->data());
  }
  if (Status s = solver_->save_state(c.solver_state); !s.is_ok()) {
    throw Error("the solver could not save its state: " + s.message());
  }
  if (Status s = damping_->save_state(c.damping_state); !s.is_ok()) {
    throw Error("the damping strategy could not save its state: " + s.message());
  }
  c.identity = run_identity(request_.resolved_config);
  write_checkpoint(t_.out / "checkpoint.npz", c);
}

template <class S>
double TrainingRun<S>::elapsed() const {
  return seconds_offset_ +
         std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

template <class S>
std::optional<std::string> TrainingRun<S>::budget_reached() const {
  if (t_.max_steps > 0 && step_ >= t_.max_steps) {
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
nn::DatasetBatch<S> TrainingRun<S>::gather(const data::Draw& draw) {
  return nn::dataset_batch<S>(train_set(), data::gather(train_set(), draw, buffer_));
}

template <class S>
void TrainingRun<S>::reject(StepRecord& record, const std::string& why, bool invalid,
                            const Vector<double>* step) {
  if (invalid) damping_->step_invalid();
  if (step != nullptr) solver_->step_taken(*step, false);
  record.accepted = false;
  record.note = why;
  last_rejection_ = why;
  ++rejected_;
  ++consecutive_failures_;
}

template <class S>
void TrainingRun<S>::take_step() {
  const data::StepBatches& draws = sampler_->next(plan_);
  gradient_samples_ += draws.for_role(BatchRole::kGradient).size();
  StepRecord record;
  record.step = step_;
  record.lambda = damping_->lambda();

  std::vector<std::unique_ptr<StepBatch<S>>> batches;
  for (int d = 0; d < draws.num_draws(); ++d) {
    CurvatureEstimator* estimator =
        curvature_.empty() ? nullptr : curvature_[static_cast<std::size_t>(d)].get();
    batches.push_back(std::make_unique<StepBatch<S>>(*network_, params_, gather(draws.draw(d)),
                                                     loss_, t_.weight_decay, estimator, counter_));
  }
  const auto batch = [&](BatchRole role) -> StepBatch<S>& {
    return *batches[static_cast<std::size_t>(draws.draw_of(role))];
  };
  attempt_step(record, batch(BatchRole::kGradient), batch(BatchRole::kDirections),
               batch(BatchRole::kEstimate), batch(BatchRole::kAcceptance));
  record.curvature_products = counter_.products;
  ++step_;
  record.epoch = epoch_progress();
  record.seconds = elapsed();
  after_step(record);
}

template <class S>
void TrainingRun<S>::attempt_step(StepRecord& record, StepBatch<S>& gradient,
                                  StepBatch<S>& directions_batch, StepBatch<S>& estimate_batch,
                                  StepBatch<S>& acceptance) {
  record.loss = gradient.data_loss();
  if (!std::isfinite(record.loss)) {
    // Only an unverified step (no acceptance test) can lead here: undo it.
    if (!previous_params_) {
      fatal_ = fmt::format(
          "the training loss is {} at step {} before any unverified step; the "
          "model or data produce non-finite values",
          record.loss, step_);
      return reject(record, "non-finite loss", true, nullptr);
    }
    params_ = *previous_params_;
    previous_params_.reset();
    return reject(record,
                  fmt::format("loss {} after the previous step; that step was undone", record.loss),
                  true, nullptr);
  }
  previous_params_.reset();
  train_loss_sum_ += record.loss;
  ++train_loss_count_;

  StepQuadraticModel<S> model(gradient, directions_batch, params_, step_, t_.seed);
  Directions directions;
  if (Status s = solver_->propose(model, record.lambda, directions); !s.is_ok()) {
    return reject(record, "solver: " + s.message(), true, nullptr);
  }
  const Index k = directions.basis.cols();
  record.directions = static_cast<int>(k);
  record.iterations = directions.iterations;
  if (k < 1 || directions.basis.rows() != params_.size() ||
      directions.own_coefficients.size() != k || !finite(directions.basis) ||
      !finite(directions.own_coefficients)) {
    return reject(record,
                  fmt::format("solver proposed {}x{} directions with {} coefficients (finite: {}); "
                              "expected {} rows, at least one column, finite values",
                              directions.basis.rows(), k, directions.own_coefficients.size(),
                              finite(directions.basis) && finite(directions.own_coefficients),
                              params_.size()),
                  true, nullptr);
  }

  Vector<double> coefficients(k);
  StepDirectionalModel<S> estimate(estimate_batch, directions.basis);
  if (Status s = debiasing_->coefficients(directions.own_coefficients, estimate, record.lambda,
                                          coefficients);
      !s.is_ok()) {
    Vector<double> none = Vector<double>::Zero(params_.size());
    return reject(record, "debiasing: " + s.message(), true, &none);
  }
  Vector<double> step = t_.step_scale * (directions.basis * coefficients);
  if (!finite(step)) {
    return reject(record, "the step is not finite", true, &step);
  }

  // Acceptance batch: Armijo search and the reduction ratio.
  bool verified = false;
  if (measure_rho_ || t_.line_search == LineSearch::kArmijo) {
    const double before = acceptance.loss();
    const double slope = acceptance.gradient().dot(step);
    double after = acceptance.loss_at(step);
    if (t_.line_search == LineSearch::kArmijo && slope < 0.0) {
      double t = 1.0;
      for (int halvings = 0; !(after <= before + 1e-4 * t * slope) && halvings < 20; ++halvings) {
        t *= 0.5;
        after = acceptance.loss_at(t * step);
      }
      if (t != 1.0) step *= t;
    }
    if (!std::isfinite(after)) {
      return reject(record, fmt::format("acceptance loss {} after the step", after), true, &step);
    }
    verified = true;
    if (measure_rho_) {
      Vector<double> cs(step.size());
      if (Status s = acceptance.curvature_times(step, cs); !s.is_ok()) {
        return reject(record, "curvature on the acceptance batch: " + s.message(), true, &step);
      }
      const double predicted = slope + 0.5 * step.dot(cs);
      if (!(predicted < 0.0)) {
        return reject(
            record,
            fmt::format("the acceptance model predicts no decrease ({:.3g}) for this step",
                        predicted),
            true, &step);
      }
      record.rho = (after - before) / predicted;
      if (!std::isfinite(record.rho)) {
        return reject(record, "rho is not finite", true, &step);
      }
    }
  }
  record.step_norm = step.norm();
  const StepVerdict verdict = damping_->step_measured(measure_rho_ ? record.rho : kNaN);
  if (verdict == StepVerdict::kReject) {
    return reject(record, "rejected by the damping strategy", false, &step);
  }
  if (!verified) previous_params_ = params_;
  params_ += step.template cast<S>();
  solver_->step_taken(step, true);
  record.accepted = true;
  consecutive_failures_ = 0;
}

template <class S>
std::pair<double, double> TrainingRun<S>::evaluate_on(const data::Dataset& set) {
  if (set.empty()) return {kNaN, kNaN};
  const data::Draw all = data::Draw::whole(set.size(), t_.eval_chunk);
  double loss = 0;
  std::int64_t correct = 0;
  for (std::int64_t c = 0; c < all.num_chunks(); ++c) {
    const data::IndexRange range = all.chunk(c);
    const data::BatchView view = data::gather(set, all, range, buffer_);
    const nn::DatasetBatch<S> batch = nn::dataset_batch<S>(set, view);
    const auto& targets = batch.targets;
    nn::BoundBatch<S> bound(*network_, params_, batch.inputs, targets, loss_);
    loss += static_cast<double>(bound.loss()) * static_cast<double>(view.count);
    if (set.task == data::Task::kClassification) {
      const Matrix<S>& outputs = bound.outputs();
      for (Index n = 0; n < outputs.cols(); ++n) {
        Index best = 0;
        outputs.col(n).maxCoeff(&best);
        correct += best == targets.labels[static_cast<std::size_t>(n)] ? 1 : 0;
      }
    }
  }
  const double n = static_cast<double>(set.size());
  return {loss / n,
          set.task == data::Task::kClassification ? static_cast<double>(correct) / n : kNaN};
}

template <class S>
void TrainingRun<S>::evaluate() {
  EvalRecord e;
  e.step = step_;
  e.epoch = epoch_progress();
  e.train_loss =
      train_loss_count_ > 0 ? train_loss_sum_ / static_cast<double>(train_loss_count_) : kNaN;
  std::tie(e.val_loss, e.val_accuracy) = evaluate_on(data_.validation);
  std::tie(e.test_loss, e.test_accuracy) = evaluate_on(data_.test);
  e.seconds = elapsed();
  train_loss_sum_ = 0;
  train_loss_count_ = 0;
  last_ = e;
  if (!evaluated_ || (std::isfinite(e.val_loss) && !(e.val_loss >= best_.val_loss))) best_ = e;
  evaluated_ = true;
  logs_->evaluation(e);
  logs_->flush();
  for (TrainObserver* o : request_.observers) o->on_evaluation(e);
}

template <class S>
void TrainingRun<S>::after_step(const StepRecord& record) {
  logs_->step(record);
  for (TrainObserver* o : request_.observers) o->on_step(record);
  const auto whole_epochs = static_cast<std::int64_t>(std::floor(epoch_progress()));
  const bool epoch_ended = whole_epochs > epochs_evaluated_;
  if (epoch_ended) {
    for (TrainObserver* o : request_.observers) o->on_epoch_end(epochs_evaluated_);
  }
  if ((t_.eval_every > 0 && step_ % t_.eval_every == 0) || (t_.eval_every == 0 && epoch_ended)) {
    evaluate();
  }
  if (epoch_ended) {
    epochs_evaluated_ = whole_epochs;
    for (TrainObserver* o : request_.observers) o->on_epoch_begin(whole_epochs);
  }
  if (t_.checkpoint_every > 0 && step_ % t_.checkpoint_every == 0) save_checkpoint();
  show_progress(false);
}

template <class S>
void TrainingRun<S>::show_progress(bool final) {
  if (!show_progress_) return;
  const double now = elapsed();
  if (!final && now - last_progress_ < 0.2) return;
  last_progress_ = now;
  std::string budget;
  if (t_.epochs > 0) budget = fmt::format("/{:g}", t_.epochs);
  std::fprintf(
      stderr, "\r%s epoch %.2f%s  step %lld  loss %.4f  val acc %s  lambda %.2g  %.0fs   %s",
      request_.label.c_str(), epoch_progress(), budget.c_str(), static_cast<long long>(step_),
      train_loss_count_ > 0 ? train_loss_sum_ / static_cast<double>(train_loss_count_)
                            : last_.train_loss,
      std::isfinite(last_.val_accuracy) ? fmt::format("{:.2f}%", 100 * last_.val_accuracy).c_str()
                                        : "-",
      damping_->lambda(), now, final ? "\n" : "");
  std::fflush(stderr);
}

template <class S>
RunSummary TrainingRun<S>::run() {
  std::error_code ec;
  fs::create_directories(t_.out, ec);
  if (ec) throw Error(fmt::format("cannot create train.out {}: {}", t_.out, ec.message()));
  std::int64_t resumed_from = -1;
  if (request_.resume) {
    const Checkpoint c = read_checkpoint(t_.out / "checkpoint.npz");
    restore(c);
    logs_.emplace(t_.out, true, c.log_sizes);
    resumed_from = c.step;
  } else {
    logs_.emplace(t_.out, false, std::vector<std::int64_t>{});
  }
  write_manifest(resumed_from);
  start_ = std::chrono::steady_clock::now();
  InterruptGuard interrupts;

  RunSummary summary;
  if (!request_.resume) {
    evaluate();  // the starting point, step 0
    for (TrainObserver* o : request_.observers) o->on_epoch_begin(0);
  }
  while (true) {
    if (auto reason = budget_reached()) {
      summary.stop_reason = *reason;
      break;
    }
    take_step();
    if (!fatal_.empty()) {
      summary.stop_reason = fatal_;
      summary.failed = true;
      break;
    }
    if (consecutive_failures_ >= t_.max_failures) {
      summary.stop_reason = fmt::format(
          "{} consecutive steps were rejected (train.max_failures); "
          "the last one: {}",
          consecutive_failures_, last_rejection_);
      summary.failed = true;
      break;
    }
    std::string observer_stop;
    for (TrainObserver* o : request_.observers) {
      if (observer_stop.empty()) observer_stop = o->stop_reason();
    }
    if (!observer_stop.empty()) {
      summary.stop_reason = observer_stop;
      break;
    }
    if (InterruptGuard::requested()) {
      summary.stop_reason = "interrupted; continue with --resume";
      summary.failed = true;
      summary.interrupted = true;
      break;
    }
  }
  // The checkpoint comes first: the closing evaluation is off the schedule, and a resumed run
  // must continue as if it had never happened (its log lines are truncated away on resume).
  save_checkpoint();
  if (last_.step != step_) evaluate();
  nn::save_model<S>(t_.out / "model.npz", *network_, params_);
  show_progress(true);

  summary.steps = step_;
  summary.rejected_steps = rejected_;
  summary.curvature_products = counter_.products;
  summary.seconds = elapsed();
  summary.final_eval = last_;
  summary.best_eval = best_;
  summary.out = t_.out;
  return summary;
}

}  // namespace

RunSummary run_training(const RunRequest& request) {
  const ThreadLimit threads(request.settings.train.threads);
  if (request.settings.model.double_precision) return TrainingRun<double>(request).run();
  return TrainingRun<float>(request).run();
}

}  // namespace quadra::train
