#pragma once
/// \file
/// Curvature estimators: a symmetric curvature matrix C on one batch, as a matrix-free operator
/// C·v, and, for structured estimators, the structure itself (a diagonal, or per-layer
/// Kronecker factors with their eigendecompositions) so that solvers and the Laplace code can
/// use it without densifying.
///
/// The host's engine computes the exact batch quantities (GGN, Hessian and Fisher products,
/// diagonals, K-FAC factors) behind ICurvatureBackend; a plugin chooses and combines them.
/// Protocol: bind(batch) once per batch and parameter vector, then any number of apply() and
/// structure queries, until the next bind. The backend outlives every call in between.

#include <cstdint>
#include <vector>

#include "quadra/sdk/export.hpp"
#include "quadra/sdk/status.hpp"
#include "quadra/sdk/types.hpp"

namespace quadra {
inline namespace abi_v4 {

/// Exact matrix-vector products the engine computes on a bound batch (means over the batch).
enum class CurvatureProduct : int {
  kGgn,              ///< generalised Gauss-Newton J' H_loss J
  kHessian,          ///< Hessian of the mean loss
  kEmpiricalFisher,  ///< mean of g_n g_n' over per-sample gradients
  kMcFisher,         ///< Fisher with labels sampled from the model (see mc_samples below)
};

/// Which output-gradient second moment K-FAC uses.
enum class KfacVariant : int {
  kType2,      ///< exact: the loss Hessian's symmetric factor backpropagated (GGN-consistent)
  kMc,         ///< labels sampled from the model's predictive
  kEmpirical,  ///< the true labels (empirical Fisher)
};

/// Where one Linear or Conv2d layer's parameters sit in the flat vector and its K-FAC factors.
/// The layer's parameters form the matrix W̄ = [W b] (out x (in + bias)), W row-major at
/// `offset`, the bias (if any) right after it; its curvature block is approximated by S ⊗ A,
/// i.e. the block times vec(V̄) is vec(S V̄ A) for V̄ laid out like W̄.
struct KroneckerFactor {
  Index offset = 0;   ///< first parameter of the layer's weight
  Index out = 0;      ///< rows of W (output features / channels)
  Index in = 0;       ///< columns of W (input features, or in_channels * kh * kw)
  bool bias = false;  ///< A is (in + 1) x (in + 1), its last row/column for the bias
  Matrix<double> a;   ///< input second moment
  Matrix<double> s;   ///< output-gradient second moment
};

/// Independent pieces of work a plugin hands to the host (ICurvatureBackend::run_tasks), each
/// producing a vector of doubles from inputs every process holds alike: e.g. the
/// eigendecomposition of one K-FAC factor.
class QUADRA_INTERFACE IIndependentTasks {
 public:
  virtual ~IIndependentTasks() = default;
  [[nodiscard]] virtual Index count() const = 0;
  /// Relative cost of task i, for balancing the processes (e.g. n^3 for an n x n
  /// eigendecomposition).
  [[nodiscard]] virtual double cost(Index i) const = 0;
  /// Runs task i into `out`.
  virtual Status run(Index i, std::vector<double>& out) = 0;
};

/// Host-implemented: the engine bound to one batch at the current parameters.
class QUADRA_INTERFACE ICurvatureBackend {
 public:
  virtual ~ICurvatureBackend() = default;
  [[nodiscard]] virtual Index num_parameters() const = 0;
  [[nodiscard]] virtual Index batch_size() const = 0;
  /// Model precision: products in the other precision are converted (slower).
  [[nodiscard]] virtual bool is_double_precision() const = 0;

  /// Labels for kMcFisher products: `samples` per example, drawn with `seed` (fixed until the
  /// next call, so the operator is a fixed symmetric matrix).
  virtual Status set_mc_samples(int samples, std::uint64_t seed) = 0;
  /// out = M v for the requested product M.
  virtual Status product(CurvatureProduct which, ConstVectorRef<double> v,
                         VectorRef<double> out) = 0;
  virtual Status product(CurvatureProduct which, ConstVectorRef<float> v,
                         VectorRef<float> out) = 0;
  /// The exact diagonal of kGgn or kEmpiricalFisher (others: kUnsupported).
  virtual Status diagonal(CurvatureProduct which, VectorRef<double> out) = 0;
  /// K-FAC factors of every parameter layer, in network order: S ⊗ A for Linear and Conv2d
  /// layers; for a normalization layer (batchnorm, layernorm, groupnorm) a diagonal block over
  /// the column [γ; β] (out = their count, in = 1, A = [1], S = the exact diagonal of the GGN,
  /// or of the empirical Fisher for kEmpirical).
  virtual Status kfac_factors(KfacVariant variant, int mc_samples, std::uint64_t seed,
                              std::vector<KroneckerFactor>& out) = 0;
  /// Runs every task of `tasks` once and gives this process every result: results[i] is what
  /// task i wrote. On a batch split across several processes the host runs each task on one
  /// process only (a deterministic assignment balanced by cost()) and sends its result to the
  /// others, so each process does its share of the work; every process must then call
  /// run_tasks at the same point with the same tasks, as with every other call on a split
  /// batch. A task's result must depend only on data every process holds alike (the factors
  /// kfac_factors returns, the plugin's state), so that it is bitwise what each process would
  /// compute. When a task fails, every process gets the first failing task's Status. This
  /// default runs the tasks here, in order.
  virtual Status run_tasks(IIndependentTasks& tasks, std::vector<std::vector<double>>& results) {
    results.assign(static_cast<std::size_t>(tasks.count()), {});
    for (Index i = 0; i < tasks.count(); ++i) {
      if (Status s = tasks.run(i, results[static_cast<std::size_t>(i)]); !s.is_ok()) return s;
    }
    return Status::ok();
  }
};

/// The structure an estimator exposes beyond C·v.
enum class CurvatureStructure : int {
  kMatrixFree,  ///< only apply()
  kDiagonal,    ///< C is diagonal: diagonal() gives it
  kKronecker,   ///< C is block-diagonal with Kronecker blocks: kronecker() gives them
};

/// A Kronecker block with the eigendecompositions of its factors (ascending eigenvalues, as
/// Eigen's SelfAdjointEigenSolver returns them). Eigenvalues of the block: a_i * s_j.
struct KroneckerEigen {
  KroneckerFactor factor;
  Vector<double> a_eigenvalues;
  Matrix<double> a_eigenvectors;
  Vector<double> s_eigenvalues;
  Matrix<double> s_eigenvectors;
};

class QUADRA_INTERFACE CurvatureEstimator {
 public:
  virtual ~CurvatureEstimator() = default;

  /// Prepares C on a newly bound batch (structured estimators compute their structure here).
  virtual Status bind(ICurvatureBackend& batch) = 0;

  /// out = C v on the bound batch. C is symmetric.
  virtual Status apply(ConstVectorRef<double> v, VectorRef<double> out) = 0;
  virtual Status apply(ConstVectorRef<float> v, VectorRef<float> out) = 0;

  /// out = (C + lambda I)^-1 v, for estimators that can invert cheaply (diagonal, Kronecker);
  /// matrix-free ones return kUnsupported.
  virtual Status solve(double lambda, ConstVectorRef<double> v, VectorRef<double> out) = 0;

  [[nodiscard]] virtual CurvatureStructure structure() const = 0;
  /// kDiagonal only: the diagonal of C.
  virtual Status diagonal(VectorRef<double> out) const = 0;
  /// kKronecker only: the blocks with their eigendecompositions. Parameters outside every
  /// block (none for the engine's networks) have zero curvature.
  virtual Status kronecker(std::vector<KroneckerEigen>& out) const = 0;
};

}  // namespace abi_v4
}  // namespace quadra
