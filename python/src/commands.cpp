// The command line's subcommands in process, for quadra.compare, quadra.bias and quadra.laplace
// (python/quadra/_experiments.py builds their arguments and reads the tables they write).

#include <fmt/format.h>
#include <pybind11/stl.h>

#include <optional>
#include <quadra/config.hpp>
#include <quadra/error.hpp>
#include <string>
#include <vector>

#include "cli.hpp"
#include "module.hpp"
#include "runs.hpp"

namespace quadra::python {

namespace {

/// Runs `quadra NAME ARGS...` on this thread without the GIL, through this module's plugin host
/// (so strategies written in Python take part), and returns its exit code. Usage mistakes raise
/// quadra.Error with the command line's message; Ctrl-C raises KeyboardInterrupt after the
/// training loop has checkpointed, as quadra.train does.
int run_command(const std::string& name, const std::vector<std::string>& args) {
  const cli::Command* command = nullptr;
  for (const cli::Command& c : cli::commands()) {
    if (name == c.name) command = &c;
  }
  if (command == nullptr) throw Error(fmt::format("no quadra subcommand '{}'", name));
  cli::Context context{plugin_host(), /*default_plugins_loaded=*/true};
  RunScope scope(fmt::format("quadra.{}", name).c_str());
  const int code = scope.without_gil([&] { return command->run(args, context); });
  if (code == 130 || PyErr_CheckSignals() != 0) {  // 130: the loop stopped on SIGINT
    if (!PyErr_Occurred()) PyErr_SetNone(PyExc_KeyboardInterrupt);
    throw py::error_already_set();
  }
  return code;
}

/// The value of `key` in the config file (or none) with the --set assignments applied, as the
/// subcommand will read it; None when unset.
std::optional<std::string> config_value(const std::optional<std::string>& file,
                                        const std::vector<std::string>& assignments,
                                        const std::string& key) {
  Config config = file ? Config::from_file(*file) : Config();
  for (const std::string& assignment : assignments) config.apply_override(assignment);
  return config.get(key);
}

}  // namespace

void register_commands(py::module_& m) {
  m.def("_run_command", &run_command, py::arg("name"), py::arg("args"),
        "Runs `quadra NAME ARGS...` in process without the GIL; returns the exit code.");
  m.def("_config_value", &config_value, py::arg("file"), py::arg("assignments"), py::arg("key"),
        "A config file's value of section.key after --set assignments, or None.");
}

}  // namespace quadra::python
