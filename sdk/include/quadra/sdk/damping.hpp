#pragma once
/// \file
/// Damping strategies: the Tikhonov parameter lambda added to the curvature, and the verdict on
/// each proposed step. The protocol follows Ceres' TrustRegionStrategy: the loop asks for
/// lambda, measures the reduction ratio rho = actual / predicted decrease on the acceptance
/// batch, and reports it; the strategy adapts lambda and says whether to keep the step.
///
/// Ownership: created by a plugin factory, owned by the host through a handle that keeps the
/// library loaded. Thread safety: one strategy per run, called from one thread.

#include <vector>

#include "quadra/sdk/export.hpp"
#include "quadra/sdk/status.hpp"

namespace quadra {
inline namespace abi_v4 {

enum class StepVerdict : int { kAccept, kReject };

class QUADRA_INTERFACE DampingStrategy {
 public:
  virtual ~DampingStrategy() = default;

  /// The damping to use for the next step; finite and >= 0.
  [[nodiscard]] virtual double lambda() const = 0;

  /// Whether step_measured() needs rho. If not, the loop skips the acceptance batch's extra
  /// forward pass and curvature product and calls step_measured(NaN).
  [[nodiscard]] virtual bool uses_reduction_ratio() const = 0;

  /// A step was measured: rho is finite (it may be negative, the loss went up, or above one),
  /// or NaN when the strategy does not use it. Adapt lambda and judge the step.
  virtual StepVerdict step_measured(double rho) = 0;

  /// The step (or rho, or the loss after it) was not finite or the solver failed. The strategy
  /// must make the next step more conservative; the loop rejects this one.
  virtual void step_invalid() = 0;

  /// Checkpointing: the adaptive state (lambda, radius, counters) as a flat vector. The
  /// defaults suit stateless strategies.
  virtual Status save_state(std::vector<double>& out) const {
    out.clear();
    return Status::ok();
  }
  virtual Status load_state(const std::vector<double>& state) {
    return state.empty() ? Status::ok()
                         : Status::invalid_argument("this damping strategy keeps no state");
  }
};

}  // namespace abi_v4
}  // namespace quadra
