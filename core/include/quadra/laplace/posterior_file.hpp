#pragma once
/// \file
/// A fitted Laplace posterior as one `.npz` file, so that its predictive can be evaluated later
/// on any inputs without curvature data (`quadra laplace --save`, `quadra predict`).
///
/// The file is a model file (quadra/nn/serialization.hpp: the state_dict-style weights in
/// float64, which are θ*, `__spec__` and `__input_shape__`, plus any metadata arrays its model
/// file carried), so it also loads wherever a model file does; the posterior's arrays follow
/// under the prefix `__laplace__.`:
///
///   format_version    int64 ()        kPosteriorFormatVersion
///   structure         uint8 text      diag, kfac, lowrank, last-layer-full or full
///   subset            uint8 text      all or last-layer (the range the structure covers)
///   debiasing         uint8 text      same-data or independent: the variant saved
///   kfac_eigenvalues  uint8 text      kronecker or per-sample
///   curvature         uint8 text      the curvature plugin
///   prior_rule        uint8 text      grid, marglik, per-layer or fixed: how τ was chosen
///   predictive        uint8 text      probit, glm-mc or nn-mc: the predictive τ was chosen with
///   samples           int64 ()        its Monte-Carlo samples (glm-mc, nn-mc)
///   data              uint8 text      the data source (may be empty)
///   normalize         uint8 text      its normalisation (may be empty)
///   data_size         float64 ()      N
///   curvature_samples int64 ()        M, the curvature data's size
///   prior_precision   float64 (L,)    τ_l of each parameter layer in the range (all equal
///                                     unless prior_rule is per-layer)
/// and the curvature, for diag and kfac per parameter layer in the range, named by the layer's
/// state_dict prefix P (`0` for `0.weight`), in the [W b] layout of KroneckerBlock:
///   P.values          float64 (out, cols)  eigenvalues (diag: C's diagonal)
///   P.qa, P.qs        float64 (cols, cols), (out, out)  K-FAC eigenbases (kfac only)
/// and for lowrank, last-layer-full and full:
///   eigenvectors      float64 (range, k)   orthonormal columns (k = range for the dense ones)
///   eigenvalues       float64 (k,)
///
/// Loading checks everything (a missing or unexpected key, a wrong dtype or shape, a non-finite
/// value, a negative eigenvalue, a basis that is not orthonormal, an unknown name or version) and
/// throws one quadra::Error for each fault, naming the file and the key.

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <quadra/io/npy.hpp>
#include <quadra/laplace/posterior.hpp>
#include <quadra/laplace/predictive.hpp>
#include <quadra/nn/network.hpp>

namespace quadra::laplace {

inline constexpr std::int64_t kPosteriorFormatVersion = 1;
/// The prefix of the posterior's arrays (model files ignore arrays whose names start "__").
inline constexpr const char* kPosteriorPrefix = "__laplace__.";

/// How a posterior was made: what quadra predict reports, and the defaults it takes from it.
struct PosteriorInfo {
  Debiasing debiasing = Debiasing::kSameData;
  KfacEigenvalues kfac_eigenvalues = KfacEigenvalues::kKronecker;
  std::string curvature;             ///< plugin name
  std::string prior_rule = "fixed";  ///< grid, marglik, per-layer or fixed
  PredictiveKind predictive = PredictiveKind::kProbit;
  int samples = 100;  ///< of the predictive, when Monte Carlo
  std::int64_t curvature_samples = 0;
  std::string data;
  std::string normalize;
};

/// Writes `posterior` of `network` (its map() as the weights) atomically. `model_metadata` are
/// extra arrays of the model file to carry along (e.g. input preprocessing); names under
/// kPosteriorPrefix among them are dropped (a posterior file used as the model). Throws
/// quadra::Error when the posterior does not fit the network, or for an unknown prior rule.
void save_posterior(const std::filesystem::path& file, const nn::Network& network,
                    const Posterior& posterior, const PosteriorInfo& info,
                    const std::vector<std::pair<std::string, io::NpyArray>>& model_metadata = {});

/// What a posterior file holds.
struct LoadedPosterior {
  nn::Network network;
  Posterior posterior;  ///< map() holds the weights
  PosteriorInfo info;
  Subset subset = Subset::kAll;
};

/// Reads and checks a posterior file (see the file comment). The posterior is bitwise the one
/// saved: the same curvature, θ*, N and prior precisions, so the same predictions.
[[nodiscard]] LoadedPosterior load_posterior(const std::filesystem::path& file);

}  // namespace quadra::laplace
