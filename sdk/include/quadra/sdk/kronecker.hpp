#pragma once
/// \file
/// Kronecker blocks (see KroneckerFactor in curvature.hpp): a layer's parameters as the matrix
/// W̄ = [W b] (out x (in + bias)), and the damped inverse of its block S ⊗ A in the Kronecker
/// eigenbasis, for every plugin that preconditions with K-FAC factors. With A = Q_A diag(a) Q_A'
/// and S = Q_S diag(s) Q_S', the damped block is diagonal in that basis:
///
///   exact:  (S ⊗ A + lambda I)^-1                       eigenvalues s_i a_j + lambda
///   pi:     ((S + sqrt(lambda)/pi I) ⊗ (A + pi sqrt(lambda) I))^-1
///                                   eigenvalues (s_i + sqrt(lambda)/pi)(a_j + pi sqrt(lambda))
///           pi = sqrt((tr A / dim A) / (tr S / dim S))   (Martens & Grosse 2015, §6.3)
///
/// so the solve is V̄ -> Q_S ((Q_S' V̄ Q_A) ./ eigenvalues) Q_A'.
///
/// The factors' eigendecompositions (eigendecompose_factors) are independent tasks the host
/// spreads over the processes of a data-parallel run (ICurvatureBackend::run_tasks).

#include <cassert>
#include <cmath>
#include <string>
#include <string_view>

#include <Eigen/Core>
#include <Eigen/Eigenvalues>
#include <vector>

#include "quadra/sdk/curvature.hpp"
#include "quadra/sdk/format.hpp"
#include "quadra/sdk/status.hpp"
#include "quadra/sdk/types.hpp"

namespace quadra {

/// The eigendecompositions of every block's factors A and S (ascending eigenvalues, as Eigen's
/// SelfAdjointEigenSolver gives them, unclamped) into the blocks' eigen fields: two independent
/// tasks per block, handed to the host (ICurvatureBackend::run_tasks), which on a batch split
/// across processes runs each on one process (by size: cost n^3) and gives every process all of
/// them, bitwise what each would compute itself. Returns numerical_issue naming `component` and
/// the block's index when one does not converge.
inline Status eigendecompose_factors(ICurvatureBackend& backend, std::string_view component,
                                     std::vector<KroneckerEigen>& blocks) {
  class Tasks final : public IIndependentTasks {
   public:
    Tasks(std::string_view name, const std::vector<KroneckerEigen>& all)
        : component_(name), blocks_(all) {}
    [[nodiscard]] Index count() const override { return 2 * static_cast<Index>(blocks_.size()); }
    [[nodiscard]] double cost(Index i) const override {
      const auto n = static_cast<double>(factor(i).rows());
      return n * n * n;
    }
    Status run(Index i, std::vector<double>& out) override {
      const Matrix<double>& m = factor(i);
      const Eigen::SelfAdjointEigenSolver<Matrix<double>> eig(m);
      if (eig.info() != Eigen::Success) {
        return Status::numerical_issue(std::string(component_) +
                                       ": the eigendecomposition of layer " +
                                       std::to_string(i / 2) + "'s factors did not converge");
      }
      const Index n = m.rows();
      out.resize(static_cast<std::size_t>(n + n * n));
      Eigen::Map<Vector<double>>(out.data(), n) = eig.eigenvalues();
      Eigen::Map<Matrix<double>>(out.data() + n, n, n) = eig.eigenvectors();
      return Status::ok();
    }
    [[nodiscard]] const Matrix<double>& factor(Index i) const {
      const KroneckerFactor& f = blocks_[static_cast<std::size_t>(i / 2)].factor;
      return i % 2 == 0 ? f.a : f.s;
    }

   private:
    std::string_view component_;
    const std::vector<KroneckerEigen>& blocks_;
  };
  Tasks tasks(component, blocks);
  std::vector<std::vector<double>> results;
  if (Status s = backend.run_tasks(tasks, results); !s.is_ok()) return s;
  if (results.size() != static_cast<std::size_t>(tasks.count())) {
    return Status::failed(std::string(component) + ": the host returned " +
                          std::to_string(results.size()) + " eigendecompositions for " +
                          std::to_string(tasks.count()) + " factors");
  }
  for (Index i = 0; i < tasks.count(); ++i) {
    const std::vector<double>& r = results[static_cast<std::size_t>(i)];
    const Index n = tasks.factor(i).rows();
    if (r.size() != static_cast<std::size_t>(n + n * n)) {
      return Status::failed(
          std::string(component) + ": the host returned an eigendecomposition of " +
          std::to_string(r.size()) + " values for a factor of size " + std::to_string(n));
    }
    KroneckerEigen& b = blocks[static_cast<std::size_t>(i / 2)];
    Vector<double>& values = i % 2 == 0 ? b.a_eigenvalues : b.s_eigenvalues;
    Matrix<double>& vectors = i % 2 == 0 ? b.a_eigenvectors : b.s_eigenvectors;
    values = Eigen::Map<const Vector<double>>(r.data(), n);
    vectors = Eigen::Map<const Matrix<double>>(r.data() + n, n, n);
  }
  return Status::ok();
}

/// Columns of W̄: the inputs, and one more for the bias.
inline Index block_columns(const KroneckerFactor& f) { return f.in + (f.bias ? 1 : 0); }

/// Parameters of the layer: W̄ occupies [offset, offset + block_size) of the flat vector.
inline Index block_size(const KroneckerFactor& f) { return f.out * block_columns(f); }

/// The layer's part of a parameter-sized vector as W̄ (W row-major at offset, bias after it).
inline Matrix<double> gather_block(const KroneckerFactor& f, ConstVectorRef<double> v) {
  using RowMajor = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  assert(f.offset >= 0 && f.offset + block_size(f) <= v.size());
  Matrix<double> m(f.out, block_columns(f));
  m.leftCols(f.in) = Eigen::Map<const RowMajor>(v.data() + f.offset, f.out, f.in);
  if (f.bias) m.col(f.in) = v.segment(f.offset + f.out * f.in, f.out);
  return m;
}

/// Writes W̄ = `m` into the layer's part of `out`; the rest of `out` is left alone.
inline void scatter_block(const KroneckerFactor& f, const Matrix<double>& m,
                          VectorRef<double> out) {
  using RowMajor = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  assert(m.rows() == f.out && m.cols() == block_columns(f));
  assert(f.offset >= 0 && f.offset + block_size(f) <= out.size());
  Eigen::Map<RowMajor>(out.data() + f.offset, f.out, f.in) = m.leftCols(f.in);
  if (f.bias) out.segment(f.offset + f.out * f.in, f.out) = m.col(f.in);
}

/// pi of factored Tikhonov damping; 1 when it is not finite and positive (a zero factor, whose
/// trace leaves no balance to keep between A and S).
inline double pi_damping(const KroneckerFactor& f) {
  const double pi = std::sqrt((f.a.trace() / static_cast<double>(f.a.rows())) /
                              (f.s.trace() / static_cast<double>(f.s.rows())));
  return pi > 0.0 && std::isfinite(pi) ? pi : 1.0;
}

/// How lambda damps a Kronecker block (see the top of this file).
enum class KroneckerDamping { kExact, kPi };

/// What damped_kronecker_solve() writes: the solution x, or -x (the preconditioned descent
/// direction when v is a gradient), negated as part of the back-rotation rather than in a
/// second pass over the block.
enum class KroneckerOutput { kSolution, kNegated };

/// The layer's part of `out` = the damped inverse of the block S ⊗ A times the layer's part of
/// `v` (negated for KroneckerOutput::kNegated); the rest of `out` is left alone (`out` may be
/// `v`). a_values/a_vectors and
/// s_values/s_vectors are the eigendecompositions of f.a and f.s; lambda >= 0. A damped
/// eigenvalue that is not positive (lambda = 0 with a singular factor, negative eigenvalues)
/// is a numerical_issue whose message starts with `component` and leaves `out` unchanged.
inline Status damped_kronecker_solve(std::string_view component, const KroneckerFactor& f,
                                     const Vector<double>& a_values,
                                     const Matrix<double>& a_vectors,
                                     const Vector<double>& s_values,
                                     const Matrix<double>& s_vectors, double lambda,
                                     KroneckerDamping style, ConstVectorRef<double> v,
                                     VectorRef<double> out,
                                     KroneckerOutput output = KroneckerOutput::kSolution) {
  assert(a_values.size() == block_columns(f) && a_vectors.rows() == block_columns(f) &&
         a_vectors.cols() == block_columns(f));
  assert(s_values.size() == f.out && s_vectors.rows() == f.out && s_vectors.cols() == f.out);
  assert(v.size() == out.size());
  const bool pi_style = style == KroneckerDamping::kPi;
  const double root = std::sqrt(lambda);
  const double pi = pi_style ? pi_damping(f) : 1.0;
  Matrix<double> rotated = s_vectors.transpose() * gather_block(f, v) * a_vectors;
  for (Index j = 0; j < rotated.cols(); ++j) {
    for (Index i = 0; i < rotated.rows(); ++i) {
      const double eigenvalue = pi_style ? (s_values(i) + root / pi) * (a_values(j) + pi * root)
                                         : s_values(i) * a_values(j) + lambda;
      if (!(eigenvalue > 0.0)) {
        const std::string s = "s_" + std::to_string(i), a = "a_" + std::to_string(j);
        const std::string formula = pi_style
                                        ? "(" + s + " + sqrt(lambda)/pi)(" + a +
                                              " + pi sqrt(lambda)) with pi = " + format_number(pi)
                                        : s + " " + a + " + lambda";
        return Status::numerical_issue(
            std::string(component) + ": damped eigenvalue " + format_number(eigenvalue) + " = " +
            formula + " of the block at parameters " + std::to_string(f.offset) + ".." +
            std::to_string(f.offset + block_size(f) - 1) + " is not positive; increase lambda");
      }
      rotated(i, j) /= eigenvalue;
    }
  }
  if (output == KroneckerOutput::kNegated) {
    scatter_block(f, -(s_vectors * rotated * a_vectors.transpose()), out);
  } else {
    scatter_block(f, s_vectors * rotated * a_vectors.transpose(), out);
  }
  return Status::ok();
}

/// The same for a block that carries its own eigendecompositions.
inline Status damped_kronecker_solve(std::string_view component, const KroneckerEigen& block,
                                     double lambda, KroneckerDamping style,
                                     ConstVectorRef<double> v, VectorRef<double> out,
                                     KroneckerOutput output = KroneckerOutput::kSolution) {
  return damped_kronecker_solve(component, block.factor, block.a_eigenvalues, block.a_eigenvectors,
                                block.s_eigenvalues, block.s_eigenvectors, lambda, style, v, out,
                                output);
}

}  // namespace quadra
