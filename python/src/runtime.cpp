// Errors, threads and plugins of the Python module.

#include <fmt/format.h>
#include <fmt/std.h>
#include <pybind11/stl.h>

#include <filesystem>
#include <memory>
#include <quadra/error.hpp>
#include <quadra/parallel.hpp>
#include <quadra/sdk/build_key.hpp>
#include <quadra/sdk/version.hpp>
#include <string>
#include <vector>

#include "arrays.hpp"
#include "module.hpp"
#include "runs.hpp"

namespace quadra::python {

namespace fs = std::filesystem;

namespace {

fs::path& builtin_plugin_dir() {
  static fs::path dir;
  return dir;
}

/// Refused libraries since `first` as Python warnings (the CLI prints them and goes on).
void warn_refused(const PluginHost& host, std::size_t first) {
  for (std::size_t i = first; i < host.refused().size(); ++i) {
    if (PyErr_WarnEx(PyExc_RuntimeWarning, host.refused()[i].reason.c_str(), 1) != 0) {
      throw py::error_already_set();
    }
  }
}

py::dict describe(const Component& c) {
  py::dict d;
  d["kind"] = to_string(c.kind);
  d["name"] = c.info.name;
  d["version"] = c.library_version;
  d["description"] = c.info.summary;
  d["file"] = c.file.string();
  return d;
}

}  // namespace

py::list load_plugins(const py::object& path_object) {
  const std::string path = path_text(path_object, "load_plugins");
  if (run_in_progress()) {
    // The run's optimizer points into the host's component list, which loading may reallocate.
    throw Error(
        fmt::format("load_plugins({}): a quadra.train run is in progress; load plugins "
                    "before it starts",
                    path));
  }
  PluginHost& host = plugin_host();
  const std::size_t components = host.components().size();
  const std::size_t refused = host.refused().size();
  check(host.load_path(path));
  std::error_code ec;
  // One library named on purpose must load; a directory's refusals are warnings.
  if (fs::is_regular_file(path, ec) && host.refused().size() > refused) {
    throw Error(host.refused().back().reason);
  }
  warn_refused(host, refused);
  py::list loaded;
  for (std::size_t i = components; i < host.components().size(); ++i) {
    loaded.append(describe(host.components()[i]));
  }
  return loaded;
}

void check(const Status& status) {
  if (!status.is_ok()) throw Error(status.message());
}

PluginHost& plugin_host() {
  // Never destroyed: Python objects may hold plugin objects until the interpreter's very end,
  // and each of those keeps its own library loaded anyway (PluginHandle).
  static PluginHost* host = nullptr;
  if (host == nullptr) {
    auto created = std::make_unique<PluginHost>();
    check(created->load_default_paths(builtin_plugin_dir(), {}));
    host = created.release();
    warn_refused(*host, 0);
  }
  return *host;
}

void register_runtime(py::module_& m) {
  // quadra::Error (bad input: arrays, options, files, plugins) and its subclasses such as
  // PluginFailure become quadra.Error, a ValueError carrying the CLI's message.
  static py::exception<Error> error(m, "Error", PyExc_ValueError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      PyErr_SetString(error.ptr(), e.what());
    }
  });
  error.doc() =
      "Bad input to quadra (arrays, options, model files, plugins), with the message the quadra "
      "command line prints. A subclass of ValueError.";

  m.attr("__version__") = QUADRA_SDK_VERSION_STRING;
  m.attr("build_key") = QUADRA_BUILD_KEY;

  m.def(
      "_set_builtin_plugin_dir", [](const std::string& dir) { builtin_plugin_dir() = dir; },
      py::arg("dir"));

  m.def(
      "set_threads",
      [](int n) {
        if (n < 0) {
          throw Error(fmt::format("set_threads({}): expected 0 (all cores) or more threads", n));
        }
        set_num_threads(n);
      },
      py::arg("n"),
      "Limits quadra to n threads process-wide (0: all cores of the affinity mask), as the "
      "command line's --threads. Results are bitwise the same for any count.");
  m.def("threads", &num_threads, "The number of threads quadra's parallel loops may use.");

  m.def(
      "plugins",
      []() {
        py::list out;
        for (const Component& c : plugin_host().components()) out.append(describe(c));
        return out;
      },
      "Every loaded plugin as a dict: kind, name, version, description, file.");

  m.def("load_plugins", &load_plugins, py::arg("path"),
        "Loads the plugin libraries in a directory (or one library file), after the built-in ones "
        "and QUADRA_PLUGIN_PATH, as the command line's --plugin-path. Returns the components it "
        "registered. A refused library in a directory is a RuntimeWarning naming the file and the "
        "reason; a refused library file, or a path that does not exist, raises quadra.Error.");
}

}  // namespace quadra::python
