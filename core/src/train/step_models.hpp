#pragma once
// The host side of one optimizer step: a batch bound to the engine at the current parameters,
// and the SDK models the plugins see (IQuadraticModel for solvers, IDirectionalModel for
// debiasing). Everything is computed lazily and once: a solver that never asks for curvature
// costs no curvature work, and a batch serving several roles is bound once.
//
// Weight decay eta enters every model the same way: loss + eta/2 |theta|^2, gradient + eta
// theta, curvature + eta I.

#include <cstdint>
#include <optional>
#include <quadra/curvature/engine_backend.hpp>
#include <quadra/dist/communicator.hpp>
#include <quadra/nn/bound_batch.hpp>
#include <quadra/nn/dataset_batch.hpp>
#include <quadra/plugin_host.hpp>
#include <quadra/sdk/curvature.hpp>
#include <quadra/sdk/debiasing.hpp>
#include <quadra/sdk/solver.hpp>
#include <string>
#include <vector>

namespace quadra::train {

/// What every draw of a run shares: the run's count of curvature products, and the first
/// PluginFailure a host callback caught. A callback cannot throw into the plugin that called it
/// (a solver asking for C v from a curvature plugin that threw), so it returns a failed Status
/// and the loop rethrows the failure once the calling plugin has returned.
struct StepTally {
  std::int64_t& products;
  std::string plugin_failure;
};

/// One draw bound to the engine at the step's parameters. The forward pass runs on first use:
/// a draw no phase asks for (an acceptance draw when nothing is measured) costs nothing.
///
/// With several ranks (dist::Communicator::world()) every rank holds the whole draw and binds
/// its share of the samples; every number the models return (loss, gradient, products,
/// quadratic forms) is the whole draw's and the same bits on every rank, so every call is
/// collective: all ranks make the same calls in the same order.
template <class S>
class StepBatch {
 public:
  /// `ggn`: the run's curvature plugin is the exact GGN, whose quadratic forms this batch can
  /// compute from output JVPs (see quadratic_forms).
  StepBatch(const nn::Network& network, const Vector<S>& params, nn::DatasetBatch<S> data,
            nn::Loss loss, double weight_decay, CurvatureEstimator* estimator, bool ggn,
            StepTally& tally);

  [[nodiscard]] Index num_parameters() const { return params_.size(); }
  /// Samples of the whole draw.
  [[nodiscard]] Index batch_size() const { return data_.inputs.cols(); }
  /// Whether this rank binds a share of the draw (nn::splits_across).
  [[nodiscard]] bool split() const { return nn::splits_across(comm_, data_.inputs.cols()); }
  /// Data loss (without weight decay).
  [[nodiscard]] double data_loss() { return static_cast<double>(bound().loss()); }
  /// Data loss + eta/2 |theta|^2.
  [[nodiscard]] double loss() { return data_loss() + decay_term_; }
  /// Gradient including weight decay, computed on first use.
  const Vector<double>& gradient();
  /// out = (C + eta I) v with the run's curvature plugin, bound on first use.
  Status curvature_times(ConstVectorRef<double> v, VectorRef<double> out);
  /// out = P^T (C + eta I) P (k x k, symmetric) for the k columns of P. For the GGN,
  /// (J P)^T Lambda (J P) / N + eta P^T P from k output JVPs: a JVP is the forward half of a
  /// GGN product, so this costs about half of k products; otherwise k products.
  Status quadratic_forms(const Matrix<double>& p, MatrixRef<double> out);
  /// Loss (with weight decay) at params + step on the same samples: one forward pass.
  double loss_at(ConstVectorRef<double> step);
  EngineCurvatureBackend<S>& engine() {
    bound();
    return *backend_;
  }
  /// PyTorch's train-mode update of `network`'s running statistics from this draw's batch
  /// statistics (nn::BoundBatch::update_running_statistics); binds first if needed.
  void update_running_statistics(nn::Network& network) {
    bound().update_running_statistics(network);
  }
  [[nodiscard]] double weight_decay() const { return weight_decay_; }
  [[nodiscard]] bool has_curvature() const { return estimator_ != nullptr; }
  StepTally& tally() { return tally_; }

 private:
  Status bind_curvature();
  nn::BoundBatch<S>& bound();

  const nn::Network& network_;
  const Vector<S>& params_;
  const dist::Communicator& comm_;
  nn::DatasetBatch<S> data_;  // the whole draw, also when each rank binds a share of it
  nn::Loss loss_kind_;
  double weight_decay_;
  double decay_term_;
  std::optional<nn::BoundBatch<S>> bound_;
  std::optional<EngineCurvatureBackend<S>> backend_;
  CurvatureEstimator* estimator_;
  bool ggn_;
  bool curvature_bound_ = false;
  StepTally& tally_;
  std::optional<Vector<double>> gradient_;
  Vector<double> v_, out_;  // scratch for products
};

/// The solver's view: loss and gradient of the gradient draw, curvature of the directions draw.
template <class S>
class StepQuadraticModel final : public IQuadraticModel {
 public:
  /// `host` creates the curvature plugin of a preconditioned CG request; `curvature` names the
  /// run's curvature plugin (the Gram method serves "ggn" only).
  StepQuadraticModel(StepBatch<S>& gradient, StepBatch<S>& directions, const Vector<S>& params,
                     std::int64_t step, std::uint64_t seed, const PluginHost& host,
                     std::string curvature)
      : gradient_(gradient),
        directions_(directions),
        params_(params),
        step_(step),
        seed_(seed),
        host_(host),
        curvature_(std::move(curvature)) {}

  [[nodiscard]] Index num_parameters() const override { return gradient_.num_parameters(); }
  [[nodiscard]] std::int64_t step() const override { return step_; }
  Status parameters(VectorRef<double> out) override;
  [[nodiscard]] double loss() const override { return gradient_.loss(); }
  Status gradient(VectorRef<double> out) override;
  Status loss_at(ConstVectorRef<double> step, double& out) override;
  Status curvature_times(ConstVectorRef<double> v, VectorRef<double> out) override;
  Status top_eigenpairs(int k, int max_products, double tolerance, Eigensolver method,
                        Vector<double>& values, Matrix<double>& vectors) override;
  Status conjugate_gradients(const CgRequest& request, CgOutcome& out) override;
  ICurvatureBackend& engine() override { return directions_.engine(); }

 private:
  StepBatch<S>& gradient_;
  StepBatch<S>& directions_;
  const Vector<S>& params_;
  std::int64_t step_;
  std::uint64_t seed_;
  const PluginHost& host_;
  std::string curvature_;
};

/// The debiasing strategy's view: the quadratic along the proposed directions on one draw.
template <class S>
class StepDirectionalModel final : public IDirectionalModel {
 public:
  StepDirectionalModel(StepBatch<S>& batch, const Matrix<double>& basis)
      : batch_(batch), basis_(basis) {}
  [[nodiscard]] Index num_directions() const override { return basis_.cols(); }
  Status slopes(VectorRef<double> out) override;
  Status projected_curvature(MatrixRef<double> out) override;
  Status gram(MatrixRef<double> out) override;

 private:
  StepBatch<S>& batch_;
  const Matrix<double>& basis_;
};

extern template class StepBatch<float>;
extern template class StepBatch<double>;
extern template class StepQuadraticModel<float>;
extern template class StepQuadraticModel<double>;
extern template class StepDirectionalModel<float>;
extern template class StepDirectionalModel<double>;

}  // namespace quadra::train
