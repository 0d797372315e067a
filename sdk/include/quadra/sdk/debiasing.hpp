#pragma once
/// \file
/// Debiasing strategies: which independent batches a step draws and which role each batch
/// plays (the plan), and the coefficients with which the step combines the solver's directions.
///
/// A solver proposes directions P = [p_1..p_k] from the `directions` batch together with the
/// coefficients it would use itself; the debiasing strategy decides the coefficients actually
/// used, from slopes and curvatures measured along P on the `estimate` batch (paper §4). Slopes
/// and curvatures for one set of directions always come from the same batch.

#include <array>
#include <vector>

#include "quadra/sdk/export.hpp"
#include "quadra/sdk/status.hpp"
#include "quadra/sdk/types.hpp"

namespace quadra {
inline namespace abi_v4 {

/// What a batch is used for within one optimizer step.
enum class BatchRole : int {
  kGradient = 0,  ///< the gradient the solver starts from
  kDirections,    ///< chooses the directions (CG, Lanczos, K-FAC eigenbasis)
  kEstimate,      ///< measures slopes and curvatures along the chosen directions
  kAcceptance,    ///< measures the reduction ratio rho for damping and step acceptance
};
inline constexpr int kNumBatchRoles = 4;

inline const char* to_string(BatchRole role) noexcept {
  switch (role) {
    case BatchRole::kGradient: return "gradient";
    case BatchRole::kDirections: return "directions";
    case BatchRole::kEstimate: return "estimate";
    case BatchRole::kAcceptance: return "acceptance";
  }
  return "?";
}

/// One independent draw of samples: disjoint from every other draw of the same step.
struct BatchDraw {
  double relative_size = 1.0;  ///< multiple of the configured batch size, > 0
  bool whole_dataset = false;  ///< oracle: stream the whole training set (diagnostics only)
};

/// Which draws a step needs and which draw serves each role.
struct BatchPlan {
  std::vector<BatchDraw> draws;
  std::array<int, kNumBatchRoles> draw_of_role{};  ///< index into draws, per BatchRole

  [[nodiscard]] int draw_of(BatchRole role) const noexcept {
    return draw_of_role[static_cast<int>(role)];
  }
};

/// Host-implemented: a quadratic model restricted to the k proposed directions, measured on one
/// batch. All quantities are k-dimensional, so debiasing never touches parameter-sized vectors.
class QUADRA_INTERFACE IDirectionalModel {
 public:
  virtual ~IDirectionalModel() = default;
  /// k, the number of directions.
  [[nodiscard]] virtual Index num_directions() const = 0;
  /// slopes_i = g^T p_i on this batch.
  virtual Status slopes(VectorRef<double> out) = 0;
  /// curvatures = P^T C P on this batch (k x k, symmetric).
  virtual Status projected_curvature(MatrixRef<double> out) = 0;
  /// gram = P^T P (independent of the batch); lambda enters a projected solve as lambda P^T P.
  virtual Status gram(MatrixRef<double> out) = 0;
};

class QUADRA_INTERFACE DebiasingStrategy {
 public:
  virtual ~DebiasingStrategy() = default;

  /// The draws and roles of every step. Must be valid: at least one draw, every role mapped.
  [[nodiscard]] virtual BatchPlan plan() const = 0;

  /// The coefficients c (size k) of the step P c. `own_coefficients` are the solver's choice
  /// (size k, measured on the kDirections batch); `estimate` is the quadratic model along the
  /// same k directions measured on the batch of the kEstimate role.
  virtual Status coefficients(ConstVectorRef<double> own_coefficients, IDirectionalModel& estimate,
                              double lambda, VectorRef<double> out) = 0;
};

}  // namespace abi_v4
}  // namespace quadra
