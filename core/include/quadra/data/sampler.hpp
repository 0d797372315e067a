#pragma once
/// \file
/// The sampler: the batches of one optimizer step, one independent draw per entry of a
/// quadra::BatchPlan (design.md §3; the plan comes from the debiasing strategy).
///
/// Guarantees
///  - Draws within a step are disjoint (except the explicit `overlap` ablation below, and
///    whole-dataset draws, which are the oracle and contain everything).
///  - Each draw has its own random stream, derived from (seed, its role), and its own batch
///    size: round(relative_size x the role's batch size), at least 1. A draw serving several
///    roles belongs to the first of them in the order gradient, directions, estimate,
///    acceptance (its "primary" role) and uses that role's stream and batch size.
///  - Sampling is without replacement from a per-epoch permutation: a role's stream shuffles
///    all N sample indices (a portable Fisher-Yates keyed by seed, role and epoch) and deals
///    them out in order. The role's epoch ends when its permutation is exhausted; the next
///    draw starts a fresh permutation. Every role therefore sees every sample exactly once per
///    epoch of its own, whatever the batch sizes of the other roles.
///  - Disjointness is enforced without breaking that: draws are served in primary-role order;
///    when the next index in a draw's permutation was already taken by an earlier draw of the
///    same step, the first free index after it is swapped forward, and the taken one moves
///    later in the same epoch (it is dealt in a later step). Only at the very end of an epoch,
///    when every remaining index of the permutation is taken by other draws of the step, are
///    those skipped for that epoch.
///  - Deterministic: the same seed and sequence of plans give the same indices on every run
///    and platform, whatever the number of threads (the sampler itself is sequential).
///    Because the gradient draw is served first, its batches do not depend on which other
///    roles a plan has: comparing debiasing strategies keeps the gradient batches paired.
///
/// Overlap ablation: with options.overlap = f > 0 and separate directions and estimate draws,
/// the first round(f x size) samples of the estimate draw are the first samples of the
/// directions draw (at most all of it); the rest is drawn from the estimate stream as usual.
/// The directions draw must then be served before the estimate draw (it is, unless the
/// estimate draw also serves the gradient role).
///
/// Whole-dataset draws stream the training set in chunks of options.chunk_size consecutive
/// samples: no indices are materialised and gather() points into the data set (no copy).

#include <algorithm>
#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include <quadra/data/dataset.hpp>
#include <quadra/sdk/debiasing.hpp>

namespace quadra::data {

struct SamplerOptions {
  std::int64_t batch_size = 128;  ///< the base batch size B of every role
  /// Per-role batch sizes, indexed by BatchRole; 0 means batch_size.
  std::array<std::int64_t, kNumBatchRoles> role_batch_size{};
  std::uint64_t seed = 0;
  /// Fraction of the estimate draw shared with the directions draw, in [0, 1] (ablations).
  double overlap = 0.0;
  /// Samples per chunk when a draw is processed in pieces (whole-dataset draws, gather()).
  std::int64_t chunk_size = 256;
};

/// Positions [begin, end) within a draw.
struct IndexRange {
  std::int64_t begin = 0;
  std::int64_t end = 0;
  [[nodiscard]] std::int64_t size() const noexcept { return end - begin; }
};

/// One draw of one step: a list of sample indices, or the whole data set.
class Draw {
 public:
  Draw() = default;
  /// The whole of a data set of `num_samples` samples, in chunks of `chunk_size` (also handy to
  /// evaluate a validation or test set with the same gather code).
  static Draw whole(std::int64_t num_samples, std::int64_t chunk_size);

  [[nodiscard]] bool whole_dataset() const noexcept { return whole_; }
  /// Samples in the draw (N for a whole-dataset draw).
  [[nodiscard]] std::int64_t size() const noexcept { return size_; }
  /// The sample indices in drawing order; empty for a whole-dataset draw.
  [[nodiscard]] std::span<const std::int64_t> indices() const noexcept { return indices_; }
  /// The sample index at `position` (position itself for a whole-dataset draw).
  [[nodiscard]] std::int64_t sample(std::int64_t position) const noexcept {
    return whole_ ? position : indices_[static_cast<std::size_t>(position)];
  }
  /// How many leading samples were shared with the directions draw (overlap ablation).
  [[nodiscard]] std::int64_t shared() const noexcept { return shared_; }

  /// ceil(size / chunk_size) fixed-size chunks: the unit of deterministic parallel work.
  [[nodiscard]] std::int64_t num_chunks() const noexcept {
    return (size_ + chunk_size_ - 1) / chunk_size_;
  }
  [[nodiscard]] IndexRange chunk(std::int64_t k) const noexcept {
    return {k * chunk_size_, std::min(size_, (k + 1) * chunk_size_)};
  }

 private:
  friend class BatchSampler;
  bool whole_ = false;
  std::int64_t size_ = 0;
  std::int64_t shared_ = 0;
  std::int64_t chunk_size_ = 1;
  std::vector<std::int64_t> indices_;
};

/// The draws of one step.
class StepBatches {
 public:
  /// 0-based number of the step these batches belong to.
  [[nodiscard]] std::int64_t step() const noexcept { return step_; }
  [[nodiscard]] int num_draws() const noexcept { return static_cast<int>(draws_.size()); }
  [[nodiscard]] const Draw& draw(int d) const { return draws_.at(static_cast<std::size_t>(d)); }
  [[nodiscard]] int draw_of(BatchRole role) const noexcept {
    return draw_of_role_[static_cast<std::size_t>(role)];
  }
  [[nodiscard]] const Draw& for_role(BatchRole role) const { return draw(draw_of(role)); }

 private:
  friend class BatchSampler;
  std::int64_t step_ = -1;
  std::vector<Draw> draws_;
  std::array<int, kNumBatchRoles> draw_of_role_{};
};

/// Samples of a batch, valid until the buffer is reused or the data set changes.
struct BatchView {
  std::int64_t count = 0;
  const float* features = nullptr;       ///< count x D, row-major
  const std::int64_t* labels = nullptr;  ///< classification: count labels
  const float* targets = nullptr;        ///< regression: count x T
};

/// Caller-owned gather storage: it grows to the largest batch once and is reused, so steady
/// state gathers allocate nothing. Use one per thread.
struct GatherBuffer {
  std::vector<float> features;
  std::vector<std::int64_t> labels;
  std::vector<float> targets;
};

/// The samples at `positions` of `draw`. Whole-dataset draws point straight into `data`;
/// sampled draws are gathered into `buffer`.
BatchView gather(const Dataset& data, const Draw& draw, IndexRange positions, GatherBuffer& buffer);
/// All samples of `draw`.
BatchView gather(const Dataset& data, const Draw& draw, GatherBuffer& buffer);

class BatchSampler {
 public:
  /// Throws quadra::Error on invalid options (sizes < 1, overlap outside [0, 1], no samples).
  BatchSampler(std::int64_t num_samples, const SamplerOptions& options);

  /// Draws the batches of the next step of `plan`. The result (and its spans) stay valid until
  /// the next call. Throws quadra::Error if the plan is invalid or needs more distinct samples
  /// than the data set has.
  const StepBatches& next(const BatchPlan& plan);

  /// The size of draw `d` of `plan` (N for a whole-dataset draw).
  [[nodiscard]] std::int64_t draw_size(const BatchPlan& plan, int d) const;
  /// Steps drawn so far.
  [[nodiscard]] std::int64_t steps() const noexcept { return step_.step_ + 1; }
  /// Completed epochs of the stream of `role` (the permutations it has exhausted).
  [[nodiscard]] std::int64_t epochs(BatchRole role) const noexcept;
  [[nodiscard]] std::int64_t num_samples() const noexcept { return n_; }
  [[nodiscard]] const SamplerOptions& options() const noexcept { return options_; }

 private:
  struct RoleStream {
    std::vector<std::int64_t> permutation;
    std::int64_t cursor = 0;
    std::int64_t epoch = -1;  ///< the epoch being dealt; -1 before the first draw
  };

  void validate(const BatchPlan& plan) const;
  [[nodiscard]] int primary_key(const BatchPlan& plan, int d) const noexcept;
  void deal(RoleStream& stream, std::uint64_t key, std::int64_t count, std::int64_t* out);

  std::int64_t n_;
  SamplerOptions options_;
  std::vector<RoleStream> streams_;      ///< by key: role, or kNumBatchRoles + draw for unmapped draws
  std::vector<std::uint64_t> mark_;  ///< mark_[i] == stamp_: sample i is taken this step
  std::uint64_t stamp_ = 0;
  std::vector<int> order_;
  StepBatches step_;
};

}  // namespace quadra::data
