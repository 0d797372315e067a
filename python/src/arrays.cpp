// NumPy arguments and results. See arrays.hpp.

#include "arrays.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <quadra/error.hpp>
#include <quadra/io/npy.hpp>
#include <type_traits>

namespace quadra::python {

namespace {

template <class S>
constexpr const char* scalar_name() {
  return std::is_same_v<S, double> ? "float64" : "float32";
}

bool is_c_contiguous(const py::array& a) { return (a.flags() & py::array::c_style) != 0; }
bool is_f_contiguous(const py::array& a) { return (a.flags() & py::array::f_style) != 0; }

std::string strides_string(const py::array& a) {
  std::vector<std::int64_t> strides;
  for (py::ssize_t i = 0; i < a.ndim(); ++i) strides.push_back(a.strides(i));
  return shape_string(strides);
}

/// Refuses float arrays that are not contiguous: the engine reads contiguous memory, and a
/// silent copy of a strided view would hide its cost.
[[noreturn]] void throw_not_contiguous(const py::array& a, const std::string& name,
                                       const char* wanted) {
  throw Error(
      fmt::format("{}: array of shape {} is not {} (strides {} bytes); pass "
                  "numpy.ascontiguousarray({}) or a copy",
                  name, shape_string(shape_of(a)), wanted, strides_string(a), name));
}

/// `count` elements of `a` (contiguous, float32 or float64) converted to S.
template <class S>
void convert_floats(const py::array& a, S* out, Index count) {
  if (has_dtype<float>(a)) {
    const auto* in = static_cast<const float*>(a.data());
    for (Index i = 0; i < count; ++i) out[i] = static_cast<S>(in[i]);
  } else {
    const auto* in = static_cast<const double*>(a.data());
    for (Index i = 0; i < count; ++i) out[i] = static_cast<S>(in[i]);
  }
}

bool is_float(const py::array& a) { return has_dtype<float>(a) || has_dtype<double>(a); }

/// C-order flat index of element `position` of a Fortran-ordered 2-D array.
std::int64_t c_order_index(const std::vector<std::int64_t>& shape, std::int64_t position) {
  if (shape.size() != 2) return position;
  const std::int64_t rows = shape[0];
  return (position % rows) * shape[1] + position / rows;
}

}  // namespace

std::string shape_string(const std::vector<std::int64_t>& shape) {
  if (shape.size() == 1) return fmt::format("({},)", shape[0]);
  return fmt::format("({})", fmt::join(shape, ", "));
}

std::vector<std::int64_t> shape_of(const py::array& array) {
  std::vector<std::int64_t> shape;
  for (py::ssize_t i = 0; i < array.ndim(); ++i) shape.push_back(array.shape(i));
  return shape;
}

std::string dtype_name(const py::array& array) {
  return py::str(array.dtype()).cast<std::string>();
}

std::string path_text(const py::handle& object, const char* name) {
  if (!py::isinstance<py::str>(object) && !py::hasattr(object, "__fspath__")) {
    throw Error(fmt::format("{}: expected a str or os.PathLike, found {}", name,
                            py::str(py::type::of(object).attr("__name__")).cast<std::string>()));
  }
  return py::module_::import("os").attr("fspath")(object).cast<std::string>();
}

py::array as_array(const py::handle& object, const std::string& name) {
  if (py::isinstance<py::array>(object)) return py::reinterpret_borrow<py::array>(object);
  py::array array = py::reinterpret_steal<py::array>(
      py::detail::npy_api::get().PyArray_FromAny_(object.ptr(), nullptr, 0, 0, 0, nullptr));
  if (!array) {
    PyErr_Clear();
    throw Error(fmt::format("{}: expected a NumPy array, found {}", name,
                            py::str(py::type::of(object).attr("__name__")).cast<std::string>()));
  }
  return array;
}

template <class S>
bool has_dtype(const py::array& array) {
  return array.dtype().kind() == 'f' && array.itemsize() == static_cast<py::ssize_t>(sizeof(S)) &&
         array.dtype().attr("isnative").cast<bool>();
}

template <class S>
void require_finite(const S* data, Index count, const std::vector<std::int64_t>& shape,
                    bool fortran_order, const std::string& name) {
  if (Eigen::Map<const Vector<S>>(data, count).allFinite()) return;
  for (Index i = 0; i < count; ++i) {
    if (!std::isfinite(data[i])) {
      const std::int64_t index = fortran_order ? c_order_index(shape, i) : i;
      throw Error(fmt::format("{}: {} is {}; expected finite numbers", name,
                              io::element_name(shape, index), static_cast<double>(data[i])));
    }
  }
}

template <class S>
VectorArg<S>::VectorArg(const py::handle& object, const std::string& name, Index size) {
  array_ = as_array(object, name);
  if (!is_float(array_)) {
    throw Error(fmt::format("{}: array has dtype {}; expected float32 or float64", name,
                            dtype_name(array_)));
  }
  if (array_.ndim() != 1 || array_.shape(0) != size) {
    throw Error(fmt::format("{}: array has shape {}; expected ({},), one entry per parameter", name,
                            shape_string(shape_of(array_)), size));
  }
  if (!is_c_contiguous(array_)) throw_not_contiguous(array_, name, "contiguous");
  size_ = size;
  if (has_dtype<S>(array_)) {
    data_ = static_cast<const S*>(array_.data());
  } else {
    storage_.resize(size);
    convert_floats<S>(array_, storage_.data(), size);
    data_ = storage_.data();
  }
  require_finite(data_, size_, shape_of(array_), false, name);
}

template <class S>
MatrixArg<S>::MatrixArg(const py::handle& object, const std::string& name, Index rows) {
  array_ = as_array(object, name);
  if (!is_float(array_)) {
    throw Error(fmt::format("{}: array has dtype {}; expected float32 or float64", name,
                            dtype_name(array_)));
  }
  if (array_.ndim() != 2 || array_.shape(0) != rows || array_.shape(1) < 1) {
    throw Error(fmt::format("{}: array has shape {}; expected ({}, K), one column per vector", name,
                            shape_string(shape_of(array_)), rows));
  }
  rows_ = rows;
  cols_ = array_.shape(1);
  const bool fortran = is_f_contiguous(array_);
  if (fortran && has_dtype<S>(array_)) {
    data_ = static_cast<const S*>(array_.data());
  } else if (fortran) {
    storage_.resize(rows_, cols_);
    convert_floats<S>(array_, storage_.data(), rows_ * cols_);
    data_ = storage_.data();
  } else if (is_c_contiguous(array_)) {
    storage_.resize(rows_, cols_);
    if (has_dtype<S>(array_)) {
      storage_ =
          Eigen::Map<const Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
              static_cast<const S*>(array_.data()), rows_, cols_);
    } else if (has_dtype<float>(array_)) {
      storage_ =
          Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
              static_cast<const float*>(array_.data()), rows_, cols_)
              .template cast<S>();
    } else {
      storage_ =
          Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
              static_cast<const double*>(array_.data()), rows_, cols_)
              .template cast<S>();
    }
    data_ = storage_.data();
  } else {
    throw_not_contiguous(array_, name, "contiguous (C or Fortran order)");
  }
  require_finite(data_, rows_ * cols_, shape_of(array_), true, name);
}

template <class S>
InputsArg<S>::InputsArg(const py::handle& object, const std::string& name,
                        const nn::Network& network) {
  array_ = as_array(object, name);
  const auto shape = shape_of(array_);
  const nn::TensorShape& want = network.input_shape();
  const bool is_uint8 = array_.dtype().is(py::dtype::of<std::uint8_t>());
  if (!is_float(array_) && !is_uint8) {
    throw Error(
        fmt::format("{}: inputs have dtype {}; expected uint8 (scaled by 1/255), float32 "
                    "or float64",
                    name, dtype_name(array_)));
  }
  if (shape.size() < 2) {
    throw Error(
        fmt::format("{}: inputs have shape {}; expected N x features or N x C x H x W "
                    "(one row per sample)",
                    name, shape_string(shape)));
  }
  samples_ = shape[0];
  Index features = 1;
  for (std::size_t i = 1; i < shape.size(); ++i) features *= shape[i];
  // Samples must have the model's input shape, or a flat layout of the same size (as the CLI).
  const bool same_dims =
      std::equal(shape.begin() + 1, shape.end(), want.dims.begin(), want.dims.end());
  if (!(same_dims || (shape.size() == 2 && features == want.size()) ||
        (want.is_flat() && features == want.size()))) {
    throw Error(
        fmt::format("{}: inputs have shape {} ({} features per sample); the model '{}' "
                    "expects {} per sample",
                    name, shape_string(shape), features, network.spec(), want.str()));
  }
  if (samples_ == 0)
    throw Error(fmt::format("{}: the batch is empty; expected at least one sample", name));
  if (!is_c_contiguous(array_)) throw_not_contiguous(array_, name, "C-contiguous");
  features_ = features;
  const Index count = features_ * samples_;
  if (is_uint8) {
    storage_.resize(features_, samples_);
    const auto* in = static_cast<const std::uint8_t*>(array_.data());
    for (Index i = 0; i < count; ++i) storage_.data()[i] = static_cast<S>(in[i]) / S(255);
    data_ = storage_.data();
    return;
  }
  if (has_dtype<S>(array_)) {
    data_ = static_cast<const S*>(array_.data());
  } else {
    storage_.resize(features_, samples_);
    convert_floats<S>(array_, storage_.data(), count);
    data_ = storage_.data();
  }
  require_finite(data_, count, shape, false, name);
}

std::vector<std::int64_t> labels_arg(const py::handle& object, const std::string& name, Index n) {
  py::array array = as_array(object, name);
  const char kind = array.dtype().kind();
  if (kind != 'i' && kind != 'u') {
    throw Error(
        fmt::format("{}: cross-entropy targets have dtype {}; expected integer class "
                    "labels (int64)",
                    name, dtype_name(array)));
  }
  if (array.ndim() != 1 || array.shape(0) != n) {
    throw Error(fmt::format("{}: targets have shape {}; expected ({},), one label per input", name,
                            shape_string(shape_of(array)), n));
  }
  if (kind == 'u' && array.itemsize() == 8) {  // uint64 above the int64 range would wrap
    const auto raw = py::array_t<std::uint64_t, py::array::c_style | py::array::forcecast>(array);
    for (Index i = 0; i < n; ++i) {
      if (raw.data()[i] > static_cast<std::uint64_t>(INT64_MAX)) {
        throw Error(fmt::format("{}: label {} of sample {} is outside the int64 range", name,
                                raw.data()[i], i));
      }
    }
  }
  // Copied: the engine keeps labels as int64 (the range is checked when binding).
  const auto labels = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>(array);
  return std::vector<std::int64_t>(labels.data(), labels.data() + n);
}

template <class S>
Matrix<S> values_arg(const py::handle& object, const std::string& name, Index n, Index c,
                     const char* what) {
  py::array array = as_array(object, name);
  if (!is_float(array)) {
    throw Error(fmt::format("{}: {} have dtype {}; expected float32 or float64", name, what,
                            dtype_name(array)));
  }
  const auto shape = shape_of(array);
  const bool ok =
      shape == std::vector<std::int64_t>{n, c} || (c == 1 && shape == std::vector<std::int64_t>{n});
  if (!ok) {
    throw Error(fmt::format("{}: {} have shape {}; expected ({}, {}) (inputs x model outputs)",
                            name, what, shape_string(shape), n, c));
  }
  if (!is_c_contiguous(array)) throw_not_contiguous(array, name, "C-contiguous");
  Matrix<S> values(c, n);  // the C-order N x C bytes are the column-major C x N matrix
  convert_floats<S>(array, values.data(), n * c);
  require_finite(values.data(), n * c, shape, false, name);
  return values;
}

template <class S>
py::array_t<S> new_array(const std::vector<py::ssize_t>& shape) {
  return py::array_t<S>(shape);
}

template <class S>
py::array_t<S, py::array::f_style> new_fortran_array(py::ssize_t rows, py::ssize_t cols) {
  return py::array_t<S, py::array::f_style>({rows, cols});
}

template <class S>
py::array_t<S> transpose_to_numpy(Matrix<S>&& m) {
  auto* owned = new Matrix<S>(std::move(m));
  py::capsule free_when_done(owned, [](void* p) { delete static_cast<Matrix<S>*>(p); });
  const auto rows = static_cast<py::ssize_t>(owned->rows());
  const auto cols = static_cast<py::ssize_t>(owned->cols());
  return py::array_t<S>(
      {cols, rows},
      {rows * static_cast<py::ssize_t>(sizeof(S)), static_cast<py::ssize_t>(sizeof(S))},
      owned->data(), free_when_done);
}

template <class S>
py::array_t<S> matrix_to_numpy(Matrix<S>&& m) {
  auto* owned = new Matrix<S>(std::move(m));
  py::capsule free_when_done(owned, [](void* p) { delete static_cast<Matrix<S>*>(p); });
  const auto rows = static_cast<py::ssize_t>(owned->rows());
  const auto cols = static_cast<py::ssize_t>(owned->cols());
  return py::array_t<S>(
      {rows, cols},
      {static_cast<py::ssize_t>(sizeof(S)), rows * static_cast<py::ssize_t>(sizeof(S))},
      owned->data(), free_when_done);
}

#define QUADRA_PYTHON_INSTANTIATE(S)                                                          \
  template bool has_dtype<S>(const py::array&);                                               \
  template void require_finite<S>(const S*, Index, const std::vector<std::int64_t>&, bool,    \
                                  const std::string&);                                        \
  template class VectorArg<S>;                                                                \
  template class MatrixArg<S>;                                                                \
  template class InputsArg<S>;                                                                \
  template Matrix<S> values_arg<S>(const py::handle&, const std::string&, Index, Index,       \
                                   const char*);                                              \
  template py::array_t<S> new_array<S>(const std::vector<py::ssize_t>&);                      \
  template py::array_t<S, py::array::f_style> new_fortran_array<S>(py::ssize_t, py::ssize_t); \
  template py::array_t<S> transpose_to_numpy<S>(Matrix<S> &&);                                \
  template py::array_t<S> matrix_to_numpy<S>(Matrix<S> &&);
QUADRA_PYTHON_INSTANTIATE(float)
QUADRA_PYTHON_INSTANTIATE(double)
#undef QUADRA_PYTHON_INSTANTIATE

}  // namespace quadra::python
