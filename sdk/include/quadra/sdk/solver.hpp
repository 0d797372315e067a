#pragma once
/// \file
/// Solvers: propose an ordered set of directions P = [p_1..p_k] from the quadratic model on the
/// `directions` batch, with the coefficients they would use themselves. The step is always P c;
/// the debiasing strategy decides c (see debiasing.hpp). First-order baselines propose one
/// direction. This interface is grown by the optimizer issue (state, warm starts, checkpoints).

#include "quadra/sdk/export.hpp"
#include "quadra/sdk/status.hpp"
#include "quadra/sdk/types.hpp"

namespace quadra {
inline namespace abi_v1 {

/// Host-implemented: q(d) = loss + g^T d + 1/2 d^T C d on one batch at the current parameters.
class QUADRA_INTERFACE IQuadraticModel {
 public:
  virtual ~IQuadraticModel() = default;
  [[nodiscard]] virtual Index num_parameters() const = 0;
  [[nodiscard]] virtual double loss() const = 0;
  virtual Status gradient(VectorRef<double> out) = 0;
  /// out = C v (undamped).
  virtual Status curvature_times(ConstVectorRef<double> v, VectorRef<double> out) = 0;
};

/// Directions proposed by a solver: columns of `basis`, and the solver's own coefficients.
struct Directions {
  Matrix<double> basis;            ///< n x k
  Vector<double> own_coefficients;  ///< k
};

class QUADRA_INTERFACE Solver {
 public:
  virtual ~Solver() = default;
  virtual Status propose(IQuadraticModel& model, double lambda, Directions& out) = 0;
};

}  // namespace abi_v1
}  // namespace quadra
