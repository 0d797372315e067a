// Damping strategies written in Python: a quadra.DampingStrategy subclass registered as an
// in-process component of the module's plugin host, created from a config's [damping] section
// like any plugin and called by the training loop through the same guard.

#include <fmt/format.h>
#include <pybind11/stl.h>

#include <memory>
#include <quadra/error.hpp>
#include <quadra/plugin_host.hpp>
#include <string>
#include <utility>
#include <vector>

#include "module.hpp"
#include "runs.hpp"

namespace quadra::python {

namespace {

/// A Python object that may be released on any thread: the reference is dropped with the GIL.
using SharedObject = std::shared_ptr<py::object>;

SharedObject share(py::object object) {
  return SharedObject(new py::object(std::move(object)), [](py::object* p) {
    py::gil_scoped_acquire gil;
    delete p;
  });
}

/// Calls `method` of `self` with the GIL. A Python exception is kept for the caller of the run
/// (RunScope) and unwinds the loop as a C++ exception, which the host's guard turns into the
/// PluginFailure naming the strategy and the method.
template <class... Args>
py::object call(const py::object& self, const char* method, Args&&... args) {
  try {
    return self.attr(method)(std::forward<Args>(args)...);
  } catch (py::error_already_set& e) {
    throw std::runtime_error(keep_strategy_exception(e));
  }
}

/// A value returned by a strategy's method, converted or refused with a message naming it.
template <class T>
T returned(const py::object& value, const char* method, const char* expected) {
  try {
    return value.cast<T>();
  } catch (const py::cast_error&) {
    throw std::runtime_error(fmt::format("{}() returned {}; expected {}", method,
                                         py::repr(value).cast<std::string>(), expected));
  }
}

class PythonDamping final : public DampingStrategy {
 public:
  explicit PythonDamping(SharedObject self) : self_(std::move(self)) {}

  [[nodiscard]] double lambda() const override {
    py::gil_scoped_acquire gil;
    return returned<double>(call(*self_, "damping"), "damping", "a float");
  }

  [[nodiscard]] bool uses_reduction_ratio() const override {
    py::gil_scoped_acquire gil;
    return returned<bool>(call(*self_, "uses_reduction_ratio"), "uses_reduction_ratio",
                          "True or False");
  }

  StepVerdict step_measured(double rho) override {
    py::gil_scoped_acquire gil;
    const bool accept =
        returned<bool>(call(*self_, "step_measured", rho), "step_measured",
                       "True (accept the step) or False (reject it)");
    return accept ? StepVerdict::kAccept : StepVerdict::kReject;
  }

  void step_invalid() override {
    py::gil_scoped_acquire gil;
    call(*self_, "step_invalid");
  }

  Status save_state(std::vector<double>& out) const override {
    py::gil_scoped_acquire gil;
    out = returned<std::vector<double>>(call(*self_, "state"), "state", "a list of floats");
    return Status::ok();
  }

  Status load_state(const std::vector<double>& state) override {
    py::gil_scoped_acquire gil;
    call(*self_, "load_state", py::cast(state));
    return Status::ok();
  }

 private:
  SharedObject self_;
};

/// One option of the class's `options` dict: name -> default, or name -> (default, help). The
/// default's type is the option's (bool, int, float, str).
OptionSpec option_spec(const std::string& name, const py::handle& entry) {
  py::object value = py::reinterpret_borrow<py::object>(entry);
  std::string help;
  if (py::isinstance<py::tuple>(entry)) {
    const auto pair = entry.cast<py::tuple>();
    if (pair.size() != 2 || !py::isinstance<py::str>(pair[1])) {
      throw Error(fmt::format("option '{}': expected a default or (default, help), got {}", name,
                              py::repr(entry).cast<std::string>()));
    }
    value = pair[0];
    help = pair[1].cast<std::string>();
  }
  if (py::isinstance<py::bool_>(value)) return OptionSpec::boolean(name, value.cast<bool>(), help);
  if (py::isinstance<py::int_>(value)) return OptionSpec::integer(name, value.cast<std::int64_t>(), help);
  if (py::isinstance<py::float_>(value)) return OptionSpec::real(name, value.cast<double>(), help);
  if (py::isinstance<py::str>(value)) return OptionSpec::string(name, value.cast<std::string>(), help);
  throw Error(fmt::format("option '{}': default {} is not a bool, int, float or str", name,
                          py::repr(value).cast<std::string>()));
}

py::object option_value(const OptionValue& value) {
  return std::visit([](const auto& v) { return py::cast(v); }, value);
}

/// quadra._register_damping(cls, name, summary, options, replace).
void register_damping(const py::object& cls, const std::string& name, const std::string& summary,
                      const py::dict& options, bool replace) {
  if (run_in_progress()) {
    throw Error(fmt::format("register({}): a run is in progress; register strategies before it "
                            "starts",
                            name));
  }
  ComponentInfo info{name, summary, {}};
  for (const auto& [key, entry] : options) {
    info.options.push_back(option_spec(py::str(key).cast<std::string>(), entry));
  }
  const std::string origin = fmt::format(
      "Python class {}.{}", py::str(cls.attr("__module__")).cast<std::string>(),
      py::str(cls.attr("__qualname__")).cast<std::string>());
  const SharedObject shared_cls = share(cls);
  HostFactory<DampingStrategy> factory = [shared_cls](const OptionValues& values,
                                                      DampingStrategy** out) -> Status {
    py::gil_scoped_acquire gil;
    py::dict kwargs;
    for (const auto& [key, value] : values.entries()) kwargs[py::str(key)] = option_value(value);
    try {
      *out = new PythonDamping(share((*shared_cls)(**kwargs)));
      return Status::ok();
    } catch (py::error_already_set& e) {
      return Status::failed(keep_strategy_exception(e));
    }
  };
  check(plugin_host().add_in_process<DampingStrategy>(std::move(info), std::move(factory), origin,
                                                      shared_cls, replace));
}

}  // namespace

void register_strategies(py::module_& m) {
  m.def("_register_damping", &register_damping, py::arg("cls"), py::arg("name"),
        py::arg("summary"), py::arg("options"), py::arg("replace"),
        "Registers a quadra.DampingStrategy subclass as the damping plugin NAME.");
}

}  // namespace quadra::python
