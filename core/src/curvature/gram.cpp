// The GGN's Gram matrix and its top eigenpairs; see quadra/curvature/gram.hpp.

#include <quadra/curvature/gram.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

#include <Eigen/Eigenvalues>
#include <Eigen/QR>
#include <fmt/format.h>

#include <quadra/dist/communicator.hpp>
#include <quadra/error.hpp>
#include <quadra/linalg/lanczos.hpp>
#include <quadra/linalg/linear_operator.hpp>
#include <quadra/parallel.hpp>

#include "../linalg/random.hpp"
#include "../kernels/gemm.hpp"

namespace quadra::curvature {
namespace {

using kernels::gemm;
using kernels::Op;

// Square tiles of K: one task per tile of the lower triangle; fixed, so thread-count independent.
constexpr Index kTile = 256;
// Vectors per pass of the float tile kernel (kernels::symmetric_tile_block).
constexpr Index kFloatBlock = 4;

struct GramLayer {
  Index layer = 0;
  Index offset = 0;  // of the weight in the flat parameter vector (the bias follows it)
  bool bias = false;
};

std::vector<GramLayer> gram_layers(const nn::Network& network) {
  std::vector<GramLayer> out;
  for (const nn::ParameterInfo& p : network.parameters()) {
    if (p.is_bias) {
      out.back().bias = true;
    } else {
      out.push_back({p.layer, p.offset, false});
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
        // Uninitialised (new S[], not a zero-filled vector): the assembly writes every tile, each
        // in a parallel task, so the 100+ MB are first touched by the threads that fill them.
        tiles_(new S[static_cast<std::size_t>(count_ * (count_ + 1) / 2 * kTile * kTile)]) {}

  [[nodiscard]] Index size() const noexcept { return size_; }
  [[nodiscard]] Index count() const noexcept { return count_; }
  S* tile(Index i, Index j) { return tiles_.get() + index(i, j) * kTile * kTile; }
  const S* tile(Index i, Index j) const { return tiles_.get() + index(i, j) * kTile * kTile; }

  /// Y = K X for `vectors` vectors stored `ld` apart (ld >= size), accumulated in double. One task
  /// per tile column j reads each of its tiles once, for both Y_i += K_ij X_j and (below the
  /// diagonal) Y_j += K_ijᵀ X_i, into its own partial; the partials are added in column order, so
  /// the result does not depend on the thread count. Vectors go through a tile several at a time
  /// (float tiles: kFloatBlock, double: 2): a product streams all of K from memory, and a further
  /// vector costs little more than the first.
  void multiply(const double* x, Index ld, double* y, Index vectors) const {
    partial_.resize(ld * vectors, count_);
    // Task t handles tile columns t and count − 1 − t: count + 1 tiles each, balanced work.
    parallel_for_tasks((count_ + 1) / 2, [&](std::int64_t task) {
      const auto t = static_cast<Index>(task);
      multiply_column(t, x, ld, vectors);
      if (count_ - 1 - t != t) multiply_column(count_ - 1 - t, x, ld, vectors);
    });
    // Row tile i of y: the partials of columns j <= i (the others have no rows there), in order.
    parallel_for_tasks(count_ * vectors, [&](std::int64_t task) {
      const Index v = static_cast<Index>(task) / count_;
      const ChunkRange rows = chunk_at(size_, kTile, static_cast<Index>(task) % count_);
      double* yv = y + v * ld + rows.begin;
      std::fill(yv, yv + rows.size(), 0.0);
      for (Index j = 0; j <= rows.index; ++j) {
        const double* p = partial_.col(j).data() + v * ld + rows.begin;
        for (Index r = 0; r < rows.size(); ++r) yv[r] += p[r];
      }
    });
  }

 private:
  // partial_.col(j) = the contributions of tile column j's tiles to K X.
  void multiply_column(Index j, const double* x, Index ld, Index vectors) const {
    // Only rows from tile j down receive contributions (and are read by multiply()).
    double* out = partial_.col(j).data();
    for (Index v = 0; v < vectors; ++v) std::fill(out + v * ld + j * kTile, out + v * ld + size_, 0.0);
    if constexpr (std::is_same_v<S, float>) {
      for (Index v = 0; v < vectors; v += kFloatBlock) {
        multiply_column_float(j, x + v * ld, ld, out + v * ld, std::min(kFloatBlock, vectors - v));
      }
    } else {
      multiply_column_double(j, x, ld, out, vectors);
    }
  }

  // Double tiles: the double kernels, two vectors per pass where there are two.
  void multiply_column_double(Index j, const double* x, Index ld, double* out, Index vectors) const {
    const ChunkRange cols = chunk_at(size_, kTile, j);
    for (Index i = j; i < count_; ++i) {
      const ChunkRange rows = chunk_at(size_, kTile, i);
      Index v = 0;
      for (; v + 2 <= vectors; v += 2) {
        const Index o = v * ld;
        kernels::symmetric_tile_product2(tile(i, j), kTile, rows.size(), cols.size(),
                                            x + o + rows.begin, x + o + cols.begin,
                                            out + o + rows.begin, out + o + cols.begin, ld, i == j);
      }
      if (v < vectors) {
        const Index o = v * ld;
        kernels::symmetric_tile_product(tile(i, j), kTile, rows.size(), cols.size(),
                                           x + o + rows.begin, x + o + cols.begin,
                                           out + o + rows.begin, out + o + cols.begin, i == j);
      }
    }
  }

  // Float tiles: up to kFloatBlock vectors per pass through the float kernel, on float copies of
  // the vectors' tile segments kept in a small scratch (stays in L1); each tile's float sums are
  // added to the double result. A product's relative rounding is then ~3e-7 (float32 sums over a
  // tile's 256 terms) where K's own entries carry float32 rounding already; eigenvalues stay
  // within 1e-5 of λ₁ of a float64 reference (tests/curvature/test_gram.cpp).
  void multiply_column_float(Index j, const double* x, Index ld, double* out, Index vectors) const {
    constexpr Index kStride = kTile + 16;  // scratch vectors 1088 bytes apart: no 4 KiB aliasing
    alignas(64) std::array<float, kFloatBlock * kStride> x_c{};
    alignas(64) std::array<float, kFloatBlock * kStride> x_r{};
    alignas(64) std::array<float, kFloatBlock * kStride> y_c{};
    alignas(64) std::array<float, kFloatBlock * kStride> y_r{};
    const ChunkRange cols = chunk_at(size_, kTile, j);
    for (Index v = 0; v < vectors; ++v) {
      for (Index c = 0; c < cols.size(); ++c)
        x_c[static_cast<std::size_t>(v * kStride + c)] = static_cast<float>(x[v * ld + cols.begin + c]);
    }
    for (Index i = j; i < count_; ++i) {
      const ChunkRange rows = chunk_at(size_, kTile, i);
      for (Index v = 0; v < vectors; ++v) {
        float* xr = x_r.data() + v * kStride;
        for (Index r = 0; r < rows.size(); ++r) xr[r] = static_cast<float>(x[v * ld + rows.begin + r]);
        std::fill_n(y_r.data() + v * kStride, rows.size(), 0.0F);
        std::fill_n(y_c.data() + v * kStride, cols.size(), 0.0F);
      }
      kernels::symmetric_tile_block(tile(i, j), kTile, rows.size(), cols.size(), x_r.data(),
                                       x_c.data(), y_r.data(), y_c.data(), kStride, vectors, i == j);
      for (Index v = 0; v < vectors; ++v) {
        double* o = out + v * ld;
        const float* yr = y_r.data() + v * kStride;
        for (Index r = 0; r < rows.size(); ++r) o[rows.begin + r] += static_cast<double>(yr[r]);
        if (i == j) continue;
        const float* yc = y_c.data() + v * kStride;
        for (Index c = 0; c < cols.size(); ++c) o[cols.begin + c] += static_cast<double>(yc[c]);
      }
    }
  }

  // Tiles before column j: count + (count − 1) + … + (count − j + 1).
  [[nodiscard]] Index index(Index i, Index j) const noexcept {
    return j * count_ - j * (j - 1) / 2 + (i - j);
  }

  Index size_;
  Index count_;
  std::unique_ptr<S[]> tiles_;
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

/// out[i] = x[i]·w[i] (first) or out[i] += x[i]·w[i]; restrict parameters, so it vectorises.
template <class S>
void hadamard_accumulate(S* __restrict out, const S* __restrict x, const S* __restrict w, Index n,
                         bool first) {
  if (first) {
    for (Index i = 0; i < n; ++i) out[i] = x[i] * w[i];
  } else {
    for (Index i = 0; i < n; ++i) out[i] += x[i] * w[i];
  }
}

/// The factor's columns backpropagated to every Linear layer's output: g[l] is d_out × N·m, column
/// n·m + k the adjoint of sample n's factor column k. Row n·m + k of B restricted to layer l is
/// g[l][:, n·m + k] ⊗ (a_n, 1), a_n = input(l).col(n).
/// A batch split across ranks: each rank backpropagates its own samples' factor columns (the
/// passes through the network), then the ranks all-gather g and the layer inputs, so that every
/// rank holds the whole batch's rows of B, in sample order, and builds the same K from the same
/// bits.
template <class S>
struct FactorAdjoints {
  std::vector<GramLayer> layers;
  std::vector<Matrix<S>> g;
  Index columns = 0;  // m, factor columns per sample
  Index samples = 0;  // N, of the whole batch
  std::vector<const Matrix<S>*> inputs;  // per layer: d_in × N, the batch's or gathered
  std::vector<Matrix<S>> gathered;       // the gathered inputs of a split batch
  [[nodiscard]] const Matrix<S>& input(std::size_t l) const { return *inputs[l]; }
};

/// `local` (rows × this rank's columns) from every rank, columns concatenated in rank order: the
/// batch's columns in sample order, as the shares are contiguous in rank order.
template <class S>
Matrix<S> gather_columns(const dist::Communicator& comm, const Matrix<S>& local) {
  std::vector<double> mine(local.data(), local.data() + local.size());
  const std::vector<double> all = comm.all_gather(mine);
  Matrix<S> out(local.rows(), local.rows() > 0 ? static_cast<Index>(all.size()) / local.rows() : 0);
  std::transform(all.begin(), all.end(), out.data(), [](double v) { return static_cast<S>(v); });
  return out;
}

template <class S>
FactorAdjoints<S> factor_adjoints(nn::BoundBatch<S>& batch, const std::vector<Matrix<S>>& factor) {
  check_gram_supported(batch.network());
  const Index n = batch.batch_size();
  FactorAdjoints<S> out;
  out.layers = gram_layers(batch.network());
  out.columns = static_cast<Index>(factor.size());
  out.samples = batch.total_batch_size();
  out.g.resize(out.layers.size());
  for (Index k = 0; k < out.columns; ++k) {
    batch.backpropagate(factor[static_cast<std::size_t>(k)]);
    for (std::size_t l = 0; l < out.layers.size(); ++l) {
      const Matrix<S>& adjoint = batch.output_adjoints(out.layers[l].layer);
      if (k == 0) out.g[l].resize(adjoint.rows(), n * out.columns);
      for (Index s = 0; s < n; ++s) out.g[l].col(s * out.columns + k) = adjoint.col(s);
    }
  }
  for (const GramLayer& l : out.layers) out.inputs.push_back(&batch.layer_input(l.layer));
  if (out.samples != n) {  // split across ranks
    const dist::Communicator& comm = dist::Communicator::world();
    for (Matrix<S>& g : out.g) g = gather_columns(comm, g);
    out.gathered.reserve(out.layers.size());
    for (std::size_t l = 0; l < out.layers.size(); ++l) {
      out.gathered.push_back(gather_columns(comm, *out.inputs[l]));
      out.inputs[l] = &out.gathered.back();
      if (out.gathered.back().cols() != out.samples || out.g[l].cols() != out.samples * out.columns)
        throw Error(fmt::format("Gram method: gathered {} samples of a batch of {}",
                                out.gathered.back().cols(), out.samples));
    }
  }
  return out;
}

/// K = (1/N) B Bᵀ in packed form (see the file comment of gram.hpp for the formula), with the
/// thin factor above: row n·m + k of B is V_n[:, k]ᵀ J_n.
template <class S>
PackedGram<S> packed_gram(const FactorAdjoints<S>& adjoints) {
  const Index n = adjoints.samples;
  const Index c = adjoints.columns;
  const Index nc = n * c;
  const std::vector<GramLayer>& layers = adjoints.layers;
  const std::vector<Matrix<S>>& g = adjoints.g;
  // Sample Gram of each layer's (bias-augmented) inputs, N × N, by column slices in parallel.
  std::vector<Matrix<S>> inputs(layers.size());
  for (std::size_t l = 0; l < layers.size(); ++l) inputs[l].resize(n, n);
  const auto slices = num_chunks(n, kTile);
  parallel_for_tasks(static_cast<std::int64_t>(layers.size()) * slices, [&](std::int64_t t) {
    const auto l = static_cast<std::size_t>(t / slices);
    const ChunkRange cols = chunk_at(n, kTile, t % slices);
    const Matrix<S>& a = adjoints.input(l);
    gemm(Op::kT, Op::kN, n, cols.size(), a.rows(), S(1), a.data(), a.rows(),
         a.data() + cols.begin * a.rows(), a.rows(), S(0), inputs[l].data() + cols.begin * n, n);
    if (layers[l].bias) inputs[l].middleCols(cols.begin, cols.size()).array() += S(1);
  });
  PackedGram<S> gram(nc);
  std::vector<std::pair<Index, Index>> tasks;  // (row tile, column tile), lower triangle
  for (Index j = 0; j < gram.count(); ++j) {
    for (Index i = j; i < gram.count(); ++i) tasks.emplace_back(i, j);
  }
  const S scale = S(1) / static_cast<S>(n);
  parallel_for_tasks(static_cast<std::int64_t>(tasks.size()), [&](std::int64_t t) {
    const ChunkRange rows = chunk_at(nc, kTile, tasks[static_cast<std::size_t>(t)].first);
    const ChunkRange cols = chunk_at(nc, kTile, tasks[static_cast<std::size_t>(t)].second);
    // Rows (and columns) come in runs of c per sample: the input-Gram factor of entry (ii, jj),
    // scaled by 1/N, is input_dots(ii, sample of column jj − first_sample), gathered per layer.
    const Index first_sample = cols.begin / c;
    const Index col_samples = (cols.end - 1) / c - first_sample + 1;
    Matrix<S> dots(rows.size(), cols.size());
    Matrix<S> input_dots(rows.size(), col_samples);
    std::vector<Index> sample_of(static_cast<std::size_t>(rows.size()));
    for (Index ii = 0; ii < rows.size(); ++ii)
      sample_of[static_cast<std::size_t>(ii)] = (rows.begin + ii) / c;
    S* tile = gram.tile(rows.index, cols.index);
    for (std::size_t l = 0; l < layers.size(); ++l) {
      const Matrix<S>& gl = g[l];
      const Index d = gl.rows();
      gemm(Op::kT, Op::kN, rows.size(), cols.size(), d, S(1), gl.data() + rows.begin * d, d,
           gl.data() + cols.begin * d, d, S(0), dots.data(), rows.size());
      const Matrix<S>& a = inputs[l];
      for (Index q = 0; q < col_samples; ++q) {
        const S* a_q = a.col(first_sample + q).data();
        for (Index ii = 0; ii < rows.size(); ++ii)
          input_dots(ii, q) = scale * a_q[sample_of[static_cast<std::size_t>(ii)]];
      }
      for (Index jj = 0; jj < cols.size(); ++jj) {
        const S* w = input_dots.col((cols.begin + jj) / c - first_sample).data();
        hadamard_accumulate(tile + jj * kTile, dots.col(jj).data(), w, rows.size(), l == 0);
      }
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

/// c = Qᵀ W, then W −= Q c, for a basis Q (n × m) and a block W (n × b), both with leading
/// dimension ld: one step of classical Gram-Schmidt. Memory-bound on Q (up to 300 vectors of N(C−1)
/// doubles), so in parallel tasks through the dispatched GEMM: c by slices of Q's columns, W by
/// slices of rows. The slices are fixed, so the result does not depend on the thread count.
void project_onto_basis(const double* q, Index ld, Index n, Index m, double* w, Index b,
                        Matrix<double>& c) {
  constexpr Index kColumns = 16;
  constexpr Index kRows = 512;
  parallel_for_chunks(m, kColumns, [&](const ChunkRange& r) {
    gemm(Op::kT, Op::kN, r.size(), b, n, 1.0, q + r.begin * ld, ld, w, ld, 0.0, c.data() + r.begin,
         m);
  });
  parallel_for_chunks(n, kRows, [&](const ChunkRange& r) {
    gemm(Op::kN, Op::kN, r.size(), b, m, -1.0, q + r.begin, ld, c.data(), m, 1.0, w + r.begin, ld);
  });
}

/// Block Lanczos on K (Golub & Underwood 1977): blocks of b vectors, full reorthogonalisation
/// against the whole basis (classical Gram-Schmidt twice: "twice is enough"), Rayleigh-Ritz on the
/// dense projection H = Qᵀ K Q built from the products. Why blocks: a product streams all of K
/// from memory (175 MB at N = 1024, C = 10), and the tile kernels serve several vectors in about
/// the time of one; a block needs more vectors to converge than single-vector Lanczos, but fewer
/// passes over K (at N = 1024, top 20: 53 passes of 4 vectors, 84 of 2, against 136 of 1).
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
  double scale = 0;  // |λ₁| of the last Rayleigh-Ritz step
  while (true) {
    gram.multiply(q.col(j).data(), ld, work.data(), bj);
    out.products += bj;
    const Index m = j + bj;
    auto w = work.topLeftCorner(n, bj);
    // c = Qᵀ W and W −= Q c, twice ("twice is enough"); the first c is H's new columns.
    Matrix<double> c(m, bj);
    for (int pass = 0; pass < 2; ++pass) {
      project_onto_basis(q.data(), ld, n, m, work.data(), bj, c);
      if (pass == 0) {
        h.block(0, j, m, bj) = c;
        h.block(j, 0, bj, m) = c.transpose();
      }
    }

    // Rayleigh-Ritz, a serial O(m³) eigensolve of H: on the first block (for the breakdown
    // scale), on every other block once m >= k (convergence is noticed at most one block late,
    // for half the solves), and on the last. In between the breakdown test uses the last λ₁,
    // which Ritz values only approach from below.
    bool solved = false;
    auto rayleigh_ritz = [&] {
      Eigen::SelfAdjointEigenSolver<Matrix<double>> eig(h.topLeftCorner(m, m));
      if (eig.info() != Eigen::Success) throw Error("Gram method: the projected eigenproblem failed to converge");
      out.values = eig.eigenvalues().reverse();
      ritz = eig.eigenvectors().rowwise().reverse();
      scale = std::max(std::abs(out.values(0)), std::numeric_limits<double>::min());
      solved = true;
    };
    if (j == 0 || (m >= k && ((m - k) / b) % 2 == 0)) rayleigh_ritz();
    const Index wanted = std::min(k, m);
    out.residuals.setZero(wanted);
    const bool spanned = m == n || !orthonormalize(m, bj, scale);
    const Index next = spanned ? 0 : std::min(b, limit - m);
    if (next == 0 && !solved) rayleigh_ritz();
    if (spanned) {  // the basis spans the space: Ritz pairs exact
      out.converged = m >= k;
      break;
    }
    if (solved) {
      for (Index i = 0; i < wanted; ++i) out.residuals(i) = (r * ritz.block(j, i, bj, 1)).norm();
      if (m >= k && whole_blocks && out.residuals.maxCoeff() <= options.tolerance * scale) {
        out.converged = true;
        break;
      }
    }
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
/// streams from memory. Automatic: once K exceeds kBlockFromBytes, blocks of as many vectors as
/// one pass of the tile kernel serves (float: kFloatBlock, double: 2).
template <class S>
GramSpaceEigen top_eigenpairs(const PackedGram<S>& gram, Index k, const GramEigenOptions& options) {
  const Index n = gram.size();
  Index block = options.block_size;
  if (block == 0) {
    const Index per_pass = std::is_same_v<S, float> ? kFloatBlock : 2;
    block = packed_bytes(n, sizeof(S)) > kBlockFromBytes ? per_pass : 1;
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

/// Unit GGN eigenvectors u_i ∝ Bᵀ w_i from Gram-space eigenvectors w_i (columns of w). Per Linear
/// layer the weight block of Bᵀ w is Σ_n h_n (a_n, 1)ᵀ with h_n = Σ_k w[n·m + k] g[:, n·m + k]:
/// one GEMM per layer from the stored adjoints instead of a backward pass through the network.
/// One task per eigenvector: thread-count independent.
template <class S>
Matrix<S> ggn_eigenvectors(const nn::BoundBatch<S>& batch, const FactorAdjoints<S>& adjoints,
                           const Matrix<double>& w) {
  const Index n = adjoints.samples;
  const Index m = adjoints.columns;
  Matrix<S> out(batch.num_parameters(), w.cols());
  parallel_for_tasks(w.cols(), [&](std::int64_t task) {
    const auto i = static_cast<Index>(task);
    const Vector<S> wi = w.col(i).template cast<S>();
    for (std::size_t l = 0; l < adjoints.layers.size(); ++l) {
      const Matrix<S>& g = adjoints.g[l];
      const Matrix<S>& a = adjoints.input(l);
      Matrix<S> h(g.rows(), n);
      for (Index s = 0; s < n; ++s) h.col(s).noalias() = g.middleCols(s * m, m) * wi.segment(s * m, m);
      // The weight, out × in in PyTorch's row-major layout: column-major in × out, A Hᵀ.
      S* u = out.col(i).data() + adjoints.layers[l].offset;
      gemm(Op::kN, Op::kT, a.rows(), g.rows(), n, S(1), a.data(), a.rows(), h.data(), g.rows(),
           S(0), u, a.rows());
      if (adjoints.layers[l].bias) {
        Eigen::Map<Vector<S>>(u + a.rows() * g.rows(), g.rows()) = h.rowwise().sum();
      }
    }
    out.col(i).normalize();
  });
  return out;
}

}  // namespace

template <class S>
Matrix<double> ggn_gram_matrix(nn::BoundBatch<S>& batch) {
  const PackedGram<S> packed = packed_gram(factor_adjoints(batch, loss_hessian_factor(batch)));
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
  const Index n = batch.total_batch_size();
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
  const FactorAdjoints<S> adjoints = factor_adjoints(batch, factors);
  const PackedGram<S> gram = packed_gram(adjoints);
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
  const double floor = 1e-10 * std::max(std::abs(eig.values(0)), 1e-300);
  for (Index i = 0; i < k; ++i) {
    if (!(eig.values(i) > floor)) {
      throw Error(
          fmt::format("Gram method: eigenvalue {} of {} is {:.3g}, zero to roundoff: the GGN "
                      "has fewer than k = {} nonzero eigenvalues on this batch, and eigenvectors "
                      "of its null space are not determined by the Gram matrix; ask for fewer "
                      "or use Lanczos",
                      i + 1, k, eig.values(i), k));
    }
  }
  result.eigenvectors = ggn_eigenvectors(batch, adjoints, eig.vectors);
  return result;
}

template Matrix<double> ggn_gram_matrix<float>(nn::BoundBatch<float>&);
template Matrix<double> ggn_gram_matrix<double>(nn::BoundBatch<double>&);
template GramEigenResult<float> ggn_top_eigenpairs_gram<float>(nn::BoundBatch<float>&, Index,
                                                               const GramEigenOptions&);
template GramEigenResult<double> ggn_top_eigenpairs_gram<double>(nn::BoundBatch<double>&, Index,
                                                                 const GramEigenOptions&);

}  // namespace quadra::curvature
