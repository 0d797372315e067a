// The models of one optimizer step. See step_models.hpp.

#include "step_models.hpp"

#include <fmt/format.h>

#include <cmath>
#include <exception>
#include <span>
#include <quadra/curvature/gram.hpp>
#include <quadra/curvature/preconditioner.hpp>
#include <quadra/linalg/cg.hpp>
#include <quadra/linalg/lanczos.hpp>
#include <quadra/linalg/linear_operator.hpp>
#include <quadra/plugin_host.hpp>
#include <string>

namespace quadra::train {

namespace {

/// Runs `f`, turning exceptions (engine shape errors, allocation failures, a plugin failing
/// inside a callback) into a Status: the models are called by plugins, and no exception may
/// cross back into a plugin's frames. A PluginFailure is also kept in `tally` for the loop.
template <class F>
Status guarded(StepTally& tally, F&& f) noexcept {
  try {
    return f();
  } catch (const PluginFailure& e) {
    if (tally.plugin_failure.empty()) tally.plugin_failure = e.what();
    return Status::failed(e.what());
  } catch (const std::exception& e) {
    return Status::failed(e.what());
  } catch (...) {
    return Status::failed("unknown exception");
  }
}

Status check_size(const char* what, Index got, Index want) {
  if (got == want) return Status::ok();
  return Status::invalid_argument(fmt::format("{} has {} entries; expected {}", what, got, want));
}

}  // namespace

template <class S>
StepBatch<S>::StepBatch(const nn::Network& network, const Vector<S>& params,
                        nn::DatasetBatch<S> data, nn::Loss loss, double weight_decay,
                        CurvatureEstimator* estimator, bool ggn, StepTally& tally)
    : network_(network),
      params_(params),
      comm_(dist::Communicator::world()),
      data_(std::move(data)),
      loss_kind_(loss),
      weight_decay_(weight_decay),
      decay_term_(weight_decay == 0.0
                      ? 0.0
                      : 0.5 * weight_decay * params.template cast<double>().squaredNorm()),
      estimator_(estimator),
      ggn_(ggn),
      tally_(tally) {}

template <class S>
nn::BoundBatch<S>& StepBatch<S>::bound() {
  if (!bound_) {
    bound_.emplace(nn::bind_split<S>(network_, params_, data_, loss_kind_, comm_));
    backend_.emplace(*bound_);
  }
  return *bound_;
}

template <class S>
const Vector<double>& StepBatch<S>::gradient() {
  if (!gradient_) {
    Vector<S> g(num_parameters());
    bound().gradient(g);
    gradient_.emplace(g.template cast<double>());
    if (weight_decay_ != 0.0) *gradient_ += weight_decay_ * params_.template cast<double>();
  }
  return *gradient_;
}

template <class S>
Status StepBatch<S>::bind_curvature() {
  if (curvature_bound_) return Status::ok();
  if (estimator_ == nullptr) {
    return Status::unsupported("no curvature plugin is configured (set optimizer.curvature)");
  }
  if (Status s = estimator_->bind(engine()); !s.is_ok()) return s;
  curvature_bound_ = true;
  return Status::ok();
}

template <class S>
Status StepBatch<S>::curvature_times(ConstVectorRef<double> v, VectorRef<double> out) {
  if (Status s = check_size("curvature product input", v.size(), num_parameters()); !s.is_ok()) {
    return s;
  }
  if (Status s = bind_curvature(); !s.is_ok()) return s;
  ++tally_.products;
  // Products run in the model's precision: float32 models convert once per product.
  if constexpr (std::is_same_v<S, double>) {
    if (Status s = estimator_->apply(v, out); !s.is_ok()) return s;
  } else {
    Vector<float> vf = v.template cast<float>();
    Vector<float> of(v.size());
    if (Status s = estimator_->apply(vf, of); !s.is_ok()) return s;
    out = of.template cast<double>();
  }
  if (weight_decay_ != 0.0) out += weight_decay_ * v;
  return Status::ok();
}

template <class S>
Status StepBatch<S>::quadratic_forms(const Matrix<double>& p, MatrixRef<double> out) {
  const Index k = p.cols();
  if (p.rows() != num_parameters() || out.rows() != k || out.cols() != k) {
    return Status::invalid_argument(fmt::format(
        "quadratic forms of a {} x {} basis into {} x {}; expected {} rows and a {} x {} output",
        p.rows(), k, out.rows(), out.cols(), num_parameters(), k, k));
  }
  if (!ggn_) {
    Matrix<double> w(p.rows(), k);
    for (Index j = 0; j < k; ++j) {
      if (Status s = curvature_times(p.col(j), w.col(j)); !s.is_ok()) return s;
    }
    out.noalias() = p.transpose() * w;
    out = (0.5 * (out + out.transpose())).eval();  // symmetric up to rounding in the products
    return Status::ok();
  }
  // Lambda_n = Q_n Q_n^T: with u_nj = Q_n^T J_n p_j, entry (i, j) is (1/N) sum_n u_ni . u_nj.
  nn::BoundBatch<S>& batch = bound();
  const Index n = batch.batch_size();
  const Index c = batch.num_outputs();
  std::vector<Matrix<S>> factor(static_cast<std::size_t>(c), Matrix<S>(c, n));
  for (Index q = 0; q < c; ++q)
    batch.loss_hessian_factor_column(q, factor[static_cast<std::size_t>(q)]);
  Matrix<double> u(c * n, k);
  Matrix<S> tangent(c, n);
  for (Index j = 0; j < k; ++j) {
    batch.jvp(p.col(j).template cast<S>(), tangent);
    ++tally_.products;
    for (Index q = 0; q < c; ++q) {
      const Matrix<S>& f = factor[static_cast<std::size_t>(q)];
      for (Index m = 0; m < n; ++m) {
        u(q * n + m, j) = static_cast<double>(f.col(m).dot(tangent.col(m)));
      }
    }
  }
  if (split()) {
    // Each rank's sum over its samples, completed over ranks in rank order.
    Matrix<double> sums = u.transpose() * u;
    comm_.sum(std::span<double>(sums.data(), static_cast<std::size_t>(sums.size())));
    out = sums / static_cast<double>(batch.total_batch_size());
  } else {
    out.noalias() = u.transpose() * u / static_cast<double>(n);
  }
  if (weight_decay_ != 0.0) out.noalias() += weight_decay_ * (p.transpose() * p);
  if (!out.allFinite()) {
    return Status::numerical_issue("the GGN's quadratic forms along the directions are not finite");
  }
  return Status::ok();
}

template <class S>
double StepBatch<S>::loss_at(ConstVectorRef<double> step) {
  const Vector<S> moved = params_ + step.template cast<S>();
  nn::BoundBatch<S> shifted = nn::bind_split<S>(network_, moved, data_, loss_kind_, comm_);
  const double decay = weight_decay_ == 0.0
                           ? 0.0
                           : 0.5 * weight_decay_ * moved.template cast<double>().squaredNorm();
  return static_cast<double>(shifted.loss()) + decay;
}

template <class S>
Status StepQuadraticModel<S>::parameters(VectorRef<double> out) {
  if (Status s = check_size("parameter output", out.size(), params_.size()); !s.is_ok()) return s;
  out = params_.template cast<double>();
  return Status::ok();
}

template <class S>
Status StepQuadraticModel<S>::gradient(VectorRef<double> out) {
  if (Status s = check_size("gradient output", out.size(), num_parameters()); !s.is_ok()) return s;
  return guarded(gradient_.tally(), [&] {
    out = gradient_.gradient();
    return Status::ok();
  });
}

template <class S>
Status StepQuadraticModel<S>::loss_at(ConstVectorRef<double> step, double& out) {
  if (Status s = check_size("step", step.size(), num_parameters()); !s.is_ok()) return s;
  return guarded(gradient_.tally(), [&] {
    out = gradient_.loss_at(step);
    return Status::ok();
  });
}

template <class S>
Status StepQuadraticModel<S>::curvature_times(ConstVectorRef<double> v, VectorRef<double> out) {
  return guarded(directions_.tally(), [&] { return directions_.curvature_times(v, out); });
}

/// Whether the Gram method serves a top-k request: it finds the GGN's eigenpairs (the "ggn"
/// plugin) of networks whose parameter layers are all Linear, from a matrix of N(C-1) or NC rows
/// that it stores and assembles in about the time of 20 GGN products at N = 1024. `auto` takes it
/// up to kGramAutoRows rows (0.2 GB in float32), where the assembly costs less than the 50 to
/// 150 products Lanczos usually needs for the top eigenpairs.
constexpr Index kGramAutoRows = 10000;

template <class S>
Status StepQuadraticModel<S>::top_eigenpairs(int k, int max_products, double tolerance,
                                             Eigensolver method, Vector<double>& values,
                                             Matrix<double>& vectors) {
  const Index n = num_parameters();
  if (k < 1 || k > n || max_products < k || !(tolerance >= 0.0)) {
    return Status::invalid_argument(fmt::format(
        "top_eigenpairs: k = {} must be in [1, {}], max_products = {} at least k, tolerance = {} "
        ">= 0",
        k, n, max_products, tolerance));
  }
  // Both run on the split batch: the Gram method backpropagates each rank's samples and
  // all-gathers the factor rows (the same bits on every rank), Lanczos sums its products.
  nn::BoundBatch<S>& batch = directions_.engine().batch();  // binds on first use
  const std::uint64_t seed =
      seed_ ^ (0x9e3779b97f4a7c15ULL * static_cast<std::uint64_t>(step_ + 1));
  if (method != Eigensolver::kLanczos) {
    std::string why_not;
    if (curvature_ != "ggn") {
      why_not = fmt::format("the curvature plugin is '{}', not ggn", curvature_);
    } else {
      try {
        curvature::check_gram_supported(batch.network());
      } catch (const Error& e) {
        why_not = e.what();
      }
    }
    const Index outputs = batch.network().num_outputs();
    const Index rows = batch.total_batch_size() *
                       (batch.loss_kind() == nn::Loss::kCrossEntropy ? outputs - 1 : outputs);
    if (why_not.empty() && method == Eigensolver::kAuto && (rows > kGramAutoRows || k > rows)) {
      why_not = "too large";
    }
    if (method == Eigensolver::kGram && !why_not.empty()) {
      return Status::invalid_argument(
          "top_eigenpairs: the Gram method needs the ggn curvature plugin and a network of "
          "Linear layers; " +
          why_not);
    }
    if (why_not.empty()) {
      return guarded(directions_.tally(), [&] {
        curvature::GramEigenOptions options;
        options.tolerance = tolerance;
        options.max_products = max_products;
        options.seed = seed;
        auto result = curvature::ggn_top_eigenpairs_gram(batch, k, options);
        // C includes the weight decay eta I: the same eigenvectors, eigenvalues shifted by eta.
        values = result.eigenvalues.array() + directions_.weight_decay();
        vectors = result.eigenvectors.template cast<double>();
        directions_.tally().products += result.num_products;
        return Status::ok();
      });
    }
  }
  return guarded(directions_.tally(), [&] {
    linalg::FunctionOperator<double> op(
        n, [this](ConstVectorRef<double> x, VectorRef<double> y) { return curvature_times(x, y); });
    linalg::LanczosOptions options;
    options.max_products = max_products;
    options.tolerance = tolerance;
    options.seed = seed;
    auto result = linalg::lanczos_largest(op, k, options);
    if (!result.status.is_ok()) return result.status;
    values = std::move(result.eigenvalues);
    vectors = std::move(result.eigenvectors);
    return Status::ok();
  });
}

template <class S>
Status StepQuadraticModel<S>::conjugate_gradients(const CgRequest& request, CgOutcome& out) {
  return guarded(directions_.tally(), [&] {
    linalg::FunctionOperator<double> op(
        num_parameters(),
        [this](ConstVectorRef<double> x, VectorRef<double> y) { return curvature_times(x, y); });
    if (request.preconditioner.empty())
      return linalg::newton_cg(op, gradient_.gradient(), request, out);
    // M from the preconditioner's plugin on the directions batch, damped as the step is.
    auto m = Preconditioner::create(host_, request.preconditioner, directions_.engine(),
                                    request.lambda + request.preconditioner_damping,
                                    request.preconditioner_exponent);
    if (!m.is_ok()) return m.status();
    return linalg::newton_cg(op, gradient_.gradient(), request, out, m.value().get());
  });
}

template <class S>
Status StepDirectionalModel<S>::slopes(VectorRef<double> out) {
  if (Status s = check_size("slopes output", out.size(), basis_.cols()); !s.is_ok()) return s;
  return guarded(batch_.tally(), [&] {
    out.noalias() = basis_.transpose() * batch_.gradient();
    return Status::ok();
  });
}

template <class S>
Status StepDirectionalModel<S>::projected_curvature(MatrixRef<double> out) {
  const Index k = basis_.cols();
  if (out.rows() != k || out.cols() != k) {
    return Status::invalid_argument(fmt::format(
        "projected curvature output is {}x{}; expected {}x{}", out.rows(), out.cols(), k, k));
  }
  return guarded(batch_.tally(), [&] { return batch_.quadratic_forms(basis_, out); });
}

template <class S>
Status StepDirectionalModel<S>::gram(MatrixRef<double> out) {
  const Index k = basis_.cols();
  if (out.rows() != k || out.cols() != k) {
    return Status::invalid_argument(
        fmt::format("gram output is {}x{}; expected {}x{}", out.rows(), out.cols(), k, k));
  }
  out.noalias() = basis_.transpose() * basis_;
  return Status::ok();
}

template class StepBatch<float>;
template class StepBatch<double>;
template class StepQuadraticModel<float>;
template class StepQuadraticModel<double>;
template class StepDirectionalModel<float>;
template class StepDirectionalModel<double>;

}  // namespace quadra::train
