#pragma once
/// \file
/// Curvature estimators: a matrix-free symmetric operator C on one batch. The engine in core
/// computes the exact products (GGN, Hessian, Fisher variants); a curvature plugin chooses and
/// combines them, and structured estimators (diagonal, K-FAC) keep their own state.
/// This interface is grown by the curvature issue (structure queries for solvers and Laplace).

#include "quadra/sdk/export.hpp"
#include "quadra/sdk/status.hpp"
#include "quadra/sdk/types.hpp"

namespace quadra {
inline namespace abi_v1 {

/// Exact products the host's engine can compute on a bound batch.
enum class CurvatureProduct : int { kGgn, kHessian, kEmpiricalFisher, kMcFisher };

/// Host-implemented: the engine bound to one batch at the current parameters.
class QUADRA_INTERFACE ICurvatureBackend {
 public:
  virtual ~ICurvatureBackend() = default;
  [[nodiscard]] virtual Index num_parameters() const = 0;
  [[nodiscard]] virtual Index batch_size() const = 0;
  /// out = M v for the requested product M (mean over the batch).
  virtual Status product(CurvatureProduct which, ConstVectorRef<double> v,
                         VectorRef<double> out) = 0;
  virtual Status product(CurvatureProduct which, ConstVectorRef<float> v,
                         VectorRef<float> out) = 0;
};

class QUADRA_INTERFACE CurvatureEstimator {
 public:
  virtual ~CurvatureEstimator() = default;
  /// out = C v on the batch the backend is bound to. C must be symmetric.
  virtual Status apply(ICurvatureBackend& batch, ConstVectorRef<double> v,
                       VectorRef<double> out) = 0;
  virtual Status apply(ICurvatureBackend& batch, ConstVectorRef<float> v,
                       VectorRef<float> out) = 0;
};

}  // namespace abi_v1
}  // namespace quadra
