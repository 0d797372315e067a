#pragma once
// What surrounds every run of quadra's loops from Python (quadra.train, compare, bias, laplace).

#include <pybind11/pybind11.h>
#include <signal.h>

#include <quadra/plugin_host.hpp>
#include <string>
#include <utility>

namespace quadra::python {

namespace py = pybind11;

/// A run started from Python: one at a time per process (the training loop's interrupt
/// handling is process-wide, and loading plugins mid-run would move the components it uses),
/// SIGINT's and SIGTERM's handlers restored exactly afterwards (the loop installs its own and
/// puts Python's back with std::signal, which may change the flags Python chose: SA_ONSTACK, no
/// SA_RESTART), and the exception a strategy written in Python raised handed back as itself.
class RunScope {
 public:
  /// `who` names the call in the refusal, e.g. "quadra.train". Needs the GIL.
  explicit RunScope(const char* who);
  ~RunScope();
  RunScope(const RunScope&) = delete;
  RunScope& operator=(const RunScope&) = delete;

  /// Calls `body` without the GIL. A PluginFailure that a Python strategy's exception caused
  /// is raised as that exception, with the failure's message (plugin, method) as a note.
  template <class F>
  auto without_gil(F&& body) {
    try {
      py::gil_scoped_release release;
      return std::forward<F>(body)();
    } catch (const PluginFailure& failure) {
      raise_strategy_exception(failure);
      throw;
    }
  }

 private:
  static void raise_strategy_exception(const PluginFailure& failure);

  struct sigaction int_ {};
  struct sigaction term_ {};
};

/// Whether a run from Python is in progress in this process.
bool run_in_progress();

/// Called with the GIL by a Python strategy whose method raised: keeps the exception for the
/// RunScope in progress and returns "TypeName: message" for the C++ error that unwinds the loop.
std::string keep_strategy_exception(py::error_already_set& e);

}  // namespace quadra::python
