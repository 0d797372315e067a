#pragma once
// Shared helpers of the engine tests: tiny networks covering every layer, random batches, and
// independent references (central finite differences, dense matrices).

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <quadra/nn/bound_batch.hpp>
#include <quadra/nn/network.hpp>

namespace quadra::nn::test {

using Vec = Vector<double>;
using Mat = Matrix<double>;

struct Case {
  std::string name;
  std::string spec;
  std::string shape;
  Loss loss;
};

/// Every layer and both losses appear in at least one case.
inline std::vector<Case> all_cases() {
  return {
      {"mlp-tanh-sigmoid-ce", "linear(5) tanh linear(4) sigmoid linear(3,bias=false) gelu linear(3)",
       "4", Loss::kCrossEntropy},
      {"mlp-relu-leaky-softplus-mse", "linear(6) relu linear(5) leakyrelu(0.1) linear(4) softplus linear(3)",
       "4", Loss::kMse},
      {"cnn-max-avg-ce",
       "conv(3,3,pad=1) gelu avgpool(2) conv(4,2,bias=false) softplus maxpool(2,stride=1) flatten linear(3)",
       "2x6x6", Loss::kCrossEntropy},
      {"cnn-stride-pad-mse", "conv(2,3,stride=2,pad=1) tanh maxpool(2,pad=1) avgpool(2,stride=1,pad=1) flatten linear(4) sigmoid linear(2)",
       "1x7x7", Loss::kMse},
      // Graphs: forks read by a branch and a shortcut, nested blocks, identity and projection
      // shortcuts, blocks before the first parameter (zero tangents), smooth activations only.
      {"resmlp-ce",
       "linear(5) tanh residual(linear(5) softplus linear(5)) tanh residual(linear(4) tanh, "
       "shortcut=linear(4,bias=false)) residual(tanh residual(linear(4) gelu)) linear(3)",
       "4", Loss::kCrossEntropy},
      {"resmlp-input-fork-mse",
       "residual(tanh, shortcut=sigmoid) residual(softplus linear(4)) dropout(0.3) "
       "residual(tanh, shortcut=sigmoid linear(4,bias=false)) linear(3) tanh linear(2)",
       "4", Loss::kMse},
      {"rescnn-ce",
       "conv(3,3,pad=1) tanh residual(conv(3,3,pad=1) softplus conv(3,3,pad=1,bias=false)) gelu "
       "residual(conv(4,3,stride=2,pad=1) tanh, shortcut=conv(4,1,stride=2,bias=false)) "
       "globalavgpool flatten linear(3)",
       "2x6x6", Loss::kCrossEntropy},
  };
}

struct Problem {
  Network net;
  Vec theta;
  Mat x;
  Targets<double> targets;
  Loss loss;
};

inline Problem make_problem(const Case& c, Index n, std::uint64_t seed) {
  Network net(c.spec, parse_shape(c.shape));
  Vec theta = net.initial_parameters<double>(seed);
  std::mt19937_64 rng(seed + 1000);
  std::normal_distribution<double> normal;
  // Scale parameters up a bit so activations leave their linear regimes.
  for (Index i = 0; i < theta.size(); ++i) theta[i] *= 1.5;
  Mat x(net.num_inputs(), n);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = normal(rng);
  Targets<double> targets;
  if (c.loss == Loss::kCrossEntropy) {
    for (Index s = 0; s < n; ++s) targets.labels.push_back(static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(net.num_outputs())));
  } else {
    targets.values.resize(net.num_outputs(), n);
    for (Index i = 0; i < targets.values.size(); ++i) targets.values.data()[i] = normal(rng);
  }
  return {std::move(net), std::move(theta), std::move(x), std::move(targets), c.loss};
}

inline BoundBatch<double> bind(const Problem& p, const Vec& theta) {
  return BoundBatch<double>(p.net, theta, p.x, p.targets, p.loss);
}
inline BoundBatch<double> bind(const Problem& p) { return bind(p, p.theta); }

inline Vec random_vector(Index size, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  Vec v(size);
  for (Index i = 0; i < size; ++i) v[i] = normal(rng);
  return v;
}

inline double rel_err(const Eigen::Ref<const Mat>& a, const Eigen::Ref<const Mat>& b) {
  const double scale = std::max(a.norm(), b.norm());
  return scale == 0 ? 0 : (a - b).norm() / scale;
}

/// Central difference of the mean loss.
inline Vec fd_gradient(const Problem& p, double h = 1e-5) {
  Vec g(p.theta.size());
  for (Index i = 0; i < p.theta.size(); ++i) {
    Vec plus = p.theta;
    Vec minus = p.theta;
    plus[i] += h;
    minus[i] -= h;
    g[i] = (bind(p, plus).loss() - bind(p, minus).loss()) / (2 * h);
  }
  return g;
}

/// Per-sample gradients by central differences of ℓ_n (P × N).
inline Mat fd_per_sample(const Problem& p, double h = 1e-5) {
  const Index n = p.x.cols();
  Mat g(p.theta.size(), n);
  for (Index i = 0; i < p.theta.size(); ++i) {
    Vec plus = p.theta;
    Vec minus = p.theta;
    plus[i] += h;
    minus[i] -= h;
    g.row(i) = (bind(p, plus).per_sample_losses() - bind(p, minus).per_sample_losses()).transpose() / (2 * h);
  }
  return g;
}

/// Dense Jacobian of all outputs (C·N rows, sample-major) by central differences.
inline Mat fd_jacobian(const Problem& p, double h = 1e-5) {
  const Index rows = p.net.num_outputs() * p.x.cols();
  Mat jac(rows, p.theta.size());
  for (Index i = 0; i < p.theta.size(); ++i) {
    Vec plus = p.theta;
    Vec minus = p.theta;
    plus[i] += h;
    minus[i] -= h;
    const Mat diff = (p.net.forward<double>(plus, p.x) - p.net.forward<double>(minus, p.x)) / (2 * h);
    jac.col(i) = Eigen::Map<const Vec>(diff.data(), rows);
  }
  return jac;
}

/// Block-diagonal output-space loss Hessian (1/N) diag(Λ_n), computed independently here.
inline Mat dense_loss_hessian(const Problem& p, const Mat& outputs) {
  const Index c = outputs.rows();
  const Index n = outputs.cols();
  Mat h = Mat::Zero(c * n, c * n);
  for (Index s = 0; s < n; ++s) {
    Mat block;
    if (p.loss == Loss::kCrossEntropy) {
      Vec e = (outputs.col(s).array() - outputs.col(s).maxCoeff()).exp();
      const Vec prob = e / e.sum();
      block = Mat(prob.asDiagonal()) - prob * prob.transpose();
    } else {
      block = Mat::Identity(c, c) * (2.0 / static_cast<double>(c));
    }
    h.block(s * c, s * c, c, c) = block / static_cast<double>(n);
  }
  return h;
}

/// Dense matrix of a product by applying it to unit vectors.
template <class F>
Mat dense_of(Index size, F&& product) {
  Mat m(size, size);
  Vec e = Vec::Zero(size);
  Vec out(size);
  for (Index i = 0; i < size; ++i) {
    e[i] = 1;
    product(e, out);
    m.col(i) = out;
    e[i] = 0;
  }
  return m;
}

}  // namespace quadra::nn::test
