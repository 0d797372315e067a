#pragma once
/// \file
/// Conjugate gradients for (A + lambda I) x = b with A symmetric, the inner solver of
/// Hessian-free optimisation (Martens 2010) and the source of the search directions that
/// debiased CG re-weights on an independent batch. Plain preconditioned CG (Nocedal & Wright,
/// Alg. 5.3) with the residual r = b - (A + lambda I) x updated by recurrence.
///
/// Stopping rules, checked after every step in this order:
///   1. residual: ||r_i|| <= tolerance * ||b||;
///   2. Martens' relative progress (optional; Martens 2010): with the quadratic
///      phi(x) = 1/2 x^T (A + lambda I) x - b^T x (for b = -g, the model decrease
///      q(x) - q(0) of the damped quadratic model) and k = max(martens_min_window,
///      floor(martens_window_fraction * i)), stop at iteration i when i > k, phi(x_i) < 0 and
///      (phi(x_i) - phi(x_{i-k})) / phi(x_i) < k * martens_epsilon;
///   3. the iteration cap.
/// A direction with non-positive curvature p^T (A + lambda I) p <= 0 ends the run with
/// CgTermination::kNegativeCurvature and a kNumericalIssue status; x is then the last good
/// iterate and the offending direction is returned, so a caller can use it (e.g. as a descent
/// direction) or raise lambda.
///
/// The trace records, per step i = 0..K-1: the search direction p_i (optional, n x K), its
/// curvature p_i^T (A + lambda I) p_i, the step length alpha_i, and per iterate x_0..x_K the
/// quadratic phi(x_i) and the residual norm; iterates x_i themselves optionally (all, or at a
/// schedule such as geometric_schedule() for CG backtracking). Debiased CG needs the directions
/// (line-search form) or their span (projected form); backtracking needs the iterates.
///
/// This is quadra's one CG: the `cg` solver plugin reaches it through the SDK
/// (IQuadraticModel::conjugate_gradients) and `quadra bias --newton-step` calls it directly, so
/// the experiment measures the directions the optimizer uses.
///
/// Cost: one product per step, plus one for the initial residual when x0 is given. Memory:
/// four n-vectors (five with a preconditioner), plus the recorded columns. Nothing of size n
/// is allocated inside the iteration except when a trace matrix grows (geometrically, capped
/// at what the iteration cap needs).
///
/// float and double share one code path; all scalars (alpha, beta, curvatures, phi) are
/// formed in double.

#include <quadra/linalg/linear_operator.hpp>
#include <quadra/sdk/solver.hpp>
#include <quadra/sdk/status.hpp>
#include <quadra/sdk/types.hpp>
#include <vector>

namespace quadra::linalg {

/// Which iterates the trace keeps.
enum class IterateRecording {
  kNone,      ///< none (the final iterate is CgResult::x anyway)
  kAll,       ///< x_0 .. x_K
  kSchedule,  ///< x_i for i in CgOptions::iterate_schedule, plus the final x_K
};

struct CgOptions {
  /// lambda in (A + lambda I) x = b; finite. Usually >= 0; a negative value is allowed but
  /// makes non-positive curvature more likely.
  double damping = 0.0;
  /// Residual rule: ||r|| <= tolerance * ||b||. >= 0; 0 disables it (bar exact zero).
  double tolerance = 1e-6;
  /// Cap on CG steps (== products with A, plus one for a warm start). >= 0.
  Index max_iterations = 250;
  /// With a warm start x0: keep it only if it lowers the quadratic, phi(x0) < phi(0) = 0, and
  /// start from 0 otherwise (a worse-than-zero start costs iterations just to get back; Martens
  /// 2010 §4.5). The product that tests it is counted either way.
  bool keep_warm_start_only_if_lower = false;
  /// Martens' relative-progress rule (see the file comment).
  bool use_martens_rule = false;
  double martens_epsilon = 5e-4;
  Index martens_min_window = 10;
  double martens_window_fraction = 0.1;
  /// Record the search directions p_i in CgTrace::directions (n x K scalars).
  bool record_directions = false;
  IterateRecording record_iterates = IterateRecording::kNone;
  /// Strictly increasing iteration numbers (>= 0) at which to keep x_i, for kSchedule.
  std::vector<Index> iterate_schedule;
};

/// ceil(factor^j) for j = 0, 1, ... up to max_iteration, without duplicates: 1, 2, 3, 4, 5, 7,
/// 9, 11, 14, 18, ... for factor 1.3 (the CG-backtracking schedule of Martens 2010).
/// \pre factor > 1 (throws quadra::Error otherwise), max_iteration >= 0.
std::vector<Index> geometric_schedule(Index max_iteration, double factor = 1.3);

/// Why conjugate_gradients() returned.
enum class CgTermination {
  kConverged,          ///< residual rule (or b == 0, x = 0)
  kRelativeProgress,   ///< Martens' rule
  kMaxIterations,      ///< the cap
  kNegativeCurvature,  ///< p^T (A + lambda I) p <= 0; status is kNumericalIssue
  kNumericalIssue,     ///< a failed or non-finite product, or an indefinite preconditioner
};

template <class Scalar>
struct CgTrace {
  /// n x K: column i is p_i, the direction of step i (if record_directions; else 0 columns).
  Matrix<Scalar> directions;
  std::vector<double> curvatures;    ///< K: p_i^T (A + lambda I) p_i (> 0)
  std::vector<double> step_lengths;  ///< K: alpha_i, so x_{i+1} = x_i + alpha_i p_i
  std::vector<double> quadratic;     ///< K + 1: phi(x_0) .. phi(x_K)
  std::vector<double> residual_norms;  ///< K + 1: ||r_0|| .. ||r_K|| (recurrence)
  /// n x J recorded iterates; column j is x at iteration iterate_indices[j].
  Matrix<Scalar> iterates;
  std::vector<Index> iterate_indices;  ///< J, strictly increasing
};

template <class Scalar>
struct CgResult {
  /// The final iterate x_K; on kNegativeCurvature the last good iterate (before the bad step).
  Vector<Scalar> x;
  CgTermination termination = CgTermination::kMaxIterations;
  /// ok for kConverged, kRelativeProgress, kMaxIterations; kNumericalIssue otherwise, with a
  /// message naming the iteration and the value.
  Status status;
  Index iterations = 0;    ///< K, the number of steps taken
  bool warm_started = false;  ///< x0 was given and kept (see keep_warm_start_only_if_lower)
  Index num_products = 0;  ///< products with A (K, plus one with a warm start)
  double residual_norm = 0.0;  ///< ||r_K|| from the recurrence (drifts from b - A x by O(eps))
  double b_norm = 0.0;         ///< ||b||
  /// On kNegativeCurvature: the direction p with p^T (A + lambda I) p = negative_curvature.
  Vector<Scalar> negative_curvature_direction;
  double negative_curvature = 0.0;
  CgTrace<Scalar> trace;
};

/// Solves (A + options.damping I) x = b by conjugate gradients.
/// \param x0 warm start, or nullptr for x0 = 0.
/// \param preconditioner M^{-1}, symmetric positive definite, or nullptr for none. Products
///        with it are not counted in num_products.
/// \pre b.size() == a.dim(); x0 and the preconditioner (if given) have the same dimension
///      (asserts). Invalid options throw quadra::Error naming the option and value.
template <class Scalar>
CgResult<Scalar> conjugate_gradients(LinearOperator<Scalar>& a, ConstVectorRef<Scalar> b,
                                     const CgOptions& options,
                                     const Vector<Scalar>* x0 = nullptr,
                                     LinearOperator<Scalar>* preconditioner = nullptr);

/// The SDK's CG service (IQuadraticModel::conjugate_gradients) on the undamped curvature C and
/// the gradient g: conjugate_gradients on (C + request.lambda I) x = -g with the request's rules
/// and warm start (kept only if it lowers the model), the directions recorded. Returns an error
/// for invalid requests (naming the value) and failed or non-finite products; non-positive
/// curvature is an ok outcome (CgOutcome::stop says so).
/// `preconditioner` is M^-1 (the request's preconditioner, made by the caller), or nullptr.
Status newton_cg(LinearOperator<double>& curvature, ConstVectorRef<double> gradient,
                 const CgRequest& request, CgOutcome& out,
                 LinearOperator<double>* preconditioner = nullptr);

}  // namespace quadra::linalg
