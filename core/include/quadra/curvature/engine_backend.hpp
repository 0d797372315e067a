#pragma once
/// \file
/// The seam between the engine and curvature plugins: EngineCurvatureBackend implements the
/// SDK's ICurvatureBackend on a bound batch of the engine, and CurvatureOperator turns a bound
/// plugin into a linalg::LinearOperator, so Lanczos, CG and friends run on any plugin's C.
///
/// Exceptions from the engine (shape mismatches) and from guarded plugins (a PluginFailure that
/// names the plugin) are turned into Status values here.

#include <quadra/linalg/linear_operator.hpp>
#include <quadra/nn/bound_batch.hpp>
#include <quadra/sdk/curvature.hpp>

namespace quadra {

template <class Scalar>
class EngineCurvatureBackend final : public ICurvatureBackend {
 public:
  /// `batch` must outlive the backend.
  explicit EngineCurvatureBackend(nn::BoundBatch<Scalar>& batch) : batch_(batch) {}

  [[nodiscard]] Index num_parameters() const override { return batch_.num_parameters(); }
  /// The whole batch's size, also when the batch is split across ranks: a plugin sees one batch.
  [[nodiscard]] Index batch_size() const override { return batch_.total_batch_size(); }
  [[nodiscard]] bool is_double_precision() const override {
    return std::is_same_v<Scalar, double>;
  }
  Status set_mc_samples(int samples, std::uint64_t seed) override;
  Status product(CurvatureProduct which, ConstVectorRef<double> v, VectorRef<double> out) override;
  Status product(CurvatureProduct which, ConstVectorRef<float> v, VectorRef<float> out) override;
  Status diagonal(CurvatureProduct which, VectorRef<double> out) override;
  Status kfac_factors(KfacVariant variant, int mc_samples, std::uint64_t seed,
                      std::vector<KroneckerFactor>& out) override;
  /// On a batch split across ranks: dist::run_distributed over the world, each task on one rank;
  /// otherwise every task here, in order.
  Status run_tasks(IIndependentTasks& tasks, std::vector<std::vector<double>>& results) override;

  [[nodiscard]] nn::BoundBatch<Scalar>& batch() noexcept { return batch_; }

 private:
  template <class Other>
  Status convert_product(CurvatureProduct which, ConstVectorRef<Other> v, VectorRef<Other> out);
  Status native_product(CurvatureProduct which, ConstVectorRef<Scalar> v, VectorRef<Scalar> out);

  nn::BoundBatch<Scalar>& batch_;
  Vector<Scalar> in_, out_;  // conversion buffers for products in the other precision
};

/// A bound curvature estimator as an operator of precision Scalar.
template <class Scalar>
class CurvatureOperator final : public linalg::LinearOperator<Scalar> {
 public:
  /// `estimator` must be bound (and stay bound) to a batch with `dim` parameters.
  CurvatureOperator(CurvatureEstimator& estimator, Index dim) : estimator_(estimator), dim_(dim) {}
  [[nodiscard]] Index dim() const override { return dim_; }

 protected:
  Status apply_impl(ConstVectorRef<Scalar> x, VectorRef<Scalar> y) override;

 private:
  CurvatureEstimator& estimator_;
  Index dim_;
};

extern template class EngineCurvatureBackend<float>;
extern template class EngineCurvatureBackend<double>;
extern template class CurvatureOperator<float>;
extern template class CurvatureOperator<double>;

}  // namespace quadra
