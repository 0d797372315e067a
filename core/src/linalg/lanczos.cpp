#include <quadra/linalg/lanczos.hpp>

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <quadra/error.hpp>

#include "krylov.hpp"
#include "random.hpp"

namespace quadra::linalg {
namespace {

void validate(Index n, Index k, const LanczosOptions& options) {
  if (k < 1 || k > n) {
    throw Error(fmt::format("lanczos: k = {} is out of range; expected 1 <= k <= n = {}", k, n));
  }
  if (options.max_products < k) {
    throw Error(fmt::format(
        "lanczos: max_products = {} is less than k = {}; every Ritz pair needs a product",
        options.max_products, k));
  }
  if (!(options.tolerance >= 0.0)) {
    throw Error(fmt::format("lanczos: tolerance = {}; expected a number >= 0", options.tolerance));
  }
  if (!(options.breakdown_tolerance >= 0.0)) {
    throw Error(fmt::format("lanczos: breakdown_tolerance = {}; expected a number >= 0",
                            options.breakdown_tolerance));
  }
}

// The run's state: the basis, the tridiagonal T = (alpha, beta), and the convergence test.
// T splits into blocks at restarts (beta = 0 there); closed blocks never change, so their
// eigenvalues and the last row of their eigenvectors are computed once and cached, and a
// convergence check costs O(b^2) for the active block of size b.
template <class Scalar>
class LanczosRun {
 public:
  LanczosRun(LinearOperator<Scalar>& op, Index k, SpectrumEnd which, const LanczosOptions& options)
      : op_(op),
        n_(op.dim()),
        k_(k),
        sign_(which == SpectrumEnd::kLargest ? 1.0 : -1.0),
        tolerance_(options.tolerance),
        breakdown_tolerance_(options.breakdown_tolerance > 0.0
                                 ? options.breakdown_tolerance
                                 : default_breakdown_tolerance(options.tolerance)),
        max_basis_(std::min(n_, options.max_products)),
        basis_(n_, max_basis_),
        w_(n_),
        scratch_(max_basis_),
        rng_(options.seed, detail::kLanczosStream) {
    alpha_.reserve(static_cast<std::size_t>(max_basis_));
    beta_.reserve(static_cast<std::size_t>(max_basis_));
    candidates_.reserve(static_cast<std::size_t>(max_basis_));
  }

  LanczosResult<Scalar> run() {
    LanczosResult<Scalar> result;
    if (!draw_orthogonal_start(0)) {
      // Unreachable for n >= 1 (nothing to be orthogonal to), kept for safety.
      result.stop = LanczosStop::kSpaceExhausted;
    } else {
      result.stop = iterate(result);
    }
    result.converged =
        result.stop == LanczosStop::kConverged || result.stop == LanczosStop::kSpaceExhausted;
    result.norm_estimate = norm_estimate_;
    result.num_restarts = restarts_;
    extract(result);
    return result;
  }

 private:
  // A diagonal block of T with its eigenvalues (ascending) and the last row of its
  // eigenvectors; `coupling` is the beta after its last row (dropped if the block is closed),
  // so the Ritz pair j of the block has residual |coupling * last[j]|.
  struct Block {
    Index start = 0;
    Index size = 0;
    Vector<double> values;
    Vector<double> last;
    double coupling = 0.0;
  };

  // A Ritz pair of T: key = sign * value (larger is more wanted), its block (closed_.size()
  // for the active one) and its index in that block's ascending eigenvalues.
  struct Candidate {
    double key;
    double residual;
    std::size_t block;
    Index index;
  };

  // Split at beta <= breakdown_tolerance * ||A||: below the convergence tolerance, so a split
  // moves no Ritz value by more than the tolerance, and above the roundoff floor, which for a
  // product formed in floating point is O(sqrt(n) eps ||A||) rather than O(eps ||A||).
  static double default_breakdown_tolerance(double tolerance) {
    const double eps = Eigen::NumTraits<Scalar>::epsilon();
    return std::max(100.0 * eps, std::min(tolerance, std::sqrt(eps)));
  }

  LanczosStop iterate(LanczosResult<Scalar>& result) {
    for (;;) {
      const Index j = m_;
      Status status = op_.apply(basis_.col(j), w_);
      ++result.num_products;
      if (!status.is_ok()) {
        result.status = std::move(status);
        return LanczosStop::kNumericalIssue;
      }
      norm_estimate_ = std::max(norm_estimate_, static_cast<double>(w_.norm()));
      const double beta_prev = j > block_start_ ? beta_[static_cast<std::size_t>(j - 1)] : 0.0;
      alpha_.push_back(detail::lanczos_orthogonalize(basis_, j, beta_prev, w_, scratch_));
      const double b = static_cast<double>(w_.norm());
      const bool breakdown = b <= breakdown_tolerance_ * norm_estimate_;
      beta_.push_back(breakdown ? 0.0 : b);
      last_beta_ = b;
      m_ = j + 1;

      if (m_ == n_) return LanczosStop::kSpaceExhausted;
      if (m_ >= k_ || breakdown) {
        if (!decompose_active()) {
          result.status = Status::numerical_issue(fmt::format(
              "lanczos: the eigenvalues of the {0}x{0} tridiagonal matrix did not converge",
              active_.size));
          return LanczosStop::kNumericalIssue;
        }
        if (m_ >= k_ && wanted_set_converged(breakdown)) return LanczosStop::kConverged;
      }
      if (m_ == max_basis_) return LanczosStop::kBudget;
      if (breakdown) {
        closed_.push_back(active_);
        block_start_ = m_;
        if (!draw_orthogonal_start(m_)) return LanczosStop::kSpaceExhausted;
        ++restarts_;
      } else {
        basis_.col(m_) = w_ / static_cast<Scalar>(b);
      }
    }
  }

  // Puts a random unit vector orthogonal to the first m basis vectors into column m. False if
  // none is left numerically (the basis spans R^n).
  bool draw_orthogonal_start(Index m) {
    rng_.fill_uniform<Scalar>(w_);
    const double before = static_cast<double>(w_.norm());
    detail::orthogonalize(basis_, m, w_, scratch_);
    const double after = static_cast<double>(w_.norm());
    if (!(after > breakdown_tolerance_ * before)) return false;
    basis_.col(m) = w_ / static_cast<Scalar>(after);
    return true;
  }

  // Eigenvalues and last eigenvector row of the active block [block_start_, m_).
  bool decompose_active() {
    active_.start = block_start_;
    active_.size = m_ - block_start_;
    active_.coupling = last_beta_;
    const auto offset = static_cast<std::size_t>(block_start_);
    const bool ok = eigen_.compute(alpha_.data() + offset, beta_.data() + offset, active_.size,
                                   detail::TridiagonalEigen::Rows::kLast);
    active_.values = eigen_.values();
    active_.last = eigen_.rows().row(0).transpose();
    return ok;
  }

  // The Ritz pairs of all blocks; the k most wanted first, in order.
  void select_wanted() {
    candidates_.clear();
    for (std::size_t blk = 0; blk <= closed_.size(); ++blk) {
      const Block& block = blk < closed_.size() ? closed_[blk] : active_;
      for (Index i = 0; i < block.size; ++i) {
        candidates_.push_back({sign_ * block.values[i],
                               std::abs(block.coupling * block.last[i]), blk, i});
      }
    }
    std::partial_sort(candidates_.begin(), candidates_.begin() + k_, candidates_.end(),
                      [](const Candidate& a, const Candidate& b) { return a.key > b.key; });
  }

  // The convergence test of the file comment (m_ >= k_, active block decomposed).
  bool wanted_set_converged(bool breakdown) {
    const double tol = tolerance_ * norm_estimate_;
    select_wanted();
    for (Index i = 0; i < k_; ++i) {
      if (candidates_[static_cast<std::size_t>(i)].residual > tol) return false;
    }
    const double kth_key = candidates_[static_cast<std::size_t>(k_ - 1)].key;
    const Index size = active_.size;
    if (breakdown) {
      // The block just closed bounds everything outside the basis: it was started in the
      // complement of the earlier blocks, and its extreme Ritz value is exact.
      const double extreme = std::max(sign_ * active_.values[0], sign_ * active_.values[size - 1]);
      return extreme <= kth_key + tol;
    }
    if (closed_.empty()) return true;
    // A later block is active: its Ritz values, from the wanted end inwards, must have
    // converged down to the first one beyond the wanted set (interlacing: an unconverged one
    // could still move past the k-th wanted value).
    for (Index i = 0; i < size; ++i) {
      const Index idx = sign_ > 0.0 ? size - 1 - i : i;
      if (std::abs(active_.coupling * active_.last[idx]) > tol) return false;
      if (sign_ * active_.values[idx] < kth_key - tol) return true;
    }
    return false;
  }

  void extract(LanczosResult<Scalar>& result) {
    if (m_ < k_) return;
    // The active block as it stands (after a failed product, or a budget stop right after a
    // breakdown, it may be empty).
    if (m_ > block_start_ || closed_.empty()) {
      if (!decompose_active()) {
        result.stop = LanczosStop::kNumericalIssue;
        result.converged = false;
        if (result.status.is_ok()) {
          result.status = Status::numerical_issue(fmt::format(
              "lanczos: the eigenvalues of the {0}x{0} tridiagonal matrix did not converge",
              active_.size));
        }
        return;
      }
    } else {
      active_ = Block{m_, 0, {}, {}, 0.0};
    }
    select_wanted();
    Matrix<double> selected = Matrix<double>::Zero(m_, k_);
    result.eigenvalues.resize(k_);
    result.residual_norms.resize(k_);
    std::size_t vectors_of = closed_.size() + 1;  // the block whose full vectors eigen_ holds
    for (Index i = 0; i < k_; ++i) {
      const Candidate& c = candidates_[static_cast<std::size_t>(i)];
      const Block& block = c.block < closed_.size() ? closed_[c.block] : active_;
      if (vectors_of != c.block) {
        const auto offset = static_cast<std::size_t>(block.start);
        eigen_.compute(alpha_.data() + offset, beta_.data() + offset, block.size,
                       detail::TridiagonalEigen::Rows::kAll);
        vectors_of = c.block;
      }
      result.eigenvalues[i] = block.values[c.index];
      result.residual_norms[i] = c.residual;
      selected.col(i).segment(block.start, block.size) = eigen_.rows().col(c.index);
    }
    result.eigenvectors.noalias() = basis_.leftCols(m_) * selected.cast<Scalar>();
  }

  LinearOperator<Scalar>& op_;
  const Index n_;
  const Index k_;
  const double sign_;
  const double tolerance_;
  const double breakdown_tolerance_;
  const Index max_basis_;
  Matrix<Scalar> basis_;
  Vector<Scalar> w_;
  Vector<Scalar> scratch_;
  detail::Rng rng_;
  std::vector<double> alpha_;
  std::vector<double> beta_;  // beta_[j] couples v_j and v_j+1; 0 where a block ends
  std::vector<Block> closed_;
  Block active_;
  std::vector<Candidate> candidates_;
  detail::TridiagonalEigen eigen_;
  Index m_ = 0;
  Index block_start_ = 0;
  Index restarts_ = 0;
  double last_beta_ = 0.0;
  double norm_estimate_ = 0.0;
};

}  // namespace

template <class Scalar>
LanczosResult<Scalar> lanczos(LinearOperator<Scalar>& op, Index k, SpectrumEnd which,
                              const LanczosOptions& options) {
  validate(op.dim(), k, options);
  return LanczosRun<Scalar>(op, k, which, options).run();
}

template LanczosResult<float> lanczos(LinearOperator<float>&, Index, SpectrumEnd,
                                      const LanczosOptions&);
template LanczosResult<double> lanczos(LinearOperator<double>&, Index, SpectrumEnd,
                                       const LanczosOptions&);

}  // namespace quadra::linalg
