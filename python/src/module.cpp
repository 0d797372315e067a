// The extension module quadra._quadra; python/quadra/__init__.py is the package around it.

#include "module.hpp"

PYBIND11_MODULE(_quadra, m) {
  m.doc() = "quadra's engine, curvature plugins and linear algebra on NumPy arrays.";
  quadra::python::register_runtime(m);
  quadra::python::register_models(m);
  quadra::python::register_curvature(m);
  quadra::python::register_linalg(m);
  quadra::python::register_train(m);
  quadra::python::register_commands(m);
  quadra::python::register_strategies(m);
}
