#pragma once
// NumPy arrays in and out of the engine. Inputs are checked (dtype, shape, contiguity, finite
// values) with messages that name the argument, what was found and what was expected; they are
// used in place when their dtype and layout are the engine's, and converted into owned storage
// otherwise. Outputs are NumPy arrays the engine writes into directly.
//
// Every function here needs the GIL; the views they return stay valid without it as long as
// the argument object (kept alive by the view) is not resized.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <quadra/nn/network.hpp>
#include <quadra/sdk/types.hpp>
#include <string>
#include <vector>

namespace quadra::python {

namespace py = pybind11;

/// NumPy's spelling of a shape: (3, 4), (5,), ().
std::string shape_string(const std::vector<std::int64_t>& shape);
std::vector<std::int64_t> shape_of(const py::array& array);
/// "float32", "int64", "object", ...
std::string dtype_name(const py::array& array);

/// `os.fspath(object)`: str and os.PathLike arguments as text. Throws quadra::Error naming
/// `name` for anything else.
std::string path_text(const py::handle& object, const char* name);

/// `object` as a NumPy array without copying when it already is one (array-likes such as lists
/// and CPU tensors are converted by NumPy). Throws quadra::Error naming `name` otherwise.
py::array as_array(const py::handle& object, const std::string& name);

/// Whether the array's elements are float32 or float64 (S = float / double).
template <class S>
bool has_dtype(const py::array& array);

/// A 1-D float32/float64 argument of `size` elements as a contiguous vector of S.
template <class S>
class VectorArg {
 public:
  VectorArg(const py::handle& object, const std::string& name, Index size);
  [[nodiscard]] ConstVectorRef<S> ref() const {
    return {Eigen::Map<const Vector<S>>(data_, size_)};
  }
  [[nodiscard]] const S* data() const noexcept { return data_; }
  /// Whether the argument's memory is used as it is (no conversion).
  [[nodiscard]] bool zero_copy() const noexcept { return storage_.size() == 0 && size_ > 0; }

 private:
  py::array array_;
  Vector<S> storage_;
  const S* data_ = nullptr;
  Index size_ = 0;
};

/// A 2-D float32/float64 argument of `rows` rows (any number of columns) as a column-major
/// matrix of S: a view of a Fortran-ordered array of dtype S, a converted copy otherwise (a
/// C-ordered P x K block is copied, since its columns are strided).
template <class S>
class MatrixArg {
 public:
  MatrixArg(const py::handle& object, const std::string& name, Index rows);
  [[nodiscard]] Eigen::Map<const Matrix<S>> map() const { return {data_, rows_, cols_}; }
  [[nodiscard]] Index cols() const noexcept { return cols_; }

 private:
  py::array array_;
  Matrix<S> storage_;
  const S* data_ = nullptr;
  Index rows_ = 0;
  Index cols_ = 0;
};

/// A batch of network inputs, N x (the model's input shape or its flat size), as the engine's
/// features x N column-major matrix: a view of a C-ordered array of dtype S; float32/float64 of
/// the other precision converted; uint8 converted and scaled by 1/255 (images, as the CLI does).
template <class S>
class InputsArg {
 public:
  InputsArg(const py::handle& object, const std::string& name, const nn::Network& network);
  [[nodiscard]] Eigen::Map<const Matrix<S>> map() const { return {data_, features_, samples_}; }
  [[nodiscard]] Index samples() const noexcept { return samples_; }

 private:
  py::array array_;
  Matrix<S> storage_;
  const S* data_ = nullptr;
  Index features_ = 0;
  Index samples_ = 0;
};

/// Class labels (any integer dtype, shape (N,)) as int64, for cross-entropy.
std::vector<std::int64_t> labels_arg(const py::handle& object, const std::string& name, Index n);

/// One float per sample and output (shape (N, C), or (N,) when C == 1) as C x N: regression
/// targets for mse, output cotangents for a VJP. `what` names them in messages.
template <class S>
Matrix<S> values_arg(const py::handle& object, const std::string& name, Index n, Index c,
                     const char* what);

/// A new, uninitialised C-ordered NumPy array of dtype S.
template <class S>
py::array_t<S> new_array(const std::vector<py::ssize_t>& shape);
/// A new, uninitialised Fortran-ordered rows x cols array of dtype S.
template <class S>
py::array_t<S, py::array::f_style> new_fortran_array(py::ssize_t rows, py::ssize_t cols);

/// The engine's matrix moved into a NumPy array without copying: an N x C (C-ordered) array
/// over the column-major C x N matrix `m`.
template <class S>
py::array_t<S> transpose_to_numpy(Matrix<S>&& m);
/// A column-major rows x cols matrix moved into a Fortran-ordered NumPy array.
template <class S>
py::array_t<S> matrix_to_numpy(Matrix<S>&& m);

/// Throws quadra::Error at the first NaN or infinity of the `count` values at `data`, naming
/// the element as NumPy indexes it: "NAME: element 17 (index (3, 2)) is nan; expected finite
/// numbers".
template <class S>
void require_finite(const S* data, Index count, const std::vector<std::int64_t>& shape,
                    bool fortran_order, const std::string& name);

}  // namespace quadra::python
