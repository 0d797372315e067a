// RunScope: one run at a time, signal handlers restored, Python strategies' exceptions kept.

#include "runs.hpp"

#include <fmt/format.h>

#include <atomic>
#include <quadra/error.hpp>

namespace quadra::python {

namespace {

std::atomic<int> g_active_runs{0};

/// The exception a Python strategy raised during the run in progress (accessed with the GIL).
py::object& kept_exception() {
  static auto* kept = new py::object();  // never destroyed: no Python call at exit
  return *kept;
}

}  // namespace

RunScope::RunScope(const char* who) {
  if (g_active_runs.fetch_add(1) != 0) {
    g_active_runs.fetch_sub(1);
    throw Error(fmt::format("{}: another run is in progress in this process; runs take turns", who));
  }
  kept_exception() = py::object();
  sigaction(SIGINT, nullptr, &int_);
  sigaction(SIGTERM, nullptr, &term_);
}

RunScope::~RunScope() {
  sigaction(SIGINT, &int_, nullptr);
  sigaction(SIGTERM, &term_, nullptr);
  g_active_runs.fetch_sub(1);
}

void RunScope::raise_strategy_exception(const PluginFailure& failure) {
  py::object exception = std::exchange(kept_exception(), py::object());
  if (!exception) return;
  if (py::hasattr(exception, "add_note")) exception.attr("add_note")(failure.what());
  PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exception.ptr())), exception.ptr());
  throw py::error_already_set();
}

bool run_in_progress() { return g_active_runs.load() != 0; }

std::string keep_strategy_exception(py::error_already_set& e) {
  const std::string text = fmt::format(
      "{}: {}", py::str(e.type().attr("__name__")).cast<std::string>(),
      py::str(e.value()).cast<std::string>());
  if (!kept_exception()) kept_exception() = e.value();
  return text;
}

}  // namespace quadra::python
