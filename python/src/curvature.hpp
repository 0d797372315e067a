#pragma once
// quadra.Curvature: a curvature plugin bound to a batch, shared by curvature.cpp (products)
// and linalg.cpp (Lanczos, CG, trace and density on it).

#include <cstdint>
#include <memory>
#include <quadra/curvature/engine_backend.hpp>
#include <quadra/plugin_host.hpp>
#include <string>
#include <variant>

#include "batch.hpp"
#include "module.hpp"

namespace quadra::python {

template <class S>
struct CurvatureState {
  BatchPtr<S> batch;
  PluginHandle<CurvatureEstimator> estimator;
  std::string name;
  std::uint64_t id = 0;  ///< see BatchState::bound

  /// Binds the estimator again when another operator was bound to the batch since (see
  /// BatchState::bound). Call with the batch's lock held.
  void ensure_bound() {
    if (batch->bound == id) return;
    check(estimator->bind(batch->backend));
    batch->bound = id;
  }
  [[nodiscard]] Index dim() const { return batch->batch.num_parameters(); }
  /// Runs f(op) without the GIL, with the batch's lock, on the bound operator.
  template <class F>
  auto run(F&& f) {
    return without_gil(*batch, [&] {
      ensure_bound();
      CurvatureOperator<S> op(*estimator, dim());
      return f(op);
    });
  }
};

using AnyCurvature =
    std::variant<std::shared_ptr<CurvatureState<float>>, std::shared_ptr<CurvatureState<double>>>;

struct PyCurvature {
  AnyCurvature state;
};

}  // namespace quadra::python
