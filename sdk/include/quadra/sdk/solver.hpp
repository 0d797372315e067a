#pragma once
/// \file
/// Solvers: propose an ordered set of directions P = [p_1..p_k] from the quadratic model on the
/// `directions` batch, with the coefficients they would use themselves. The step is always P c;
/// the debiasing strategy decides c (see debiasing.hpp). First-order baselines propose one
/// direction (their update) with coefficient 1.
///
/// Protocol per optimizer step: propose() once; after a successful propose(), step_taken() once
/// with the step the loop finally applied (or rejected). A failed propose() gets no
/// step_taken() and must leave no trace in the solver's state. State that must survive a checkpoint (momenta, warm starts,
/// cached factors, counters) goes through save_state() / load_state() as a flat vector of
/// doubles that the solver lays out and versions itself.

#include <cstdint>
#include <string>
#include <vector>

#include "quadra/sdk/curvature.hpp"
#include "quadra/sdk/export.hpp"
#include "quadra/sdk/status.hpp"
#include "quadra/sdk/types.hpp"

namespace quadra {
inline namespace abi_v4 {

/// How IQuadraticModel::top_eigenpairs finds the eigenpairs.
enum class Eigensolver : int {
  kAuto,     ///< the Gram method where it applies and pays (see kGram), else Lanczos
  kLanczos,  ///< Lanczos on curvature products
  kGram,     ///< the GGN's Gram matrix: needs the ggn curvature plugin and Linear layers only
};

/// The host's conjugate gradients on (C + lambda I) x = -g, the Newton system of the damped
/// quadratic model (Martens 2010): quadra's one CG, which `quadra bias --newton-step` measures
/// too. Stopping rules, checked after every step in this order: the residual
/// |(C + lambda I) x + g| <= tolerance |g|; Martens' relative progress (with the model values
/// q_0..q_i and m = max(10, floor(i / 10)), stop when i > m, q_i < 0 and
/// (q_i - q_{i-m}) / q_i < m * 5e-4); the iteration cap; non-positive curvature
/// p'(C + lambda I)p <= 0, which ends the run with the directions found so far.
struct CgRequest {
  double lambda = 0.0;  ///< damping, finite
  Index max_iterations = 50;
  double tolerance = 1e-6;  ///< relative residual; 0: never stop on the residual
  bool martens_rule = true;
  /// x_0; empty: start at 0. Kept only if it lowers the model (q(x_0) < 0), which costs one
  /// curvature product.
  Vector<double> warm_start;
  /// Preconditioned CG (Martens 2010 §4.7): the name of a structured curvature plugin (diag-ggn,
  /// diag-ef, kfac; its default options) that the host binds to the directions batch, and
  /// M = (D + (lambda + preconditioner_damping) I)^preconditioner_exponent for its diagonal or
  /// Kronecker-factored D. Empty: none.
  std::string preconditioner;
  double preconditioner_damping = 0.0;
  double preconditioner_exponent = 1.0;
};

/// Why the host's CG stopped.
enum class CgStop : int {
  kResidual,           ///< the residual rule
  kRelativeProgress,   ///< Martens' rule
  kIterationCap,       ///< max_iterations
  kNegativeCurvature,  ///< p'(C + lambda I)p <= 0 along the next direction
};

struct CgOutcome {
  Vector<double> x;               ///< the last iterate x_K (x_0 + sum alpha_i p_i)
  bool warm_started = false;      ///< whether x_0 was the warm start (else 0)
  Matrix<double> directions;      ///< n x K: the search directions p_0 .. p_{K-1}
  Vector<double> step_lengths;    ///< K: alpha_i, so x_{i+1} = x_i + alpha_i p_i
  std::vector<double> quadratic;  ///< K + 1: q(x_0) .. q(x_K), q(x) = g'x + x'(C + lambda I)x / 2
  CgStop stop = CgStop::kIterationCap;
  /// kNegativeCurvature: the direction that had it and p'(C + lambda I)p.
  Vector<double> negative_curvature_direction;
  double negative_curvature = 0.0;
  int products = 0;  ///< curvature products (K, plus one for a warm start)
};

/// Host-implemented: the quadratic model q(d) = loss + g^T d + 1/2 d^T C d of one step at the
/// current parameters. The loss and gradient come from the `gradient` batch, C from the
/// configured curvature plugin on the `directions` batch; both include the loop's weight decay
/// (eta/2 |theta|^2, so g += eta theta and C += eta I). Curvature is bound lazily: a solver that
/// never asks for it costs no curvature work.
class QUADRA_INTERFACE IQuadraticModel {
 public:
  virtual ~IQuadraticModel() = default;
  [[nodiscard]] virtual Index num_parameters() const = 0;
  /// The loop's step counter (0-based, counting accepted and rejected steps).
  [[nodiscard]] virtual std::int64_t step() const = 0;
  /// The current parameters.
  virtual Status parameters(VectorRef<double> out) = 0;
  [[nodiscard]] virtual double loss() const = 0;
  virtual Status gradient(VectorRef<double> out) = 0;
  /// Loss on the `gradient` batch at parameters + step (CG backtracking, line searches).
  virtual Status loss_at(ConstVectorRef<double> step, double& out) = 0;
  /// out = C v (undamped, weight decay included).
  virtual Status curvature_times(ConstVectorRef<double> v, VectorRef<double> out) = 0;
  /// The k largest eigenpairs of C: by Lanczos with full reorthogonalisation on C v (at most
  /// `max_products` products, stopping when every Ritz residual is below tolerance * |theta_1|),
  /// or by the Gram method (the GGN's Gram matrix, the same eigenpairs from a much smaller
  /// matrix; tolerance relative to its norm), as `method` says. values descending; vectors
  /// n x k with orthonormal columns. Fewer than k pairs are returned when the Krylov space is
  /// exhausted.
  virtual Status top_eigenpairs(int k, int max_products, double tolerance, Eigensolver method,
                                Vector<double>& values, Matrix<double>& vectors) = 0;
  /// Conjugate gradients on the model (see CgRequest). Fails only on a failed or non-finite
  /// product; non-positive curvature is an ok outcome with stop kNegativeCurvature.
  virtual Status conjugate_gradients(const CgRequest& request, CgOutcome& out) = 0;
  /// The engine bound to the `directions` batch, for solvers that need more than C v (K-FAC
  /// factors, exact diagonals). Valid until propose() returns.
  virtual ICurvatureBackend& engine() = 0;
};

/// Directions proposed by a solver: columns of `basis`, and the solver's own coefficients.
struct Directions {
  Matrix<double> basis;             ///< n x k
  Vector<double> own_coefficients;  ///< k
  int iterations = 0;               ///< inner iterations (CG, Lanczos), for the logs
};

class QUADRA_INTERFACE Solver {
 public:
  virtual ~Solver() = default;

  /// Whether propose() uses curvature (curvature_times, top_eigenpairs or engine()). The loop
  /// requires a curvature plugin only for solvers that do, and measures the damping's reduction
  /// ratio with it.
  [[nodiscard]] virtual bool uses_curvature() const = 0;

  /// Directions for this step with the damping `lambda`.
  virtual Status propose(IQuadraticModel& model, double lambda, Directions& out) = 0;

  /// The step the loop applied (accepted) or discarded (rejected) after propose().
  virtual void step_taken(ConstVectorRef<double> /*step*/, bool /*accepted*/) {}

  /// Checkpointing: everything propose() depends on besides the model and its own options.
  /// The defaults suit stateless solvers.
  virtual Status save_state(std::vector<double>& out) const {
    out.clear();
    return Status::ok();
  }
  virtual Status load_state(const std::vector<double>& state) {
    return state.empty() ? Status::ok()
                         : Status::invalid_argument("this solver keeps no state");
  }
};

}  // namespace abi_v4
}  // namespace quadra
