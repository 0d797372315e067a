// The GGN's Gram matrix and its top eigenpairs; see quadra/curvature/gram.hpp.

#include <quadra/curvature/gram.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <Eigen/Eigenvalues>
#include <Eigen/QR>
#include <fmt/format.h>

#include <quadra/error.hpp>
#include <quadra/linalg/lanczos.hpp>
#include <quadra/linalg/linear_operator.hpp>
#include <quadra/parallel.hpp>

#include "../linalg/random.hpp"
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

namespace {

/// Bytes of the packed lower triangle of a size × size Gram matrix.
double packed_bytes(Index size, std::size_t scalar_bytes) noexcept {
  const auto tiles = static_cast<double>(num_chunks(size, kTile));
  return tiles * (tiles + 1) / 2 * static_cast<double>(kTile * kTile) *
         static_cast<double>(scalar_bytes);
}

/// Above this size K streams from memory on every product (it no longer fits a last-level
/// cache), and block Lanczos's fewer passes pay for its dearer bookkeeping.
constexpr double kBlockFromBytes = 64.0 * 1024 * 1024;

}  // namespace

double gram_bytes(Index samples, Index outputs, std::size_t scalar_bytes) noexcept {
  return packed_bytes(samples * outputs, scalar_bytes);
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

  /// Y = K X for `vectors` vectors stored `ld` apart (ld >= size), accumulated in double. One task
  /// per tile column j reads each of its tiles once, for both Y_i += K_ij X_j and (below the
  /// diagonal) Y_j += K_ijᵀ X_i, into its own partial; the partials are added in column order, so
  /// the result does not depend on the thread count. Vectors go through a tile two at a time: a
  /// product streams all of K from memory, and a second vector costs little more than the first.
  void multiply(const double* x, Index ld, double* y, Index vectors) const {
    partial_.resize(ld * vectors, count_);
    // Task t handles tile columns t and count − 1 − t: count + 1 tiles each, balanced work.
    parallel_for_tasks((count_ + 1) / 2, [&](std::int64_t task) {
      const auto t = static_cast<Index>(task);
      multiply_column(t, x, ld, vectors);
      if (count_ - 1 - t != t) multiply_column(count_ - 1 - t, x, ld, vectors);
    });
    for (Index v = 0; v < vectors; ++v) {
      double* yv = y + v * ld;
      std::fill(yv, yv + size_, 0.0);
      for (Index j = 0; j < count_; ++j) {
        const double* p = partial_.col(j).data() + v * ld;
        for (Index r = j * kTile; r < size_; ++r) yv[r] += p[r];  // rows above tile j stay zero
      }
    }
  }

 private:
  // partial_.col(j) = the contributions of tile column j's tiles to K X.
  void multiply_column(Index j, const double* x, Index ld, Index vectors) const {
    const ChunkRange cols = chunk_at(size_, kTile, j);
    double* out = partial_.col(j).data();
    std::fill(out, out + ld * vectors, 0.0);
    for (Index i = j; i < count_; ++i) {
      const ChunkRange rows = chunk_at(size_, kTile, i);
      Index v = 0;
      for (; v + 2 <= vectors; v += 2) {
        const Index o = v * ld;
        nn::detail::symmetric_tile_product2(tile(i, j), kTile, rows.size(), cols.size(),
                                            x + o + rows.begin, x + o + cols.begin,
                                            out + o + rows.begin, out + o + cols.begin, ld, i == j);
      }
      if (v < vectors) {
        const Index o = v * ld;
        nn::detail::symmetric_tile_product(tile(i, j), kTile, rows.size(), cols.size(),
                                           x + o + rows.begin, x + o + cols.begin,
                                           out + o + rows.begin, out + o + cols.begin, i == j);
      }
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

/// Leading dimension of blocks of Gram-space vectors: past the size, and not a multiple of 4 KiB
/// (vectors exactly 4 KiB apart make the two-vector kernel's loads wait on unrelated stores).
Index block_stride(Index size) {
  Index ld = size + 8;
  if ((ld * static_cast<Index>(sizeof(double))) % 4096 == 0) ld += 8;
  return ld;
}

/// Top-k eigenpairs of K in Gram space.
struct GramSpaceEigen {
  Vector<double> values;     // descending
  Matrix<double> vectors;    // size × k, orthonormal
  Vector<double> residuals;  // ‖K w − λ w‖
  Index products = 0;
  bool converged = false;
};

/// Block Lanczos on K (Golub & Underwood 1977): blocks of b vectors, full reorthogonalisation
/// against the whole basis (classical Gram-Schmidt twice: "twice is enough"), Rayleigh-Ritz on the
/// dense projection H = Qᵀ K Q built from the products. Why blocks: a product streams all of K
/// from memory (175 MB at N = 1024, C = 10), and the two-vector kernel serves two vectors for
/// about the time of one; a block needs more vectors to converge than single-vector Lanczos, but
/// fewer passes over K (at N = 1024, top 20: 84 passes of 2 vectors against 136 of 1).
/// Residual of a Ritz pair (θ, Q y): ‖R y_last‖, R from the QR of the next block (K Q = Q H +
/// Q_next R E_lastᵀ). Dependent columns (norm below the breakdown tolerance after
/// orthogonalisation: K has an invariant subspace there) are replaced by random directions
/// orthogonal to the basis. No restarts: the basis is at most max_products vectors.
/// Deterministic: the start block comes from one seeded stream, the products are, and the rest is
/// serial.
template <class S>
GramSpaceEigen block_lanczos(const PackedGram<S>& gram, Index k, const GramEigenOptions& options) {
  const Index n = gram.size();
  const Index limit = std::min(n, std::max(options.max_products, k));
  const Index b = std::clamp<Index>(options.block_size, 1, limit);
  const Index ld = block_stride(n);
  const double eps = std::numeric_limits<double>::epsilon();
  const double breakdown = std::max(100 * eps, std::min(options.tolerance, std::sqrt(eps)));
  Matrix<double> q(ld, limit);  // basis, columns 0..m (rows past n unused)
  Matrix<double> h = Matrix<double>::Zero(limit, limit);
  Matrix<double> work(ld, b);   // the block being orthogonalised
  linalg::detail::Rng rng(options.seed, linalg::detail::kLanczosStream);
  auto basis = [&](Index m) { return q.topLeftCorner(n, m); };

  // Orthonormalises the first `bj` columns of `work` against basis(m) (already done once by the
  // caller) and each other; r = their coefficients (upper triangular). A dependent column is
  // replaced by a random direction orthogonal to everything (r column without a diagonal).
  // False when no direction is left (the basis spans the space numerically).
  Matrix<double> r;
  auto orthonormalize = [&](Index m, Index bj, double scale) {
    r.setZero(bj, bj);
    auto w = work.topLeftCorner(n, bj);
    for (Index c = 0; c < bj; ++c) {
      auto col = w.col(c);
      for (int pass = 0; pass < 2 && c > 0; ++pass) {
        const Vector<double> coef = w.leftCols(c).transpose() * col;
        col -= w.leftCols(c) * coef;
        r.col(c).head(c) += coef;
      }
      const double norm = col.norm();
      if (norm > breakdown * scale) {
        r(c, c) = norm;
        col /= norm;
        continue;
      }
      Vector<double> fresh(n);
      rng.fill_uniform<double>(fresh);
      const double before = fresh.norm();
      for (int pass = 0; pass < 2; ++pass) {
        if (m > 0) fresh -= basis(m) * (basis(m).transpose() * fresh).eval();
        if (c > 0) fresh -= w.leftCols(c) * (w.leftCols(c).transpose() * fresh).eval();
      }
      const double after = fresh.norm();
      if (!(after > breakdown * before)) return false;
      col = fresh / after;
    }
    return true;
  };

  for (Index i = 0; i < n * b; ++i) work(i % n, i / n) = rng.uniform_pm1();
  (void)orthonormalize(0, b, 1.0);  // b <= n random vectors: a dependent one gets replaced
  q.topLeftCorner(n, b) = work.topLeftCorner(n, b);

  GramSpaceEigen out;
  Index j = 0;   // first column of the current block
  Index bj = b;  // its width
  bool whole_blocks = true;
  Matrix<double> ritz;
  while (true) {
    gram.multiply(q.col(j).data(), ld, work.data(), bj);
    out.products += bj;
    const Index m = j + bj;
    auto w = work.topLeftCorner(n, bj);
    // c = Qᵀ W and W −= Q c, twice ("twice is enough"); the first c is H's new columns. Through
    // the engine's dispatched GEMM: the basis is large and these passes are memory-bound.
    Matrix<double> c(m, bj);
    for (int pass = 0; pass < 2; ++pass) {
      gemm(Op::kT, Op::kN, m, bj, n, 1.0, q.data(), ld, work.data(), ld, 0.0, c.data(), m);
      gemm(Op::kN, Op::kN, n, bj, m, -1.0, q.data(), ld, c.data(), m, 1.0, work.data(), ld);
      if (pass == 0) {
        h.block(0, j, m, bj) = c;
        h.block(j, 0, bj, m) = c.transpose();
      }
    }

    Eigen::SelfAdjointEigenSolver<Matrix<double>> eig(h.topLeftCorner(m, m));
    if (eig.info() != Eigen::Success) throw Error("Gram method: the projected eigenproblem failed to converge");
    out.values = eig.eigenvalues().reverse();
    ritz = eig.eigenvectors().rowwise().reverse();
    const double scale = std::max(std::abs(out.values(0)), std::numeric_limits<double>::min());
    const Index wanted = std::min(k, m);
    out.residuals.setZero(wanted);
    if (m == n || !orthonormalize(m, bj, scale)) {  // the basis spans the space: Ritz pairs exact
      out.converged = m >= k;
      break;
    }
    for (Index i = 0; i < wanted; ++i) out.residuals(i) = (r * ritz.block(j, i, bj, 1)).norm();
    if (m >= k && whole_blocks && out.residuals.maxCoeff() <= options.tolerance * scale) {
      out.converged = true;
      break;
    }
    const Index next = std::min(b, limit - m);
    if (next == 0) break;  // budget spent
    // A narrower last block drops directions the residual bound relies on: not converged then.
    whole_blocks = next == bj;
    q.block(0, m, n, next) = w.leftCols(next);
    j = m;
    bj = next;
  }
  const Index m = j + bj;
  if (m < k) throw Error(fmt::format("Gram method: the basis holds {} vectors, fewer than k = {}", m, k));
  out.values.conservativeResize(k);
  out.vectors = basis(m) * ritz.leftCols(k);
  return out;
}

/// Single vectors: thick-restart Lanczos (quadra/linalg/lanczos.hpp), the cheaper bookkeeping
/// when a product is cheap (K in cache). Blocks: block_lanczos, fewer passes over a K that
/// streams from memory. Automatic: blocks of 2 once K exceeds kBlockFromBytes.
template <class S>
GramSpaceEigen top_eigenpairs(const PackedGram<S>& gram, Index k, const GramEigenOptions& options) {
  const Index n = gram.size();
  Index block = options.block_size;
  if (block == 0) {
    block = packed_bytes(n, sizeof(S)) > kBlockFromBytes ? 2 : 1;
  }
  if (block > 1) {
    GramEigenOptions blocked = options;
    blocked.block_size = block;
    return block_lanczos(gram, k, blocked);
  }
  linalg::FunctionOperator<double> op(n, [&](ConstVectorRef<double> x, VectorRef<double> y) {
    gram.multiply(x.data(), n, y.data(), 1);
  });
  linalg::LanczosOptions lanczos;
  lanczos.tolerance = options.tolerance;
  lanczos.max_products = std::min(n, std::max(options.max_products, k));
  lanczos.seed = options.seed;
  const linalg::LanczosResult<double> eig = linalg::lanczos_largest<double>(op, k, lanczos);
  throw_if_error(eig.status);
  GramSpaceEigen out;
  out.values = eig.eigenvalues;
  out.vectors = eig.eigenvectors;
  out.residuals = eig.residual_norms;
  out.products = eig.num_products;
  out.converged = eig.converged;
  return out;
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
  if (options.block_size < 0) {
    throw Error(fmt::format("Gram method: block size {} is out of range; expected 0 (automatic) "
                            "or at least 1",
                            options.block_size));
  }
  if (k < 1 || k > nc) {
    throw Error(fmt::format(
        "Gram method: k = {} is out of range; the Gram matrix has {} rows ({} samples x "
        "{} loss-Hessian factor columns), which bounds the GGN's rank; expected 1 <= "
        "k <= {}",
        k, nc, n, m, nc));
  }
  const PackedGram<S> gram = packed_gram(batch, factors);
  const GramSpaceEigen eig = top_eigenpairs(gram, k, options);

  GramEigenResult<S> result;
  result.eigenvalues = eig.values;
  result.residual_norms = eig.residuals;
  for (Index j = 0; j < gram.count(); ++j) {
    const S* tile = gram.tile(j, j);
    for (Index d = 0; d < chunk_at(nc, kTile, j).size(); ++d)
      result.trace += static_cast<double>(tile[d * kTile + d]);
  }
  result.gram_size = nc;
  result.num_products = eig.products;
  result.converged = eig.converged;
  // u_i ∝ Bᵀ w_i = Σ_n J_nᵀ (V_n w_in): one VJP of the outputs per eigenvector.
  result.eigenvectors.resize(batch.num_parameters(), k);
  const double floor = 1e-10 * std::max(std::abs(eig.values(0)), 1e-300);
  Matrix<S> cotangent(c, n);
  for (Index i = 0; i < k; ++i) {
    if (!(eig.values(i) > floor)) {
      throw Error(
          fmt::format("Gram method: eigenvalue {} of {} is {:.3g}, zero to roundoff: the GGN "
                      "has fewer than k = {} nonzero eigenvalues on this batch, and eigenvectors "
                      "of its null space are not determined by the Gram matrix; ask for fewer "
                      "or use Lanczos",
                      i + 1, k, eig.values(i), k));
    }
    cotangent.setZero();
    for (Index s = 0; s < n; ++s) {
      for (Index j = 0; j < m; ++j) {
        cotangent.col(s) += static_cast<S>(eig.vectors(s * m + j, i)) *
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
