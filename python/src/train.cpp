// quadra.train: the loop of `quadra train` (the same Config, resolve_run, load_run_data and
// run_training) on the calling thread without the GIL, with a Python callback at step and
// evaluation boundaries and Ctrl-C handled as the command line handles it.

#include <fmt/format.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <csignal>
#include <cstdint>
#include <optional>
#include <quadra/config.hpp>
#include <quadra/error.hpp>
#include <quadra/train/trainer.hpp>
#include <string>
#include <utility>
#include <vector>

#include "arrays.hpp"
#include "module.hpp"
#include "runs.hpp"

namespace quadra::python {

namespace {

using train::EvalRecord;
using train::RunSummary;
using train::StepRecord;

/// A config value as the INI file would spell it: bools as true/false, everything else str().
std::string config_value(const py::handle& value) {
  if (py::isinstance<py::bool_>(value)) return value.cast<bool>() ? "true" : "false";
  return py::str(value).cast<std::string>();
}

/// `config`: an INI file (str or os.PathLike), a dict of sections (section -> {key: value}) or
/// of dotted keys ("train.max_steps": 5), or None. `set` and `out` are applied over it as
/// --set assignments, so their messages are the command line's.
Config make_config(const py::object& config, const py::object& set, const py::object& out) {
  Config result;
  if (py::isinstance<py::dict>(config)) {
    for (const auto& [key, value] : config.cast<py::dict>()) {
      const std::string name = py::str(key).cast<std::string>();
      if (py::isinstance<py::dict>(value)) {
        for (const auto& [inner, v] : value.cast<py::dict>()) {
          result.set(name + "." + py::str(inner).cast<std::string>(), config_value(v));
        }
      } else {
        result.set(name, config_value(value));
      }
    }
  } else if (!config.is_none()) {
    result = Config::from_file(path_text(config, "config"));
  }
  if (!set.is_none()) {
    if (!py::isinstance<py::dict>(set)) {
      throw Error(fmt::format("set: expected a dict of 'section.key': value, got {}",
                              py::str(py::type::of(set).attr("__name__")).cast<std::string>()));
    }
    for (const auto& [key, value] : set.cast<py::dict>()) {
      result.apply_override(py::str(key).cast<std::string>() + "=" + config_value(value));
    }
  }
  if (!out.is_none()) result.apply_override("train.out=" + path_text(out, "out"));
  return result;
}

/// "ValueError: bad value", for stop reasons.
std::string describe_exception(const py::error_already_set& e) {
  return fmt::format("{}: {}", py::str(e.type().attr("__name__")).cast<std::string>(),
                     py::str(e.value()).cast<std::string>());
}

/// Collects the records and calls the Python callback, reacquiring the GIL, on the training
/// thread (the caller's). An exception from the callback ends the run at that boundary and is
/// kept for the caller; a KeyboardInterrupt (from the callback or a pending Python signal) is
/// turned into the loop's own interrupt, so the run stops exactly as on Ctrl-C.
class PythonObserver final : public train::TrainObserver {
 public:
  explicit PythonObserver(py::object callback) : callback_(std::move(callback)) {}

  void on_step(const StepRecord& record) override {
    steps.push_back(record);
    if (callback_.is_none()) return;
    py::gil_scoped_acquire gil;
    check_signals();
    call(py::cast(record));
  }

  void on_evaluation(const EvalRecord& record) override {
    evaluations.push_back(record);
    py::gil_scoped_acquire gil;
    check_signals();
    if (!callback_.is_none()) call(py::cast(record));
  }

  std::string stop_reason() override { return stop_; }

  std::vector<StepRecord> steps;
  std::vector<EvalRecord> evaluations;
  std::optional<py::error_already_set> error;  ///< raised to the caller after the run

 private:
  void check_signals() {
    if (error.has_value()) return;
    if (PyErr_CheckSignals() != 0) fail(py::error_already_set(), "a signal handler");
  }

  void call(const py::object& event) {
    if (error.has_value()) return;  // the run is ending: the closing evaluation goes unseen
    try {
      const py::object answer = callback_(event);
      if (answer.is_none() || answer.is(py::bool_(false))) return;
      if (py::isinstance<py::str>(answer)) {
        if (std::string reason = answer.cast<std::string>(); !reason.empty() && stop_.empty()) {
          stop_ = std::move(reason);
        }
        return;
      }
      PyErr_SetString(PyExc_TypeError,
                      fmt::format("quadra.train: the callback returned {}; expected None or False "
                                  "(go on) or a string (stop, with it as the reason)",
                                  py::repr(answer).cast<std::string>())
                          .c_str());
      throw py::error_already_set();
    } catch (py::error_already_set& e) {
      fail(std::move(e), "the callback");
    }
  }

  void fail(py::error_already_set e, const char* who) {
    if (e.matches(PyExc_KeyboardInterrupt)) {
      // The loop's SIGINT handler is installed while it runs: it finishes the step and
      // checkpoints, as on Ctrl-C at the command line.
      std::raise(SIGINT);
    } else if (stop_.empty()) {
      stop_ = fmt::format("{} raised {}", who, describe_exception(e));
    }
    error = std::move(e);
  }

  py::object callback_;
  std::string stop_;  ///< the callback's reason to stop, once given
};

/// One column of the records as a new NumPy array.
template <class Record, class F>
py::array column(const std::vector<Record>& records, F field) {
  using T = decltype(field(records.front()));
  py::array_t<T> out(static_cast<py::ssize_t>(records.size()));
  T* data = out.mutable_data();
  for (std::size_t i = 0; i < records.size(); ++i) data[i] = field(records[i]);
  return out;
}

/// The columns of steps.csv, in its order.
py::dict step_columns(const std::vector<StepRecord>& r) {
  py::dict d;
  d["step"] = column(r, [](const StepRecord& s) { return s.step; });
  d["epoch"] = column(r, [](const StepRecord& s) { return s.epoch; });
  d["loss"] = column(r, [](const StepRecord& s) { return s.loss; });
  d["lambda"] = column(r, [](const StepRecord& s) { return s.lambda; });
  d["rho"] = column(r, [](const StepRecord& s) { return s.rho; });
  d["accepted"] = column(r, [](const StepRecord& s) { return s.accepted; });
  d["directions"] = column(r, [](const StepRecord& s) { return std::int64_t{s.directions}; });
  d["iterations"] = column(r, [](const StepRecord& s) { return std::int64_t{s.iterations}; });
  d["curvature_products"] = column(r, [](const StepRecord& s) { return s.curvature_products; });
  d["step_norm"] = column(r, [](const StepRecord& s) { return s.step_norm; });
  d["seconds"] = column(r, [](const StepRecord& s) { return s.seconds; });
  d["propose_seconds"] = column(r, [](const StepRecord& s) { return s.propose_seconds; });
  d["debias_seconds"] = column(r, [](const StepRecord& s) { return s.debias_seconds; });
  d["measure_seconds"] = column(r, [](const StepRecord& s) { return s.measure_seconds; });
  py::list notes;
  for (const StepRecord& s : r) notes.append(s.note);
  d["note"] = py::module_::import("numpy").attr("array")(notes, py::arg("dtype") = "str");
  return d;
}

/// The columns of eval.csv, in its order.
py::dict eval_columns(const std::vector<EvalRecord>& r) {
  py::dict d;
  d["step"] = column(r, [](const EvalRecord& e) { return e.step; });
  d["epoch"] = column(r, [](const EvalRecord& e) { return e.epoch; });
  d["seconds"] = column(r, [](const EvalRecord& e) { return e.seconds; });
  d["train_loss"] = column(r, [](const EvalRecord& e) { return e.train_loss; });
  d["val_loss"] = column(r, [](const EvalRecord& e) { return e.val_loss; });
  d["val_accuracy"] = column(r, [](const EvalRecord& e) { return e.val_accuracy; });
  d["test_loss"] = column(r, [](const EvalRecord& e) { return e.test_loss; });
  d["test_accuracy"] = column(r, [](const EvalRecord& e) { return e.test_accuracy; });
  d["train_seconds"] = column(r, [](const EvalRecord& e) { return e.train_seconds; });
  return d;
}

struct TrainResult {
  RunSummary summary;
  py::dict step_records;
  py::dict eval_records;
};

TrainResult run(const py::object& config, const py::object& set, const py::object& out, bool resume,
                bool overwrite, const py::object& callback, const py::object& plugin_path) {
  if (config.is_none() && set.is_none()) {
    throw Error("quadra.train needs config (an INI file or a dict) and/or set");
  }
  if (resume && overwrite) {
    throw Error(
        "resume=True continues the run in train.out and overwrite=True replaces it; give one of "
        "them");
  }
  if (!callback.is_none() && PyCallable_Check(callback.ptr()) == 0) {
    throw Error(fmt::format("callback: expected a callable or None, got {}",
                            py::repr(callback).cast<std::string>()));
  }
  if (!plugin_path.is_none()) load_plugins(plugin_path);
  RunScope scope("quadra.train");
  const PluginHost& host = plugin_host();
  // With the GIL: resolving creates plugins through the shared host.
  const train::ResolvedRun resolved = train::resolve_run(make_config(config, set, out), host);
  const data::DataSplits data = [&] {
    py::gil_scoped_release release;
    return train::load_run_data(resolved.settings);
  }();
  // A Ctrl-C while the data loaded: nothing to checkpoint yet.
  if (PyErr_CheckSignals() != 0) throw py::error_already_set();

  PythonObserver observer(callback);
  train::RunRequest request;
  request.settings = resolved.settings;
  request.optimizer = &resolved.optimizer;
  request.host = &host;
  request.data = &data;
  request.resolved_config = resolved.resolved_config;
  request.resume = resume;
  request.overwrite = overwrite;
  request.observers.push_back(&observer);

  TrainResult result;
  result.summary = scope.without_gil([&] { return train::run_training(request); });
  if (observer.error.has_value()) throw *observer.error;
  if (result.summary.interrupted) {
    PyErr_SetNone(PyExc_KeyboardInterrupt);
    throw py::error_already_set();
  }
  result.step_records = step_columns(observer.steps);
  result.eval_records = eval_columns(observer.evaluations);
  return result;
}

std::string eval_repr(const EvalRecord& e) {
  return fmt::format("EvalRecord(step={}, epoch={:.4g}, val_loss={:.6g}, val_accuracy={:.4g})",
                     e.step, e.epoch, e.val_loss, e.val_accuracy);
}

}  // namespace

void register_train(py::module_& m) {
  py::class_<StepRecord>(m, "StepRecord",
                         "One optimizer step, as a row of steps.csv; the callback's event at a "
                         "step boundary (kind \"step\").")
      .def_property_readonly("kind", [](const StepRecord&) { return "step"; })
      .def_readonly("step", &StepRecord::step, "0-based, accepted and rejected steps alike")
      .def_readonly("epoch", &StepRecord::epoch)
      .def_readonly("loss", &StepRecord::loss, "gradient-batch loss at the start of the step")
      .def_readonly("lambda_", &StepRecord::lambda, "the damping used (steps.csv's lambda)")
      .def_readonly("rho", &StepRecord::rho, "reduction ratio (nan: not measured)")
      .def_readonly("accepted", &StepRecord::accepted)
      .def_readonly("note", &StepRecord::note, "why the step was rejected, or empty")
      .def_readonly("directions", &StepRecord::directions)
      .def_readonly("iterations", &StepRecord::iterations)
      .def_readonly("curvature_products", &StepRecord::curvature_products)
      .def_readonly("step_norm", &StepRecord::step_norm)
      .def_readonly("seconds", &StepRecord::seconds)
      .def_readonly("propose_seconds", &StepRecord::propose_seconds)
      .def_readonly("debias_seconds", &StepRecord::debias_seconds)
      .def_readonly("measure_seconds", &StepRecord::measure_seconds)
      .def("__repr__", [](const StepRecord& s) {
        return fmt::format("StepRecord(step={}, loss={:.6g}, accepted={})", s.step, s.loss,
                           s.accepted ? "True" : "False");
      });

  py::class_<EvalRecord>(m, "EvalRecord",
                         "One evaluation, as a row of eval.csv; the callback's event at an "
                         "evaluation boundary (kind \"evaluation\").")
      .def_property_readonly("kind", [](const EvalRecord&) { return "evaluation"; })
      .def_readonly("step", &EvalRecord::step, "steps taken before it")
      .def_readonly("epoch", &EvalRecord::epoch)
      .def_readonly("seconds", &EvalRecord::seconds)
      .def_readonly("train_seconds", &EvalRecord::train_seconds)
      .def_readonly("train_loss", &EvalRecord::train_loss)
      .def_readonly("val_loss", &EvalRecord::val_loss)
      .def_readonly("val_accuracy", &EvalRecord::val_accuracy, "nan for regression")
      .def_readonly("test_loss", &EvalRecord::test_loss, "nan without a test set")
      .def_readonly("test_accuracy", &EvalRecord::test_accuracy)
      .def("__repr__", &eval_repr);

  py::class_<TrainResult>(m, "TrainResult",
                          "What quadra.train returns: the run's summary and "
                          "the records of this call.")
      .def_property_readonly("stop_reason",
                             [](const TrainResult& r) { return r.summary.stop_reason; })
      .def_property_readonly("failed", [](const TrainResult& r) { return r.summary.failed; })
      .def_property_readonly("steps", [](const TrainResult& r) { return r.summary.steps; })
      .def_property_readonly("rejected_steps",
                             [](const TrainResult& r) { return r.summary.rejected_steps; })
      .def_property_readonly("curvature_products",
                             [](const TrainResult& r) { return r.summary.curvature_products; })
      .def_property_readonly("seconds", [](const TrainResult& r) { return r.summary.seconds; })
      .def_property_readonly("final_eval",
                             [](const TrainResult& r) { return r.summary.final_eval; })
      .def_property_readonly("best_eval", [](const TrainResult& r) { return r.summary.best_eval; })
      .def_property_readonly("out", [](const TrainResult& r) { return r.summary.out.string(); })
      .def_readonly("step_records", &TrainResult::step_records,
                    "steps.csv's columns as NumPy arrays, for the steps of this call")
      .def_readonly("eval_records", &TrainResult::eval_records,
                    "eval.csv's columns as NumPy arrays, for the evaluations of this call")
      .def("__repr__", [](const TrainResult& r) {
        return fmt::format("TrainResult(steps={}, stop_reason='{}', final_eval={}, out='{}')",
                           r.summary.steps, r.summary.stop_reason, eval_repr(r.summary.final_eval),
                           r.summary.out.string());
      });

  m.def("train", &run, py::arg("config") = py::none(), py::arg("set") = py::none(),
        py::arg("out") = py::none(), py::arg("resume") = false, py::arg("overwrite") = false,
        py::arg("callback") = py::none(), py::arg("plugin_path") = py::none(),
        R"(Trains as `quadra train --config CONFIG --set K=V ... [--resume|--overwrite]` does,
on the calling thread without the GIL, and returns a TrainResult.

config: an INI file, a dict of sections ({"model": {"spec": ...}, "train": {...}}) or of
dotted keys ({"train.max_steps": 5}). set: {"section.key": value} applied after it, as --set
(bools as true/false, other values with str()). out: overrides train.out. plugin_path: a
plugin directory or library loaded first, as quadra.load_plugins.

callback(event): called on this thread after every step (a StepRecord) and every evaluation
(an EvalRecord); returning a non-empty string stops the run after the step in progress with
that string as the stop reason (checkpoint written; resume=True continues it); None or False
go on. If the callback raises, the run stops there and the exception propagates once its
files are written. Ctrl-C finishes the step, checkpoints and raises KeyboardInterrupt; the run
continues with resume=True. Bad configs raise quadra.Error with the command line's message.)");
}

}  // namespace quadra::python
