#pragma once
// The vector kernels of Lanczos on a basis V (the first m columns of an n x M matrix): the
// three-term recurrence, the projection h = V^T w, the update w -= V h, and the in-place
// rotation V <- V C of a thick restart. The middle two stream the basis at memory bandwidth and
// dominate a step when the product is cheap.
// Rows are split into chunks of a fixed size (never dependent on the thread count) that run in
// parallel; projection partials are added in chunk order, so results are bitwise the same
// with any number of threads.

#include <algorithm>
#include <cmath>

#include <Eigen/Core>

#include <quadra/parallel.hpp>
#include <quadra/sdk/types.hpp>

#include "../kernels/gemm.hpp"

namespace quadra::linalg::detail {

template <class Scalar>
class LanczosBasis {
 public:
  // A chunk of w stays in L1/L2 while the basis columns stream past it.
  static constexpr Index kChunkRows = 8192;

  LanczosBasis(Index n, Index max_cols)
      : basis_(n, max_cols),
        partials_(max_cols, std::max<Index>(num_chunks(n, kChunkRows), 1)),
        sums_(partials_.cols()),
        h_(max_cols) {}

  [[nodiscard]] Index rows() const { return basis_.rows(); }
  [[nodiscard]] Index max_cols() const { return basis_.cols(); }
  [[nodiscard]] const Matrix<Scalar>& matrix() const { return basis_; }
  auto col(Index j) { return basis_.col(j); }
  [[nodiscard]] auto col(Index j) const { return basis_.col(j); }

  /// ||w||, summed over the chunks in order.
  double norm(const Vector<Scalar>& w) {
    parallel_for_chunks(rows(), kChunkRows, [&](const ChunkRange& chunk) {
      sums_[chunk.index] = static_cast<double>(w.segment(chunk.begin, chunk.size()).squaredNorm());
    });
    return std::sqrt(sums_.sum());
  }

  /// The three-term recurrence of step j in two passes over w: on entry w = A v_j; on exit
  /// w = A v_j - beta_prev v_{j-1} - alpha v_j with alpha = v_j^T (A v_j - beta_prev v_{j-1}),
  /// which is returned, and `norm` = ||w||.
  double three_term(Index j, double beta_prev, Vector<Scalar>& w, double& norm) {
    const auto beta = static_cast<Scalar>(beta_prev);
    parallel_for_chunks(rows(), kChunkRows, [&](const ChunkRange& chunk) {
      auto x = w.segment(chunk.begin, chunk.size());
      if (j > 0 && beta != Scalar(0)) {
        x -= beta * basis_.col(j - 1).segment(chunk.begin, chunk.size());
      }
      sums_[chunk.index] =
          static_cast<double>(basis_.col(j).segment(chunk.begin, chunk.size()).dot(x));
    });
    const double alpha = sums_.sum();
    const auto a = static_cast<Scalar>(alpha);
    parallel_for_chunks(rows(), kChunkRows, [&](const ChunkRange& chunk) {
      auto x = w.segment(chunk.begin, chunk.size());
      x -= a * basis_.col(j).segment(chunk.begin, chunk.size());
      sums_[chunk.index] = static_cast<double>(x.squaredNorm());
    });
    norm = std::sqrt(sums_.sum());
    return alpha;
  }

  /// Removes from w its components along the first m columns (orthonormal) by classical
  /// Gram-Schmidt with the Kahan-Parlett / DGKS "twice is enough" rule, as
  /// detail::orthogonalize. `norm` is ||w|| on entry and on exit. Returns the coefficient
  /// removed along column m-1 (passes summed).
  double orthogonalize(Index m, Vector<Scalar>& w, double& norm) {
    constexpr double kTwiceIsEnough = 0.7071067811865476;  // 1/sqrt(2)
    if (m == 0) return 0.0;
    double last = 0.0;
    for (int pass = 0; pass < 2; ++pass) {
      project(m, w);
      subtract(m, w);
      last += static_cast<double>(h_[m - 1]);
      const double after = std::sqrt(sums_.sum());
      const bool enough = after >= kTwiceIsEnough * norm;
      norm = after;
      if (enough) break;
    }
    return last;
  }

  /// Columns [0, c) <- (first m columns) * coefficients (m x c, c <= m), in place. A real
  /// GEMM (2 m c flops per row, compute-bound), so it goes through the engine's CPU-dispatched
  /// kernel, several times faster than baseline-ISA Eigen.
  void rotate(Index m, const Matrix<double>& coefficients) {
    const Matrix<Scalar> c = coefficients.cast<Scalar>();
    const Index cols = c.cols();
    parallel_for_chunks(rows(), kChunkRows, [&](const ChunkRange& chunk) {
      Matrix<Scalar> rotated(chunk.size(), cols);
      kernels::gemm(kernels::Op::kN, kernels::Op::kN, chunk.size(), cols, m, Scalar(1),
                       basis_.data() + chunk.begin, basis_.rows(), c.data(), c.rows(), Scalar(0),
                       rotated.data(), chunk.size());
      basis_.block(chunk.begin, 0, chunk.size(), cols) = rotated;
    });
  }

 private:
  // h_ = V^T w.
  void project(Index m, const Vector<Scalar>& w) {
    parallel_for_chunks(rows(), kChunkRows, [&](const ChunkRange& chunk) {
      partials_.col(chunk.index).head(m).noalias() =
          basis_.block(chunk.begin, 0, chunk.size(), m).transpose() *
          w.segment(chunk.begin, chunk.size());
    });
    auto h = h_.head(m);
    h = partials_.col(0).head(m);
    for (Index c = 1; c < num_chunks(rows(), kChunkRows); ++c) h += partials_.col(c).head(m);
  }

  // w -= V h_, four columns per sweep over a chunk of w (one read and write of w per four
  // columns; Eigen's column-major GEMV is several times slower here without FMA). Leaves the
  // chunks' ||w||^2 in sums_.
  void subtract(Index m, Vector<Scalar>& w) {
    parallel_for_chunks(rows(), kChunkRows, [&](const ChunkRange& chunk) {
      auto v = basis_.middleRows(chunk.begin, chunk.size());
      auto x = w.segment(chunk.begin, chunk.size());
      Index j = 0;
      for (; j + 4 <= m; j += 4) {
        x -= h_[j] * v.col(j) + h_[j + 1] * v.col(j + 1) + h_[j + 2] * v.col(j + 2) +
             h_[j + 3] * v.col(j + 3);
      }
      for (; j < m; ++j) x -= h_[j] * v.col(j);
      sums_[chunk.index] = static_cast<double>(x.squaredNorm());
    });
  }

  Matrix<Scalar> basis_;
  Matrix<Scalar> partials_;  // max_cols x chunks: per-chunk V^T w
  Vector<double> sums_;      // per-chunk dot products, added in chunk order
  Vector<Scalar> h_;
};

}  // namespace quadra::linalg::detail
