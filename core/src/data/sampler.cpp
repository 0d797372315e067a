// The per-role batch sampler. See sampler.hpp for the guarantees and the epoch semantics.

#include <quadra/data/sampler.hpp>

#include <algorithm>
#include <cassert>
#include <cmath>
#include <numeric>

#include <fmt/format.h>

#include <quadra/data/random.hpp>
#include <quadra/error.hpp>

namespace quadra::data {

Draw Draw::whole(std::int64_t num_samples, std::int64_t chunk_size) {
  Draw d;
  d.whole_ = true;
  d.size_ = num_samples;
  d.chunk_size_ = std::max<std::int64_t>(chunk_size, 1);
  return d;
}

BatchView gather(const Dataset& data, const Draw& draw, IndexRange positions, GatherBuffer& buffer) {
  assert(0 <= positions.begin && positions.begin <= positions.end && positions.end <= draw.size());
  BatchView view;
  view.count = positions.size();
  const std::int64_t d = data.feature_dim();
  if (draw.whole_dataset()) {
    // Consecutive samples are consecutive rows: no copy.
    view.features = data.features.data() + positions.begin * d;
    if (data.task == Task::kClassification) {
      view.labels = data.labels.data() + positions.begin;
    } else {
      view.targets = data.targets.data() + positions.begin * data.target_dim;
    }
    return view;
  }
  const auto indices = draw.indices().subspan(static_cast<std::size_t>(positions.begin),
                                              static_cast<std::size_t>(positions.size()));
  const auto count = static_cast<std::size_t>(view.count);
  // resize() only allocates when the buffer grows past its largest size so far.
  if (buffer.features.size() < count * static_cast<std::size_t>(d)) {
    buffer.features.resize(count * static_cast<std::size_t>(d));
  }
  data.gather_features(indices, buffer.features.data());
  view.features = buffer.features.data();
  if (data.task == Task::kClassification) {
    if (buffer.labels.size() < count) buffer.labels.resize(count);
    data.gather_labels(indices, buffer.labels.data());
    view.labels = buffer.labels.data();
  } else {
    const std::size_t t = count * static_cast<std::size_t>(data.target_dim);
    if (buffer.targets.size() < t) buffer.targets.resize(t);
    data.gather_targets(indices, buffer.targets.data());
    view.targets = buffer.targets.data();
  }
  return view;
}

BatchView gather(const Dataset& data, const Draw& draw, GatherBuffer& buffer) {
  return gather(data, draw, IndexRange{0, draw.size()}, buffer);
}

BatchSampler::BatchSampler(std::int64_t num_samples, const SamplerOptions& options)
    : n_(num_samples), options_(options) {
  if (n_ < 1) throw Error(fmt::format("sampler: the training set has {} samples; expected at least 1", n_));
  if (options_.batch_size < 1) {
    throw Error(fmt::format("sampler: batch size {}; expected at least 1", options_.batch_size));
  }
  for (int r = 0; r < kNumBatchRoles; ++r) {
    const std::int64_t b = options_.role_batch_size[static_cast<std::size_t>(r)];
    if (b < 0) {
      throw Error(fmt::format("sampler: {} batch size {}; expected at least 1 (or 0 for the default "
                              "{})",
                              to_string(static_cast<BatchRole>(r)), b, options_.batch_size));
    }
  }
  if (!(options_.overlap >= 0.0 && options_.overlap <= 1.0)) {
    throw Error(fmt::format("sampler: overlap {}; expected a fraction in [0, 1]", options_.overlap));
  }
  if (options_.chunk_size < 1) {
    throw Error(fmt::format("sampler: chunk size {}; expected at least 1", options_.chunk_size));
  }
  mark_.assign(static_cast<std::size_t>(n_), 0);
}

void BatchSampler::validate(const BatchPlan& plan) const {
  if (plan.draws.empty()) throw Error("batch plan: no draws; expected at least one");
  const int count = static_cast<int>(plan.draws.size());
  for (int d = 0; d < count; ++d) {
    const double r = plan.draws[static_cast<std::size_t>(d)].relative_size;
    if (!(r > 0) || !std::isfinite(r)) {
      throw Error(fmt::format("batch plan: draw {} has relative size {}; expected a finite number > 0",
                              d, r));
    }
  }
  for (int r = 0; r < kNumBatchRoles; ++r) {
    const int d = plan.draw_of_role[static_cast<std::size_t>(r)];
    if (d < 0 || d >= count) {
      throw Error(fmt::format("batch plan: role '{}' maps to draw {}, but the plan has {} draw{}",
                              to_string(static_cast<BatchRole>(r)), d, count, count == 1 ? "" : "s"));
    }
  }
}

int BatchSampler::primary_key(const BatchPlan& plan, int d) const noexcept {
  for (int r = 0; r < kNumBatchRoles; ++r) {
    if (plan.draw_of_role[static_cast<std::size_t>(r)] == d) return r;
  }
  return kNumBatchRoles + d;
}

std::int64_t BatchSampler::draw_size(const BatchPlan& plan, int d) const {
  const BatchDraw& draw = plan.draws.at(static_cast<std::size_t>(d));
  if (draw.whole_dataset) return n_;
  const int key = primary_key(plan, d);
  std::int64_t base = options_.batch_size;
  if (key < kNumBatchRoles && options_.role_batch_size[static_cast<std::size_t>(key)] > 0) {
    base = options_.role_batch_size[static_cast<std::size_t>(key)];
  }
  const double size = std::round(draw.relative_size * static_cast<double>(base));
  return size < 1 ? 1 : static_cast<std::int64_t>(std::min(size, 9.0e18));
}

std::int64_t BatchSampler::epochs(BatchRole role) const noexcept {
  const auto key = static_cast<std::size_t>(role);
  if (key >= streams_.size() || streams_[key].epoch < 0) return 0;
  const RoleStream& s = streams_[key];
  return s.epoch + (s.cursor == n_ ? 1 : 0);
}

void BatchSampler::deal(RoleStream& s, std::uint64_t key, std::int64_t count, std::int64_t* out) {
  std::int64_t filled = 0;
  while (filled < count) {
    if (s.epoch < 0 || s.cursor == n_) {
      // A fresh permutation keyed by (seed, role, epoch): reproducible on its own.
      ++s.epoch;
      s.permutation.resize(static_cast<std::size_t>(n_));
      std::iota(s.permutation.begin(), s.permutation.end(), std::int64_t{0});
      Rng rng(derive_seed(options_.seed, static_cast<std::uint64_t>(Stream::kRolePermutation),
                          (key << 32) | static_cast<std::uint64_t>(s.epoch)));
      shuffle(std::span<std::int64_t>(s.permutation), rng);
      s.cursor = 0;
    }
    auto& perm = s.permutation;
    std::int64_t j = s.cursor;
    while (j < n_ && mark_[static_cast<std::size_t>(perm[static_cast<std::size_t>(j)])] == stamp_) ++j;
    if (j == n_) {
      // Everything left in this epoch was taken by other draws of this step.
      s.cursor = n_;
      continue;
    }
    std::swap(perm[static_cast<std::size_t>(s.cursor)], perm[static_cast<std::size_t>(j)]);
    const std::int64_t index = perm[static_cast<std::size_t>(s.cursor++)];
    mark_[static_cast<std::size_t>(index)] = stamp_;
    out[filled++] = index;
  }
}

const StepBatches& BatchSampler::next(const BatchPlan& plan) {
  validate(plan);
  const int count = static_cast<int>(plan.draws.size());
  const int dir = plan.draw_of(BatchRole::kDirections);
  const int est = plan.draw_of(BatchRole::kEstimate);
  const bool overlapping = options_.overlap > 0 && dir != est &&
                           !plan.draws[static_cast<std::size_t>(dir)].whole_dataset &&
                           !plan.draws[static_cast<std::size_t>(est)].whole_dataset;

  // Serve draws in primary-role order; check the step fits in the data set before touching state.
  order_.resize(static_cast<std::size_t>(count));
  std::iota(order_.begin(), order_.end(), 0);
  std::sort(order_.begin(), order_.end(),
            [&](int a, int b) { return primary_key(plan, a) < primary_key(plan, b); });
  std::int64_t distinct = 0;
  for (int d = 0; d < count; ++d) {
    if (!plan.draws[static_cast<std::size_t>(d)].whole_dataset) distinct += draw_size(plan, d);
  }
  std::int64_t shared = 0;
  if (overlapping) {
    if (primary_key(plan, est) < primary_key(plan, dir)) {
      throw Error("sampler: overlap needs the directions draw to be drawn before the estimate draw, "
                  "but the estimate draw also serves the gradient role");
    }
    const std::int64_t est_size = draw_size(plan, est);
    shared = std::min(static_cast<std::int64_t>(std::llround(options_.overlap * static_cast<double>(est_size))),
                      draw_size(plan, dir));
    distinct -= shared;
  }
  if (distinct > n_) {
    std::vector<std::int64_t> sizes;
    for (int d = 0; d < count; ++d) sizes.push_back(draw_size(plan, d));
    throw Error(fmt::format("sampler: one step needs {} distinct samples (disjoint draws of sizes {}) "
                            "but the training set has {}; use smaller batches",
                            distinct, fmt::join(sizes, ", "), n_));
  }

  ++stamp_;
  ++step_.step_;
  step_.draw_of_role_ = plan.draw_of_role;
  step_.draws_.resize(static_cast<std::size_t>(count));
  const std::size_t needed_streams = static_cast<std::size_t>(kNumBatchRoles + count);
  if (streams_.size() < needed_streams) streams_.resize(needed_streams);
  for (int d : order_) {
    Draw& out = step_.draws_[static_cast<std::size_t>(d)];
    out.chunk_size_ = options_.chunk_size;
    out.shared_ = 0;
    if (plan.draws[static_cast<std::size_t>(d)].whole_dataset) {
      out.whole_ = true;
      out.size_ = n_;
      out.indices_.clear();
      continue;
    }
    out.whole_ = false;
    out.size_ = draw_size(plan, d);
    out.indices_.resize(static_cast<std::size_t>(out.size_));
    std::int64_t start = 0;
    if (overlapping && d == est) {
      const Draw& directions = step_.draws_[static_cast<std::size_t>(dir)];
      std::copy_n(directions.indices_.begin(), shared, out.indices_.begin());
      out.shared_ = shared;
      start = shared;
    }
    const auto key = static_cast<std::uint64_t>(primary_key(plan, d));
    deal(streams_[key], key, out.size_ - start, out.indices_.data() + start);
  }
  return step_;
}

}  // namespace quadra::data
