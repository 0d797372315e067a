#pragma once
/// \file
/// Damping strategies: the Tikhonov parameter lambda added to the curvature, and the verdict on
/// each proposed step. The protocol follows Ceres' TrustRegionStrategy: the loop asks for
/// lambda, measures the reduction ratio rho = actual / predicted decrease on the acceptance
/// batch, and reports it; the strategy adapts lambda and says whether to keep the step.
///
/// Ownership: created by a plugin factory, owned by the host through a handle that keeps the
/// library loaded. Thread safety: one strategy per run, called from one thread.

#include "quadra/sdk/export.hpp"

namespace quadra {
inline namespace abi_v1 {

enum class StepVerdict : int { kAccept, kReject };

class QUADRA_INTERFACE DampingStrategy {
 public:
  virtual ~DampingStrategy() = default;

  /// The damping to use for the next step; finite and >= 0.
  [[nodiscard]] virtual double lambda() const = 0;

  /// A step with a finite reduction ratio rho was measured. Adapt lambda and judge the step.
  /// rho may be negative (the loss went up) or larger than one.
  virtual StepVerdict step_measured(double rho) = 0;

  /// The step (or rho) was not finite or the solver failed. The strategy must make the next
  /// step more conservative; the loop rejects this one.
  virtual void step_invalid() = 0;
};

}  // namespace abi_v1
}  // namespace quadra
