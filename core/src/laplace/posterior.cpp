// Curvature in eigen form (fit_curvature) and the Laplace posterior's algebra: log-determinant,
// evidence, sampling and the linearised predictive's function-space covariance.

#include <quadra/laplace/posterior.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <numbers>

#include <Eigen/Eigenvalues>
#include <fmt/format.h>

#include <quadra/curvature/engine_backend.hpp>
#include <quadra/dist/communicator.hpp>
#include <quadra/error.hpp>
#include <quadra/linalg/lanczos.hpp>
#include <quadra/parallel.hpp>

#include "layer_blocks.hpp"
#include "names.hpp"

namespace quadra::laplace {

const char* to_string(Structure value) {
  switch (value) {
    case Structure::kDiagonal:
      return "diag";
    case Structure::kKfac:
      return "kfac";
    case Structure::kLowRank:
      return "lowrank";
    case Structure::kLastLayerFull:
      return "last-layer-full";
    case Structure::kFull:
      return "full";
  }
  return "?";
}
const char* to_string(Subset value) { return value == Subset::kAll ? "all" : "last-layer"; }
const char* to_string(Debiasing value) {
  return value == Debiasing::kSameData ? "same-data" : "independent";
}
const char* to_string(KfacEigenvalues value) {
  return value == KfacEigenvalues::kKronecker ? "kronecker" : "per-sample";
}
Structure parse_structure(std::string_view text) {
  return detail::parse_name<Structure>(text,
                                       {Structure::kDiagonal, Structure::kKfac, Structure::kLowRank,
                                        Structure::kLastLayerFull, Structure::kFull},
                                       "structure");
}
Subset parse_subset(std::string_view text) {
  return detail::parse_name<Subset>(text, {Subset::kAll, Subset::kLastLayer}, "subset");
}
Debiasing parse_debiasing(std::string_view text) {
  return detail::parse_name<Debiasing>(text, {Debiasing::kSameData, Debiasing::kIndependent},
                                       "debiasing");
}
KfacEigenvalues parse_kfac_eigenvalues(std::string_view text) {
  return detail::parse_name<KfacEigenvalues>(
      text, {KfacEigenvalues::kKronecker, KfacEigenvalues::kPerSample}, "K-FAC eigenvalues");
}

ParameterRange subset_range(const nn::Network& network, Subset subset) {
  const auto layers = detail::parameter_layers(network);
  if (layers.empty()) throw Error(fmt::format("model '{}' has no parameters", network.spec()));
  if (subset == Subset::kAll) return {0, network.num_parameters()};
  return {layers.back().offset, layers.back().size()};
}

Index CurvatureModel::num_values() const {
  Index count = 0;
  for (const KroneckerBlock& b : kronecker) count += b.values.size();
  for (const EigenBlock& b : eigen) count += b.values.size();
  return count;
}

std::vector<double> CurvatureModel::all_values() const {
  std::vector<double> out;
  for (const KroneckerBlock& b : kronecker)
    out.insert(out.end(), b.values.data(), b.values.data() + b.values.size());
  for (const EigenBlock& b : eigen)
    out.insert(out.end(), b.values.data(), b.values.data() + b.values.size());
  return out;
}

Subset effective_subset(const FitOptions& options) {
  if (options.structure == Structure::kLastLayerFull) return Subset::kLastLayer;
  if (options.structure == Structure::kFull) return Subset::kAll;
  return options.subset;
}

std::string curvature_plugin_name(const FitOptions& options) {
  if (!options.curvature.empty()) return options.curvature;
  switch (options.structure) {
    case Structure::kDiagonal:
      return "diag-ggn";
    case Structure::kKfac:
      return "kfac";
    default:
      return "ggn";
  }
}

// ---- fitting ---------------------------------------------------------------------------------

namespace {

/// A curvature plugin bound to one set of samples. Heap-allocated: the backend refers to the
/// batch and the estimator to the backend.
template <class S>
struct BoundCurvature {
  nn::BoundBatch<S> batch;
  EngineCurvatureBackend<S> backend;
  PluginHandle<CurvatureEstimator> estimator;
  std::unique_ptr<CurvatureOperator<S>> op;

  BoundCurvature(const PluginHost& host, const std::string& name, const RawOptions& options,
                 const nn::Network& network, const Vector<S>& params, nn::Loss loss,
                 const nn::DatasetBatch<S>& data)
      : batch(nn::bind_split<S>(network, params, data, loss, dist::Communicator::world())),
        backend(batch) {
    auto created = host.create<CurvatureEstimator>(name, options);
    if (!created.is_ok())
      throw Error(fmt::format("curvature plugin '{}': {}", name, created.status().message()));
    estimator = std::move(created.value());
    if (Status s = estimator->bind(backend); !s.is_ok()) {
      throw Error(
          fmt::format("curvature plugin '{}' failed on the curvature data: {}", name, s.message()));
    }
    op = std::make_unique<CurvatureOperator<S>>(*estimator, batch.num_parameters());
  }
};

template <class S>
std::unique_ptr<BoundCurvature<S>> bind_curvature(const PluginHost& host, const FitOptions& o,
                                                  const nn::Network& network,
                                                  const Vector<S>& params, nn::Loss loss,
                                                  const nn::DatasetBatch<S>& data) {
  return std::make_unique<BoundCurvature<S>>(host, curvature_plugin_name(o), o.curvature_options,
                                             network, params, loss, data);
}

/// C restricted to a range: pads, multiplies, slices.
template <class S>
class RangeOperator final : public linalg::LinearOperator<S> {
 public:
  RangeOperator(linalg::LinearOperator<S>& full, ParameterRange range)
      : full_(full), range_(range), in_(Vector<S>::Zero(full.dim())), out_(full.dim()) {}
  [[nodiscard]] Index dim() const override { return range_.size; }

 protected:
  Status apply_impl(ConstVectorRef<S> x, VectorRef<S> y) override {
    in_.segment(range_.offset, range_.size) = x;
    if (Status s = full_.apply(in_, out_); !s.is_ok()) return s;
    y = out_.segment(range_.offset, range_.size);
    return Status::ok();
  }

 private:
  linalg::LinearOperator<S>& full_;
  ParameterRange range_;
  Vector<S> in_, out_;
};

void check_status(const Status& s, const std::string& what) {
  if (!s.is_ok()) throw Error(fmt::format("{}: {}", what, s.message()));
}

/// Clamps negative estimates to 0, counting them.
void clamp_values(Eigen::Ref<Matrix<double>> values, CurvatureModel& model) {
  for (Index i = 0; i < values.size(); ++i) {
    double& v = values.data()[i];
    if (!std::isfinite(v))
      throw Error(fmt::format("curvature eigenvalue estimate {} is not finite", v));
    if (v < 0.0) {
      model.most_negative = std::min(model.most_negative, v);
      v = 0.0;
      ++model.clamped;
    }
  }
}

bool in_range(const ParameterRange& r, Index offset) {
  return offset >= r.offset && offset < r.offset + r.size;
}

/// The diagonal plugin's diagonal as identity-basis Kronecker blocks.
template <class S>
void fit_diagonal(BoundCurvature<S>& bound, const nn::Network& network, const std::string& name,
                  CurvatureModel& model) {
  if (bound.estimator->structure() != CurvatureStructure::kDiagonal) {
    throw Error(
        fmt::format("structure diag needs a diagonal curvature plugin (diag-ggn, diag-ef); '{}' "
                    "is not diagonal",
                    name));
  }
  Vector<double> diagonal(network.num_parameters());
  check_status(bound.estimator->diagonal(diagonal),
               fmt::format("curvature plugin '{}' diagonal", name));
  for (const detail::ParameterLayer& l : detail::parameter_layers(network)) {
    if (!in_range(model.range, l.offset)) continue;
    KroneckerBlock b = detail::empty_block(l);
    b.identity = true;
    b.values = detail::to_block_layout(diagonal.segment(l.offset, l.size()), l);
    model.kronecker.push_back(std::move(b));
  }
}

/// K-FAC blocks on the range with the factors' eigenbases and eigenvalues a_i s_j.
template <class S>
void fit_kfac_bases(BoundCurvature<S>& bound, const nn::Network& network, const std::string& name,
                    CurvatureModel& model) {
  if (bound.estimator->structure() != CurvatureStructure::kKronecker) {
    throw Error(
        fmt::format("structure kfac needs a Kronecker curvature plugin (kfac); '{}' is not", name));
  }
  std::vector<KroneckerEigen> eigen;
  check_status(bound.estimator->kronecker(eigen),
               fmt::format("curvature plugin '{}' factors", name));
  for (const detail::ParameterLayer& l : detail::parameter_layers(network)) {
    if (!in_range(model.range, l.offset)) continue;
    const auto e = std::find_if(eigen.begin(), eigen.end(), [&](const KroneckerEigen& x) {
      return x.factor.offset == l.offset;
    });
    if (e == eigen.end()) {
      throw Error(fmt::format("curvature plugin '{}' gave no factors for the layer at parameter {}",
                              name, l.offset));
    }
    KroneckerBlock b = detail::empty_block(l);
    b.qa = e->a_eigenvectors;
    b.qs = e->s_eigenvectors;
    b.values = e->s_eigenvalues * e->a_eigenvalues.transpose();
    model.kronecker.push_back(std::move(b));
  }
}

/// Factor-wise Rayleigh quotients on the second set: ã_i s̃_j.
template <class S>
void kfac_rayleigh(BoundCurvature<S>& second, const std::string& name, CurvatureModel& model) {
  std::vector<KroneckerEigen> eigen;
  check_status(second.estimator->kronecker(eigen),
               fmt::format("curvature plugin '{}' factors", name));
  for (KroneckerBlock& b : model.kronecker) {
    const auto found = std::find_if(eigen.begin(), eigen.end(), [&](const KroneckerEigen& e) {
      return e.factor.offset == b.offset;
    });
    if (found == eigen.end())
      throw Error(fmt::format("K-FAC factors of the layer at parameter {} missing", b.offset));
    const Vector<double> a = (b.qa.transpose() * found->factor.a * b.qa).diagonal();
    const Vector<double> s = (b.qs.transpose() * found->factor.s * b.qs).diagonal();
    b.values = s * a.transpose();
  }
}

/// EK-FAC eigenvalues on `data`: the exact GGN's Rayleigh quotient along each basis pair. A
/// batch split across ranks sums its samples' squares on each rank, then over the ranks.
template <class S>
void kfac_per_sample(nn::BoundBatch<S>& batch, CurvatureModel& model) {
  const Index n = batch.batch_size();
  const Index total = batch.total_batch_size();
  const Index c = batch.num_outputs();
  const auto layers = detail::parameter_layers(batch.network());
  std::vector<Matrix<double>> sums;
  for (const KroneckerBlock& b : model.kronecker)
    sums.push_back(Matrix<double>::Zero(b.out, b.cols()));
  Matrix<S> u(c, n);
  for (Index k = 0; k < c; ++k) {
    batch.loss_hessian_factor_column(k, u);
    detail::SampleJacobians<S> jac(batch, layers, u);
    for (std::size_t i = 0; i < model.kronecker.size(); ++i) {
      const KroneckerBlock& b = model.kronecker[i];
      sums[i] += detail::projected_square_sum(jac, b);
    }
  }
  const dist::Communicator& comm = dist::Communicator::world();
  for (std::size_t i = 0; i < model.kronecker.size(); ++i) {
    if (nn::splits_across(comm, total)) {
      comm.sum(std::span<double>(sums[i].data(), static_cast<std::size_t>(sums[i].size())));
    }
    model.kronecker[i].values = sums[i] / static_cast<double>(total);
  }
}

/// Dense C on the range by products with unit vectors, symmetrised.
template <class S>
Matrix<double> dense_curvature(BoundCurvature<S>& bound, ParameterRange range,
                               const std::string& name) {
  RangeOperator<S> op(*bound.op, range);
  Matrix<double> dense(range.size, range.size);
  Vector<S> e = Vector<S>::Zero(range.size);
  Vector<S> column(range.size);
  for (Index j = 0; j < range.size; ++j) {
    e(j) = S(1);
    check_status(op.apply(e, column), fmt::format("curvature plugin '{}' product", name));
    dense.col(j) = column.template cast<double>();
    e(j) = S(0);
  }
  return (0.5 * (dense + dense.transpose())).eval();
}

/// u_k' C u_k on the second set for every column of `basis`.
template <class S>
Vector<double> rayleigh_quotients(BoundCurvature<S>& bound, ParameterRange range,
                                  const Matrix<double>& basis, const std::string& name) {
  RangeOperator<S> op(*bound.op, range);
  Vector<double> out(basis.cols());
  Vector<S> in(range.size), product(range.size);
  for (Index k = 0; k < basis.cols(); ++k) {
    in = basis.col(k).template cast<S>();
    check_status(op.apply(in, product), fmt::format("curvature plugin '{}' product", name));
    out(k) = basis.col(k).dot(product.template cast<double>());
  }
  return out;
}

}  // namespace

void check_fit_options(const nn::Network& network, const FitOptions& o) {
  const ParameterRange range = subset_range(network, effective_subset(o));
  const bool independent = o.debiasing == Debiasing::kIndependent;
  const bool dense = o.structure == Structure::kFull || o.structure == Structure::kLastLayerFull;
  if (dense && range.size > o.max_dense) {
    const double gib = 8.0 * static_cast<double>(range.size) * static_cast<double>(range.size) /
                       (1024.0 * 1024.0 * 1024.0);
    throw Error(fmt::format(
        "structure {}: the range has {} parameters and would need {} curvature products "
        "and a {}x{} dense matrix ({:.2f} GiB); the limit is {} parameters. Use "
        "kfac, diag or lowrank, or last-layer-full",
        to_string(o.structure), range.size, range.size, range.size, range.size, gib, o.max_dense));
  }
  if (o.structure == Structure::kDiagonal && independent) {
    throw Error(
        "structure diag with debiasing independent: a diagonal has a fixed basis, so there is no "
        "selection bias to remove; use same-data");
  }
  if (o.kfac_eigenvalues == KfacEigenvalues::kPerSample) {
    if (o.structure != Structure::kKfac) {
      throw Error(fmt::format("K-FAC eigenvalues per-sample apply to structure kfac, not {}",
                              to_string(o.structure)));
    }
    const auto type = o.curvature_options.find("type");
    if (type != o.curvature_options.end() && type->second != "type-2") {
      throw Error(fmt::format(
          "K-FAC eigenvalues per-sample are the exact GGN's Rayleigh quotients and need "
          "curvature.type=type-2; found type={}",
          type->second));
    }
  }
  if (o.structure == Structure::kLowRank && (o.rank < 1 || o.rank > range.size)) {
    throw Error(fmt::format("lowrank rank {}: the range has {} parameters; expected 1 to {}",
                            o.rank, range.size, range.size));
  }
}

template <class S>
CurvatureModel fit_curvature(const PluginHost& host, const nn::Network& network,
                             const Vector<S>& params, nn::Loss loss,
                             const nn::DatasetBatch<S>& first, const nn::DatasetBatch<S>* second,
                             const FitOptions& o) {
  const bool independent = o.debiasing == Debiasing::kIndependent;
  if (independent != (second != nullptr)) {
    throw Error(independent
                    ? "independent debiasing needs a second, independent curvature set"
                    : "same-data Laplace takes one curvature set (pass D1 and D2 together)");
  }
  CurvatureModel model;
  model.structure = o.structure;
  check_fit_options(network, o);
  model.range = subset_range(network, effective_subset(o));
  for (const detail::ParameterLayer& l : detail::parameter_layers(network)) {
    if (in_range(model.range, l.offset)) model.layers.push_back({l.offset, l.size()});
  }
  const std::string name = curvature_plugin_name(o);
  auto bound = bind_curvature(host, o, network, params, loss, first);
  switch (o.structure) {
    case Structure::kDiagonal:
      fit_diagonal(*bound, network, name, model);
      break;
    case Structure::kKfac: {
      fit_kfac_bases(*bound, network, name, model);
      if (o.kfac_eigenvalues == KfacEigenvalues::kPerSample && !independent) {
        kfac_per_sample(bound->batch, model);  // EK-FAC on the same data, already bound
      } else if (o.kfac_eigenvalues == KfacEigenvalues::kPerSample) {
        nn::BoundBatch<S> batch =
            nn::bind_split<S>(network, params, *second, loss, dist::Communicator::world());
        kfac_per_sample(batch, model);
      } else if (independent) {
        auto other = bind_curvature(host, o, network, params, loss, *second);
        kfac_rayleigh(*other, name, model);
      }
      break;
    }
    case Structure::kLowRank: {
      RangeOperator<S> op(*bound->op, model.range);
      linalg::LanczosOptions lanczos;
      lanczos.max_products = std::min(model.range.size, std::max(o.lanczos_max_products, o.rank));
      lanczos.tolerance = o.lanczos_tolerance;
      lanczos.seed = o.seed;
      auto result = linalg::lanczos_largest<S>(op, o.rank, lanczos);
      check_status(result.status, fmt::format("Lanczos on curvature plugin '{}'", name));
      if (!result.converged) {
        model.notes.push_back(
            fmt::format("Lanczos stopped after {} products before all {} eigenpairs met the "
                        "tolerance {:g}",
                        result.num_products, o.rank, o.lanczos_tolerance));
      }
      EigenBlock b{model.range, result.eigenvectors.template cast<double>(), result.eigenvalues};
      if (independent) {
        auto other = bind_curvature(host, o, network, params, loss, *second);
        b.values = rayleigh_quotients(*other, model.range, b.basis, name);
      }
      model.eigen.push_back(std::move(b));
      break;
    }
    case Structure::kLastLayerFull:
    case Structure::kFull: {
      Eigen::SelfAdjointEigenSolver<Matrix<double>> solver(
          dense_curvature(*bound, model.range, name));
      EigenBlock b{model.range, solver.eigenvectors(), solver.eigenvalues()};
      if (independent) {
        auto other = bind_curvature(host, o, network, params, loss, *second);
        const Matrix<double> c2 = dense_curvature(*other, model.range, name);
        b.values = (b.basis.transpose() * c2 * b.basis).diagonal();
      }
      model.eigen.push_back(std::move(b));
      break;
    }
  }
  for (KroneckerBlock& b : model.kronecker) clamp_values(b.values, model);
  for (EigenBlock& b : model.eigen) clamp_values(b.values, model);
  if (model.clamped > 0) {
    const std::vector<double> values = model.all_values();
    model.notes.push_back(fmt::format(
        "{} negative eigenvalue estimates were set to 0 (the most negative {:.3g}, "
        "against a largest eigenvalue of {:.3g}: roundoff unless comparable)",
        model.clamped, model.most_negative, *std::max_element(values.begin(), values.end())));
  }
  return model;
}

// ---- the posterior ---------------------------------------------------------------------------

void check_per_layer_prior(Structure structure) {
  if (structure == Structure::kLowRank) {
    throw Error(
        "a per-layer prior precision does not work with structure lowrank: lowrank keeps the top-k "
        "eigenvectors of C and gives their complement the prior alone, one tau for the whole "
        "range; a prior that differs between layers is not diagonal in that basis, so its "
        "log-determinant and predictive would need the dense P x P precision. Use diag, kfac, "
        "full or last-layer-full, or one prior precision");
  }
}

Posterior::Posterior(CurvatureModel model, Vector<double> map, double data_size,
                     double prior_precision)
    : model_(std::move(model)), map_(std::move(map)), n_(data_size) {
  if (!(data_size >= 1.0) || !std::isfinite(data_size)) {
    throw Error(fmt::format("Laplace data size N = {}; expected a finite number >= 1", data_size));
  }
  if (model_.range.offset < 0 || model_.range.offset + model_.range.size > map_.size()) {
    throw Error(fmt::format("Laplace range [{}, {}) does not fit {} parameters",
                            model_.range.offset, model_.range.offset + model_.range.size,
                            map_.size()));
  }
  groups_ = model_.layers.empty() ? std::vector<ParameterRange>{model_.range} : model_.layers;
  Index next = model_.range.offset;
  for (const ParameterRange& g : groups_) {
    if (g.offset != next || g.size < 1) {
      throw Error(fmt::format(
          "Laplace layers do not tile the range [{}, {}): a layer [{}, {}) where one starting at "
          "{} was expected",
          model_.range.offset, model_.range.offset + model_.range.size, g.offset, g.offset + g.size,
          next));
    }
    next += g.size;
  }
  if (next != model_.range.offset + model_.range.size) {
    throw Error(fmt::format("Laplace layers end at {}; the range [{}, {}) ends at {}", next,
                            model_.range.offset, model_.range.offset + model_.range.size,
                            model_.range.offset + model_.range.size));
  }
  for (const KroneckerBlock& b : model_.kronecker) {
    const auto g = std::find_if(groups_.begin(), groups_.end(), [&](const ParameterRange& r) {
      return r.offset == b.offset && r.size == b.size();
    });
    if (g == groups_.end() && groups_.size() > 1) {
      throw Error(
          fmt::format("Laplace Kronecker block at parameter {} ({} parameters) is not a "
                      "layer of the range",
                      b.offset, b.size()));
    }
    block_group_.push_back(g == groups_.end() ? 0 : static_cast<std::size_t>(g - groups_.begin()));
  }
  set_prior_precision(prior_precision);
}

void Posterior::set_prior_precision(double tau) {
  if (!(tau > 0.0) || !std::isfinite(tau)) {
    throw Error(fmt::format("prior precision {}; expected a finite number > 0", tau));
  }
  taus_.assign(groups_.size(), tau);
  per_layer_ = false;
  update_variances();
}

void Posterior::set_prior_precisions(std::vector<double> taus) {
  check_per_layer_prior(model_.structure);
  if (taus.size() != groups_.size()) {
    throw Error(fmt::format("{} per-layer prior precisions for {} layers; expected one per layer",
                            taus.size(), groups_.size()));
  }
  for (std::size_t l = 0; l < taus.size(); ++l) {
    if (!(taus[l] > 0.0) || !std::isfinite(taus[l])) {
      throw Error(
          fmt::format("prior precision {} of layer {}; expected a finite number > 0", taus[l], l));
    }
  }
  taus_ = std::move(taus);
  per_layer_ = true;
  update_variances();
}

bool Posterior::uniform_prior() const {
  return std::all_of(taus_.begin(), taus_.end(), [&](double t) { return t == taus_.front(); });
}

const Matrix<double>& Posterior::covariance_basis(std::size_t block) const {
  return eigen_bases_.empty() ? model_.eigen[block].basis : eigen_bases_[block];
}

namespace {

/// D of a per-layer prior on `range`: τ_l on the parameters of layer l.
Vector<double> prior_diagonal(const ParameterRange& range,
                              const std::vector<ParameterRange>& groups,
                              const std::vector<double>& taus) {
  Vector<double> d(range.size);
  for (std::size_t l = 0; l < groups.size(); ++l) {
    d.segment(groups[l].offset - range.offset, groups[l].size).setConstant(taus[l]);
  }
  return d;
}

/// N·C of an eigen block, densely.
Matrix<double> scaled_curvature(const EigenBlock& b, double n) {
  return b.basis * (n * b.values).asDiagonal() * b.basis.transpose();
}

}  // namespace

void Posterior::update_variances() {
  block_variances_.clear();
  eigen_variances_.clear();
  eigen_bases_.clear();
  for (std::size_t i = 0; i < model_.kronecker.size(); ++i) {
    const double tau = taus_[block_group_[i]];
    block_variances_.push_back((n_ * model_.kronecker[i].values.array() + tau).inverse().matrix());
  }
  if (uniform_prior()) {
    for (const EigenBlock& b : model_.eigen) {
      eigen_variances_.push_back((n_ * b.values.array() + taus_.front()).inverse().matrix());
    }
    return;
  }
  // A per-layer prior is not diagonal in C's eigenbasis: eigendecompose N·C + D itself.
  for (const EigenBlock& b : model_.eigen) {
    Matrix<double> precision = scaled_curvature(b, n_);
    precision.diagonal() += prior_diagonal(b.range, groups_, taus_);
    Eigen::SelfAdjointEigenSolver<Matrix<double>> solver(precision);
    eigen_variances_.push_back(solver.eigenvalues().cwiseInverse());
    eigen_bases_.push_back(solver.eigenvectors());
  }
}

double Posterior::log_det_precision() const {
  double sum = 0.0;
  Index covered = 0;
  for (std::size_t i = 0; i < model_.kronecker.size(); ++i) {
    const KroneckerBlock& b = model_.kronecker[i];
    sum += (n_ * b.values.array() + taus_[block_group_[i]]).log().sum();
    covered += b.values.size();
  }
  if (!uniform_prior()) {
    // Eigen blocks hold the eigenvalues of the precision itself (a dense range is covered).
    for (const Vector<double>& v : eigen_variances_) sum -= v.array().log().sum();
    return sum;
  }
  const double tau = taus_.front();
  for (const EigenBlock& b : model_.eigen) {
    sum += (n_ * b.values.array() + tau).log().sum();
    covered += b.values.size();
  }
  return sum + static_cast<double>(model_.range.size - covered) * std::log(tau);
}

double Posterior::log_marginal_likelihood(double total_nll) const {
  if (uniform_prior()) {
    const double tau = taus_.front();
    const double norm2 = map_.segment(model_.range.offset, model_.range.size).squaredNorm();
    return -total_nll - 0.5 * tau * norm2 +
           0.5 * static_cast<double>(model_.range.size) * std::log(tau) - 0.5 * log_det_precision();
  }
  double prior = 0.0;
  for (std::size_t l = 0; l < groups_.size(); ++l) {
    const double norm2 = map_.segment(groups_[l].offset, groups_[l].size).squaredNorm();
    prior +=
        -0.5 * taus_[l] * norm2 + 0.5 * static_cast<double>(groups_[l].size) * std::log(taus_[l]);
  }
  return -total_nll + prior - 0.5 * log_det_precision();
}

Vector<double> Posterior::sample_deviation(data::Rng& rng) const {
  Vector<double> delta = Vector<double>::Zero(map_.size());
  for (std::size_t i = 0; i < model_.kronecker.size(); ++i) {
    const KroneckerBlock& b = model_.kronecker[i];
    Matrix<double> z(b.out, b.cols());
    for (Index j = 0; j < z.size(); ++j) z.data()[j] = rng.normal();
    Matrix<double> scaled = z.cwiseProduct(block_variances_[i].cwiseSqrt());
    if (!b.identity) scaled = b.qs * scaled * b.qa.transpose();
    detail::add_from_block_layout(scaled, b, delta);
  }
  for (std::size_t i = 0; i < model_.eigen.size(); ++i) {
    const EigenBlock& b = model_.eigen[i];
    const Matrix<double>& basis = covariance_basis(i);
    const Index k = basis.cols();
    auto segment = delta.segment(b.range.offset, b.range.size);
    Vector<double> z(k);
    for (Index j = 0; j < k; ++j) z(j) = rng.normal();
    segment += basis * z.cwiseProduct(eigen_variances_[i].cwiseSqrt());
    if (k < b.range.size) {
      // Complement: variance 1/τ on the directions orthogonal to the basis.
      Vector<double> w(b.range.size);
      for (Index j = 0; j < w.size(); ++j) w(j) = rng.normal();
      w -= basis * (basis.transpose() * w);
      segment += w / std::sqrt(taus_.front());
    }
  }
  return delta;
}

template <class S>
Matrix<double> Posterior::functional_covariances(nn::BoundBatch<S>& batch) const {
  const Index n = batch.batch_size();
  const Index c = batch.num_outputs();
  const auto layers = detail::parameter_layers(batch.network());
  // Cotangent e_c for every sample, one backpropagation per output.
  std::vector<detail::SampleJacobians<S>> jacobians;
  jacobians.reserve(static_cast<std::size_t>(c));
  const bool rows = detail::needs_rows(model_, layers);
  for (Index k = 0; k < c; ++k) {
    Matrix<S> u = Matrix<S>::Zero(c, n);
    u.row(k).setOnes();
    jacobians.emplace_back(batch, layers, u, rows);
  }
  Matrix<double> out = Matrix<double>::Zero(c, c * n);
  parallel_for_chunks(n, 16, [&](const ChunkRange& r) {
    for (Index s = r.begin; s < r.end; ++s) {
      auto sigma = out.middleCols(s * c, c);
      for (std::size_t i = 0; i < model_.kronecker.size(); ++i) {
        sigma +=
            detail::kronecker_covariance(jacobians, model_.kronecker[i], block_variances_[i], s);
      }
      for (std::size_t i = 0; i < model_.eigen.size(); ++i) {
        const EigenBlock& b = model_.eigen[i];
        const Matrix<double>& basis = covariance_basis(i);
        const Matrix<double> g = detail::range_rows(jacobians, layers, b.range, s);  // range x C
        const Matrix<double> projected = basis.transpose() * g;                      // k x C
        sigma += projected.transpose() * eigen_variances_[i].asDiagonal() * projected;
        if (basis.cols() < b.range.size) {
          sigma += (g.transpose() * g - projected.transpose() * projected) / taus_.front();
        }
      }
    }
  });
  return out;
}

double maximize_marginal_likelihood(Posterior& posterior, double total_nll, double low,
                                    double high) {
  if (!(low > 0.0) || !(high > low)) {
    throw Error(
        fmt::format("prior precision search range [{}, {}]; expected 0 < low < high", low, high));
  }
  auto objective = [&](double log_tau) {
    posterior.set_prior_precision(std::exp(log_tau));
    return posterior.log_marginal_likelihood(total_nll);
  };
  const double a = std::log(low), b = std::log(high);
  constexpr int kGrid = 400;
  int best = 0;
  double best_value = -std::numeric_limits<double>::infinity();
  for (int i = 0; i <= kGrid; ++i) {
    const double value = objective(a + (b - a) * i / kGrid);
    if (value > best_value) {
      best_value = value;
      best = i;
    }
  }
  // Golden-section refinement between the grid neighbours of the best point.
  double lo = a + (b - a) * std::max(0, best - 1) / kGrid;
  double hi = a + (b - a) * std::min(kGrid, best + 1) / kGrid;
  const double ratio = (std::sqrt(5.0) - 1.0) / 2.0;
  double x1 = hi - ratio * (hi - lo), x2 = lo + ratio * (hi - lo);
  double f1 = objective(x1), f2 = objective(x2);
  for (int it = 0; it < 60; ++it) {
    if (f1 > f2) {
      hi = x2;
      x2 = x1;
      f2 = f1;
      x1 = hi - ratio * (hi - lo);
      f1 = objective(x1);
    } else {
      lo = x1;
      x1 = x2;
      f1 = f2;
      x2 = lo + ratio * (hi - lo);
      f2 = objective(x2);
    }
  }
  const double grid_point = a + (b - a) * best / kGrid;
  const double refined = 0.5 * (lo + hi);
  const double tau = objective(refined) >= best_value ? std::exp(refined) : std::exp(grid_point);
  posterior.set_prior_precision(tau);
  return tau;
}

namespace {

/// The τ in [low, high] maximising −τa/2 + (d/2) log τ − ½ Σ_i log(s_i + τ), d = s.size(): the
/// root of Σ_i s_i/(s_i + τ) − aτ (2τ times the derivative), which decreases strictly in τ, by
/// bisection in log τ. An end of the interval when the root lies beyond it.
double best_layer_tau(const Vector<double>& s, double a, double low, double high) {
  auto slope = [&](double log_tau) {
    const double tau = std::exp(log_tau);
    double sum = 0.0;
    for (Index i = 0; i < s.size(); ++i) sum += s(i) > 0.0 ? s(i) / (s(i) + tau) : 0.0;
    return sum - a * tau;
  };
  double lo = std::log(low), hi = std::log(high);
  if (slope(lo) <= 0.0) return low;
  if (slope(hi) >= 0.0) return high;
  for (int it = 0; it < 200 && hi - lo > 1e-15 * std::max(1.0, std::abs(lo)); ++it) {
    const double mid = 0.5 * (lo + hi);
    (slope(mid) > 0.0 ? lo : hi) = mid;
  }
  return std::exp(0.5 * (lo + hi));
}

/// Eigenvalues of the Schur complement of rows/columns [begin, begin + size) in `precision`:
/// what the other layers leave of layer l's curvature once their prior is added.
Vector<double> schur_eigenvalues(const Matrix<double>& precision, Index begin, Index size) {
  const Index total = precision.rows();
  const Index rest = total - size;
  if (rest == 0) {
    return Eigen::SelfAdjointEigenSolver<Matrix<double>>(precision, Eigen::EigenvaluesOnly)
        .eigenvalues()
        .cwiseMax(0.0);
  }
  // Permute layer l last: A = the others, B = their coupling to l, C = layer l.
  std::vector<Index> others;
  for (Index i = 0; i < total; ++i) {
    if (i < begin || i >= begin + size) others.push_back(i);
  }
  Matrix<double> a(rest, rest), b(rest, size);
  for (Index j = 0; j < rest; ++j) {
    for (Index i = 0; i < rest; ++i) a(i, j) = precision(others[i], others[j]);
  }
  for (Index j = 0; j < size; ++j) {
    for (Index i = 0; i < rest; ++i) b(i, j) = precision(others[i], begin + j);
  }
  const Eigen::LLT<Matrix<double>> llt(a);
  const Matrix<double> solved = llt.matrixL().solve(b);
  Matrix<double> schur = precision.block(begin, begin, size, size) - solved.transpose() * solved;
  schur = 0.5 * (schur + schur.transpose()).eval();
  return Eigen::SelfAdjointEigenSolver<Matrix<double>>(schur, Eigen::EigenvaluesOnly)
      .eigenvalues()
      .cwiseMax(0.0);
}

}  // namespace

std::vector<double> maximize_marginal_likelihood_per_layer(Posterior& posterior, double total_nll,
                                                           double low, double high) {
  (void)total_nll;  // a constant of the evidence: it does not move the maximum
  if (!(low > 0.0) || !(high > low) || !std::isfinite(high)) {
    throw Error(
        fmt::format("prior precision search range [{}, {}]; expected 0 < low < high", low, high));
  }
  const CurvatureModel& model = posterior.model();
  check_per_layer_prior(model.structure);
  const std::vector<ParameterRange>& groups = posterior.prior_layers();
  const double n = posterior.data_size();
  std::vector<double> a(groups.size());
  for (std::size_t l = 0; l < groups.size(); ++l) {
    a[l] = posterior.map().segment(groups[l].offset, groups[l].size).squaredNorm();
  }
  std::vector<double> taus = posterior.prior_precisions();
  if (model.eigen.empty()) {
    // One Kronecker block per layer: the evidence separates.
    for (std::size_t l = 0; l < groups.size(); ++l) {
      Vector<double> s = Vector<double>::Zero(0);
      for (const KroneckerBlock& b : model.kronecker) {
        if (b.offset != groups[l].offset) continue;
        s = n * Eigen::Map<const Vector<double>>(b.values.data(), b.values.size());
      }
      taus[l] = best_layer_tau(s, a[l], low, high);
    }
  } else if (groups.size() == 1) {
    taus[0] = best_layer_tau(n * model.eigen.front().values, a[0], low, high);
  } else {
    const EigenBlock& b = model.eigen.front();
    const Matrix<double> curvature = scaled_curvature(b, n);
    // Each step maximises exactly along one τ_l, so the evidence never decreases; the sweeps
    // stop once they no longer move any τ_l.
    for (int sweep = 0; sweep < 100; ++sweep) {
      double moved = 0.0;
      for (std::size_t l = 0; l < groups.size(); ++l) {
        // N·C plus the other layers' prior: layer l's own block is bare curvature.
        const Index begin = groups[l].offset - b.range.offset;
        Vector<double> others = prior_diagonal(b.range, groups, taus);
        others.segment(begin, groups[l].size).setZero();
        Matrix<double> precision = curvature;
        precision.diagonal() += others;
        const double tau =
            best_layer_tau(schur_eigenvalues(precision, begin, groups[l].size), a[l], low, high);
        moved = std::max(moved, std::abs(std::log(tau) - std::log(taus[l])));
        taus[l] = tau;
      }
      if (moved < 1e-9) break;
    }
  }
  posterior.set_prior_precisions(taus);
  return taus;
}

template CurvatureModel fit_curvature<float>(const PluginHost&, const nn::Network&,
                                             const Vector<float>&, nn::Loss,
                                             const nn::DatasetBatch<float>&,
                                             const nn::DatasetBatch<float>*, const FitOptions&);
template CurvatureModel fit_curvature<double>(const PluginHost&, const nn::Network&,
                                              const Vector<double>&, nn::Loss,
                                              const nn::DatasetBatch<double>&,
                                              const nn::DatasetBatch<double>*, const FitOptions&);
template Matrix<double> Posterior::functional_covariances<float>(nn::BoundBatch<float>&) const;
template Matrix<double> Posterior::functional_covariances<double>(nn::BoundBatch<double>&) const;

}  // namespace quadra::laplace
