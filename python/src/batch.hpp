#pragma once
// The engine objects behind quadra.Batch and quadra.Curvature, shared between them.

#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <quadra/curvature/engine_backend.hpp>
#include <quadra/nn/bound_batch.hpp>
#include <string>
#include <utility>
#include <variant>

namespace quadra::python {

namespace py = pybind11;

/// A bound batch and the curvature backend on it. A BoundBatch is not safe for concurrent
/// calls and engine calls run without the GIL, so every call takes `mutex` (after releasing the
/// GIL, never the other way round). Curvature operators share the state, which keeps the batch
/// alive for as long as any of them is.
template <class S>
struct BatchState {
  BatchState(nn::BoundBatch<S> b) : batch(std::move(b)), backend(batch) {}
  std::mutex mutex;
  nn::BoundBatch<S> batch;
  EngineCurvatureBackend<S> backend;
  /// The id of the curvature operator last bound to `backend` (ids count from 1 and are never
  /// reused, unlike addresses). Binding may set state of the batch that another operator relies
  /// on (mc-fisher draws the batch's Monte-Carlo labels), so an operator used after another one
  /// binds again first.
  std::uint64_t bound = 0;
  std::uint64_t next_id = 1;  ///< taken with the GIL held
};

template <class S>
using BatchPtr = std::shared_ptr<BatchState<S>>;
using AnyBatch = std::variant<BatchPtr<float>, BatchPtr<double>>;

/// Runs `f` on the batch without the GIL and with the batch's lock.
template <class S, class F>
auto without_gil(BatchState<S>& state, F&& f) {
  py::gil_scoped_release release;
  std::lock_guard<std::mutex> lock(state.mutex);
  return f();
}

}  // namespace quadra::python

namespace quadra::python {

/// quadra.Batch.
struct PyBatch {
  AnyBatch state;
};

/// quadra.Curvature for plugin `name` created with `options` (keyword arguments as a config's
/// [curvature] section) and bound to `batch` (curvature.cpp).
py::object make_curvature(const AnyBatch& batch, const std::string& name,
                          const py::kwargs& options);

}  // namespace quadra::python
