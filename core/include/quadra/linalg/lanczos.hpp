#pragma once
/// \file
/// Thick-restart Lanczos (Wu & Simon 2000) for a few extreme eigenpairs of a symmetric
/// operator, with full reorthogonalisation. After the three-term recurrence, every new Lanczos
/// vector is orthogonalised against the whole basis by classical Gram-Schmidt done as two
/// matrix-vector products V^T w and V (V^T w), with a second such pass whenever the first
/// removed a large part of the vector ("twice is enough", Kahan-Parlett / DGKS). The basis thus
/// stays orthonormal to working precision and no spurious copies of converged Ritz values
/// appear. Cost per step: one product plus one or two passes over the basis (memory-bound,
/// parallel over row chunks).
///
/// Restarts: the basis holds at most `max_basis` vectors (default: ARPACK's ncv,
/// max(2k + 1, 20)). When it is full, the most wanted Ritz vectors (the k wanted and a third of
/// the remaining room) are kept, rotated (in double, by an orthogonal tridiagonalisation of
/// their couplings) into a Lanczos basis whose last vector alone couples to the next Lanczos
/// vector, and the recurrence continues: T stays tridiagonal and every Ritz pair keeps its
/// residual estimate. This is equivalent to ARPACK's implicit restart with exact shifts.
/// Bounding the basis bounds the reorthogonalisation per step, O(n max_basis), and the memory,
/// n x max_basis scalars (allocated once); it costs a few more products than unrestarted
/// Lanczos, which needs the fewest (max_basis >= max_products turns restarts off).
///
/// Convergence: a wanted Ritz pair (theta, y) is converged when its residual estimate
/// |beta_m s_mi| = ||A y - theta y|| (exact in exact arithmetic; accurate to roundoff with full
/// reorthogonalisation) is at most `tolerance * norm_estimate`, where norm_estimate is the
/// largest ||A v_j|| seen, a lower bound on ||A||_2 that is close to it after a few steps.
/// The tolerance is thus relative to the scale of A, so eigenvalues at or near zero converge.
///
/// Invariant subspaces: when the new vector vanishes (beta <= breakdown_tolerance *
/// norm_estimate) the basis spans an invariant subspace (to that accuracy; the dropped beta
/// still enters the residual estimates) and its Ritz pairs are accurate. A single
/// start vector only sees one copy of a repeated eigenvalue and nothing outside its invariant
/// subspace, so the algorithm then restarts with a fresh random vector orthogonal to the basis
/// (the tridiagonal matrix T splits into blocks), unless the space is exhausted (basis size n).
/// A block started in the complement of the earlier blocks, so its extreme Ritz value bounds
/// the spectrum of A outside them. Hence at a breakdown the wanted set is accepted only if
/// that bound is not more extreme than the k-th wanted value (otherwise: restart); and while
/// a block after a restart is active, only once its Ritz values have converged from the
/// wanted end down to the first one beyond the wanted set (by interlacing, an unconverged one
/// could still move past the k-th wanted value). Without any breakdown the rule is the usual
/// one: the k wanted Ritz pairs have converged.
/// A thick restart keeps Ritz vectors of earlier (closed) blocks only if they are among the
/// most wanted, each as its own closed block.
/// Limitation shared by every single-vector Lanczos: if the wanted Ritz values converge before
/// any breakdown, further copies of a repeated eigenvalue the start vector did not excite are
/// not looked for (they are found only via breakdowns and restarts; a basis too small to hold
/// an invariant subspace makes convergence before the breakdown likelier). Near-repeated
/// eigenvalues (closer than the tolerance) are likewise resolved only as far as the start
/// vector excites them.
///
/// Determinism: the start and restart vectors come from one RNG stream seeded by `seed`; the
/// same seed gives bitwise the same result, with any number of threads. float and double share
/// one code path; T, its eigenproblem and the restart rotations are always kept in double.

#include <cstdint>

#include <quadra/linalg/linear_operator.hpp>
#include <quadra/sdk/status.hpp>
#include <quadra/sdk/types.hpp>

namespace quadra::linalg {

/// Which end of the spectrum to compute.
enum class SpectrumEnd {
  kLargest,   ///< algebraically largest eigenvalues ("top-k")
  kSmallest,  ///< algebraically smallest eigenvalues ("bottom-k")
};

struct LanczosOptions {
  /// Budget: at most this many products with A (each Lanczos step costs one). Must be >= k.
  Index max_products = 300;
  /// Relative residual tolerance, see the file comment. >= 0; 0 means run until the budget or
  /// the space is exhausted. Below ~1e-6 float32 rarely converges.
  double tolerance = 1e-8;
  /// Seed of the start (and restart) vectors.
  std::uint64_t seed = 0;
  /// A step breaks down (the basis is taken as an invariant subspace and T is split there)
  /// when beta <= breakdown_tolerance * norm_estimate. 0 selects
  /// max(100 eps, min(tolerance, sqrt(eps))) for the scalar type's eps: at most the
  /// convergence tolerance, so a split moves Ritz values by less than the tolerance, and well
  /// above the roundoff in products formed in floating point.
  double breakdown_tolerance = 0.0;
  /// Most basis vectors held at once (thick restart when full), see the file comment. 0 selects
  /// max(2k + 1, 20); otherwise >= min(n, k + 2). Capped at min(n, max_products). Larger means
  /// fewer products but more memory and reorthogonalisation work per product: worth it when a
  /// product costs much more than n * max_basis multiply-adds.
  Index max_basis = 0;
};

/// Why lanczos() returned.
enum class LanczosStop {
  kConverged,       ///< the k wanted Ritz pairs met the tolerance
  kSpaceExhausted,  ///< the basis spans R^n (or numerically so): all Ritz pairs are exact
  kBudget,          ///< max_products reached before convergence
  kNumericalIssue,  ///< a product failed or was non-finite; see `status`
};

template <class Scalar>
struct LanczosResult {
  /// The k wanted Ritz values, from the wanted end inwards: descending for kLargest, ascending
  /// for kSmallest. Empty if a product failed before k steps.
  Vector<double> eigenvalues;
  /// n x k, orthonormal columns; column i belongs to eigenvalues[i]. Signs are arbitrary.
  Matrix<Scalar> eigenvectors;
  /// k estimates of ||A y_i - theta_i y_i|| (absolute, in the units of A), from the Lanczos
  /// relation including the couplings dropped at breakdowns.
  Vector<double> residual_norms;
  /// Largest ||A v_j|| seen: a lower bound on ||A||_2, the scale the tolerance is relative to.
  double norm_estimate = 0.0;
  Index num_products = 0;        ///< products with A used
  Index num_restarts = 0;        ///< restarts after invariant subspaces (breakdowns)
  Index num_thick_restarts = 0;  ///< restarts of a full basis
  Index basis_size = 0;          ///< most basis vectors held (the resolved max_basis)
  bool converged = false;        ///< stop is kConverged or kSpaceExhausted
  LanczosStop stop = LanczosStop::kBudget;
  /// ok unless stop == kNumericalIssue; then the failing product's status. With a non-ok
  /// status the pairs above (if any) come from the basis built before the failure.
  Status status;
};

/// k extreme eigenpairs of the symmetric operator `op`.
/// \pre 1 <= k <= op.dim(); options.max_products >= k; options.tolerance >= 0,
///      options.breakdown_tolerance >= 0 and options.max_basis 0 or >= min(n, k + 2)
///      (violations throw quadra::Error naming the value).
/// \post result.eigenvalues.size() == k unless stop == kNumericalIssue;
///       result.num_products <= options.max_products.
template <class Scalar>
LanczosResult<Scalar> lanczos(LinearOperator<Scalar>& op, Index k, SpectrumEnd which,
                              const LanczosOptions& options = {});

/// Top-k: lanczos(op, k, SpectrumEnd::kLargest, options).
template <class Scalar>
LanczosResult<Scalar> lanczos_largest(LinearOperator<Scalar>& op, Index k,
                                      const LanczosOptions& options = {}) {
  return lanczos(op, k, SpectrumEnd::kLargest, options);
}

/// Bottom-k: lanczos(op, k, SpectrumEnd::kSmallest, options).
template <class Scalar>
LanczosResult<Scalar> lanczos_smallest(LinearOperator<Scalar>& op, Index k,
                                       const LanczosOptions& options = {}) {
  return lanczos(op, k, SpectrumEnd::kSmallest, options);
}

}  // namespace quadra::linalg
