#pragma once
// Building blocks shared by Lanczos and SLQ: block Gram-Schmidt against an orthonormal basis,
// and the eigenproblem of a symmetric tridiagonal matrix (always in double).

#include <algorithm>
#include <cmath>
#include <limits>

#include <Eigen/Core>
#include <Eigen/Jacobi>

#include <quadra/sdk/types.hpp>

namespace quadra::linalg::detail {

/// Removes from w its components along the first m columns of `basis` (orthonormal) by
/// classical Gram-Schmidt with the Kahan-Parlett / DGKS "twice is enough" rule: one pass, and
/// a second one only if the first removed more than 1 - 1/sqrt(2) of the norm (then w was
/// close to the span and the first pass may have left O(eps ||w_before|| / ||w_after||) of it);
/// after two passes w is orthogonal to working precision or negligible. Each pass is two
/// matrix-vector products, V^T w and V (V^T w), which stream the basis at memory bandwidth.
/// Returns the coefficient removed along column m-1 (passes summed). `scratch` needs >= m
/// entries; nothing is allocated.
template <class Scalar>
double orthogonalize(const Matrix<Scalar>& basis, Index m, Vector<Scalar>& w,
                     Vector<Scalar>& scratch) {
  constexpr double kTwiceIsEnough = 0.7071067811865476;  // 1/sqrt(2)
  if (m == 0) return 0.0;
  const auto v = basis.leftCols(m);
  auto h = scratch.head(m);
  double last = 0.0;
  double before = static_cast<double>(w.norm());
  for (int pass = 0; pass < 2; ++pass) {
    h.noalias() = v.transpose() * w;
    w.noalias() -= v * h;
    last += static_cast<double>(h[m - 1]);
    const double after = static_cast<double>(w.norm());
    if (after >= kTwiceIsEnough * before) break;
    before = after;
  }
  return last;
}

/// One Lanczos orthogonalisation: on entry w = A v_j, on exit w is the next unnormalised
/// Lanczos vector, orthogonal to v_0..v_j. The three-term recurrence removes the large
/// components (beta_prev v_{j-1} and alpha v_j) cheaply; the full reorthogonalisation after
/// it then removes only roundoff-sized components, so its first pass usually suffices.
/// `beta_prev` is the coupling of v_{j-1} and v_j in T (0 at the start of a block).
/// Returns alpha_j = v_j^T A v_j.
template <class Scalar>
double lanczos_orthogonalize(const Matrix<Scalar>& basis, Index j, double beta_prev,
                             Vector<Scalar>& w, Vector<Scalar>& scratch) {
  if (beta_prev != 0.0) w -= static_cast<Scalar>(beta_prev) * basis.col(j - 1);
  const auto alpha = static_cast<double>(basis.col(j).dot(w));
  w -= static_cast<Scalar>(alpha) * basis.col(j);
  return alpha + orthogonalize(basis, j + 1, w, scratch);
}

/// Eigenvalues of a symmetric tridiagonal matrix T = S diag(values) S^T, and selected rows of
/// S: only the first row (Gauss quadrature weights), only the last row (Lanczos residuals), or
/// all of S. Implicit QR with Wilkinson shifts, as in Eigen's SelfAdjointEigenSolver, but the
/// Givens rotations are applied only to the tracked rows: O(m^2) for one row instead of
/// O(m^3) for all, which keeps a convergence check after every Lanczos step cheap. T is
/// scaled to unit max-norm first (Eigen's computeFromTridiagonal does not scale, and its
/// deflation test is not scale-invariant). The rotations do not depend on the tracked rows,
/// so the eigenvalues are bitwise the same whichever rows are tracked.
class TridiagonalEigen {
 public:
  enum class Rows { kFirst, kLast, kAll };

  /// diag[0..m), sub[0..m-1). Returns false if the QR iteration did not converge.
  bool compute(const double* diag, const double* sub, Index m, Rows rows) {
    values_ = Eigen::Map<const Vector<double>>(diag, m);
    sub_ = Eigen::Map<const Vector<double>>(sub, std::max<Index>(m - 1, 0));
    if (rows == Rows::kAll) {
      rows_.setIdentity(m, m);
    } else {
      rows_.setZero(1, m);
      if (m > 0) rows_(0, rows == Rows::kFirst ? 0 : m - 1) = 1.0;
    }
    double scale = values_.size() > 0 ? values_.cwiseAbs().maxCoeff() : 0.0;
    if (sub_.size() > 0) scale = std::max(scale, sub_.cwiseAbs().maxCoeff());
    if (scale == 0.0 || m <= 1) return true;
    values_ /= scale;
    sub_ /= scale;
    const bool converged = iterate(m);
    sort(m);
    values_ *= scale;
    return converged;
  }

  /// Ascending.
  [[nodiscard]] const Vector<double>& values() const { return values_; }
  /// 1 x m (the tracked row of S) or m x m (S itself); column j belongs to values()[j].
  [[nodiscard]] const Matrix<double>& rows() const { return rows_; }

 private:
  bool iterate(Index m) {
    constexpr Index kMaxSweepsPerValue = 30;  // Eigen's default
    const double tiny = std::numeric_limits<double>::min();
    const double precision_inv = 1.0 / std::numeric_limits<double>::epsilon();
    Index end = m - 1;
    Index iterations = 0;
    while (end > 0) {
      for (Index i = 0; i < end; ++i) {
        // Deflate |sub_i| <= eps * sqrt(|d_i| + |d_i+1|) (T has unit scale here).
        const double scaled = precision_inv * sub_[i];
        if (std::abs(sub_[i]) < tiny ||
            scaled * scaled <= std::abs(values_[i]) + std::abs(values_[i + 1])) {
          sub_[i] = 0.0;
        }
      }
      while (end > 0 && sub_[end - 1] == 0.0) --end;
      if (end <= 0) break;
      if (++iterations > kMaxSweepsPerValue * m) return false;
      Index start = end - 1;
      while (start > 0 && sub_[start - 1] != 0.0) --start;
      qr_step(start, end);
    }
    return true;
  }

  // One implicit symmetric QR step with a Wilkinson shift on the block [start, end]
  // (Golub & Van Loan, Alg. 8.3.2), chasing the bulge with Givens rotations.
  void qr_step(Index start, Index end) {
    const double td = 0.5 * (values_[end - 1] - values_[end]);
    const double e = sub_[end - 1];
    double mu = values_[end];
    if (td == 0.0) {
      mu -= std::abs(e);
    } else if (e != 0.0) {
      const double h = std::hypot(td, e);
      const double e2 = e * e;
      mu -= e2 == 0.0 ? e / ((td + (td > 0.0 ? h : -h)) / e) : e2 / (td + (td > 0.0 ? h : -h));
    }
    double x = values_[start] - mu;
    double z = sub_[start];
    for (Index k = start; k < end && z != 0.0; ++k) {
      Eigen::JacobiRotation<double> rot;
      rot.makeGivens(x, z);
      const double c = rot.c();
      const double s = rot.s();
      const double sdk = s * values_[k] + c * sub_[k];
      const double dkp1 = s * sub_[k] + c * values_[k + 1];
      values_[k] = c * (c * values_[k] - s * sub_[k]) - s * (c * sub_[k] - s * values_[k + 1]);
      values_[k + 1] = s * sdk + c * dkp1;
      sub_[k] = c * sdk - s * dkp1;
      if (k > start) sub_[k - 1] = c * sub_[k - 1] - s * z;
      x = sub_[k];
      if (k < end - 1) {
        z = -s * sub_[k + 1];
        sub_[k + 1] = c * sub_[k + 1];
      }
      rows_.applyOnTheRight(k, k + 1, rot);  // S = S G on the tracked rows only
    }
  }

  void sort(Index m) {
    for (Index i = 0; i + 1 < m; ++i) {
      Index k = 0;
      values_.segment(i, m - i).minCoeff(&k);
      if (k > 0) {
        std::swap(values_[i], values_[i + k]);
        rows_.col(i).swap(rows_.col(i + k));
      }
    }
  }

  Vector<double> values_;
  Vector<double> sub_;
  Matrix<double> rows_;
};

}  // namespace quadra::linalg::detail
