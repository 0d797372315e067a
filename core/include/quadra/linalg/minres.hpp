#pragma once
/// \file
/// MINRES (Paige & Saunders 1975) for (A + lambda I) x = b with A symmetric, possibly
/// indefinite: on a Hessian, or a GGN with negative damping, where CG breaks down. Iterate k
/// minimises ||b - (A + lambda I) x|| over x0 + K_k, so the residual norm never increases. The
/// residual norm comes from the recurrence (no extra products); it tracks the true residual
/// until it reaches O(eps * ||A|| * ||x||).
///
/// Stops when ||r_k|| <= tolerance * ||b||, at the iteration cap, or when the Krylov space
/// becomes invariant (beta = 0): x is then the minimum-residual solution in the whole space,
/// which solves the system if b is in the range (kConverged) and is a least-squares solution
/// otherwise (kSingular, status ok). Cost: one product per iteration, plus one with a warm
/// start. Memory: eight n-vectors, allocated once. float and double share one code path; the
/// rotations and norms are kept in double.

#include <vector>

#include <quadra/linalg/linear_operator.hpp>
#include <quadra/sdk/status.hpp>
#include <quadra/sdk/types.hpp>

namespace quadra::linalg {

struct MinresOptions {
  /// lambda in (A + lambda I) x = b, any finite value.
  double damping = 0.0;
  /// ||r|| <= tolerance * ||b||; >= 0.
  double tolerance = 1e-8;
  /// Cap on iterations (== products, plus one for a warm start); >= 0.
  Index max_iterations = 1000;
};

/// Why minres() returned.
enum class MinresTermination {
  kConverged,       ///< the residual rule (or b == 0, x = 0)
  kMaxIterations,   ///< the cap
  kSingular,        ///< invariant Krylov space with a residual above the tolerance:
                    ///< b is (numerically) not in the range; x is a least-squares solution
  kNumericalIssue,  ///< a failed or non-finite product; see status
};

template <class Scalar>
struct MinresResult {
  Vector<Scalar> x;  ///< the last iterate
  MinresTermination termination = MinresTermination::kMaxIterations;
  Status status;           ///< ok unless termination == kNumericalIssue
  Index iterations = 0;    ///< K
  Index num_products = 0;  ///< K, plus one with a warm start
  /// K + 1 residual norms ||r_0|| .. ||r_K|| from the recurrence, non-increasing.
  std::vector<double> residual_norms;
  double b_norm = 0.0;  ///< ||b||
};

/// Solves (A + options.damping I) x = b by MINRES.
/// \param x0 warm start, or nullptr for x0 = 0.
/// \pre b.size() == a.dim(), and x0 (if given) has that size (asserts). Invalid options throw
///      quadra::Error naming the option and value.
template <class Scalar>
MinresResult<Scalar> minres(LinearOperator<Scalar>& a, ConstVectorRef<Scalar> b,
                            const MinresOptions& options, const Vector<Scalar>* x0 = nullptr);

}  // namespace quadra::linalg
