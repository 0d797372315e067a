#pragma once
// Shared by the Laplace tests: tiny seeded classifiers and dense float64 references (GGN,
// Jacobians, a curvature model's dense C, the posterior's precision and covariance).

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <Eigen/Cholesky>
#include <Eigen/Eigenvalues>

#include <quadra/data/dataset.hpp>
#include <quadra/data/random.hpp>
#include <quadra/laplace/posterior.hpp>
#include <quadra/plugin_host.hpp>

namespace laplace_test {

using quadra::Index;
using quadra::Matrix;
using quadra::Vector;
namespace lp = quadra::laplace;
namespace nn = quadra::nn;

inline constexpr double kN = 500.0;  // the "training set size" N of the posteriors

/// A tiny classifier with seeded parameters and a seeded batch of inputs and labels.
struct Problem {
  nn::Network network;
  Vector<double> params;
  nn::DatasetBatch<double> batch;

  Problem(const std::string& spec, nn::TensorShape shape, Index samples, std::uint64_t seed)
      : network(spec, std::move(shape)), params(network.initial_parameters<double>(seed)) {
    quadra::data::Rng rng(seed + 17);
    params *= 3.0;  // larger weights: outputs far from uniform, a less trivial GGN
    batch.inputs.resize(network.num_inputs(), samples);
    for (Index i = 0; i < batch.inputs.size(); ++i) batch.inputs.data()[i] = rng.normal();
    for (Index n = 0; n < samples; ++n) {
      batch.targets.labels.push_back(
          static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(network.num_outputs()))));
    }
  }
  [[nodiscard]] nn::BoundBatch<double> bind(const nn::DatasetBatch<double>& data) const {
    return nn::BoundBatch<double>(network, params, data.inputs, data.targets,
                                  nn::Loss::kCrossEntropy);
  }
  [[nodiscard]] Index p() const { return network.num_parameters(); }
};

/// A batch of 3-feature, 3-class samples as a data set (what the predictives evaluate).
inline quadra::data::Dataset as_dataset(const nn::DatasetBatch<double>& batch,
                                        const std::string& name) {
  quadra::data::Dataset set;
  set.name = name;
  set.sample_shape = {batch.inputs.rows()};
  set.num_classes = 3;
  for (Index n = 0; n < batch.inputs.cols(); ++n) {
    for (Index f = 0; f < batch.inputs.rows(); ++f) {
      set.features.push_back(static_cast<float>(batch.inputs(f, n)));
    }
  }
  set.labels = batch.targets.labels;
  return set;
}

/// Dense GGN of a bound batch (mean over samples), column by column.
inline Matrix<double> dense_ggn(nn::BoundBatch<double>& batch) {
  const Index p = batch.num_parameters();
  Matrix<double> g(p, p);
  Vector<double> e = Vector<double>::Zero(p), column(p);
  for (Index j = 0; j < p; ++j) {
    e(j) = 1.0;
    batch.ggn_product(e, column);
    g.col(j) = column;
    e(j) = 0.0;
  }
  return 0.5 * (g + g.transpose());
}

/// J_n (C × P) of every sample n, from JVPs with unit vectors.
inline std::vector<Matrix<double>> dense_jacobians(nn::BoundBatch<double>& batch) {
  const Index p = batch.num_parameters();
  const Index c = batch.num_outputs();
  std::vector<Matrix<double>> j(static_cast<std::size_t>(batch.batch_size()), Matrix<double>(c, p));
  Vector<double> e = Vector<double>::Zero(p);
  Matrix<double> out(c, batch.batch_size());
  for (Index k = 0; k < p; ++k) {
    e(k) = 1.0;
    batch.jvp(e, out);
    for (Index n = 0; n < batch.batch_size(); ++n)
      j[static_cast<std::size_t>(n)].col(k) = out.col(n);
    e(k) = 0.0;
  }
  return j;
}

/// Dense C of a curvature model (all parameters; zero outside its range).
inline Matrix<double> dense_curvature(const lp::CurvatureModel& m, Index p) {
  Matrix<double> c = Matrix<double>::Zero(p, p);
  for (const lp::KroneckerBlock& b : m.kronecker) {
    // The eigenvector of values(j, i) is q_S,j q_A,iᵀ in the [W b] layout.
    const Index cols = b.cols();
    auto flat_index = [&](Index o, Index i) {
      return i < b.in ? b.offset + o * b.in + i : b.offset + b.out * b.in + o;
    };
    for (Index j = 0; j < b.out; ++j) {
      for (Index i = 0; i < cols; ++i) {
        Vector<double> u = Vector<double>::Zero(p);
        for (Index o = 0; o < b.out; ++o) {
          for (Index k = 0; k < cols; ++k) {
            const double qs = b.identity ? (o == j ? 1.0 : 0.0) : b.qs(o, j);
            const double qa = b.identity ? (k == i ? 1.0 : 0.0) : b.qa(k, i);
            u(flat_index(o, k)) = qs * qa;
          }
        }
        c += b.values(j, i) * u * u.transpose();
      }
    }
  }
  for (const lp::EigenBlock& b : m.eigen) {
    c.block(b.range.offset, b.range.offset, b.range.size, b.range.size) +=
        b.basis * b.values.asDiagonal() * b.basis.transpose();
  }
  return c;
}

/// The prior precision D on the range: τ_l on the parameters of each prior layer.
inline Vector<double> dense_prior(const lp::Posterior& post) {
  const lp::ParameterRange r = post.model().range;
  Vector<double> d(r.size);
  for (std::size_t l = 0; l < post.prior_layers().size(); ++l) {
    const lp::ParameterRange g = post.prior_layers()[l];
    d.segment(g.offset - r.offset, g.size).setConstant(post.prior_precisions()[l]);
  }
  return d;
}

/// Dense precision N C + D on the range.
inline Matrix<double> dense_precision(const lp::Posterior& post, Index p) {
  const lp::ParameterRange r = post.model().range;
  Matrix<double> precision =
      post.data_size() * dense_curvature(post.model(), p).block(r.offset, r.offset, r.size, r.size);
  precision.diagonal() += dense_prior(post);
  return precision;
}

/// Dense posterior covariance: (N C + D)⁻¹ on the range, 0 elsewhere.
inline Matrix<double> dense_covariance(const lp::Posterior& post, Index p) {
  const lp::ParameterRange r = post.model().range;
  Matrix<double> sigma = Matrix<double>::Zero(p, p);
  sigma.block(r.offset, r.offset, r.size, r.size) = dense_precision(post, p).inverse();
  return sigma;
}

inline double dense_log_det(const lp::Posterior& post, Index p) {
  return Eigen::LDLT<Matrix<double>>(dense_precision(post, p)).vectorD().array().log().sum();
}

inline quadra::PluginHost& host() {
  static quadra::PluginHost h;
  static const bool loaded = [] {
    quadra::throw_if_error(h.load_path(BUILTIN_PLUGIN_DIR));
    return true;
  }();
  (void)loaded;
  return h;
}

inline double max_abs_diff(const Matrix<double>& a, const Matrix<double>& b) {
  return (a - b).cwiseAbs().maxCoeff();
}

/// Σ_f from the posterior against J Σ Jᵀ with dense J and Σ, on `eval`.
inline void check_functional_covariances(const Problem& prob, const lp::Posterior& post,
                                         const nn::DatasetBatch<double>& eval) {
  auto batch = prob.bind(eval);
  const Matrix<double> got = post.functional_covariances(batch);
  const Matrix<double> sigma = dense_covariance(post, prob.p());
  const auto jac = dense_jacobians(batch);
  const Index c = batch.num_outputs();
  for (Index n = 0; n < batch.batch_size(); ++n) {
    const Matrix<double>& j = jac[static_cast<std::size_t>(n)];
    const Matrix<double> want = j * sigma * j.transpose();
    INFO("sample " << n);
    REQUIRE(max_abs_diff(got.middleCols(n * c, c), want) <=
            1e-9 * (1.0 + want.cwiseAbs().maxCoeff()));
  }
}

inline lp::FitOptions options(lp::Structure s) {
  lp::FitOptions o;
  o.structure = s;
  return o;
}

inline constexpr const char* kMlp = "linear(4) tanh linear(3)";
inline constexpr const char* kCnn = "conv(2,3,pad=1) tanh avgpool(2) flatten linear(3)";

}  // namespace laplace_test
