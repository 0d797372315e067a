#pragma once
/// \file
/// The preconditioner of preconditioned CG (Martens 2010 §4.7): M = (D + damping I)^exponent
/// with D a structured curvature plugin's approximation on a batch, its exact diagonal (diag-ggn,
/// diag-ef) or its Kronecker-factored blocks (kfac; powers taken in their eigenbases, and D = 0
/// for parameters outside every block). As a linear operator it applies M^-1.

#include <memory>
#include <quadra/linalg/linear_operator.hpp>
#include <quadra/plugin_host.hpp>
#include <quadra/sdk/curvature.hpp>
#include <string>
#include <vector>

namespace quadra {

class Preconditioner final : public linalg::LinearOperator<double> {
 public:
  /// Takes the structure of `estimator` (bound to a batch of `dim` parameters). Fails for a
  /// matrix-free estimator, damping or exponent out of range ( > 0 and finite, exponent in
  /// (0, 1]), or a damped diagonal entry or eigenvalue that is not positive.
  static Result<std::unique_ptr<Preconditioner>> create(const CurvatureEstimator& estimator,
                                                        Index dim, double damping, double exponent,
                                                        const std::string& name);

  /// Creates the curvature plugin `name` (default options) with `host`, binds it to `batch` and
  /// takes its structure (create() above).
  static Result<std::unique_ptr<Preconditioner>> create(const PluginHost& host,
                                                        const std::string& name,
                                                        ICurvatureBackend& batch, double damping,
                                                        double exponent);

  [[nodiscard]] Index dim() const override { return dim_; }

 protected:
  Status apply_impl(ConstVectorRef<double> x, VectorRef<double> y) override;

 private:
  Preconditioner() = default;

  Index dim_ = 0;
  double outside_ = 1.0;                // (damping)^-exponent, for parameters outside blocks
  Vector<double> inverse_diagonal_;     // diagonal structure: (d + damping)^-exponent
  std::vector<KroneckerEigen> blocks_;  // Kronecker structure, eigenvalues replaced by
                                        // (s_i a_j + damping)^-exponent in `scales_`
  std::vector<Matrix<double>> scales_;
};

}  // namespace quadra
