#pragma once
/// \file
/// Predictive class probabilities of a Laplace posterior (or of the MAP network) on a data set,
/// and the choice of the prior precision τ.
///
///   map      softmax(f(x, θ*))
///   probit   linearised (GLM) predictive with the probit approximation:
///            softmax(f(x, θ*) / sqrt(1 + π/8 · diag Σ_f(x))), Σ_f = J Σ Jᵀ
///   glm-mc   linearised predictive by Monte Carlo: mean over S draws f ~ N(f(x, θ*), Σ_f(x)) of
///            softmax(f) (exact for the GLM up to the sampling error)
///   nn-mc    weight-space sampling: mean over S draws θ ~ N(θ*, Σ) of softmax(f(x, θ))
/// Samples are seeded: glm-mc draws sample n's values from a stream of (seed, n); nn-mc draws
/// parameter vector s from a stream of (seed, s). Results are bitwise the same for any thread
/// count; another evaluation chunk size changes them only by roundoff (GEMM blocking).
///
/// On request each predictive also says how uncertain it is per class: probit gives the
/// variance of the linearised logits, diag Σ_f(x) (it draws no probabilities); glm-mc and nn-mc
/// give the Monte-Carlo variance of each class probability over their S draws.
///
/// Several processes (quadra/dist/communicator.hpp): the predictions are collective. Each rank
/// computes its share of every evaluation chunk (Communicator::share_of) and the columns are
/// all-gathered, so every rank returns the whole result, as one process computes it up to the
/// roundoff of a chunk's products (bitwise the same run to run for a given number of ranks).
///
/// Classification with softmax cross-entropy only.

#include <cstdint>
#include <string_view>
#include <vector>

#include <quadra/data/dataset.hpp>
#include <quadra/laplace/posterior.hpp>

namespace quadra::laplace {

enum class PredictiveKind { kMap, kProbit, kGlmMc, kNnMc };

/// "map", "probit", "glm-mc", "nn-mc".
[[nodiscard]] const char* to_string(PredictiveKind kind);
/// Throws quadra::Error naming the text and the valid names.
[[nodiscard]] PredictiveKind parse_predictive(std::string_view text);

struct PredictiveOptions {
  PredictiveKind kind = PredictiveKind::kProbit;
  int samples = 100;  ///< glm-mc and nn-mc
  std::uint64_t seed = 0;
  Index chunk = 512;  ///< samples bound at once
  bool variance = false;  ///< also compute Prediction::variance
};

/// Class probabilities and, on request, their spread under the posterior.
struct Prediction {
  Matrix<double> probabilities;  ///< C × N
  /// C × N when PredictiveOptions::variance asks for it and the predictive is not map (empty
  /// otherwise): probit: the variance of the linearised logits, diag Σ_f(x); glm-mc and nn-mc:
  /// the variance of each class probability over the S draws (unbiased, divided by S − 1; 0 for
  /// one draw).
  Matrix<double> variance;
};

/// C × N class probabilities for the samples of `set` (its features must fit the network; the
/// labels are only carried along). `posterior` may be null for kMap. Throws quadra::Error for a
/// non-classification set, a missing posterior, samples < 1 or chunk < 1.
template <class S>
[[nodiscard]] Matrix<double> predict(const nn::Network& network, const Vector<S>& params,
                                     const Posterior* posterior, const data::Dataset& set,
                                     const PredictiveOptions& options);

/// predict() with the variance (when `options.variance`). The probabilities are bitwise those of
/// predict().
template <class S>
[[nodiscard]] Prediction predict_set(const nn::Network& network, const Vector<S>& params,
                                     const Posterior* posterior, const data::Dataset& set,
                                     const PredictiveOptions& options);

/// The same for inputs without labels, features × N as the engine takes them. Samples equal to a
/// data set's give bitwise the same probabilities and variances.
template <class S>
[[nodiscard]] Prediction predict_inputs(const nn::Network& network, const Vector<S>& params,
                                        const Posterior* posterior, const Matrix<S>& inputs,
                                        const PredictiveOptions& options);

/// Mean of -log p(y_n) over the samples (p from predict), clamped as in metrics.hpp.
[[nodiscard]] double mean_nll(const Matrix<double>& probabilities,
                              const std::vector<std::int64_t>& labels);

/// τ on a log grid, chosen by the validation NLL of the predictive.
struct PriorSearch {
  std::vector<double> taus;
  std::vector<double> objective;  ///< validation NLL (grid) or log evidence (marglik) per τ
  double best = 0;
};

/// Log-spaced values from `low` to `high`, `count` of them (count >= 2, 0 < low < high).
[[nodiscard]] std::vector<double> log_grid(double low, double high, int count);

/// Evaluates the validation NLL at every τ of `grid` and leaves the posterior at the best one.
template <class S>
PriorSearch tune_prior_by_validation(Posterior& posterior, const nn::Network& network,
                                     const Vector<S>& params, const data::Dataset& validation,
                                     const PredictiveOptions& options,
                                     const std::vector<double>& grid);

}  // namespace quadra::laplace
