#pragma once
/// \file
/// Samples gathered from a data set (quadra/data) in the form the engine binds: inputs as a
/// features x N matrix in the model's precision, and class labels or regression targets.
/// Header-only; shared by the training loop, the diagnostics and the CLI.

#include <utility>

#include <quadra/data/dataset.hpp>
#include <quadra/dist/communicator.hpp>
#include <quadra/data/sampler.hpp>
#include <quadra/nn/bound_batch.hpp>

namespace quadra::nn {

template <class S>
struct DatasetBatch {
  Matrix<S> inputs;  ///< features x N
  Targets<S> targets;
};

/// The samples of `view` (gathered from `set`) converted to precision S.
template <class S>
DatasetBatch<S> dataset_batch(const data::Dataset& set, const data::BatchView& view) {
  DatasetBatch<S> out;
  out.inputs = Eigen::Map<const Eigen::MatrixXf>(view.features, set.feature_dim(), view.count)
                   .template cast<S>();
  if (set.task == data::Task::kClassification) {
    out.targets.labels.assign(view.labels, view.labels + view.count);
  } else {
    out.targets.values = Eigen::Map<const Eigen::MatrixXf>(view.targets, set.target_dim, view.count)
                             .template cast<S>();
  }
  return out;
}

/// Whether bind_split() splits a batch of `samples` across the ranks of `comm`: with several
/// ranks and at least one sample for each.
inline bool splits_across(const dist::Communicator& comm, Index samples) {
  return comm.size() > 1 && samples >= comm.size();
}

/// `data` bound to the engine, split across the ranks of `comm` when splits_across() (this
/// rank's samples; every batch-level result is then the whole batch's, see BoundBatch), exactly
/// as one process binds it otherwise: with one rank, or on every rank for a batch with fewer
/// samples than ranks (the tail of a chunked pass), which each rank then computes whole.
/// Collective when split; `data` must outlive the result.
template <class S>
BoundBatch<S> bind_split(const Network& network, ConstVectorRef<S> params,
                         const DatasetBatch<S>& data, Loss loss, const dist::Communicator& comm) {
  if (!splits_across(comm, data.inputs.cols())) {
    return BoundBatch<S>(network, params, data.inputs, data.targets, loss);
  }
  const dist::SampleShare share = comm.share_of(data.inputs.cols());
  Targets<S> mine;
  if (!data.targets.labels.empty()) {
    mine.labels.assign(data.targets.labels.begin() + share.begin,
                       data.targets.labels.begin() + share.end);
  }
  if (data.targets.values.size() > 0) {
    mine.values = data.targets.values.middleCols(share.begin, share.size());
  }
  return BoundBatch<S>(network, params, data.inputs.middleCols(share.begin, share.size()),
                       std::move(mine), loss, comm, share);
}

}  // namespace quadra::nn
