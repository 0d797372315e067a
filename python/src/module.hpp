#pragma once
// The pieces of the extension module `quadra._quadra`, one registration function per topic.

#include <pybind11/pybind11.h>

#include <quadra/plugin_host.hpp>

namespace quadra::python {

namespace py = pybind11;

/// quadra.Error, set_threads, threads, plugins, load_plugins (runtime.cpp).
void register_runtime(py::module_& m);
/// Model and Batch (models.cpp).
void register_models(py::module_& m);
/// Curvature (curvature.cpp).
void register_curvature(py::module_& m);
/// lanczos, cg, hutchinson_trace, slq_density (linalg.cpp).
void register_linalg(py::module_& m);
/// train, TrainResult, StepRecord, EvalRecord (train.cpp).
void register_train(py::module_& m);
/// _run_command, _config_value: the command line's subcommands in process (commands.cpp).
void register_commands(py::module_& m);
/// _register_damping: damping strategies written in Python (strategies.cpp).
void register_strategies(py::module_& m);

/// The process's plugin host. On first use it loads the built-in plugins (the directory the
/// package names, see _set_builtin_plugin_dir) and QUADRA_PLUGIN_PATH, as the CLI does; refused
/// libraries become Python warnings. Needs the GIL, which also serialises every use.
PluginHost& plugin_host();

/// quadra.load_plugins(path): loads a plugin directory or library file into plugin_host() and
/// returns the components it registered. Refused while a training run is in progress.
py::list load_plugins(const py::object& path);

/// Throws quadra::Error with the status's message when it is not ok.
void check(const Status& status);

}  // namespace quadra::python
