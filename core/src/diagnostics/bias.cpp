// Bias diagnostics of mini-batch quadratics. See quadra/diagnostics/bias.hpp.

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <quadra/curvature/engine_backend.hpp>
#include <quadra/curvature/preconditioner.hpp>
#include <quadra/data/sampler.hpp>
#include <quadra/dist/communicator.hpp>
#include <quadra/diagnostics/bias.hpp>
#include <quadra/error.hpp>
#include <quadra/linalg/cg.hpp>
#include <quadra/linalg/lanczos.hpp>
#include <quadra/nn/dataset_batch.hpp>
#include <quadra/sdk/debiasing.hpp>

namespace quadra::diagnostics {

// --- statistics ---------------------------------------------------------------------------

namespace {

/// Continued fraction of the regularised incomplete beta function (modified Lentz).
double beta_fraction(double a, double b, double x) {
  constexpr double kTiny = 1e-300;
  const auto guard = [](double v) { return std::abs(v) < kTiny ? kTiny : v; };
  double c = 1.0;
  double d = 1.0 / guard(1.0 - (a + b) * x / (a + 1.0));
  double h = d;
  for (int m = 1; m <= 100000; ++m) {
    const double m2 = 2.0 * m;
    const double even = m * (b - m) * x / ((a + m2 - 1.0) * (a + m2));
    d = 1.0 / guard(1.0 + even * d);
    c = guard(1.0 + even / c);
    h *= d * c;
    const double odd = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0));
    d = 1.0 / guard(1.0 + odd * d);
    c = guard(1.0 + odd / c);
    const double delta = d * c;
    h *= delta;
    if (std::abs(delta - 1.0) < 1e-16) break;
  }
  return h;
}

/// I_x(a, b), with y = 1 - x passed separately so that x near 1 keeps its precision.
double incomplete_beta(double a, double b, double x, double y) {
  if (x <= 0.0) return 0.0;
  if (y <= 0.0) return 1.0;
  const double front = std::exp(std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) +
                                a * std::log(x) + b * std::log(y));
  if (x < (a + 1.0) / (a + b + 2.0)) return front * beta_fraction(a, b, x) / a;
  return 1.0 - front * beta_fraction(b, a, y) / b;
}

/// P(T > t) for t >= 0.
double t_upper_tail(double t, double dof) {
  const double t2 = t * t;
  return 0.5 * incomplete_beta(0.5 * dof, 0.5, dof / (dof + t2), t2 / (dof + t2));
}

}  // namespace

double student_t_quantile(double p, double dof) {
  if (!(p > 0.0 && p < 1.0)) throw Error(fmt::format("t quantile: p = {}; expected 0 < p < 1", p));
  if (!(dof > 0.0) || !std::isfinite(dof)) {
    throw Error(fmt::format("t quantile: {} degrees of freedom; expected a finite number > 0", dof));
  }
  if (p < 0.5) return -student_t_quantile(1.0 - p, dof);
  const double tail = 1.0 - p;
  double lo = 0.0;
  double hi = 1.0;
  while (t_upper_tail(hi, dof) > tail) hi *= 2.0;
  // The tail is monotone in t: bisection to the last bit is robust and cheap enough.
  for (int i = 0; i < 200 && hi - lo > 1e-15 * hi; ++i) {
    const double mid = 0.5 * (lo + hi);
    (t_upper_tail(mid, dof) > tail ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

namespace {

std::vector<double> finite_values(std::span<const double> values) {
  std::vector<double> out;
  for (double v : values) {
    if (std::isfinite(v)) out.push_back(v);
  }
  return out;
}

}  // namespace

MeanInterval mean_interval(std::span<const double> values, double level) {
  if (!(level > 0.0 && level < 1.0)) {
    throw Error(fmt::format("confidence level {}; expected a number in (0, 1)", level));
  }
  const std::vector<double> x = finite_values(values);
  MeanInterval out;
  out.count = static_cast<Index>(x.size());
  if (x.empty()) return out;
  double sum = 0.0;
  for (double v : x) sum += v;
  const auto n = static_cast<double>(x.size());
  out.mean = sum / n;
  if (x.size() < 2) return out;
  double squares = 0.0;
  for (double v : x) squares += (v - out.mean) * (v - out.mean);
  out.sd = std::sqrt(squares / (n - 1.0));
  const double half = student_t_quantile(0.5 * (1.0 + level), n - 1.0) * out.sd / std::sqrt(n);
  out.low = out.mean - half;
  out.high = out.mean + half;
  return out;
}

Quartiles quartiles(std::span<const double> values) {
  // Only NaN is dropped: an infinite loss is a diverged step and must count.
  std::vector<double> x;
  for (double v : values) {
    if (!std::isnan(v)) x.push_back(v);
  }
  Quartiles out;
  out.count = static_cast<Index>(x.size());
  if (x.empty()) return out;
  std::sort(x.begin(), x.end());
  const auto at = [&](double q) {
    const double h = q * static_cast<double>(x.size() - 1);
    const auto i = static_cast<std::size_t>(std::floor(h));
    const std::size_t j = std::min(i + 1, x.size() - 1);
    const double fraction = h - static_cast<double>(i);
    return fraction == 0.0 ? x[i] : x[i] + fraction * (x[j] - x[i]);  // 0 * Inf would be NaN
  };
  out.q1 = at(0.25);
  out.median = at(0.5);
  out.q3 = at(0.75);
  return out;
}

// --- binding samples to the engine ---------------------------------------------------------

namespace {

template <class S>
PluginHandle<CurvatureEstimator> create_curvature(const Problem<S>& p) {
  auto created = p.host.template create<CurvatureEstimator>(p.curvature, p.curvature_options);
  if (!created.is_ok()) throw Error(created.status().message());
  return std::move(created).value();
}

/// One set of samples bound to the engine at the problem's parameters, with its own curvature
/// plugin (bound on first use). Products and gradients come back in double.
template <class S>
class BoundSet {
 public:
  BoundSet(const Problem<S>& p, const data::BatchView& view)
      : host_(p.host),
        samples_(nn::dataset_batch<S>(p.train, view)),
        // Under mpirun this rank's share of the samples; every value below is the whole set's.
        bound_(nn::bind_split<S>(p.network, p.params, samples_, p.loss,
                                 dist::Communicator::world())),
        backend_(bound_),
        estimator_(create_curvature(p)),
        op_(*estimator_, bound_.num_parameters()) {}

  [[nodiscard]] double loss() const { return static_cast<double>(bound_.loss()); }
  [[nodiscard]] const PluginHost& host() const { return host_; }
  [[nodiscard]] const nn::DatasetBatch<S>& samples() const { return samples_; }

  const Vector<double>& gradient() {
    if (!gradient_) {
      Vector<S> g(bound_.num_parameters());
      bound_.gradient(g);
      gradient_.emplace(g.template cast<double>());
    }
    return *gradient_;
  }

  Status bind() {
    if (bound_curvature_) return Status::ok();
    if (Status s = estimator_->bind(backend_); !s.is_ok()) return s;
    bound_curvature_ = true;
    return Status::ok();
  }

  /// The curvature as an operator in the model's precision; bind() first.
  linalg::LinearOperator<S>& op() { return op_; }
  /// The engine bound to these samples (for a preconditioner's plugin).
  ICurvatureBackend& backend() { return backend_; }

  /// out = C v, computed in the model's precision.
  Status times(ConstVectorRef<double> v, VectorRef<double> out) {
    if (Status s = bind(); !s.is_ok()) return s;
    in_ = v.template cast<S>();
    out_.resize(v.size());
    if (Status s = op_.apply(in_, out_); !s.is_ok()) return s;
    out = out_.template cast<double>();
    return Status::ok();
  }

 private:
  const PluginHost& host_;
  nn::DatasetBatch<S> samples_;
  nn::BoundBatch<S> bound_;
  EngineCurvatureBackend<S> backend_;
  PluginHandle<CurvatureEstimator> estimator_;
  CurvatureOperator<S> op_;
  bool bound_curvature_ = false;
  std::optional<Vector<double>> gradient_;
  Vector<S> in_, out_;
};

/// The samples `indices` of the training set (in that order), gathered into `buffer`.
data::BatchView gather_indices(const data::Dataset& set, std::span<const std::int64_t> indices,
                               data::GatherBuffer& buffer) {
  const auto n = static_cast<std::size_t>(indices.size());
  buffer.features.resize(n * static_cast<std::size_t>(set.feature_dim()));
  set.gather_features(indices, buffer.features.data());
  data::BatchView view;
  view.count = static_cast<std::int64_t>(n);
  view.features = buffer.features.data();
  if (set.task == data::Task::kClassification) {
    buffer.labels.resize(n);
    set.gather_labels(indices, buffer.labels.data());
    view.labels = buffer.labels.data();
  } else {
    buffer.targets.resize(n * static_cast<std::size_t>(set.target_dim));
    set.gather_targets(indices, buffer.targets.data());
    view.targets = buffer.targets.data();
  }
  return view;
}

template <class S>
std::unique_ptr<BoundSet<S>> bind_indices(const Problem<S>& p, std::span<const std::int64_t> indices) {
  data::GatherBuffer buffer;
  return std::make_unique<BoundSet<S>>(p, gather_indices(p.train, indices, buffer));
}

template <class S>
Result<Directional> measure(BoundSet<S>& set, const Matrix<double>& u) {
  Directional out;
  out.slopes = u.transpose() * set.gradient();
  out.curvatures.resize(u.cols());
  Vector<double> cu(u.rows());
  for (Index k = 0; k < u.cols(); ++k) {
    if (Status s = set.times(u.col(k), cu); !s.is_ok()) return s;
    out.curvatures(k) = u.col(k).dot(cu);
  }
  return out;
}

/// Calls visit(set, weight) for every chunk of the training set, weight = chunk size / N, in
/// chunk order; stops at the first non-ok status.
template <class S, class Visit>
Status for_each_chunk(const Problem<S>& p, Visit&& visit) {
  const data::Draw all = data::Draw::whole(p.train.size(), std::max<std::int64_t>(1, p.chunk_size));
  const auto n = static_cast<double>(p.train.size());
  for (std::int64_t c = 0; c < all.num_chunks(); ++c) {
    const data::IndexRange range = all.chunk(c);
    data::GatherBuffer buffer;  // unused: whole-dataset chunks point into the data set
    BoundSet<S> set(p, data::gather(p.train, all, range, buffer));
    if (Status s = visit(set, static_cast<double>(range.size()) / n); !s.is_ok()) return s;
  }
  return Status::ok();
}

/// Full-batch measurement along `u`, and the full-batch loss.
template <class S>
Result<Directional> full_measure(const Problem<S>& p, const Matrix<double>& u, double* loss) {
  Directional acc{Vector<double>::Zero(u.cols()), Vector<double>::Zero(u.cols())};
  double total = 0.0;
  const Status status = for_each_chunk(p, [&](BoundSet<S>& set, double weight) -> Status {
    auto m = measure(set, u);
    if (!m.is_ok()) return m.status();
    acc.slopes += weight * m.value().slopes;
    acc.curvatures += weight * m.value().curvatures;
    total += weight * set.loss();
    return Status::ok();
  });
  if (!status.is_ok()) return status;
  if (loss != nullptr) *loss = total;
  return acc;
}

}  // namespace

template <class S>
Result<Directional> measure_on_samples(const Problem<S>& p, std::span<const std::int64_t> indices,
                                      const Matrix<double>& directions) {
  return measure(*bind_indices(p, indices), directions);
}

template <class S>
Result<Directional> measure_on_training_set(const Problem<S>& p, const Matrix<double>& directions) {
  return full_measure(p, directions, nullptr);
}

// --- experiment 1: bias along directions chosen on B1 ----------------------------------------

const char* to_string(DirectionSource source) {
  return source == DirectionSource::kEigen ? "eigen" : "cg";
}

DirectionSource parse_direction_source(std::string_view text, std::string_view option) {
  if (text == "eigen") return DirectionSource::kEigen;
  if (text == "cg") return DirectionSource::kCg;
  throw Error(fmt::format("{} '{}': expected eigen or cg", option, text));
}

const char* to_string(Estimator estimator) {
  switch (estimator) {
    case Estimator::kSameBatch: return "same-batch";
    case Estimator::kIndependent: return "independent";
    case Estimator::kFullBatch: return "full-batch";
  }
  return "?";
}

const char* to_string(Quantity quantity) {
  return quantity == Quantity::kCurvature ? "curvature" : "slope";
}

const BiasRow& BiasReport::row(Index direction, Quantity quantity, Estimator estimator) const {
  const Index i = (direction * 2 + static_cast<Index>(quantity)) * kNumEstimators +
                  static_cast<Index>(estimator);
  return rows.at(static_cast<std::size_t>(i));
}

namespace {

/// Two disjoint draws per step: B1 serves gradient and directions, B2 estimate and acceptance.
BatchPlan two_draw_plan(double estimate_size) {
  BatchPlan plan;
  plan.draws = {BatchDraw{1.0, false}, BatchDraw{estimate_size, false}};
  plan.draw_of_role = {0, 0, 1, 1};
  return plan;
}

data::SamplerOptions sampler_options(std::int64_t batch_size, std::uint64_t seed) {
  data::SamplerOptions options;
  options.batch_size = batch_size;
  options.seed = seed;
  return options;
}

/// Checks shared by both experiments; creating the curvature plugin once up front makes an
/// unknown name or bad option fail before any work.
template <class S>
void check_common(const Problem<S>& p, std::int64_t batch, std::int64_t second, int repeats) {
  if (repeats < 2) {
    throw Error(fmt::format("repeats = {}; expected at least 2 (a confidence interval needs two)",
                            repeats));
  }
  if (batch < 1) throw Error(fmt::format("batch size {}; expected at least 1", batch));
  if (batch + second > p.train.size()) {
    throw Error(fmt::format("batch size {}: two disjoint batches need {} samples, but the training "
                            "set '{}' has {}; expected a batch size of at most {}",
                            batch, batch + second, p.train.name, p.train.size(),
                            p.train.size() * batch / (batch + second)));
  }
  if (p.chunk_size < 1) throw Error(fmt::format("chunk size {}; expected at least 1", p.chunk_size));
  if (p.params.size() != p.network.num_parameters()) {
    throw Error(fmt::format("{} parameters given; the model '{}' has {}", p.params.size(),
                            p.network.spec(), p.network.num_parameters()));
  }
  (void)create_curvature(p);
}

template <class S>
void check_bias_options(const Problem<S>& p, const BiasOptions& o) {
  const Index n = p.network.num_parameters();
  if (o.top < 1 || o.top > n) {
    throw Error(fmt::format("top = {} directions; expected 1 to {} (the model's parameters)", o.top, n));
  }
  if (!(o.cg_damping >= 0.0) || !std::isfinite(o.cg_damping)) {
    throw Error(fmt::format("CG damping {}; expected a finite number >= 0", o.cg_damping));
  }
  if (!(o.lanczos_tolerance >= 0.0)) {
    throw Error(fmt::format("Lanczos tolerance {}; expected a number >= 0", o.lanczos_tolerance));
  }
  if (!(o.level > 0.0 && o.level < 1.0)) {
    throw Error(fmt::format("confidence level {}; expected a number in (0, 1)", o.level));
  }
  check_common(p, o.batch_size, o.batch_size, o.repeats);
}

std::uint64_t repeat_seed(std::uint64_t seed, int repeat) {
  return seed ^ (0x9e3779b97f4a7c15ULL * static_cast<std::uint64_t>(repeat + 1));
}

template <class S>
Result<Matrix<double>> eigen_directions(BoundSet<S>& b1, const BiasOptions& o, int repeat,
                                        BiasRepeat& out) {
  if (Status s = b1.bind(); !s.is_ok()) return s;
  linalg::LanczosOptions lanczos;
  lanczos.max_products = std::min(b1.op().dim(), std::max(o.lanczos_max_products, o.top));
  lanczos.tolerance = o.lanczos_tolerance;
  lanczos.seed = repeat_seed(o.seed, repeat);
  auto result = linalg::lanczos_largest<S>(b1.op(), o.top, lanczos);
  if (!result.status.is_ok()) {
    return Status::numerical_issue(
        fmt::format("repeat {}: Lanczos on B1 failed: {}", repeat + 1, result.status.message()));
  }
  out.ritz_values = result.eigenvalues;
  out.lanczos_converged = result.converged;
  return Matrix<double>(result.eigenvectors.template cast<double>());
}

/// CG on (C + lambda I) x = -g on B1: the host's CG that the `cg` solver plugin runs (products
/// in the model's precision, CG itself in double, the same preconditioner), without Martens'
/// rule or a warm start.
template <class S>
Result<CgOutcome> cg_on(const PluginHost& host, BoundSet<S>& b1, const CgRequest& request) {
  if (Status s = b1.bind(); !s.is_ok()) return s;
  const Vector<double>& g = b1.gradient();
  linalg::FunctionOperator<double> op(
      g.size(), [&b1](ConstVectorRef<double> x, VectorRef<double> y) { return b1.times(x, y); });
  CgOutcome out;
  std::unique_ptr<Preconditioner> m;
  if (!request.preconditioner.empty()) {
    auto made = Preconditioner::create(host, request.preconditioner, b1.backend(),
                                       request.lambda + request.preconditioner_damping,
                                       request.preconditioner_exponent);
    if (!made.is_ok()) return made.status();
    m = std::move(made).value();
  }
  if (Status s = linalg::newton_cg(op, g, request, out, m.get()); !s.is_ok()) return s;
  return out;
}

CgRequest plain_cg(double lambda, Index iterations, double tolerance) {
  CgRequest request;
  request.lambda = lambda;
  request.max_iterations = iterations;
  request.tolerance = tolerance;
  request.martens_rule = false;
  return request;
}

template <class S>
Result<Matrix<double>> cg_directions(BoundSet<S>& b1, const BiasOptions& o, int repeat) {
  // K directions, not a solution, are wanted.
  auto cg = cg_on(b1.host(), b1, plain_cg(o.cg_damping, o.top, 0.0));
  if (!cg.is_ok()) {
    return Status::numerical_issue(
        fmt::format("repeat {}: CG on B1 failed: {}", repeat + 1, cg.status().message()));
  }
  const CgOutcome& result = cg.value();
  if (result.stop == CgStop::kNegativeCurvature) {
    return Status::numerical_issue(fmt::format(
        "repeat {}: CG on B1 met non-positive curvature p'(C + lambda I)p = {:.3g} after {} of "
        "the {} directions asked for; raise --cg-damping",
        repeat + 1, result.negative_curvature, result.directions.cols(), o.top));
  }
  if (result.directions.cols() < o.top) {
    return Status::numerical_issue(fmt::format(
        "repeat {}: CG on B1 converged after {} of the {} directions asked for; ask for fewer",
        repeat + 1, result.directions.cols(), o.top));
  }
  return result.directions;
}

/// Unit directions with a non-positive same-batch slope: an eigenvector's sign is arbitrary,
/// and fixing it by B1 alone keeps the B2 measurements unbiased.
void normalise_and_orient(Matrix<double>& u, const Vector<double>& g) {
  for (Index k = 0; k < u.cols(); ++k) {
    u.col(k).normalize();
    if (u.col(k).dot(g) > 0.0) u.col(k) *= -1.0;
  }
}

/// Directions on B1, measured on B1 and B2; returns the directions for the full-batch pass.
template <class S>
Result<Matrix<double>> run_repeat(const Problem<S>& p, const BiasOptions& o,
                                  const data::StepBatches& step, int repeat, BiasRepeat& out) {
  auto b1 = bind_indices(p, step.draw(0).indices());
  auto chosen = o.directions == DirectionSource::kEigen ? eigen_directions(*b1, o, repeat, out)
                                                        : cg_directions(*b1, o, repeat);
  if (!chosen.is_ok()) return chosen.status();
  Matrix<double> u = std::move(chosen).value();
  normalise_and_orient(u, b1->gradient());
  out.by_estimator.resize(kNumEstimators);
  auto same = measure(*b1, u);
  if (!same.is_ok()) return same.status();
  out.by_estimator[static_cast<std::size_t>(Estimator::kSameBatch)] = std::move(same).value();
  b1.reset();  // free B1's activations before binding B2
  auto b2 = bind_indices(p, step.draw(1).indices());
  auto independent = measure(*b2, u);
  if (!independent.is_ok()) return independent.status();
  out.by_estimator[static_cast<std::size_t>(Estimator::kIndependent)] = std::move(independent).value();
  return u;
}

const Vector<double>& pick(const Directional& d, Quantity q) {
  return q == Quantity::kCurvature ? d.curvatures : d.slopes;
}

/// Per direction and quantity: the estimates over repeats, and the relative bias of the
/// mini-batch ones, computed per repeat against the same repeat's full-batch value.
std::vector<BiasRow> summarize(const BiasReport& report) {
  std::vector<BiasRow> rows;
  const double level = report.options.level;
  const auto values = [&](Index k, Quantity q, Estimator e) {
    std::vector<double> v;
    for (const BiasRepeat& r : report.repeats) v.push_back(pick(r.by_estimator[static_cast<std::size_t>(e)], q)(k));
    return v;
  };
  for (Index k = 0; k < report.options.top; ++k) {
    for (const Quantity q : {Quantity::kCurvature, Quantity::kSlope}) {
      const std::vector<double> full = values(k, q, Estimator::kFullBatch);
      for (const Estimator e : {Estimator::kSameBatch, Estimator::kIndependent, Estimator::kFullBatch}) {
        const std::vector<double> est = values(k, q, e);
        BiasRow row{k, q, e, mean_interval(est, level), {}};
        if (e != Estimator::kFullBatch) {
          std::vector<double> relative;
          for (std::size_t i = 0; i < est.size(); ++i) {
            relative.push_back(full[i] != 0.0 ? (est[i] - full[i]) / std::abs(full[i]) : kNaN);
          }
          row.relative_bias = mean_interval(relative, level);
        }
        rows.push_back(row);
      }
    }
  }
  return rows;
}

std::string csv_number(double v) { return std::isfinite(v) ? fmt::format("{:.10g}", v) : ""; }

}  // namespace

template <class S>
Result<BiasReport> measure_bias(const Problem<S>& p, const BiasOptions& o) {
  check_bias_options(p, o);
  BiasReport report;
  report.options = o;
  report.num_parameters = p.network.num_parameters();
  report.train_size = p.train.size();
  data::BatchSampler sampler(p.train.size(), sampler_options(o.batch_size, o.seed));
  const BatchPlan plan = two_draw_plan(1.0);
  // All directions of all repeats go through one full-batch pass: one binding per chunk.
  Matrix<double> all(report.num_parameters, o.repeats * o.top);
  int unconverged = 0;
  for (int r = 0; r < o.repeats; ++r) {
    BiasRepeat repeat;
    auto u = run_repeat(p, o, sampler.next(plan), r, repeat);
    if (!u.is_ok()) return u.status();
    all.middleCols(r * o.top, o.top) = u.value();
    unconverged += repeat.lanczos_converged ? 0 : 1;
    report.repeats.push_back(std::move(repeat));
  }
  if (unconverged > 0) {
    report.notes.push_back(fmt::format("Lanczos did not converge to tolerance {:g} within {} products "
                                       "in {} of {} repeats",
                                       o.lanczos_tolerance, o.lanczos_max_products, unconverged, o.repeats));
  }
  auto full = full_measure(p, all, &report.full_loss);
  if (!full.is_ok()) return full.status();
  for (int r = 0; r < o.repeats; ++r) {
    report.repeats[static_cast<std::size_t>(r)].by_estimator[static_cast<std::size_t>(Estimator::kFullBatch)] =
        {full.value().slopes.segment(r * o.top, o.top), full.value().curvatures.segment(r * o.top, o.top)};
  }
  report.rows = summarize(report);
  return report;
}

std::string bias_csv(const BiasReport& report) {
  std::string out =
      "direction,quantity,estimator,repeats,mean,sd,ci_low,ci_high,rel_bias,rel_bias_ci_low,"
      "rel_bias_ci_high\n";
  for (const BiasRow& r : report.rows) {
    out += fmt::format("{},{},{},{},{},{},{},{},{},{},{}\n", r.direction + 1, to_string(r.quantity),
                       to_string(r.estimator), r.value.count, csv_number(r.value.mean),
                       csv_number(r.value.sd), csv_number(r.value.low), csv_number(r.value.high),
                       csv_number(r.relative_bias.mean), csv_number(r.relative_bias.low),
                       csv_number(r.relative_bias.high));
  }
  return out;
}

std::string spectrum_csv(const BiasReport& report) {
  std::string out = "repeat,direction,same_batch,independent,full_batch\n";
  for (std::size_t r = 0; r < report.repeats.size(); ++r) {
    const BiasRepeat& rep = report.repeats[r];
    const auto curvature = [&](Estimator e, Index k) {
      return rep.by_estimator[static_cast<std::size_t>(e)].curvatures(k);
    };
    for (Index k = 0; k < report.options.top; ++k) {
      const double same = rep.ritz_values.size() > k ? rep.ritz_values(k) : curvature(Estimator::kSameBatch, k);
      out += fmt::format("{},{},{},{},{}\n", r + 1, k + 1, csv_number(same),
                         csv_number(curvature(Estimator::kIndependent, k)),
                         csv_number(curvature(Estimator::kFullBatch, k)));
    }
  }
  return out;
}

// --- experiment 2: a single Newton step ----------------------------------------------------

namespace {

/// Slopes, projected curvature P^T C P and gram P^T P of all CG directions on one batch; the
/// model of the first k directions is their leading part.
struct Measured {
  Vector<double> slopes;
  Matrix<double> curvature;
  Matrix<double> gram;
};

/// IDirectionalModel of the first k directions, from the measurements of all of them.
class PrefixModel final : public IDirectionalModel {
 public:
  PrefixModel(const Measured& measured, Index k) : m_(measured), k_(k) {}
  [[nodiscard]] Index num_directions() const override { return k_; }
  Status slopes(VectorRef<double> out) override {
    if (out.size() != k_) return wrong_size("slopes");
    out = m_.slopes.head(k_);
    return Status::ok();
  }
  Status projected_curvature(MatrixRef<double> out) override {
    if (out.rows() != k_ || out.cols() != k_) return wrong_size("projected curvature");
    out = m_.curvature.topLeftCorner(k_, k_);
    return Status::ok();
  }
  Status gram(MatrixRef<double> out) override {
    if (out.rows() != k_ || out.cols() != k_) return wrong_size("gram");
    out = m_.gram.topLeftCorner(k_, k_);
    return Status::ok();
  }

 private:
  Status wrong_size(const char* what) const {
    return Status::invalid_argument(fmt::format("{} output has the wrong size; expected {}", what, k_));
  }
  const Measured& m_;
  Index k_;
};

template <class S>
Result<Measured> measure_projected(BoundSet<S>& set, const Matrix<double>& p) {
  Measured m;
  m.slopes = p.transpose() * set.gradient();
  m.curvature.resize(p.cols(), p.cols());
  Vector<double> cp(p.rows());
  for (Index j = 0; j < p.cols(); ++j) {
    if (Status s = set.times(p.col(j), cp); !s.is_ok()) return s;
    m.curvature.col(j) = p.transpose() * cp;
  }
  m.curvature = (0.5 * (m.curvature + m.curvature.transpose())).eval();
  m.gram = p.transpose() * p;
  return m;
}

/// One way of turning the CG run into steps: CG's own iterates, or a debiasing plugin.
struct Variant {
  std::string name;
  PluginHandle<DebiasingStrategy> plugin;  ///< empty for the biased iterates
  std::int64_t estimate_size = 0;          ///< samples of B2 it measures on (a prefix)
  std::size_t group = 0;                   ///< index of that prefix among the distinct sizes
};

std::int64_t estimate_size_of(const BatchPlan& plan, std::int64_t batch) {
  const int d = plan.draw_of(BatchRole::kEstimate);
  if (d < 0 || d >= static_cast<int>(plan.draws.size())) return batch;
  const BatchDraw& draw = plan.draws[static_cast<std::size_t>(d)];
  if (draw.whole_dataset || !(draw.relative_size > 0.0)) return batch;
  return std::max<std::int64_t>(1, std::llround(draw.relative_size * static_cast<double>(batch)));
}

std::vector<Variant> create_variants(const PluginHost& host, const NewtonStepOptions& o) {
  std::vector<Variant> out;
  out.push_back({"biased", {}, o.batch_size, 0});
  for (const std::string& name : o.debiasing) {
    for (const Variant& v : out) {
      if (v.name == name) {
        throw Error(fmt::format("debiasing plugin '{}' is listed twice{}", name,
                                name == "biased" ? " ('biased', CG's own iterates, is always included)" : ""));
      }
    }
    auto created = host.create<DebiasingStrategy>(name, {});
    if (!created.is_ok()) throw Error(created.status().message());
    auto plugin = std::move(created).value();
    const std::int64_t size = estimate_size_of(plugin->plan(), o.batch_size);
    out.push_back({name, std::move(plugin), size, 0});
  }
  return out;
}

/// Distinct estimate sizes, ascending; sets each variant's group.
std::vector<std::int64_t> estimate_groups(std::vector<Variant>& variants) {
  std::vector<std::int64_t> sizes;
  for (const Variant& v : variants) sizes.push_back(v.estimate_size);
  std::sort(sizes.begin(), sizes.end());
  sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());
  for (Variant& v : variants) {
    v.group = static_cast<std::size_t>(std::lower_bound(sizes.begin(), sizes.end(), v.estimate_size) - sizes.begin());
  }
  return sizes;
}

template <class S>
void check_newton_options(const Problem<S>& p, const NewtonStepOptions& o, std::int64_t estimate) {
  if (o.lambdas.empty()) throw Error("no damping values; expected at least one lambda > 0");
  for (double lambda : o.lambdas) {
    if (!(lambda > 0.0) || !std::isfinite(lambda)) {
      throw Error(fmt::format("damping lambda = {}; expected a finite number > 0", lambda));
    }
  }
  if (o.cg_iterations < 1) {
    throw Error(fmt::format("CG iterations {}; expected at least 1", o.cg_iterations));
  }
  if (o.eval_every < 1) throw Error(fmt::format("eval every {}; expected at least 1", o.eval_every));
  if (!(o.cg_tolerance >= 0.0)) {
    throw Error(fmt::format("CG tolerance {}; expected a number >= 0", o.cg_tolerance));
  }
  check_common(p, o.batch_size, estimate, o.repeats);
}

std::vector<Index> evaluation_schedule(Index iterations, Index every) {
  std::vector<Index> ks{0};
  for (Index k = every; k < iterations; k += every) ks.push_back(k);
  ks.push_back(iterations);
  return ks;
}

struct CgRun {
  Matrix<double> directions;  ///< P x K' unit vectors, K' <= the iteration cap
  Vector<double> steps;       ///< K' CG coefficients of the unit directions
  std::string stop;           ///< why CG ended before the cap, or empty
};

template <class S>
Result<CgRun> run_cg(BoundSet<S>& b1, const NewtonStepOptions& o, double lambda) {
  CgRequest request = plain_cg(lambda, o.cg_iterations, o.cg_tolerance);
  request.preconditioner = o.cg_preconditioner;
  request.preconditioner_damping = o.cg_preconditioner_damping;
  request.preconditioner_exponent = o.cg_preconditioner_exponent;
  auto cg = cg_on(b1.host(), b1, request);
  if (!cg.is_ok()) return cg.status();
  CgOutcome& result = cg.value();
  CgRun run;
  const Index k = result.directions.cols();
  run.directions = std::move(result.directions);
  run.steps = std::move(result.step_lengths);
  // Unit directions keep the plugins' k x k systems well scaled as CG's residuals shrink; the
  // coefficients scale inversely, so every step is unchanged.
  for (Index j = 0; j < k; ++j) {
    const double norm = run.directions.col(j).norm();
    if (norm > 0.0) run.directions.col(j) /= norm;
    run.steps(j) *= norm;
  }
  if (k < o.cg_iterations) {
    run.stop = result.stop == CgStop::kNegativeCurvature
                   ? fmt::format("non-positive curvature {:.3g}", result.negative_curvature)
                   : fmt::format("residual below {:g} |g|", o.cg_tolerance);
  }
  return run;
}

/// d_k of one variant: CG's own iterate, or the plugin's coefficients of the first k
/// directions measured on B2. Past the end of CG the last iterate and directions stay.
Result<Vector<double>> step_of(Variant& v, const CgRun& cg, const std::vector<Measured>& measured,
                               Index k, double lambda) {
  const Index kk = std::min<Index>(k, cg.steps.size());
  if (kk == 0) return Vector<double>(Vector<double>::Zero(cg.directions.rows()));
  // CG's own iterate x_k, formed as the training loop forms a step: P c.
  if (!v.plugin) return Vector<double>(cg.directions.leftCols(kk) * cg.steps.head(kk));
  PrefixModel model(measured[v.group], kk);
  Vector<double> c(kk);
  if (Status s = v.plugin->coefficients(cg.steps.head(kk), model, lambda, c); !s.is_ok()) return s;
  return Vector<double>(cg.directions.leftCols(kk) * c);
}

/// Full-batch loss L(theta + d_j) and quadratic g^T d_j + 1/2 d_j^T (C + lambda I) d_j for the
/// columns of `d`, in one pass over the training set.
template <class S>
Result<std::pair<Vector<double>, Vector<double>>> evaluate_full(const Problem<S>& p,
                                                                const Vector<double>& g,
                                                                const Matrix<double>& d,
                                                                double lambda) {
  Vector<double> loss = Vector<double>::Zero(d.cols());
  Vector<double> curvature = Vector<double>::Zero(d.cols());
  Vector<double> cd(d.rows());
  const Status status = for_each_chunk(p, [&](BoundSet<S>& set, double weight) -> Status {
    for (Index j = 0; j < d.cols(); ++j) {
      if (Status s = set.times(d.col(j), cd); !s.is_ok()) return s;
      curvature(j) += weight * d.col(j).dot(cd);
      const Vector<S> moved = p.params + d.col(j).template cast<S>();
      const nn::BoundBatch<S> shifted = nn::bind_split<S>(p.network, moved, set.samples(), p.loss,
                                                           dist::Communicator::world());
      loss(j) += weight * static_cast<double>(shifted.loss());
    }
    return Status::ok();
  });
  if (!status.is_ok()) return status;
  Vector<double> quadratic(d.cols());
  for (Index j = 0; j < d.cols(); ++j) {
    quadratic(j) = g.dot(d.col(j)) + 0.5 * (curvature(j) + lambda * d.col(j).squaredNorm());
  }
  return std::make_pair(loss, quadratic);
}

template <class S>
Status full_gradient(const Problem<S>& p, Vector<double>& g, double& loss) {
  g = Vector<double>::Zero(p.network.num_parameters());
  loss = 0.0;
  return for_each_chunk(p, [&](BoundSet<S>& set, double weight) -> Status {
    g += weight * set.gradient();
    loss += weight * set.loss();
    return Status::ok();
  });
}

/// Counts of one kind of trouble over repeats, for one note instead of one per repeat.
struct Tally {
  int repeats = 0;
  Index events = 0;
  Index low = std::numeric_limits<Index>::max();
  Index high = 0;
  std::string first;
  void add(Index events_now, Index value, const std::string& message) {
    if (first.empty()) first = message;
    ++repeats;
    events += events_now;
    low = std::min(low, value);
    high = std::max(high, value);
  }
};

/// Everything one (repeat, lambda) needs beyond the problem, and the tallies for the notes.
template <class S>
struct NewtonContext {
  const Problem<S>& problem;
  const NewtonStepOptions& options;
  std::vector<Variant>& variants;
  const Vector<double>& full_gradient;
  NewtonStepReport& report;
  std::map<double, Tally> cg_stops;                              // by lambda
  std::map<std::pair<double, std::string>, Tally> failures;  // by lambda and variant
};

constexpr std::size_t kStepsPerPass = 16;  // full-batch passes evaluate this many steps at once

struct Job {
  std::size_t variant;
  Index k;
};

/// Evaluates one block of jobs on the full batch; a job whose plugin fails gets NaN.
template <class S>
Status evaluate_block(NewtonContext<S>& c, std::span<const Job> jobs, const CgRun& cg,
                      const std::vector<Measured>& measured, double lambda, int repeat,
                      std::vector<std::pair<Index, std::string>>& failed) {
  std::vector<const Job*> valid;
  Matrix<double> d(c.problem.network.num_parameters(), static_cast<Index>(jobs.size()));
  for (const Job& job : jobs) {
    auto step = step_of(c.variants[job.variant], cg, measured, job.k, lambda);
    if (step.is_ok()) {
      d.col(static_cast<Index>(valid.size())) = step.value();
      valid.push_back(&job);
      continue;
    }
    auto& [count, message] = failed[job.variant];
    if (count++ == 0) message = step.status().message();
    c.report.samples.push_back({lambda, repeat, c.variants[job.variant].name, job.k, kNaN, kNaN});
  }
  if (valid.empty()) return Status::ok();
  auto values = evaluate_full(c.problem, c.full_gradient,
                              d.leftCols(static_cast<Index>(valid.size())).eval(), lambda);
  if (!values.is_ok()) return values.status();
  for (std::size_t i = 0; i < valid.size(); ++i) {
    const auto col = static_cast<Index>(i);
    c.report.samples.push_back({lambda, repeat, c.variants[valid[i]->variant].name, valid[i]->k,
                                values.value().first(col), values.value().second(col)});
  }
  return Status::ok();
}

/// The steps of every (variant, k > 0), evaluated on the full batch in blocks.
template <class S>
Status evaluate_steps(NewtonContext<S>& c, const CgRun& cg, const std::vector<Measured>& measured,
                      double lambda, int repeat) {
  std::vector<Job> jobs;
  for (std::size_t v = 0; v < c.variants.size(); ++v) {
    for (Index k : c.report.iterations) {
      if (k > 0) jobs.push_back({v, k});
    }
  }
  std::vector<std::pair<Index, std::string>> failed(c.variants.size());
  for (std::size_t start = 0; start < jobs.size(); start += kStepsPerPass) {
    const std::span<const Job> block(jobs.data() + start, std::min(kStepsPerPass, jobs.size() - start));
    if (Status s = evaluate_block(c, block, cg, measured, lambda, repeat, failed); !s.is_ok()) return s;
  }
  for (std::size_t v = 0; v < c.variants.size(); ++v) {
    if (failed[v].first == 0) continue;
    c.failures[{lambda, c.variants[v].name}].add(failed[v].first, 0, failed[v].second);
  }
  return Status::ok();
}

template <class S>
Status newton_repeat(NewtonContext<S>& c, BoundSet<S>& b1,
                     std::vector<std::unique_ptr<BoundSet<S>>>& b2, double lambda, int repeat) {
  auto cg = run_cg(b1, c.options, lambda);
  if (!cg.is_ok()) {
    return Status::numerical_issue(fmt::format("lambda {:g}, repeat {}: CG on B1 failed: {}", lambda,
                                               repeat + 1, cg.status().message()));
  }
  if (!cg.value().stop.empty()) c.cg_stops[lambda].add(1, cg.value().steps.size(), cg.value().stop);
  std::vector<Measured> measured;
  for (auto& set : b2) {
    auto m = measure_projected(*set, cg.value().directions);
    if (!m.is_ok()) return m.status();
    measured.push_back(std::move(m).value());
  }
  for (const Variant& v : c.variants) {
    c.report.samples.push_back({lambda, repeat, v.name, 0, c.report.loss_at_start, 0.0});
  }
  return evaluate_steps(c, cg.value(), measured, lambda, repeat);
}

template <class S>
void add_notes(const NewtonContext<S>& c) {
  const int repeats = c.options.repeats;
  for (const auto& [lambda, t] : c.cg_stops) {
    c.report.notes.push_back(fmt::format(
        "lambda {:g}: CG stopped early in {} of {} repeats, after {} to {} of {} iterations (first: "
        "{}); later iterations repeat its last step",
        lambda, t.repeats, repeats, t.low, t.high, c.options.cg_iterations, t.first));
  }
  for (const auto& [key, t] : c.failures) {
    c.report.notes.push_back(fmt::format(
        "lambda {:g}: {} failed in {} of {} repeats, at {} evaluated iterations in all (left out of "
        "the quartiles); first: {}",
        key.first, key.second, t.repeats, repeats, t.events, t.first));
  }
}

std::vector<NewtonStepRow> summarize(const NewtonStepReport& report) {
  std::vector<NewtonStepRow> rows;
  for (double lambda : report.options.lambdas) {
    for (const std::string& variant : report.variants) {
      for (Index k : report.iterations) {
        std::vector<double> loss, quadratic;
        for (const NewtonStepSample& s : report.samples) {
          if (s.lambda != lambda || s.iteration != k || s.variant != variant) continue;
          loss.push_back(s.loss);
          quadratic.push_back(s.quadratic);
        }
        rows.push_back({lambda, variant, k, quartiles(loss), quartiles(quadratic)});
      }
    }
  }
  return rows;
}

template <class S>
NewtonStepReport empty_report(const Problem<S>& p, const NewtonStepOptions& o,
                              const std::vector<Variant>& variants) {
  NewtonStepReport report;
  report.options = o;
  report.num_parameters = p.network.num_parameters();
  report.train_size = p.train.size();
  for (const Variant& v : variants) report.variants.push_back(v.name);
  report.iterations = evaluation_schedule(o.cg_iterations, o.eval_every);
  return report;
}

}  // namespace

template <class S>
Result<NewtonStepReport> newton_step_experiment(const Problem<S>& p, const NewtonStepOptions& o) {
  std::vector<Variant> variants = create_variants(p.host, o);
  const std::vector<std::int64_t> sizes = estimate_groups(variants);
  check_newton_options(p, o, sizes.back());
  NewtonStepReport report = empty_report(p, o, variants);
  Vector<double> g;
  if (Status s = full_gradient(p, g, report.loss_at_start); !s.is_ok()) return s;

  data::BatchSampler sampler(p.train.size(), sampler_options(o.batch_size, o.seed));
  const BatchPlan plan = two_draw_plan(static_cast<double>(sizes.back()) / static_cast<double>(o.batch_size));
  NewtonContext<S> context{p, o, variants, g, report, {}, {}};
  for (int r = 0; r < o.repeats; ++r) {
    // The same (B1, B2) serve every lambda: the comparison across damping is paired.
    const data::StepBatches& step = sampler.next(plan);
    auto b1 = bind_indices(p, step.draw(0).indices());
    std::vector<std::unique_ptr<BoundSet<S>>> b2;
    for (std::int64_t size : sizes) {
      b2.push_back(bind_indices(p, step.draw(1).indices().first(static_cast<std::size_t>(size))));
    }
    for (double lambda : o.lambdas) {
      if (Status s = newton_repeat(context, *b1, b2, lambda, r); !s.is_ok()) return s;
    }
  }
  add_notes(context);
  report.rows = summarize(report);
  return report;
}

std::string newton_step_csv(const NewtonStepReport& report) {
  std::string out =
      "lambda,variant,iteration,repeats,loss_q1,loss_median,loss_q3,quadratic_q1,"
      "quadratic_median,quadratic_q3\n";
  const auto number = [](double v) { return std::isnan(v) ? std::string() : fmt::format("{:.10g}", v); };
  for (const NewtonStepRow& r : report.rows) {
    out += fmt::format("{},{},{},{},{},{},{},{},{},{}\n", r.lambda, r.variant, r.iteration,
                       r.loss.count, number(r.loss.q1), number(r.loss.median), number(r.loss.q3),
                       number(r.quadratic.q1), number(r.quadratic.median), number(r.quadratic.q3));
  }
  return out;
}

template Result<Directional> measure_on_samples<float>(const Problem<float>&, std::span<const std::int64_t>, const Matrix<double>&);
template Result<Directional> measure_on_samples<double>(const Problem<double>&, std::span<const std::int64_t>, const Matrix<double>&);
template Result<Directional> measure_on_training_set<float>(const Problem<float>&, const Matrix<double>&);
template Result<Directional> measure_on_training_set<double>(const Problem<double>&, const Matrix<double>&);
template Result<BiasReport> measure_bias<float>(const Problem<float>&, const BiasOptions&);
template Result<BiasReport> measure_bias<double>(const Problem<double>&, const BiasOptions&);
template Result<NewtonStepReport> newton_step_experiment<float>(const Problem<float>&, const NewtonStepOptions&);
template Result<NewtonStepReport> newton_step_experiment<double>(const Problem<double>&, const NewtonStepOptions&);

}  // namespace quadra::diagnostics
