#pragma once
/// \file
/// Bias diagnostics of mini-batch quadratics (paper §2–3 and §5). Directions chosen on
/// one batch B1 (top eigenvectors, or CG search directions) make the slopes g^T u and curvatures
/// u^T C u measured on the same batch biased, while a disjoint batch B2 measures them without
/// bias (paper T2, T3). Two experiments check this against the whole training set:
///
///  - measure_bias(): per direction index k, the same-batch, independent-batch and full-batch
///    slope and curvature, over R repeated draws of (B1, B2): means, t confidence intervals and
///    relative biases (est - full) / |full| computed per repeat, then averaged with their CI.
///  - newton_step_experiment(): one damped Newton step by CG on B1, as CG's own iterates
///    (biased) and as re-weighted by debiasing plugins on B2, evaluated by the full-batch loss
///    L(theta + d_k) and the full-batch quadratic q(d_k) = g^T d + 1/2 d^T (C + lambda I) d,
///    summarised by median and quartiles over repeats.
///
/// Full-batch quantities are means over all training samples, streamed in chunks (each chunk
/// bound on its own, weighted by its size), because binding tens of thousands of samples at
/// once is heavy. For curvature plugins linear in the samples (ggn, hessian, empirical- and
/// mc-fisher, the diagonals) this is exact; for kfac it is the chunk-averaged K-FAC product.
///
/// Batches come from data::BatchSampler with a plan of two disjoint draws per repeat, seeded.
/// Every reduction is in double, in a fixed order, so a seed gives the same numbers for any
/// thread count. Bad options throw quadra::Error naming the option, the value and what was
/// expected; numerical trouble (a failed product, Lanczos or CG breaking down) is a Status.

#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include <quadra/data/dataset.hpp>
#include <quadra/nn/bound_batch.hpp>
#include <quadra/nn/network.hpp>
#include <quadra/option_parsing.hpp>
#include <quadra/plugin_host.hpp>
#include <quadra/sdk/status.hpp>
#include <quadra/sdk/types.hpp>

namespace quadra::diagnostics {

inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// --- statistics ---------------------------------------------------------------------------

/// The p-quantile of Student's t distribution with `dof` degrees of freedom (not necessarily
/// an integer), to about 1e-12 relative. Throws quadra::Error unless 0 < p < 1 and dof > 0.
[[nodiscard]] double student_t_quantile(double p, double dof);

/// A sample mean with its two-sided t confidence interval mean ± t_{(1+level)/2, n-1} sd/√n.
struct MeanInterval {
  double mean = kNaN;
  double sd = kNaN;  ///< sample standard deviation (n - 1 in the denominator)
  double low = kNaN;
  double high = kNaN;
  Index count = 0;  ///< finite values used
  [[nodiscard]] bool contains(double x) const noexcept { return low <= x && x <= high; }
};

/// Mean and `level` interval of the finite entries of `values` (NaN and Inf are skipped). With
/// fewer than two finite values the bounds are NaN. Throws quadra::Error unless 0 < level < 1.
[[nodiscard]] MeanInterval mean_interval(std::span<const double> values, double level = 0.95);

/// Median and quartiles (linear interpolation between order statistics, NumPy's default) of the
/// entries that are not NaN (an infinite loss is a diverged step and counts); NaN when none.
struct Quartiles {
  double q1 = kNaN;
  double median = kNaN;
  double q3 = kNaN;
  Index count = 0;
};
[[nodiscard]] Quartiles quartiles(std::span<const double> values);

// --- the setting ---------------------------------------------------------------------------

/// A model at fixed parameters, its training set and a curvature plugin. Everything referenced
/// must outlive the experiment.
template <class S>
struct Problem {
  const nn::Network& network;
  const Vector<S>& params;
  const data::Dataset& train;  ///< the "full batch"
  nn::Loss loss = nn::Loss::kCrossEntropy;
  const PluginHost& host;      ///< creates the curvature (and debiasing) plugins
  std::string curvature = "ggn";
  RawOptions curvature_options;
  std::int64_t chunk_size = 2048;  ///< samples bound at once when streaming the training set
};

/// Slopes g^T u_k and curvatures u_k^T C u_k along the columns of a direction matrix, on one
/// set of samples.
struct Directional {
  Vector<double> slopes;
  Vector<double> curvatures;
};

/// Binds the samples `indices` of the training set once and measures along `directions`
/// (P x K). Throws quadra::Error if the curvature plugin cannot be created; a failed product
/// comes back as its Status.
template <class S>
Result<Directional> measure_on_samples(const Problem<S>& problem,
                                       std::span<const std::int64_t> indices,
                                       const Matrix<double>& directions);

/// The same on the whole training set, streamed in chunks: means over all samples.
template <class S>
Result<Directional> measure_on_training_set(const Problem<S>& problem,
                                            const Matrix<double>& directions);

// --- experiment 1: bias along directions chosen on B1 ----------------------------------------

enum class DirectionSource {
  kEigen,  ///< top-K eigenvectors of C on B1 (Lanczos, full reorthogonalisation)
  kCg,     ///< the first K search directions of CG on (C_B1 + delta I) x = -g_B1, normalised
};
/// "eigen" / "cg"; parse throws quadra::Error naming `option` and listing the valid names.
[[nodiscard]] const char* to_string(DirectionSource source);
[[nodiscard]] DirectionSource parse_direction_source(std::string_view text, std::string_view option);

struct BiasOptions {
  std::int64_t batch_size = 128;  ///< B, the size of B1 and of B2
  Index top = 10;                 ///< K directions per repeat
  int repeats = 10;               ///< R >= 2 draws of (B1, B2)
  std::uint64_t seed = 0;         ///< batches and Lanczos start vectors
  DirectionSource directions = DirectionSource::kEigen;
  double cg_damping = 1e-3;        ///< delta for kCg
  double lanczos_tolerance = 1e-6;  ///< relative residual, see linalg/lanczos.hpp
  Index lanczos_max_products = 300;
  double level = 0.95;  ///< confidence level of every interval
};

enum class Estimator { kSameBatch, kIndependent, kFullBatch };
enum class Quantity { kCurvature, kSlope };
inline constexpr int kNumEstimators = 3;
/// "same-batch", "independent", "full-batch"; "curvature", "slope".
[[nodiscard]] const char* to_string(Estimator estimator);
[[nodiscard]] const char* to_string(Quantity quantity);

/// One repeat: the K directions' measurements by estimator (index: Estimator).
struct BiasRepeat {
  std::vector<Directional> by_estimator;
  Vector<double> ritz_values;  ///< kEigen: Lanczos eigenvalues on B1; kCg: empty
  bool lanczos_converged = true;
};

/// One line of the summary: direction k (0-based), quantity and estimator.
struct BiasRow {
  Index direction = 0;
  Quantity quantity = Quantity::kCurvature;
  Estimator estimator = Estimator::kSameBatch;
  MeanInterval value;          ///< the estimate over repeats
  MeanInterval relative_bias;  ///< (est - full) / |full| per repeat; NaN for kFullBatch
};

struct BiasReport {
  BiasOptions options;
  Index num_parameters = 0;
  std::int64_t train_size = 0;
  double full_loss = kNaN;  ///< L(theta) over the training set
  std::vector<BiasRepeat> repeats;
  std::vector<BiasRow> rows;  ///< by direction, then quantity, then estimator
  std::vector<std::string> notes;  ///< e.g. Lanczos not converged in some repeat

  [[nodiscard]] const BiasRow& row(Index direction, Quantity quantity, Estimator estimator) const;
};

/// Runs experiment 1. Directions are oriented so that their same-batch slope is <= 0 (an
/// eigenvector's sign is arbitrary; this makes slopes comparable across repeats and only
/// depends on B1, so B2 stays unbiased). Throws quadra::Error for bad options (K outside
/// [1, P], R < 2, 2B larger than the training set, an unknown curvature plugin).
template <class S>
Result<BiasReport> measure_bias(const Problem<S>& problem, const BiasOptions& options);

/// bias.csv: direction,quantity,estimator,repeats,mean,sd,ci_low,ci_high,rel_bias,
/// rel_bias_ci_low,rel_bias_ci_high (direction 1-based; rel_bias empty for full-batch).
[[nodiscard]] std::string bias_csv(const BiasReport& report);
/// spectrum.csv: repeat,direction,same_batch,independent,full_batch: the curvature along each
/// direction (for eigen directions the same-batch value is the B1 eigenvalue).
[[nodiscard]] std::string spectrum_csv(const BiasReport& report);

// --- experiment 2: a single Newton step, biased and debiased --------------------------------

struct NewtonStepOptions {
  std::int64_t batch_size = 128;
  int repeats = 10;
  std::uint64_t seed = 0;
  std::vector<double> lambdas = {1e-3, 1e-2, 1e-1};  ///< damping values, each > 0
  Index cg_iterations = 50;
  double cg_tolerance = 1e-10;  ///< residual rule relative to |g_B1|; tiny: run all iterations
  Index eval_every = 1;         ///< evaluate every this many iterations, and the last
  /// Preconditioned CG as the `cg` solver runs it (see CgRequest): a structured curvature
  /// plugin on B1 (diag-ggn, diag-ef, kfac), or empty for plain CG.
  std::string cg_preconditioner;
  double cg_preconditioner_damping = 1e-3;
  double cg_preconditioner_exponent = 0.75;
  /// Debiasing plugins (by name). Each re-weights the CG directions on B2, sized by its plan's
  /// estimate draw (a prefix of one B2 draw, so all plugins share samples); whole-dataset plans
  /// are measured on B2 of size B. The biased CG iterates are always included, as "biased".
  std::vector<std::string> debiasing = {"cg-line-search", "cg-projected"};
};

/// One evaluated step: repeat r, damping lambda, variant, CG iteration k (0: no step).
struct NewtonStepSample {
  double lambda = 0;
  int repeat = 0;
  std::string variant;
  Index iteration = 0;
  double loss = kNaN;       ///< L(theta + d_k) over the training set
  double quadratic = kNaN;  ///< g^T d + 1/2 d^T (C + lambda I) d, full batch
};

struct NewtonStepRow {
  double lambda = 0;
  std::string variant;
  Index iteration = 0;
  Quartiles loss;
  Quartiles quadratic;
};

struct NewtonStepReport {
  NewtonStepOptions options;
  Index num_parameters = 0;
  std::int64_t train_size = 0;
  double loss_at_start = kNaN;  ///< L(theta)
  std::vector<std::string> variants;  ///< "biased", then the plugins in order
  std::vector<Index> iterations;      ///< the evaluated k, ascending, 0 first
  std::vector<NewtonStepSample> samples;
  std::vector<NewtonStepRow> rows;  ///< by lambda, variant, iteration
  std::vector<std::string> notes;   ///< CG stopping early, plugins failing at some k
};

/// Runs experiment 2. When CG stops before cg_iterations (converged, or non-positive
/// curvature), later k reuse its last iterate and directions, as a solver would return them.
/// A plugin that fails at some k (e.g. an indefinite projected system) gives NaN there, noted.
/// Throws quadra::Error for bad options or unknown plugins.
template <class S>
Result<NewtonStepReport> newton_step_experiment(const Problem<S>& problem,
                                                const NewtonStepOptions& options);

/// newton_step.csv: lambda,variant,iteration,repeats,loss_q1,loss_median,loss_q3,
/// quadratic_q1,quadratic_median,quadratic_q3.
[[nodiscard]] std::string newton_step_csv(const NewtonStepReport& report);

extern template Result<Directional> measure_on_samples<float>(const Problem<float>&, std::span<const std::int64_t>, const Matrix<double>&);
extern template Result<Directional> measure_on_samples<double>(const Problem<double>&, std::span<const std::int64_t>, const Matrix<double>&);
extern template Result<Directional> measure_on_training_set<float>(const Problem<float>&, const Matrix<double>&);
extern template Result<Directional> measure_on_training_set<double>(const Problem<double>&, const Matrix<double>&);
extern template Result<BiasReport> measure_bias<float>(const Problem<float>&, const BiasOptions&);
extern template Result<BiasReport> measure_bias<double>(const Problem<double>&, const BiasOptions&);
extern template Result<NewtonStepReport> newton_step_experiment<float>(const Problem<float>&, const NewtonStepOptions&);
extern template Result<NewtonStepReport> newton_step_experiment<double>(const Problem<double>&, const NewtonStepOptions&);

}  // namespace quadra::diagnostics
