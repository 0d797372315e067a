#include <quadra/linalg/lanczos.hpp>

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <Eigen/Eigenvalues>

#include <quadra/error.hpp>

#include "krylov.hpp"
#include "lanczos_basis.hpp"
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
  if (options.max_basis != 0 && options.max_basis < std::min(n, k + 2)) {
    throw Error(fmt::format(
        "lanczos: max_basis = {} is too small for k = {}; expected 0 (automatic) or at least "
        "min(n, k + 2) = {}",
        options.max_basis, k, std::min(n, k + 2)));
  }
}

// Basis size: ARPACK's default ncv = max(2k + 1, 20), never more than the budget or n needs.
Index basis_size(Index n, Index k, const LanczosOptions& options) {
  const Index requested =
      options.max_basis > 0 ? options.max_basis : std::max<Index>(2 * k + 1, 20);
  return std::min({n, options.max_products, requested});
}

// Ritz pairs kept at a thick restart: the k wanted and a third of the rest of the basis.
// Keeping a few beyond the wanted ones speeds up their convergence; on GGN spectra, a third
// needed as few products as a half (ARPACK keeps up to k + (ncv - k) / 2) and makes the
// average basis, so the reorthogonalisation per step, smaller. Keeping only k needed 25% more.
Index restart_size(Index k, Index max_basis) {
  return std::min(max_basis - 2, k + (max_basis - k) / 3);
}

// The run's state: the basis, the tridiagonal T = (alpha, beta), and the convergence test.
// T splits into blocks at restarts after breakdowns (beta = 0 there); closed blocks do not
// change until a thick restart, so their eigenvalues and the last row of their eigenvectors are
// computed once and cached, and a convergence check costs O(b^2) for the active block of size b.
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
        max_products_(options.max_products),
        max_basis_(basis_size(n_, k, options)),
        keep_(restart_size(k, max_basis_)),
        basis_(n_, max_basis_),
        w_(n_),
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
    result.num_thick_restarts = thick_restarts_;
    result.basis_size = max_basis_;
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
      double b = basis_.norm(w_);
      norm_estimate_ = std::max(norm_estimate_, b);
      const double beta_prev = j > block_start_ ? beta_[static_cast<std::size_t>(j - 1)] : 0.0;
      alpha_.push_back(lanczos_step(j, beta_prev, b));
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
      if (result.num_products == max_products_) return LanczosStop::kBudget;
      if (breakdown) {
        closed_.push_back(active_);
        active_ = Block{m_, 0, {}, {}, 0.0};
        block_start_ = m_;
        if (m_ == max_basis_) compress(false, 0.0);
        if (!draw_orthogonal_start(m_)) return LanczosStop::kSpaceExhausted;
        ++restarts_;
      } else if (m_ == max_basis_) {
        compress(true, b);
      } else {
        basis_.col(m_) = w_ / static_cast<Scalar>(b);
      }
    }
  }

  // One Lanczos orthogonalisation: on entry w_ = A v_j and `norm` its norm, on exit w_ is the
  // next unnormalised Lanczos vector, orthogonal to v_0..v_j, and `norm` its norm. The
  // three-term recurrence removes the large components (beta_prev v_{j-1}, alpha v_j) cheaply,
  // so the full reorthogonalisation after it removes only roundoff-sized ones and its first
  // pass usually suffices. Returns alpha_j = v_j^T A v_j.
  double lanczos_step(Index j, double beta_prev, double& norm) {
    const double alpha = basis_.three_term(j, beta_prev, w_, norm);
    return alpha + basis_.orthogonalize(j + 1, w_, norm);
  }

  // Puts a random unit vector orthogonal to the first m basis vectors into column m. False if
  // none is left numerically (the basis spans R^n).
  bool draw_orthogonal_start(Index m) {
    rng_.fill_uniform<Scalar>(w_);
    const double before = basis_.norm(w_);
    double after = before;
    basis_.orthogonalize(m, w_, after);
    if (!(after > breakdown_tolerance_ * before)) return false;
    basis_.col(m) = w_ / static_cast<Scalar>(after);
    return true;
  }

  // Thick restart (Wu & Simon 2000) of a full basis: keeps about the keep_ most wanted Ritz
  // pairs of all blocks and drops the rest. A kept Ritz vector of a closed block is an invariant
  // direction up to its residual, so it becomes a 1x1 closed block. The kept Ritz vectors Y of
  // the active block satisfy A Y = Y Theta + w s^T, s = beta * (last row of their eigenvectors
  // in T): the orthogonal Q that tridiagonalises [[0, s^T], [s, Theta]] and fixes the first
  // coordinate (Householder) turns Y into Y Q', a Lanczos basis of which only the last vector
  // couples to w / beta, so T stays tridiagonal and the recurrence continues with w / beta
  // (`continue_active`, beta = `b`). Otherwise (after a breakdown) every block is closed and
  // the basis ends with the kept vectors.
  // While the active block continues, closed blocks keep only Ritz vectors in the wanted set
  // and the active block keeps at least one: progress made in it is never all thrown away.
  void compress(bool continue_active, double b) {
    select(m_);
    const std::size_t active = closed_.size();
    std::vector<std::vector<Index>> kept(active + 1);
    const Index closed_limit = continue_active ? k_ : keep_;
    Index num_closed = 0;
    for (Index i = 0; i < closed_limit; ++i) {
      const Candidate& c = candidates_[static_cast<std::size_t>(i)];
      if (c.block == active) continue;
      kept[c.block].push_back(c.index);
      ++num_closed;
    }
    const Index active_limit = continue_active ? std::max<Index>(keep_ - num_closed, 1) : 0;
    for (std::size_t i = 0; i < candidates_.size(); ++i) {
      const Candidate& c = candidates_[i];
      if (c.block != active) continue;
      if (static_cast<Index>(kept[active].size()) == active_limit) break;
      kept[active].push_back(c.index);
    }
    const Index num_kept = num_closed + static_cast<Index>(kept[active].size());
    Matrix<double> coefficients = Matrix<double>::Zero(m_, num_kept);
    std::vector<double> alpha;
    std::vector<double> beta;
    std::vector<Block> closed;
    Index col = 0;
    for (std::size_t blk = 0; blk < active; ++blk) {
      if (kept[blk].empty()) continue;
      const Block& block = closed_[blk];
      const auto offset = static_cast<std::size_t>(block.start);
      eigen_.compute(alpha_.data() + offset, beta_.data() + offset, block.size,
                     detail::TridiagonalEigen::Rows::kAll);
      for (const Index i : kept[blk]) {
        coefficients.col(col).segment(block.start, block.size) = eigen_.rows().col(i);
        closed.push_back(Block{col, 1, Vector<double>::Constant(1, block.values[i]),
                               Vector<double>::Ones(1), std::abs(block.coupling * block.last[i])});
        alpha.push_back(block.values[i]);
        beta.push_back(0.0);
        ++col;
      }
    }
    const Index start = col;
    const auto l = static_cast<Index>(kept[active].size());
    if (continue_active && l > 0) {
      const Index size = m_ - block_start_;
      const auto offset = static_cast<std::size_t>(block_start_);
      eigen_.compute(alpha_.data() + offset, beta_.data() + offset, size,
                     detail::TridiagonalEigen::Rows::kAll);
      Matrix<double> ritz(size, l);
      Matrix<double> arrow = Matrix<double>::Zero(l + 1, l + 1);
      for (Index p = 0; p < l; ++p) {
        const Index i = kept[active][static_cast<std::size_t>(p)];
        ritz.col(p) = eigen_.rows().col(i);
        arrow(p + 1, p + 1) = eigen_.values()[i];
        arrow(p + 1, 0) = arrow(0, p + 1) = b * eigen_.rows()(size - 1, i);
      }
      const Eigen::Tridiagonalization<Matrix<double>> tri(arrow);
      const Matrix<double> q = tri.matrixQ();
      // Reversed, so that the vector coupled to w / beta comes last.
      for (Index p = 0; p < l; ++p) {
        const Index r = l - p;
        coefficients.col(col).segment(block_start_, size) = ritz * q.col(r).tail(l);
        alpha.push_back(tri.diagonal()[r]);
        beta.push_back(tri.subDiagonal()[r - 1]);
        ++col;
      }
      last_beta_ = std::abs(tri.subDiagonal()[0]);
    }
    basis_.rotate(m_, coefficients.leftCols(col));
    alpha_.assign(alpha.begin(), alpha.end());
    beta_.assign(beta.begin(), beta.end());
    closed_ = std::move(closed);
    m_ = col;
    block_start_ = continue_active ? start : col;
    active_ = Block{block_start_, 0, {}, {}, 0.0};
    ++thick_restarts_;
    if (continue_active) basis_.col(m_) = w_ / static_cast<Scalar>(b);
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

  // The Ritz pairs of all blocks; the `count` most wanted first, in order.
  void select(Index count) {
    candidates_.clear();
    for (std::size_t blk = 0; blk <= closed_.size(); ++blk) {
      const Block& block = blk < closed_.size() ? closed_[blk] : active_;
      for (Index i = 0; i < block.size; ++i) {
        candidates_.push_back({sign_ * block.values[i],
                               std::abs(block.coupling * block.last[i]), blk, i});
      }
    }
    std::partial_sort(candidates_.begin(), candidates_.begin() + count, candidates_.end(),
                      [](const Candidate& a, const Candidate& b) { return a.key > b.key; });
  }

  // The convergence test of the file comment (m_ >= k_, active block decomposed).
  bool wanted_set_converged(bool breakdown) {
    const double tol = tolerance_ * norm_estimate_;
    select(k_);
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
    select(k_);
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
    result.eigenvectors.noalias() = basis_.matrix().leftCols(m_) * selected.cast<Scalar>();
  }

  LinearOperator<Scalar>& op_;
  const Index n_;
  const Index k_;
  const double sign_;
  const double tolerance_;
  const double breakdown_tolerance_;
  const Index max_products_;
  const Index max_basis_;
  const Index keep_;
  detail::LanczosBasis<Scalar> basis_;
  Vector<Scalar> w_;
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
  Index thick_restarts_ = 0;
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
