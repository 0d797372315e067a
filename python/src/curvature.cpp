// quadra.Curvature: curvature plugins created by the plugin host, bound to a batch, as
// operators on NumPy vectors.

#include "curvature.hpp"

#include <fmt/format.h>

#include <quadra/error.hpp>
#include <quadra/option_parsing.hpp>
#include <string>
#include <utility>

#include "arrays.hpp"

namespace quadra::python {

namespace {

/// Keyword arguments as the text a config file would hold (the plugin's schema parses them).
RawOptions raw_options(const py::kwargs& options) {
  RawOptions raw;
  for (const auto& [key, value] : options) {
    const auto name = key.cast<std::string>();
    if (py::isinstance<py::bool_>(value)) {
      raw[name] = value.cast<bool>() ? "true" : "false";
    } else if (py::isinstance<py::int_>(value) || py::isinstance<py::float_>(value) ||
               py::isinstance<py::str>(value)) {
      raw[name] = py::str(value).cast<std::string>();  // repr of a float round-trips
    } else {
      throw Error(fmt::format("curvature option {}={}: expected a bool, int, float or str", name,
                              py::repr(value).cast<std::string>()));
    }
  }
  return raw;
}

template <class S>
py::object create(const BatchPtr<S>& batch, const std::string& name, const py::kwargs& options) {
  auto created = plugin_host().create<CurvatureEstimator>(name, raw_options(options));
  if (!created.is_ok()) throw Error(created.status().message());
  auto state = std::make_shared<CurvatureState<S>>();
  state->batch = batch;
  state->estimator = std::move(created).value();
  state->name = name;
  state->id = batch->next_id++;
  without_gil(*batch, [&] { state->ensure_bound(); });
  return py::cast(PyCurvature{state});
}

template <class S>
py::object apply(CurvatureState<S>& c, const py::handle& v) {
  const Index n = c.dim();
  const py::array array = as_array(v, "v");
  if (array.ndim() == 2) {
    const MatrixArg<S> in(array, "V", n);
    auto out = new_fortran_array<S>(n, in.cols());
    Eigen::Map<Matrix<S>> result(out.mutable_data(), n, in.cols());
    c.run([&](CurvatureOperator<S>& op) {
      for (Index k = 0; k < in.cols(); ++k) check(op.apply(in.map().col(k), result.col(k)));
    });
    return out;
  }
  if (array.ndim() != 1) {
    throw Error(fmt::format("v: array has shape {}; expected ({},) or ({}, K)",
                            shape_string(shape_of(array)), n, n));
  }
  const VectorArg<S> in(array, "v", n);
  auto out = new_array<S>({static_cast<py::ssize_t>(n)});
  Eigen::Map<Vector<S>> result(out.mutable_data(), n);
  c.run([&](CurvatureOperator<S>& op) { check(op.apply(in.ref(), result)); });
  return out;
}

template <class S>
py::object solve(CurvatureState<S>& c, double lambda, const py::handle& v) {
  const VectorArg<double> in(v, "v", c.dim());
  Vector<double> out(c.dim());
  c.run([&](CurvatureOperator<S>&) { check(c.estimator->solve(lambda, in.ref(), out)); });
  auto result = new_array<S>({static_cast<py::ssize_t>(c.dim())});
  Eigen::Map<Vector<S>>(result.mutable_data(), c.dim()) = out.template cast<S>();
  return result;
}

template <class S>
py::object diagonal(CurvatureState<S>& c) {
  Vector<double> out(c.dim());
  c.run([&](CurvatureOperator<S>&) { check(c.estimator->diagonal(out)); });
  auto result = new_array<S>({static_cast<py::ssize_t>(c.dim())});
  Eigen::Map<Vector<S>>(result.mutable_data(), c.dim()) = out.template cast<S>();
  return result;
}

const char* structure_name(CurvatureStructure s) {
  switch (s) {
    case CurvatureStructure::kMatrixFree:
      return "matrix-free";
    case CurvatureStructure::kDiagonal:
      return "diagonal";
    case CurvatureStructure::kKronecker:
      return "kronecker";
  }
  return "?";
}

template <class F>
auto visit(const PyCurvature& c, F&& f) {
  return std::visit([&](const auto& state) { return f(*state); }, c.state);
}

constexpr const char* kCurvatureDoc = R"doc(A curvature matrix C (P x P, symmetric) of one plugin
on one batch: C @ v for a vector (P,), C @ V for a block (P, K), solve(lam, v) for plugins that
invert cheaply, and as_linear_operator() for SciPy. Products are exact means over the batch in
the batch's dtype; they release the GIL. v is used in place when it is contiguous and of C's
dtype, converted otherwise; a C-ordered block V is copied column by column (a Fortran-ordered one
is used in place).)doc";

}  // namespace

py::object make_curvature(const AnyBatch& batch, const std::string& name,
                          const py::kwargs& options) {
  return std::visit([&](const auto& b) { return create(b, name, options); }, batch);
}

void register_curvature(py::module_& m) {
  py::class_<PyCurvature>(m, "Curvature", kCurvatureDoc)
      .def_property_readonly(
          "name", [](const PyCurvature& c) { return visit(c, [](auto& s) { return s.name; }); },
          "The curvature plugin's name.")
      .def_property_readonly(
          "shape",
          [](const PyCurvature& c) {
            return visit(c, [](auto& s) { return py::make_tuple(s.dim(), s.dim()); });
          },
          "(P, P).")
      .def_property_readonly(
          "dtype",
          [](const PyCurvature& c) {
            const bool dbl =
                std::holds_alternative<std::shared_ptr<CurvatureState<double>>>(c.state);
            return py::dtype(dbl ? "float64" : "float32");
          },
          "The batch's dtype, that of every product.")
      .def_property_readonly(
          "structure",
          [](const PyCurvature& c) {
            return visit(c, [](auto& s) { return structure_name(s.estimator->structure()); });
          },
          "'matrix-free', 'diagonal' (diagonal() gives it) or 'kronecker'.")
      .def(
          "__matmul__",
          [](const PyCurvature& c, const py::handle& v) {
            return visit(c, [&](auto& s) { return apply(s, v); });
          },
          py::arg("v"), "C @ v (P,) or C @ V (P, K): a new array of C's dtype.")
      .def(
          "matvec",
          [](const PyCurvature& c, const py::handle& v) {
            return visit(c, [&](auto& s) { return apply(s, v); });
          },
          py::arg("v"), "The same as C @ v.")
      .def(
          "solve",
          [](const PyCurvature& c, double lam, const py::handle& v) {
            return visit(c, [&](auto& s) { return solve(s, lam, v); });
          },
          py::arg("lam"), py::arg("v"),
          "(C + lam I)^-1 v for plugins that invert cheaply (kfac, diag-ggn, diag-ef); the "
          "matrix-free ones raise quadra.Error (use quadra.cg). Computed in float64, returned "
          "in C's dtype.")
      .def(
          "diagonal",
          [](const PyCurvature& c) { return visit(c, [&](auto& s) { return diagonal(s); }); },
          "The diagonal of a 'diagonal'-structured C (diag-ggn, diag-ef); others raise "
          "quadra.Error.")
      .def("__repr__", [](const PyCurvature& c) {
        return visit(c, [](auto& s) {
          return fmt::format("quadra.Curvature('{}', shape=({}, {}), {})", s.name, s.dim(), s.dim(),
                             structure_name(s.estimator->structure()));
        });
      });
}

}  // namespace quadra::python
