#pragma once
// Per-layer pieces of the Laplace code: where each parameter layer sits, the [W b] block layout,
// and per-sample Jacobians J_nᵀ u_n for one cotangent u, kept in factored form for Linear layers
// (the adjoint at the layer's output times its bias-augmented input) and as rows for Conv2d.

#include <vector>

#include <fmt/format.h>

#include <quadra/error.hpp>
#include <quadra/laplace/posterior.hpp>

namespace quadra::laplace::detail {

/// A parameter layer's parameters in the flat vector. A normalization layer's γ and β form one
/// column [γ; β] (out = their count, in = 1, no bias): its K-FAC block is the diagonal one the
/// engine's K-FAC backend gives it, and its Jacobians come as per-sample rows like Conv2d's.
struct ParameterLayer {
  Index layer = 0;   ///< token index in the spec
  Index offset = 0;  ///< first weight entry
  Index out = 0;
  Index in = 0;  ///< columns of W (in_channels * kh * kw for Conv2d)
  bool bias = false;
  bool conv = false;  ///< Jacobians as per-sample rows (Conv2d and normalization layers)
  [[nodiscard]] Index cols() const noexcept { return in + (bias ? 1 : 0); }
  [[nodiscard]] Index size() const noexcept { return out * cols(); }
};

inline std::vector<ParameterLayer> parameter_layers(const nn::Network& network) {
  std::vector<ParameterLayer> out;
  for (const nn::ParameterInfo& p : network.parameters()) {
    if (network.layers()[static_cast<std::size_t>(p.layer)].is_normalization()) {
      if (p.is_bias) {
        out.back().out += p.size;
        continue;
      }
      ParameterLayer l;
      l.layer = p.layer;
      l.offset = p.offset;
      l.out = p.size;
      l.in = 1;
      l.conv = true;
      out.push_back(l);
      continue;
    }
    if (p.is_bias) {
      out.back().bias = true;
      continue;
    }
    ParameterLayer l;
    l.layer = p.layer;
    l.offset = p.offset;
    l.out = p.shape[0];
    l.in = p.size / p.shape[0];
    l.conv = p.shape.size() == 4;
    out.push_back(l);
  }
  return out;
}

inline KroneckerBlock empty_block(const ParameterLayer& l) {
  KroneckerBlock b;
  b.layer = l.layer;
  b.offset = l.offset;
  b.out = l.out;
  b.in = l.in;
  b.bias = l.bias;
  b.conv = l.conv;
  return b;
}

/// A layer's slice of the flat vector as the out × cols matrix [W b].
template <class Segment>
Matrix<double> to_block_layout(const Segment& flat, const ParameterLayer& l) {
  Matrix<double> m(l.out, l.cols());
  for (Index o = 0; o < l.out; ++o) {
    for (Index i = 0; i < l.in; ++i) m(o, i) = static_cast<double>(flat(o * l.in + i));
    if (l.bias) m(o, l.in) = static_cast<double>(flat(l.out * l.in + o));
  }
  return m;
}

/// The out × cols matrix [W b] as the layer's slice of the flat vector (inverse of the above).
inline Vector<double> from_block_layout(const Matrix<double>& m, Index out, Index in, bool bias) {
  Vector<double> flat(out * (in + (bias ? 1 : 0)));
  for (Index o = 0; o < out; ++o) {
    for (Index i = 0; i < in; ++i) flat(o * in + i) = m(o, i);
    if (bias) flat(out * in + o) = m(o, in);
  }
  return flat;
}

/// flat[block's slice] += m (out × cols, [W b] layout).
inline void add_from_block_layout(const Matrix<double>& m, const KroneckerBlock& b,
                                  Vector<double>& flat) {
  flat.segment(b.offset, b.size()) += from_block_layout(m, b.out, b.in, b.bias);
}

/// Whether any Conv2d layer lies in the model's range (then per-sample rows are needed).
inline bool needs_rows(const CurvatureModel& model, const std::vector<ParameterLayer>& layers) {
  for (const ParameterLayer& l : layers) {
    if (l.conv && l.offset >= model.range.offset &&
        l.offset < model.range.offset + model.range.size)
      return true;
  }
  return false;
}

/// J_nᵀ u_n for one cotangent u (C × N) on a bound batch, for every sample n.
template <class S>
class SampleJacobians {
 public:
  SampleJacobians(nn::BoundBatch<S>& batch, const std::vector<ParameterLayer>& layers,
                  const Matrix<S>& u, bool rows = true)
      : layers_(layers), samples_(batch.batch_size()) {
    bool any_conv = false;
    for (const ParameterLayer& l : layers) any_conv = any_conv || l.conv;
    if (rows && any_conv) {
      rows_.resize(batch.num_parameters(), batch.batch_size());
      batch.per_sample_vjp(u, rows_);
    } else {
      batch.backpropagate(u);
    }
    for (const ParameterLayer& l : layers) {
      if (l.conv) {
        adjoints_.emplace_back();
        inputs_.push_back(nullptr);
      } else {
        adjoints_.push_back(batch.output_adjoints(l.layer));
        inputs_.push_back(&batch.layer_input(l.layer));
      }
    }
  }

  [[nodiscard]] Index index_of(Index offset) const {
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      if (layers_[i].offset == offset) return static_cast<Index>(i);
    }
    throw Error(fmt::format("no parameter layer starts at parameter {}", offset));
  }
  [[nodiscard]] Index samples() const noexcept { return samples_; }
  [[nodiscard]] const ParameterLayer& layer(Index i) const {
    return layers_[static_cast<std::size_t>(i)];
  }

  /// Linear layer i: the adjoint at its output for sample s (out).
  [[nodiscard]] Vector<double> adjoint(Index i, Index s) const {
    return adjoints_[static_cast<std::size_t>(i)].col(s).template cast<double>();
  }
  /// Linear layer i: its input for sample s, with a trailing 1 for the bias (cols).
  [[nodiscard]] Vector<double> input(Index i, Index s) const {
    const ParameterLayer& l = layer(i);
    Vector<double> a(l.cols());
    a.head(l.in) = inputs_[static_cast<std::size_t>(i)]->col(s).template cast<double>();
    if (l.bias) a(l.in) = 1.0;
    return a;
  }
  /// Linear layer i: all adjoints (out × N) and inputs (cols × N) in double.
  [[nodiscard]] Matrix<double> adjoints(Index i) const {
    return adjoints_[static_cast<std::size_t>(i)].template cast<double>();
  }
  [[nodiscard]] Matrix<double> inputs(Index i) const {
    const ParameterLayer& l = layer(i);
    const Matrix<S>& a = *inputs_[static_cast<std::size_t>(i)];
    Matrix<double> out(l.cols(), a.cols());
    out.topRows(l.in) = a.template cast<double>();
    if (l.bias) out.row(l.in).setOnes();
    return out;
  }

  /// Layer i's block of J_sᵀ u_s as the out × cols matrix [W b].
  [[nodiscard]] Matrix<double> block(Index i, Index s) const {
    const ParameterLayer& l = layer(i);
    if (!l.conv) return adjoint(i, s) * input(i, s).transpose();
    if (rows_.size() == 0) throw Error("per-sample rows of a Conv2d layer were not computed");
    return to_block_layout(rows_.col(s).segment(l.offset, l.size()).template cast<double>(), l);
  }

 private:
  const std::vector<ParameterLayer>& layers_;
  Index samples_ = 0;
  std::vector<Matrix<S>> adjoints_;
  std::vector<const Matrix<S>*> inputs_;
  Matrix<S> rows_;
};

/// Σ_n (Q_Sᵀ G_n Q_A)² elementwise over the samples, G_n the block of J_nᵀ u_n.
template <class S>
Matrix<double> projected_square_sum(const SampleJacobians<S>& jac, const KroneckerBlock& b) {
  const Index i = jac.index_of(b.offset);
  if (!b.conv) {
    // Rank one per sample: (Q_Sᵀ s)(Q_Aᵀ ā)ᵀ, so the sum is one product of squared projections.
    Matrix<double> x = jac.adjoints(i);
    Matrix<double> y = jac.inputs(i);
    if (!b.identity) {
      x = b.qs.transpose() * x;
      y = b.qa.transpose() * y;
    }
    return x.array().square().matrix() * y.array().square().matrix().transpose();
  }
  Matrix<double> sum = Matrix<double>::Zero(b.out, b.cols());
  for (Index s = 0; s < jac.samples(); ++s) {
    const Matrix<double> g = jac.block(i, s);
    sum += (b.identity ? g : Matrix<double>(b.qs.transpose() * g * b.qa)).cwiseAbs2();
  }
  return sum;
}

/// Sample s's contribution of one Kronecker block to J Σ Jᵀ (C × C); `jac[c]` holds cotangent e_c.
template <class S>
Matrix<double> kronecker_covariance(const std::vector<SampleJacobians<S>>& jac,
                                    const KroneckerBlock& b, const Matrix<double>& variance,
                                    Index s) {
  const auto c = static_cast<Index>(jac.size());
  const Index i = jac.front().index_of(b.offset);
  Matrix<double> sigma(c, c);
  if (!b.conv) {
    Matrix<double> x(b.out, c);
    for (Index k = 0; k < c; ++k) x.col(k) = jac[static_cast<std::size_t>(k)].adjoint(i, s);
    Vector<double> y = jac.front().input(i, s);
    if (!b.identity) {
      x = b.qs.transpose() * x;
      y = b.qa.transpose() * y;
    }
    const Vector<double> w = variance * y.cwiseAbs2();
    sigma.noalias() = x.transpose() * w.asDiagonal() * x;
    return sigma;
  }
  std::vector<Matrix<double>> projected;
  for (Index k = 0; k < c; ++k) {
    Matrix<double> g = jac[static_cast<std::size_t>(k)].block(i, s);
    projected.push_back(b.identity ? g : Matrix<double>(b.qs.transpose() * g * b.qa));
  }
  for (Index k = 0; k < c; ++k) {
    const Matrix<double> weighted = projected[static_cast<std::size_t>(k)].cwiseProduct(variance);
    for (Index m = 0; m <= k; ++m) {
      sigma(k, m) = sigma(m, k) =
          weighted.cwiseProduct(projected[static_cast<std::size_t>(m)]).sum();
    }
  }
  return sigma;
}

/// Sample s's Jacobian rows on a range: column c is the range's part of J_sᵀ e_c (range × C).
template <class S>
Matrix<double> range_rows(const std::vector<SampleJacobians<S>>& jac,
                          const std::vector<ParameterLayer>& layers, const ParameterRange& range,
                          Index s) {
  const auto c = static_cast<Index>(jac.size());
  Matrix<double> g = Matrix<double>::Zero(range.size, c);
  for (std::size_t li = 0; li < layers.size(); ++li) {
    const ParameterLayer& l = layers[li];
    if (l.offset < range.offset || l.offset >= range.offset + range.size) continue;
    for (Index k = 0; k < c; ++k) {
      const Matrix<double> block =
          jac[static_cast<std::size_t>(k)].block(static_cast<Index>(li), s);
      g.col(k).segment(l.offset - range.offset, l.size()) =
          from_block_layout(block, l.out, l.in, l.bias);
    }
  }
  return g;
}

}  // namespace quadra::laplace::detail
