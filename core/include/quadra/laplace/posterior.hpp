#pragma once
/// \file
/// The Laplace approximation of a trained network: p(θ | D) ≈ N(θ*, Σ) with precision
/// Σ⁻¹ = N·C + τI over a range of parameters (all, or the last layer's; the rest stay at θ*),
/// where C is the mean-loss curvature estimated by a curvature plugin on curvature data, N the
/// training-set size and τ the prior precision (paper §6.1).
///
/// Every structure is stored in eigen form, so the posterior's algebra (log-determinant,
/// sampling, the function-space covariance of the linearised predictive) is one code path each:
///   diag              per layer: C's diagonal (a Kronecker block with identity bases)
///   kfac              per layer: eigenbases Q_S, Q_A of the K-FAC factors and one eigenvalue per
///                     basis pair, λ_ji along q_S,j ⊗ q_A,i
///   lowrank           the top-k eigenpairs (U, λ) of C by Lanczos; C = 0 on the complement of U
///                     (precision τ there)
///   full, last-layer-full   C densified by products and eigendecomposed (small ranges only)
///
/// Debiasing (paper §4, §6.3). The bases (eigenvectors, K-FAC eigenbases) are chosen on the
/// curvature data; with Debiasing::kIndependent they are chosen on a first set D1 and the
/// eigenvalues re-measured along them on an independent set D2: Rayleigh quotients u'C₂u for
/// lowrank and dense; for kfac either factor-wise (ã_i s̃_j with ã_i = q_A,i' A₂ q_A,i) or
/// per sample (EK-FAC, George et al. 2018: λ_ji = mean_n Σ_k ((Q_S' s_nk)_j (Q_A' ā_n)_i)², the
/// exact GGN's Rayleigh quotient along q_S,j ⊗ q_A,i). The equal-budget comparison gives the
/// same-data baseline D1 ∪ D2 (see fit_curvature).
///
/// Negative eigenvalue estimates (Hessian curvature, or noise) are clamped to 0 and counted.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <quadra/data/random.hpp>
#include <quadra/nn/bound_batch.hpp>
#include <quadra/nn/dataset_batch.hpp>
#include <quadra/plugin_host.hpp>
#include <quadra/option_parsing.hpp>

namespace quadra::laplace {

enum class Structure { kDiagonal, kKfac, kLowRank, kLastLayerFull, kFull };
enum class Subset { kAll, kLastLayer };
enum class Debiasing { kSameData, kIndependent };
enum class KfacEigenvalues { kKronecker, kPerSample };

/// "diag", "kfac", "lowrank", "last-layer-full", "full"; "all", "last-layer";
/// "same-data", "independent"; "kronecker", "per-sample".
[[nodiscard]] const char* to_string(Structure value);
[[nodiscard]] const char* to_string(Subset value);
[[nodiscard]] const char* to_string(Debiasing value);
[[nodiscard]] const char* to_string(KfacEigenvalues value);
/// Parsers of the names above; each throws quadra::Error naming the text and the valid names.
[[nodiscard]] Structure parse_structure(std::string_view text);
[[nodiscard]] Subset parse_subset(std::string_view text);
[[nodiscard]] Debiasing parse_debiasing(std::string_view text);
[[nodiscard]] KfacEigenvalues parse_kfac_eigenvalues(std::string_view text);

/// Parameters [offset, offset + size) of the flat vector.
struct ParameterRange {
  Index offset = 0;
  Index size = 0;
};

/// The range a subset covers: everything, or the last layer with parameters (its weight and
/// bias are contiguous).
[[nodiscard]] ParameterRange subset_range(const nn::Network& network, Subset subset);

/// One Linear or Conv2d layer in Kronecker eigen form. The layer's parameters form the matrix
/// W̄ = [W b] (out × cols, cols = in, plus 1 with a bias): W row-major at `offset`, the bias right
/// after it (KroneckerFactor's layout). The eigenvector for values(j, i) is the matrix
/// q_S,j q_A,iᵀ in that layout.
struct KroneckerBlock {
  Index layer = 0;   ///< token index in the spec
  Index offset = 0;  ///< first parameter of the layer
  Index out = 0;     ///< rows of W̄
  Index in = 0;      ///< columns of W (without the bias)
  bool bias = false;
  bool conv = false;
  bool identity = false;  ///< Q_A = I and Q_S = I (a diagonal); qa and qs are then empty
  Matrix<double> qa;      ///< cols × cols, orthonormal columns
  Matrix<double> qs;      ///< out × out
  Matrix<double> values;  ///< out × cols: the curvature along each basis pair, >= 0
  [[nodiscard]] Index cols() const noexcept { return in + (bias ? 1 : 0); }
  [[nodiscard]] Index size() const noexcept { return out * cols(); }
};

/// Eigenpairs of C on a range: C = U diag(values) Uᵀ, U with orthonormal columns. When U has
/// fewer columns than the range (low rank), C is 0 on the complement.
struct EigenBlock {
  ParameterRange range;
  Matrix<double> basis;   ///< range.size × k
  Vector<double> values;  ///< k values >= 0
};

/// The curvature in eigen form: Kronecker blocks (diag, kfac) or one eigen block (the others).
struct CurvatureModel {
  Structure structure = Structure::kKfac;
  ParameterRange range;
  std::vector<KroneckerBlock> kronecker;
  std::vector<EigenBlock> eigen;
  Index clamped = 0;           ///< negative eigenvalue estimates set to 0
  double most_negative = 0.0;  ///< the most negative of them
  std::vector<std::string> notes;
  /// Number of eigenvalues stored (the rank of C for lowrank).
  [[nodiscard]] Index num_values() const;
  /// Every stored eigenvalue, blocks in order.
  [[nodiscard]] std::vector<double> all_values() const;
};

struct FitOptions {
  Structure structure = Structure::kKfac;
  Subset subset = Subset::kAll;
  /// Curvature plugin; empty: diag-ggn for diag, kfac for kfac, ggn otherwise.
  std::string curvature;
  RawOptions curvature_options;
  Debiasing debiasing = Debiasing::kSameData;
  KfacEigenvalues kfac_eigenvalues = KfacEigenvalues::kKronecker;
  Index rank = 20;  ///< lowrank: k
  double lanczos_tolerance = 1e-6;
  Index lanczos_max_products = 400;
  Index max_dense = 4000;  ///< full, last-layer-full: largest range densified
  std::uint64_t seed = 0;  ///< Lanczos start vector
};

/// The subset a fit covers: --subset, except that full and last-layer-full fix it.
[[nodiscard]] Subset effective_subset(const FitOptions& options);

/// The plugin `options` selects (its default for the structure when empty).
[[nodiscard]] std::string curvature_plugin_name(const FitOptions& options);

/// The checks of fit_curvature that need no data (structure, range size, debiasing, rank), so
/// that a caller can refuse bad options before loading or computing anything.
void check_fit_options(const nn::Network& network, const FitOptions& options);

/// Estimates C at `params`. With kSameData everything comes from `first` (pass D1 ∪ D2 for the
/// equal-budget baseline) and `second` must be null; with kIndependent the bases come from
/// `first` and the eigenvalues from `second`. Throws quadra::Error for an unknown or unsuitable
/// plugin (diag needs a diagonal plugin, kfac a Kronecker one), a dense range above max_dense
/// (naming the size and the memory it would take), diag with kIndependent (a fixed basis has no
/// selection bias to remove), per-sample eigenvalues with a non-type-2 K-FAC, rank out of range,
/// or a failing product.
template <class S>
[[nodiscard]] CurvatureModel fit_curvature(const PluginHost& host, const nn::Network& network,
                                           const Vector<S>& params, nn::Loss loss,
                                           const nn::DatasetBatch<S>& first,
                                           const nn::DatasetBatch<S>* second,
                                           const FitOptions& options);

/// N(θ*, (N·C + τI)⁻¹) on the model's range; zero variance outside it.
class Posterior {
 public:
  /// `data_size` is N (the training set's size), `map` θ* (all parameters). Throws
  /// quadra::Error when N < 1, τ is not finite and > 0, or the sizes disagree.
  Posterior(CurvatureModel model, Vector<double> map, double data_size, double prior_precision);

  [[nodiscard]] const CurvatureModel& model() const noexcept { return model_; }
  [[nodiscard]] const Vector<double>& map() const noexcept { return map_; }
  [[nodiscard]] double data_size() const noexcept { return n_; }
  [[nodiscard]] double prior_precision() const noexcept { return tau_; }
  /// Throws quadra::Error unless τ is finite and > 0.
  void set_prior_precision(double tau);

  /// log det(N·C + τI) over the range.
  [[nodiscard]] double log_det_precision() const;
  /// The Laplace approximation of the log evidence under the prior N(0, τ⁻¹I) on the range:
  ///   −total_nll − (τ/2)‖θ*_range‖² + (d/2) log τ − ½ log det(N·C + τI),
  /// with d = range.size and total_nll = Σ_n ℓ_n(θ*) over the training set.
  [[nodiscard]] double log_marginal_likelihood(double total_nll) const;

  /// θ − θ* for one draw θ ~ N(θ*, Σ) (all parameters; zeros outside the range).
  [[nodiscard]] Vector<double> sample_deviation(data::Rng& rng) const;

  /// Σ_f(x_n) = J_n Σ J_nᵀ (C × C) for every sample n of `batch`, as C × (C·N): sample n's
  /// matrix in columns [nC, (n+1)C). Uses one backpropagation per output and per-sample work
  /// linear in the range (Linear layers never form P-sized rows unless the structure is an
  /// eigen block). Parallel over samples; bitwise the same for any thread count.
  template <class S>
  [[nodiscard]] Matrix<double> functional_covariances(nn::BoundBatch<S>& batch) const;

 private:
  void update_variances();

  CurvatureModel model_;
  Vector<double> map_;
  double n_ = 1;
  double tau_ = 1;
  std::vector<Matrix<double>> block_variances_;  ///< per Kronecker block: 1 / (N λ + τ)
  std::vector<Vector<double>> eigen_variances_;  ///< per eigen block
};

/// The τ that maximises log_marginal_likelihood over [low, high] (a log grid of 400 points,
/// refined by golden-section search in log τ); the posterior is left at that τ.
double maximize_marginal_likelihood(Posterior& posterior, double total_nll, double low = 1e-6,
                                    double high = 1e9);

}  // namespace quadra::laplace
