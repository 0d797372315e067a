// The GGN's Gram matrix and its top eigenpairs; see quadra/curvature/gram.hpp.

#include <quadra/curvature/gram.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

#include <Eigen/Eigenvalues>
#include <Eigen/QR>
#include <fmt/format.h>

#include <quadra/error.hpp>
#include <quadra/linalg/lanczos.hpp>
#include <quadra/linalg/linear_operator.hpp>
#include <quadra/parallel.hpp>

#include "../nn/gemm.hpp"

namespace quadra::curvature {
namespace {

using nn::detail::gemm;
using nn::detail::Op;

// Square tiles of K: one task per tile of the lower triangle; fixed, so thread-count independent.
constexpr Index kTile = 256;

struct GramLayer {
  Index layer = 0;
  bool bias = false;
};

std::vector<GramLayer> gram_layers(const nn::Network& network) {
  std::vector<GramLayer> out;
  for (const nn::ParameterInfo& p : network.parameters()) {
    if (p.is_bias) {
      out.back().bias = true;
    } else {
      out.push_back({p.layer, false});
    }
  }
  return out;
}

}  // namespace

void check_gram_supported(const nn::Network& network) {
  for (const nn::ParameterInfo& p : network.parameters()) {
    const nn::LayerSpec& spec = network.layers()[static_cast<std::size_t>(p.layer)];
    if (spec.kind != nn::LayerKind::kLinear) {
      throw Error(
          fmt::format("the Gram method needs every parameter layer to be Linear; layer {} "
                      "('{}') is not; use Lanczos for this network",
                      p.layer + 1, spec.str()));
    }
  }
  if (network.parameters().empty()) throw Error("the Gram method needs a network with parameters");
}

double gram_bytes(Index samples, Index outputs, std::size_t scalar_bytes) noexcept {
  const auto tiles = static_cast<double>(num_chunks(samples * outputs, kTile));
  return tiles * (tiles + 1) / 2 * static_cast<double>(kTile * kTile) *
         static_cast<double>(scalar_bytes);
}

namespace {

/// The lower-triangle tiles (i >= j) of the symmetric Gram matrix, each kTile × kTile column-major
/// in the model's scalar type (float32 models: half the memory and bandwidth of double, and the
/// entries carry float32 rounding anyway). Stored tile column by tile column, so that the task
/// of column j in multiply() streams one contiguous region.
template <class S>
class PackedGram {
 public:
  explicit PackedGram(Index size)
      : size_(size),
        count_(num_chunks(size, kTile)),
        tiles_(static_cast<std::size_t>(count_ * (count_ + 1) / 2 * kTile * kTile)) {}

  [[nodiscard]] Index size() const noexcept { return size_; }
  [[nodiscard]] Index count() const noexcept { return count_; }
  S* tile(Index i, Index j) { return tiles_.data() + index(i, j) * kTile * kTile; }
  const S* tile(Index i, Index j) const { return tiles_.data() + index(i, j) * kTile * kTile; }

  /// y = K x, accumulated in double. One task per tile column j reads each of its tiles once,
  /// for both y_i += K_ij x_j and (below the diagonal) y_j += K_ijᵀ x_i, into its own partial;
  /// the partials are added in column order, so the result does not depend on the thread count.
  void multiply(const double* x, double* y) const {
    partial_.resize(size_, count_);
    // Task t handles tile columns t and count − 1 − t: count + 1 tiles each, balanced work.
    parallel_for_tasks((count_ + 1) / 2, [&](std::int64_t task) {
      const auto t = static_cast<Index>(task);
      multiply_column(t, x);
      if (count_ - 1 - t != t) multiply_column(count_ - 1 - t, x);
    });
    std::fill(y, y + size_, 0.0);
    for (Index j = 0; j < count_; ++j) {
      const double* p = partial_.col(j).data();
      for (Index r = j * kTile; r < size_; ++r) y[r] += p[r];  // rows above tile j stay zero
    }
  }

 private:
  // partial_.col(j) = the contributions of tile column j's tiles to K x.
  void multiply_column(Index j, const double* x) const {
    const ChunkRange cols = chunk_at(size_, kTile, j);
    double* out = partial_.col(j).data();
    std::fill(out, out + size_, 0.0);
    for (Index i = j; i < count_; ++i) {
      const ChunkRange rows = chunk_at(size_, kTile, i);
      nn::detail::symmetric_tile_product(tile(i, j), kTile, rows.size(), cols.size(),
                                         x + rows.begin, x + cols.begin, out + rows.begin,
                                         out + cols.begin, i == j);
    }
  }

  // Tiles before column j: count + (count − 1) + … + (count − j + 1).
  [[nodiscard]] Index index(Index i, Index j) const noexcept {
    return j * count_ - j * (j - 1) / 2 + (i - j);
  }

  Index size_;
  Index count_;
  std::vector<S> tiles_;
  mutable Matrix<double> partial_;
};

/// A thin factor of every sample's loss Hessian, Λ_n = V_n V_nᵀ: factor[k] (C × N) holds column
/// k of every V_n, built from the engine's square factor Q_n (loss_hessian_factor_column).
/// Cross-entropy: Λ_n = diag p − p pᵀ annihilates the all-ones vector, so with H an orthonormal
/// basis of its complement, V_n = H U √D from Hᵀ Λ_n H = U D Uᵀ has C − 1 columns, and the Gram
/// matrix N(C − 1) rows instead of N·C (for C = 10: 10 % fewer rows, 19 % less storage, assembly
/// and product work). MSE: the C columns √(2/C) e_k.
template <class S>
std::vector<Matrix<S>> loss_hessian_factor(const nn::BoundBatch<S>& batch) {
  const Index n = batch.batch_size();
  const Index c = batch.num_outputs();
  std::vector<Matrix<S>> full(static_cast<std::size_t>(c), Matrix<S>(c, n));
  for (Index k = 0; k < c; ++k)
    batch.loss_hessian_factor_column(k, full[static_cast<std::size_t>(k)]);
  if (batch.loss_kind() != nn::Loss::kCrossEntropy) return full;
  const Matrix<double> ones = Matrix<double>::Ones(c, 1);
  const Matrix<double> q = Eigen::HouseholderQR<Matrix<double>>(ones).householderQ();
  const Matrix<double> h = q.rightCols(c - 1);
  std::vector<Matrix<S>> factor(static_cast<std::size_t>(c - 1), Matrix<S>(c, n));
  parallel_for_chunks(n, 64, [&](const ChunkRange& r) {
    Eigen::SelfAdjointEigenSolver<Matrix<double>> eig;
    Matrix<double> projected(c - 1, c);  // Hᵀ Q_n, so Hᵀ Λ_n H = (Hᵀ Q_n)(Hᵀ Q_n)ᵀ
    for (Index s = r.begin; s < r.end; ++s) {
      for (Index k = 0; k < c; ++k) {
        projected.col(k) =
            h.transpose() * full[static_cast<std::size_t>(k)].col(s).template cast<double>();
      }
      eig.compute(projected * projected.transpose());
      const Matrix<double> v =
          h * eig.eigenvectors() * eig.eigenvalues().cwiseMax(0.0).cwiseSqrt().asDiagonal();
      for (Index k = 0; k < c - 1; ++k)
        factor[static_cast<std::size_t>(k)].col(s) = v.col(k).template cast<S>();
    }
  });
  return factor;
}

/// K = (1/N) B Bᵀ in packed form (see the file comment of gram.hpp for the formula), with the
/// thin factor above: row n·m + k of B is V_n[:, k]ᵀ J_n.
template <class S>
PackedGram<S> packed_gram(nn::BoundBatch<S>& batch, const std::vector<Matrix<S>>& factor) {
  check_gram_supported(batch.network());
  const Index n = batch.batch_size();
  const auto c = static_cast<Index>(factor.size());  // factor columns per sample, m
  const Index nc = n * c;
  const std::vector<GramLayer> layers = gram_layers(batch.network());

  // g[l]: the factor columns backpropagated to layer l's output, d_out × N·m (column n·m + k).
  std::vector<Matrix<S>> g(layers.size());
  for (Index k = 0; k < c; ++k) {
    batch.backpropagate(factor[static_cast<std::size_t>(k)]);
    for (std::size_t l = 0; l < layers.size(); ++l) {
      const Matrix<S>& adjoint = batch.output_adjoints(layers[l].layer);
      if (k == 0) g[l].resize(adjoint.rows(), nc);
      for (Index s = 0; s < n; ++s) g[l].col(s * c + k) = adjoint.col(s);
    }
  }
  // Sample Gram of each layer's (bias-augmented) inputs, N × N.
  std::vector<Matrix<S>> inputs(layers.size());
  for (std::size_t l = 0; l < layers.size(); ++l) {
    const Matrix<S>& a = batch.layer_input(layers[l].layer);
    inputs[l].resize(n, n);
    gemm(Op::kT, Op::kN, n, n, a.rows(), S(1), a.data(), a.rows(), a.data(), a.rows(), S(0),
         inputs[l].data(), n);
    if (layers[l].bias) inputs[l].array() += S(1);
  }

  PackedGram<S> gram(nc);
  std::vector<std::pair<Index, Index>> tasks;  // (row tile, column tile), lower triangle
  for (Index j = 0; j < gram.count(); ++j) {
    for (Index i = j; i < gram.count(); ++i) tasks.emplace_back(i, j);
  }
  const double scale = 1.0 / static_cast<double>(n);
  parallel_for_tasks(static_cast<std::int64_t>(tasks.size()), [&](std::int64_t t) {
    const ChunkRange rows = chunk_at(nc, kTile, tasks[static_cast<std::size_t>(t)].first);
    const ChunkRange cols = chunk_at(nc, kTile, tasks[static_cast<std::size_t>(t)].second);
    Matrix<double> acc = Matrix<double>::Zero(rows.size(), cols.size());
    Matrix<S> dots(rows.size(), cols.size());
    std::vector<Index> sample_of(static_cast<std::size_t>(rows.size()));
    for (Index ii = 0; ii < rows.size(); ++ii)
      sample_of[static_cast<std::size_t>(ii)] = (rows.begin + ii) / c;
    for (std::size_t l = 0; l < layers.size(); ++l) {
      const Matrix<S>& gl = g[l];
      const Index d = gl.rows();
      gemm(Op::kT, Op::kN, rows.size(), cols.size(), d, S(1), gl.data() + rows.begin * d, d,
           gl.data() + cols.begin * d, d, S(0), dots.data(), rows.size());
      const Matrix<S>& a = inputs[l];
      for (Index jj = 0; jj < cols.size(); ++jj) {
        const S* a_j = a.col((cols.begin + jj) / c).data();
        for (Index ii = 0; ii < rows.size(); ++ii) {
          acc(ii, jj) +=
              static_cast<double>(dots(ii, jj)) * static_cast<double>(a_j[sample_of[ii]]);
        }
      }
    }
    S* tile = gram.tile(rows.index, cols.index);
    for (Index jj = 0; jj < cols.size(); ++jj) {
      for (Index ii = 0; ii < rows.size(); ++ii)
        tile[jj * kTile + ii] = static_cast<S>(scale * acc(ii, jj));
    }
  });
  return gram;
}

}  // namespace

template <class S>
Matrix<double> ggn_gram_matrix(nn::BoundBatch<S>& batch) {
  const PackedGram<S> packed = packed_gram(batch, loss_hessian_factor(batch));
  const Index nc = packed.size();
  Matrix<double> gram(nc, nc);
  for (Index j = 0; j < packed.count(); ++j) {
    const ChunkRange cols = chunk_at(nc, kTile, j);
    for (Index i = j; i < packed.count(); ++i) {
      const ChunkRange rows = chunk_at(nc, kTile, i);
      const S* tile = packed.tile(i, j);
      for (Index jj = 0; jj < cols.size(); ++jj) {
        for (Index ii = 0; ii < rows.size(); ++ii) {
          const auto v = static_cast<double>(tile[jj * kTile + ii]);
          gram(rows.begin + ii, cols.begin + jj) = v;
          gram(cols.begin + jj, rows.begin + ii) = v;
        }
      }
    }
  }
  return gram;
}

template <class S>
GramEigenResult<S> ggn_top_eigenpairs_gram(nn::BoundBatch<S>& batch, Index k,
                                           const GramEigenOptions& options) {
  check_gram_supported(batch.network());
  const Index n = batch.batch_size();
  const Index c = batch.num_outputs();
  const std::vector<Matrix<S>> factors = loss_hessian_factor(batch);
  const auto m = static_cast<Index>(factors.size());
  const Index nc = n * m;
  if (k < 1 || k > nc) {
    throw Error(fmt::format(
        "Gram method: k = {} is out of range; the Gram matrix has {} rows ({} samples x "
        "{} loss-Hessian factor columns), which bounds the GGN's rank; expected 1 <= "
        "k <= {}",
        k, nc, n, m, nc));
  }
  const PackedGram<S> gram = packed_gram(batch, factors);
  linalg::FunctionOperator<double> op(nc, [&](ConstVectorRef<double> x, VectorRef<double> y) {
    gram.multiply(x.data(), y.data());
  });
  linalg::LanczosOptions lanczos;
  lanczos.tolerance = options.tolerance;
  lanczos.max_products = std::min(nc, std::max(options.max_products, k));
  lanczos.seed = options.seed;
  const linalg::LanczosResult<double> eig = linalg::lanczos_largest<double>(op, k, lanczos);
  throw_if_error(eig.status);

  GramEigenResult<S> result;
  result.eigenvalues = eig.eigenvalues;
  result.residual_norms = eig.residual_norms;
  for (Index j = 0; j < gram.count(); ++j) {
    const S* tile = gram.tile(j, j);
    for (Index d = 0; d < chunk_at(nc, kTile, j).size(); ++d)
      result.trace += static_cast<double>(tile[d * kTile + d]);
  }
  result.gram_size = nc;
  result.num_products = eig.num_products;
  result.converged = eig.converged;
  // u_i ∝ Bᵀ w_i = Σ_n J_nᵀ (V_n w_in): one VJP of the outputs per eigenvector.
  result.eigenvectors.resize(batch.num_parameters(), k);
  const double floor = 1e-10 * std::max(std::abs(eig.eigenvalues(0)), 1e-300);
  Matrix<S> cotangent(c, n);
  for (Index i = 0; i < k; ++i) {
    if (!(eig.eigenvalues(i) > floor)) {
      throw Error(
          fmt::format("Gram method: eigenvalue {} of {} is {:.3g}, zero to roundoff: the GGN "
                      "has fewer than k = {} nonzero eigenvalues on this batch, and eigenvectors "
                      "of its null space are not determined by the Gram matrix; ask for fewer "
                      "or use Lanczos",
                      i + 1, k, eig.eigenvalues(i), k));
    }
    cotangent.setZero();
    for (Index s = 0; s < n; ++s) {
      for (Index j = 0; j < m; ++j) {
        cotangent.col(s) += static_cast<S>(eig.eigenvectors(s * m + j, i)) *
                            factors[static_cast<std::size_t>(j)].col(s);
      }
    }
    auto u = result.eigenvectors.col(i);
    batch.vjp(cotangent, u);
    u /= u.norm();
  }
  return result;
}

template Matrix<double> ggn_gram_matrix<float>(nn::BoundBatch<float>&);
template Matrix<double> ggn_gram_matrix<double>(nn::BoundBatch<double>&);
template GramEigenResult<float> ggn_top_eigenpairs_gram<float>(nn::BoundBatch<float>&, Index,
                                                               const GramEigenOptions&);
template GramEigenResult<double> ggn_top_eigenpairs_gram<double>(nn::BoundBatch<double>&, Index,
                                                                 const GramEigenOptions&);

}  // namespace quadra::curvature
