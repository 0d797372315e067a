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
///
/// The prior is N(0, τ⁻¹I) on the range, or with a per-layer prior N(0, D⁻¹), D holding τ_l on
/// the parameters of layer l (a Linear or Conv2d weight together with its bias, which the
/// Kronecker blocks' [W b] layout cannot separate). diag and kfac stay in eigen form (each block
/// is one layer); full and last-layer-full eigendecompose N·C + D again for each change of a
/// per-layer prior; lowrank takes one τ only (see check_per_layer_prior).

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
  /// The parameter layers (a weight with its bias) that tile the range, in order: the groups of
  /// a per-layer prior. Empty: the range is one group.
  std::vector<ParameterRange> layers;
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
/// or a failing product. Several processes: collective; the curvature sets are bound split
/// across the ranks (nn::bind_split), and the per-sample eigenvalues are summed over them, so
/// every rank returns the same model.
template <class S>
[[nodiscard]] CurvatureModel fit_curvature(const PluginHost& host, const nn::Network& network,
                                           const Vector<S>& params, nn::Loss loss,
                                           const nn::DatasetBatch<S>& first,
                                           const nn::DatasetBatch<S>* second,
                                           const FitOptions& options);

/// Throws quadra::Error, saying why, when `structure` cannot take a per-layer prior: lowrank,
/// whose precision τ on the complement of its k eigenvectors is what makes it low-rank.
void check_per_layer_prior(Structure structure);

/// N(θ*, (N·C + D)⁻¹) on the model's range, D = τI or per layer; zero variance outside it.
class Posterior {
 public:
  /// `data_size` is N (the training set's size), `map` θ* (all parameters). Throws
  /// quadra::Error when N < 1, τ is not finite and > 0, the sizes disagree, or the model's layers
  /// do not tile its range.
  Posterior(CurvatureModel model, Vector<double> map, double data_size, double prior_precision);

  [[nodiscard]] const CurvatureModel& model() const noexcept { return model_; }
  [[nodiscard]] const Vector<double>& map() const noexcept { return map_; }
  [[nodiscard]] double data_size() const noexcept { return n_; }
  /// The common τ; with a per-layer prior, the first layer's (see prior_precisions).
  [[nodiscard]] double prior_precision() const noexcept { return taus_.front(); }
  /// One τ per prior layer (all equal unless per_layer_prior()).
  [[nodiscard]] const std::vector<double>& prior_precisions() const noexcept { return taus_; }
  /// The groups of a per-layer prior: the model's layers, or the whole range.
  [[nodiscard]] const std::vector<ParameterRange>& prior_layers() const noexcept { return groups_; }
  /// Whether the prior was set per layer (set_prior_precisions).
  [[nodiscard]] bool per_layer_prior() const noexcept { return per_layer_; }
  /// One τ for the whole range. Throws quadra::Error unless τ is finite and > 0.
  void set_prior_precision(double tau);
  /// τ_l for every prior layer. Throws quadra::Error for a count other than
  /// prior_layers().size(), a τ not finite and > 0, or a structure check_per_layer_prior refuses.
  void set_prior_precisions(std::vector<double> taus);

  /// log det(N·C + D) over the range.
  [[nodiscard]] double log_det_precision() const;
  /// The Laplace approximation of the log evidence under the prior N(0, D⁻¹) on the range:
  ///   −total_nll − ½ Σ_l τ_l ‖θ*_l‖² + ½ Σ_l d_l log τ_l − ½ log det(N·C + D),
  /// with d_l the size of layer l and total_nll = Σ_n ℓ_n(θ*) over the training set (for one τ:
  /// −total_nll − (τ/2)‖θ*_range‖² + (d/2) log τ − ½ log det(N·C + τI)).
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
  [[nodiscard]] bool uniform_prior() const;
  [[nodiscard]] const Matrix<double>& covariance_basis(std::size_t block) const;
  void update_variances();

  CurvatureModel model_;
  Vector<double> map_;
  double n_ = 1;
  std::vector<ParameterRange> groups_;  ///< prior layers
  std::vector<double> taus_;            ///< one per group
  bool per_layer_ = false;
  std::vector<std::size_t> block_group_;         ///< group of each Kronecker block
  std::vector<Matrix<double>> block_variances_;  ///< per Kronecker block: 1 / (N λ + τ_l)
  /// Per eigen block, Σ = V diag(variances) Vᵀ: V is the block's basis and the variances
  /// 1 / (N λ + τ) under one τ; under a per-layer prior V and 1 / μ are the eigenpairs of
  /// N·C + D, and eigen_bases_ holds V.
  std::vector<Vector<double>> eigen_variances_;
  std::vector<Matrix<double>> eigen_bases_;
};

/// The τ that maximises log_marginal_likelihood over [low, high] (a log grid of 400 points,
/// refined by golden-section search in log τ); the posterior is left at that τ.
double maximize_marginal_likelihood(Posterior& posterior, double total_nll, double low = 1e-6,
                                    double high = 1e9);

/// The per-layer τ_l in [low, high] that maximise log_marginal_likelihood (laplace-torch's
/// prior precision of one value per layer, chosen by the marginal likelihood); the posterior is
/// left at them. Along one τ_l, with the others fixed, the evidence is
///   −τ_l a_l / 2 + (d_l / 2) log τ_l − ½ Σ_i log(s_i + τ_l) + const,
/// a_l = ‖θ*_l‖², s_i the eigenvalues of the Schur complement of layer l in N·C + D (N λ of the
/// layer's own block for diag and kfac), whose derivative times 2τ_l, Σ_i s_i / (s_i + τ_l) −
/// a_l τ_l, decreases strictly: one maximum, found by bisection in log τ_l. diag and kfac
/// separate into one such problem per layer; full and last-layer-full are maximised by exact
/// coordinate ascent over the layers (sweeps until no log τ_l moves by 1e-9), which never
/// decreases the evidence. Throws like set_prior_precisions.
std::vector<double> maximize_marginal_likelihood_per_layer(Posterior& posterior, double total_nll,
                                                           double low = 1e-6, double high = 1e9);

}  // namespace quadra::laplace
