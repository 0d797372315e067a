#pragma once
/// \file
/// Samples gathered from a data set (quadra/data) in the form the engine binds: inputs as a
/// features x N matrix in the model's precision, and class labels or regression targets.
/// Header-only; shared by the training loop, the diagnostics and the CLI.

#include <quadra/data/dataset.hpp>
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

}  // namespace quadra::nn
