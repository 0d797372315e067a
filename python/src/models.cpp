// quadra.Model (a network and its parameters) and quadra.Batch (one batch bound to the engine).

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <fmt/std.h>
#include <pybind11/stl.h>

#include <map>
#include <memory>
#include <optional>
#include <quadra/data/source.hpp>
#include <quadra/error.hpp>
#include <quadra/io/npy.hpp>
#include <quadra/nn/network.hpp>
#include <quadra/nn/serialization.hpp>
#include <string>
#include <utility>
#include <vector>

#include "arrays.hpp"
#include "batch.hpp"
#include "module.hpp"

namespace quadra::python {

namespace {

/// input_shape=784, (1, 28, 28), [784] or "1x28x28".
nn::TensorShape shape_arg(const py::handle& object) {
  if (py::isinstance<py::str>(object)) return nn::parse_shape(object.cast<std::string>());
  // Integers include NumPy's (anything with __index__), booleans do not.
  auto is_integer = [](const py::handle& h) {
    return !py::isinstance<py::bool_>(h) &&
           (py::isinstance<py::int_>(h) || py::hasattr(h, "__index__"));
  };
  std::vector<long long> dims;
  if (py::isinstance<py::sequence>(object)) {  // first: arrays have __index__ too
    for (const py::handle item : object) {
      if (!is_integer(item)) {
        dims.clear();
        break;
      }
      dims.push_back(py::int_(py::reinterpret_borrow<py::object>(item)).cast<long long>());
    }
    if (dims.empty()) {
      throw Error(fmt::format("input_shape {}: expected integers such as (1, 28, 28)",
                              py::repr(object).cast<std::string>()));
    }
  } else if (is_integer(object)) {
    dims.push_back(py::int_(py::reinterpret_borrow<py::object>(object)).cast<long long>());
  } else {
    throw Error(
        fmt::format("input_shape {}: expected an int (784), a tuple ((1, 28, 28)) or a "
                    "string ('1x28x28')",
                    py::repr(object).cast<std::string>()));
  }
  return nn::parse_shape(fmt::format("{}", fmt::join(dims, "x")));
}

bool parse_precision(const std::string& precision) {
  if (precision == "float32") return false;
  if (precision == "float64") return true;
  throw Error(fmt::format("precision '{}' is not float32 or float64", precision));
}

struct PyModel {
  std::shared_ptr<const nn::Network> network;
  /// The parameters, owned by a NumPy array that `Model.parameters` hands out as it is.
  py::array_t<double> params;
  std::optional<data::FeatureTransform> preprocessing;

  [[nodiscard]] Eigen::Map<const Vector<double>> param_map() const {
    return {params.data(), network->num_parameters()};
  }

  void set_params(ConstVectorRef<double> values) {
    std::copy(values.data(), values.data() + values.size(), params.mutable_data());
  }

  [[nodiscard]] bool is_integer_buffer(const std::string& key) const {
    for (const nn::BufferInfo& b : network->buffers()) {
      if (b.is_integer && b.name == key) return true;
    }
    return false;
  }

  void load_state_dict(const py::handle& mapping) {
    if (!py::isinstance<py::dict>(mapping) && !py::hasattr(mapping, "items")) {
      throw Error(fmt::format("load_state_dict: expected a dict of arrays, found {}",
                              py::str(py::type::of(mapping).attr("__name__")).cast<std::string>()));
    }
    std::map<std::string, io::NpyArray> arrays;
    for (const py::handle item : mapping.attr("items")()) {
      const auto pair = item.cast<py::tuple>();
      if (!py::isinstance<py::str>(pair[0])) {
        throw Error(fmt::format("load_state_dict: key {} is not a str",
                                py::repr(pair[0]).cast<std::string>()));
      }
      const auto key = pair[0].cast<std::string>();
      const std::string name = fmt::format("load_state_dict['{}']", key);
      const py::array array = as_array(pair[1], name);
      std::vector<std::int64_t> shape = shape_of(array);
      if (has_dtype<float>(array)) {
        const auto c = py::array_t<float, py::array::c_style | py::array::forcecast>(array);
        arrays.emplace(key, io::NpyArray::from<float>(shape, c.data()));
      } else if (has_dtype<double>(array)) {
        const auto c = py::array_t<double, py::array::c_style | py::array::forcecast>(array);
        arrays.emplace(key, io::NpyArray::from<double>(shape, c.data()));
      } else if (array.dtype().kind() == 'i' && is_integer_buffer(key)) {
        // num_batches_tracked, as PyTorch has it
        const auto c =
            py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>(array);
        arrays.emplace(key, io::NpyArray::from<std::int64_t>(shape, c.data()));
      } else {
        throw Error(fmt::format("{}: array has dtype {}; expected float32 or float64", name,
                                dtype_name(array)));
      }
    }
    // The model-file reader's checks and messages: missing, unexpected, shape, finite; an
    // integer array anywhere but a buffer is refused there.
    const Vector<double> values = nn::parameters_from_arrays<double>(arrays, *network, "load_state_dict");
    std::vector<double> buffers = nn::buffers_from_arrays(arrays, *network, "load_state_dict");
    if (!network->buffers().empty()) {
      // Networks are shared with bound batches as immutable: the buffers go into a copy.
      auto updated = std::make_shared<nn::Network>(*network);
      updated->set_buffer_values(std::move(buffers));
      network = std::move(updated);
    }
    set_params(values);
  }

  [[nodiscard]] py::dict state_dict() const {
    py::dict out;
    const double* base = params.data();
    for (const nn::ParameterInfo& info : network->parameters()) {
      std::vector<py::ssize_t> shape(info.shape.begin(), info.shape.end());
      std::vector<py::ssize_t> strides(shape.size());
      py::ssize_t stride = sizeof(double);
      for (std::size_t i = shape.size(); i-- > 0;) {
        strides[i] = stride;
        stride *= shape[i];
      }
      // A view whose base is the parameter array, which it keeps alive.
      out[py::str(info.name)] = py::array_t<double>(shape, strides, base + info.offset, params);
    }
    // Buffers (BatchNorm's running statistics) as copies: float64, num_batches_tracked int64.
    const std::vector<double>& values = network->buffer_values();
    for (const nn::BufferInfo& info : network->buffers()) {
      const std::vector<py::ssize_t> shape(info.shape.begin(), info.shape.end());
      const auto at = [&](Index i) { return values[static_cast<std::size_t>(info.offset + i)]; };
      if (info.is_integer) {
        py::array_t<std::int64_t> a(shape);
        for (Index i = 0; i < info.size; ++i) a.mutable_data()[i] = static_cast<std::int64_t>(at(i));
        out[py::str(info.name)] = a;
      } else {
        py::array_t<double> a(shape);
        for (Index i = 0; i < info.size; ++i) a.mutable_data()[i] = at(i);
        out[py::str(info.name)] = a;
      }
    }
    return out;
  }
};

PyModel make_model(const py::object& spec_or_file, const py::object& input_shape,
                   std::uint64_t seed, const py::object& weights, const py::object& batch_norm) {
  PyModel model;
  const bool is_path_like = !py::isinstance<py::str>(spec_or_file);
  const std::string arg = path_text(spec_or_file, "Model");
  Vector<double> params;
  // A missing "x.npz" is a missing file, not a spec with an unknown layer.
  const bool npz_name = arg.size() > 4 && arg.compare(arg.size() - 4, 4, ".npz") == 0;
  if (is_path_like || npz_name || nn::looks_like_model_file(arg)) {
    auto loaded = nn::load_model<double>(arg);
    if (!input_shape.is_none() && shape_arg(input_shape) != loaded.network.input_shape()) {
      throw Error(fmt::format("input_shape {} differs from the model file's input shape {}",
                              shape_arg(input_shape).str(), loaded.network.input_shape().str()));
    }
    model.network = std::make_shared<const nn::Network>(std::move(loaded.network));
    params = std::move(loaded.params);
    model.preprocessing = std::move(loaded.preprocessing);
  } else {
    if (input_shape.is_none()) {
      throw Error(
          fmt::format("Model('{}'): a layer spec needs input_shape, e.g. input_shape=784 "
                      "or input_shape=(1, 28, 28)",
                      arg));
    }
    model.network = std::make_shared<const nn::Network>(arg, shape_arg(input_shape));
    params = model.network->initial_parameters<double>(seed);
  }
  if (!batch_norm.is_none()) {
    if (!py::isinstance<py::str>(batch_norm)) {
      throw Error(fmt::format("batch_norm: expected 'running' or 'batch', found a {}",
                              py::str(py::type::of(batch_norm).attr("__name__")).cast<std::string>()));
    }
    auto updated = std::make_shared<nn::Network>(*model.network);
    updated->set_batch_norm(nn::parse_norm_mode(batch_norm.cast<std::string>(), "batch_norm"));
    model.network = std::move(updated);
  }
  model.params = py::array_t<double>(static_cast<py::ssize_t>(params.size()));
  model.set_params(params);
  if (!weights.is_none()) {
    if (py::isinstance<py::str>(weights) || py::hasattr(weights, "__fspath__")) {
      std::vector<double> buffers;
      model.set_params(nn::load_weights<double>(path_text(weights, "weights"), *model.network, &buffers));
      auto updated = std::make_shared<nn::Network>(*model.network);
      updated->set_buffer_values(std::move(buffers));
      model.network = std::move(updated);
    } else {
      model.load_state_dict(weights);
    }
  }
  return model;
}

/// The model's parameters in precision S (a copy: bound batches own theirs), checked here since
/// writes into the `parameters` view are not (and float64 values may overflow float32).
template <class S>
Vector<S> params_as(const PyModel& model) {
  Vector<S> params = model.param_map().template cast<S>();
  require_finite(params.data(), params.size(), {params.size()}, false, "model.parameters");
  return params;
}

template <class S>
py::array_t<S> forward(const PyModel& model, const py::handle& x) {
  const InputsArg<S> inputs(x, "X", *model.network);
  const Vector<S> params = params_as<S>(model);
  Matrix<S> outputs;
  {
    py::gil_scoped_release release;
    outputs = model.network->forward<S>(params, inputs.map());
  }
  return transpose_to_numpy<S>(std::move(outputs));
}

template <class S>
py::array_t<S> preprocess(const PyModel& model, const py::handle& x) {
  const InputsArg<S> inputs(x, "X", *model.network);
  Matrix<S> out = inputs.map();
  if (model.preprocessing) {
    model.preprocessing->apply(out.data(), out.rows(), out.cols());
  }
  return transpose_to_numpy<S>(std::move(out));
}

/// Whether X's dtype asks for float64 (float32 and uint8 inputs run in float32).
bool wants_double(const py::handle& x) {
  const py::array array = as_array(x, "X");
  return has_dtype<double>(array);
}

// ---- Batch -------------------------------------------------------------------------------

template <class S>
BatchPtr<S> bind_batch(const PyModel& model, const py::handle& x, const py::handle& y,
                       nn::Loss loss) {
  const InputsArg<S> inputs(x, "X", *model.network);
  const Index n = inputs.samples();
  nn::Targets<S> targets = loss == nn::Loss::kCrossEntropy
                               ? nn::Targets<S>::from_labels(labels_arg(y, "y", n))
                               : nn::Targets<S>::from_values(values_arg<S>(
                                     y, "y", n, model.network->num_outputs(), "mse targets"));
  const Vector<S> params = params_as<S>(model);
  py::gil_scoped_release release;
  return std::make_shared<BatchState<S>>(
      nn::BoundBatch<S>(*model.network, params, inputs.map(), std::move(targets), loss));
}

template <class S>
py::array_t<S> gradient(BatchState<S>& s) {
  auto out = new_array<S>({static_cast<py::ssize_t>(s.batch.num_parameters())});
  Eigen::Map<Vector<S>> view(out.mutable_data(), s.batch.num_parameters());
  without_gil(s, [&] { s.batch.gradient(view); });
  return out;
}

template <class S>
py::array_t<S> per_sample_gradients(BatchState<S>& s) {
  const Index n = s.batch.batch_size();
  const Index p = s.batch.num_parameters();
  // N x P in C order is the engine's P x N column-major matrix: written in place.
  auto out = new_array<S>({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(p)});
  Eigen::Map<Matrix<S>> view(out.mutable_data(), p, n);
  without_gil(s, [&] { s.batch.per_sample_gradients(view); });
  return out;
}

template <class S>
py::array_t<S> diagonal(BatchState<S>& s, const std::string& kind) {
  const bool ggn = kind == "ggn";
  if (!ggn && kind != "ef" && kind != "empirical-fisher") {
    throw Error(fmt::format("diagonal('{}'): expected 'ggn' or 'ef' (the empirical Fisher)", kind));
  }
  auto out = new_array<S>({static_cast<py::ssize_t>(s.batch.num_parameters())});
  Eigen::Map<Vector<S>> view(out.mutable_data(), s.batch.num_parameters());
  without_gil(s, [&] {
    if (ggn) {
      s.batch.ggn_diagonal(view);
    } else {
      s.batch.empirical_fisher_diagonal(view);
    }
  });
  return out;
}

template <class S>
py::array_t<S> jvp(BatchState<S>& s, const py::handle& v) {
  const VectorArg<S> in(v, "v", s.batch.num_parameters());
  const Index n = s.batch.batch_size();
  const Index c = s.batch.num_outputs();
  // N x C in C order is the engine's C x N column-major matrix: written in place.
  auto out = new_array<S>({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(c)});
  Eigen::Map<Matrix<S>> view(out.mutable_data(), c, n);
  without_gil(s, [&] { s.batch.jvp(in.ref(), view); });
  return out;
}

template <class S>
py::array_t<S> vjp(BatchState<S>& s, const py::handle& u) {
  const Matrix<S> in =
      values_arg<S>(u, "U", s.batch.batch_size(), s.batch.num_outputs(), "output cotangents");
  auto out = new_array<S>({static_cast<py::ssize_t>(s.batch.num_parameters())});
  Eigen::Map<Vector<S>> view(out.mutable_data(), s.batch.num_parameters());
  without_gil(s, [&] { s.batch.vjp(in, view); });
  return out;
}

template <class S>
py::list kfac_factors(BatchState<S>& s, const std::string& type, int mc_samples,
                      std::uint64_t seed) {
  nn::KfacType kind = nn::KfacType::kType2;
  if (type == "mc") {
    kind = nn::KfacType::kMc;
  } else if (type == "empirical") {
    kind = nn::KfacType::kEmpirical;
  } else if (type != "type-2") {
    throw Error(
        fmt::format("kfac_factors(type='{}'): expected 'type-2', 'mc' or 'empirical'", type));
  }
  auto factors = without_gil(s, [&] { return s.batch.kfac_factors(kind, mc_samples, seed); });
  py::list out;
  for (auto& f : factors) {
    py::dict d;
    d["layer"] = f.layer;
    py::object bias = py::none();
    for (const nn::ParameterInfo& info : s.batch.network().parameters()) {
      if (info.layer != f.layer) continue;
      if (info.is_bias) {
        bias = py::str(info.name);
      } else {
        d["weight"] = info.name;
      }
    }
    d["bias"] = bias;
    d["a"] = matrix_to_numpy<S>(std::move(f.a));
    d["s"] = matrix_to_numpy<S>(std::move(f.s));
    out.append(std::move(d));
  }
  return out;
}

template <class S>
py::array_t<S> outputs(const BatchState<S>& s) {
  const Matrix<S>& f = s.batch.outputs();
  auto out = new_array<S>({static_cast<py::ssize_t>(f.cols()), static_cast<py::ssize_t>(f.rows())});
  Eigen::Map<Matrix<S>>(out.mutable_data(), f.rows(), f.cols()) = f;
  return out;
}

template <class S>
py::array_t<S> per_sample_losses(const BatchState<S>& s) {
  const Vector<S>& l = s.batch.per_sample_losses();
  auto out = new_array<S>({static_cast<py::ssize_t>(l.size())});
  Eigen::Map<Vector<S>>(out.mutable_data(), l.size()) = l;
  return out;
}

/// Calls f(state) on whichever precision the batch has.
template <class F>
auto visit(const PyBatch& b, F&& f) {
  return std::visit([&](const auto& state) { return f(*state); }, b.state);
}

constexpr const char* kModelDoc = R"doc(A network (a chain or a graph of residual blocks) and its parameters.

Model(spec_or_file, input_shape=None, seed=0, weights=None, batch_norm=None)

spec_or_file: a layer spec such as 'linear(256) tanh linear(10)' (then input_shape is required:
784, (1, 28, 28) or '1x28x28'; the parameters get PyTorch's default initialisation seeded with
`seed`), or a model file (.npz with __spec__ and __input_shape__, as quadra train writes; a
pathlib.Path is always taken as a file). weights: an .npz of weights or a dict name -> array in
PyTorch's state_dict layout (torch tensors without grad are accepted), loaded over the
initialisation. batch_norm: 'running' (PyTorch's eval mode, a per-sample map) or 'batch'
(train mode: bound batches normalise with their own mean and variance, the samples are coupled,
batch-level quantities are exact through the statistics and per-sample ones raise quadra.Error);
None keeps an ONNX file's training_mode; specs and model files start with 'running'.
Prediction (calling the model) always uses the running statistics.)doc";

constexpr const char* kBatchDoc = R"doc(One batch bound to the engine at the model's parameters
at binding time (later changes to the model do not reach it). Binding runs the forward pass
once; every quantity afterwards reuses it. Results are NumPy arrays of the batch's dtype, means
over the batch. Engine calls release the GIL; calls on one batch (and its curvature operators)
are serialised by a lock, so threads may share it.)doc";

}  // namespace

void register_models(py::module_& m) {
  py::class_<PyModel>(m, "Model", kModelDoc)
      .def(py::init(&make_model), py::arg("spec_or_file"), py::arg("input_shape") = py::none(),
           py::arg("seed") = 0, py::arg("weights") = py::none(),
           py::arg("batch_norm") = py::none())
      .def_property_readonly(
          "batch_norm",
          [](const PyModel& mo) -> py::object {
            for (const nn::LayerSpec& layer : mo.network->layers()) {
              if (layer.kind == nn::LayerKind::kBatchNorm) return py::str(nn::to_string(layer.mode));
            }
            return py::none();
          },
          "How the batchnorm layers normalise in bound batches: 'running' or 'batch'; None "
          "without batchnorm layers.")
      .def_property_readonly(
          "spec", [](const PyModel& mo) { return mo.network->spec(); }, "The canonical layer spec.")
      .def_property_readonly(
          "input_shape",
          [](const PyModel& mo) {
            py::tuple t(mo.network->input_shape().dims.size());
            for (std::size_t i = 0; i < t.size(); ++i) t[i] = mo.network->input_shape().dims[i];
            return t;
          },
          "Shape of one input sample, e.g. (784,) or (1, 28, 28).")
      .def_property_readonly(
          "num_outputs", [](const PyModel& mo) { return mo.network->num_outputs(); },
          "Outputs per sample (classes for cross-entropy).")
      .def_property_readonly(
          "num_parameters", [](const PyModel& mo) { return mo.network->num_parameters(); },
          "P, the length of `parameters`.")
      .def_property(
          "parameters", [](const PyModel& mo) { return mo.params; },
          [](PyModel& mo, const py::handle& v) {
            const VectorArg<double> values(v, "parameters", mo.network->num_parameters());
            mo.set_params(values.ref());
          },
          "All parameters as one float64 vector, layer after layer, each weight (PyTorch's "
          "layout, row-major) then its bias. A view: writing into it changes the model. "
          "Assigning an array copies it in (float32 or float64, finite).")
      .def_property_readonly(
          "preprocessing",
          [](const PyModel& mo) -> py::object {
            if (!mo.preprocessing) return py::none();
            return py::str(mo.preprocessing->describe());
          },
          "The input preprocessing a model file records (as text), or None.")
      .def("state_dict", &PyModel::state_dict,
           "Parameters by PyTorch's state_dict names ('0.weight', '0.bias', ...) and shapes: "
           "views of `parameters`, as PyTorch's state_dict shares its tensors' storage.")
      .def("load_state_dict", &PyModel::load_state_dict, py::arg("state_dict"),
           "Copies parameters from a dict name -> array (float32 or float64; torch tensors "
           "without grad work) with exactly the names and shapes of state_dict(). Raises "
           "quadra.Error naming a missing or unexpected key, a wrong shape or dtype, or a "
           "non-finite value.")
      .def(
          "save",
          [](const PyModel& mo, const py::object& path, const std::string& dtype) {
            const std::string file = path_text(path, "save");
            if (parse_precision(dtype)) {
              nn::save_model<double>(file, *mo.network, mo.param_map(), mo.preprocessing);
            } else {
              nn::save_model<float>(file, *mo.network, params_as<float>(mo), mo.preprocessing);
            }
          },
          py::arg("path"), py::arg("dtype") = "float32",
          "Writes a model file (weights in `dtype`, the spec, input shape and recorded "
          "preprocessing), atomically; quadra's command line and Model() read it.")
      .def(
          "__call__",
          [](const PyModel& mo, const py::handle& x, const py::object& precision) -> py::object {
            const bool dbl = precision.is_none() ? wants_double(x)
                                                 : parse_precision(precision.cast<std::string>());
            if (dbl) return forward<double>(mo, x);
            return forward<float>(mo, x);
          },
          py::arg("X"), py::arg("precision") = py::none(),
          "Network outputs (N x outputs) for inputs X (N x features or N x C x H x W; uint8 "
          "scaled by 1/255). precision: 'float32' or 'float64'; by default float64 for float64 "
          "X, float32 otherwise. X is taken as the network's input: a model file's recorded "
          "preprocessing is not applied (see preprocess).")
      .def(
          "preprocess",
          [](const PyModel& mo, const py::handle& x) -> py::object {
            if (wants_double(x)) return preprocess<double>(mo, x);
            return preprocess<float>(mo, x);
          },
          py::arg("X"),
          "Raw inputs as the network was trained on them: uint8 scaled by 1/255, then the model "
          "file's recorded preprocessing (none for a spec). Returns a new float array (N x "
          "features).")
      .def(
          "bind",
          [](const PyModel& mo, const py::handle& x, const py::handle& y, const std::string& loss,
             const std::string& precision) {
            const nn::Loss kind = nn::parse_loss(loss);
            if (parse_precision(precision)) return PyBatch{bind_batch<double>(mo, x, y, kind)};
            return PyBatch{bind_batch<float>(mo, x, y, kind)};
          },
          py::arg("X"), py::arg("y"), py::arg("loss") = "cross-entropy",
          py::arg("precision") = "float32",
          "Binds the batch (X, y) at the current parameters. X: N x features or N x C x H x W "
          "(uint8 scaled by 1/255, float32, float64; used in place when C-contiguous and of "
          "the batch's dtype, converted otherwise). y: integer class labels (N,) for "
          "'cross-entropy', float targets (N, outputs) for 'mse'. precision: 'float32' or "
          "'float64'.")
      .def("__repr__", [](const PyModel& mo) {
        return fmt::format("quadra.Model('{}', input_shape={}, {} parameters)", mo.network->spec(),
                           mo.network->input_shape().str(), mo.network->num_parameters());
      });

  py::class_<PyBatch>(m, "Batch", kBatchDoc)
      .def_property_readonly(
          "batch_size",
          [](const PyBatch& b) { return visit(b, [](auto& s) { return s.batch.batch_size(); }); },
          "N, the samples bound.")
      .def_property_readonly(
          "num_parameters",
          [](const PyBatch& b) {
            return visit(b, [](auto& s) { return s.batch.num_parameters(); });
          },
          "P, the length of gradients and curvature vectors.")
      .def_property_readonly(
          "num_outputs",
          [](const PyBatch& b) { return visit(b, [](auto& s) { return s.batch.num_outputs(); }); },
          "Outputs per sample.")
      .def_property_readonly(
          "dtype",
          [](const PyBatch& b) {
            return py::dtype(std::holds_alternative<BatchPtr<double>>(b.state) ? "float64"
                                                                               : "float32");
          },
          "numpy.float32 or numpy.float64: the precision of every result.")
      .def_property_readonly(
          "loss_kind",
          [](const PyBatch& b) {
            return visit(b, [](auto& s) { return nn::to_string(s.batch.loss_kind()); });
          },
          "'cross-entropy' or 'mse'.")
      .def(
          "loss",
          [](const PyBatch& b) {
            return visit(b, [](auto& s) { return static_cast<double>(s.batch.loss()); });
          },
          "The mean loss over the batch.")
      .def(
          "per_sample_losses",
          [](const PyBatch& b) {
            return visit(b, [](auto& s) -> py::object { return per_sample_losses(s); });
          },
          "The loss of every sample (N,).")
      .def(
          "outputs",
          [](const PyBatch& b) {
            return visit(b, [](auto& s) -> py::object { return outputs(s); });
          },
          "The network outputs (N x outputs).")
      .def(
          "gradient",
          [](const PyBatch& b) {
            return visit(b, [](auto& s) -> py::object { return gradient(s); });
          },
          "The gradient of the mean loss (P,).")
      .def(
          "per_sample_gradients",
          [](const PyBatch& b) {
            return visit(b, [](auto& s) -> py::object { return per_sample_gradients(s); });
          },
          "The gradient of every sample's loss (N x P; row n is the gradient of loss n, not "
          "divided by N). Needs N x P values of memory.")
      .def(
          "diagonal",
          [](const PyBatch& b, const std::string& kind) {
            return visit(b, [&](auto& s) -> py::object { return diagonal(s, kind); });
          },
          py::arg("kind") = "ggn",
          "The exact diagonal of the GGN ('ggn') or of the empirical Fisher ('ef') (P,).")
      .def(
          "jvp",
          [](const PyBatch& b, const py::handle& v) {
            return visit(b, [&](auto& s) -> py::object { return jvp(s, v); });
          },
          py::arg("v"),
          "The parameter JVP of the outputs: row n is J_n v (N x outputs), J_n the Jacobian of "
          "sample n's outputs.")
      .def(
          "vjp",
          [](const PyBatch& b, const py::handle& u) {
            return visit(b, [&](auto& s) -> py::object { return vjp(s, u); });
          },
          py::arg("U"),
          "The parameter VJP of the outputs: sum over n of J_n' U[n] (P,), not divided by N. U "
          "is N x outputs (copied into the engine's layout).")
      .def(
          "kfac_factors",
          [](const PyBatch& b, const std::string& type, int mc_samples, std::uint64_t seed) {
            return visit(b, [&](auto& s) { return kfac_factors(s, type, mc_samples, seed); });
          },
          py::arg("type") = "type-2", py::arg("mc_samples") = 1, py::arg("seed") = 0,
          "K-FAC factors of every Linear and Conv2d layer, in spec order: a list of dicts with "
          "'layer' (token index), 'weight' and 'bias' (state_dict names; bias None without "
          "one), 'a' (input second moment; bias-augmented: last row/column) and 's' (output-"
          "gradient second moment), so that the layer's curvature block over [W b] is "
          "kron(s, a). type: 'type-2' (exact, GGN-consistent), 'mc' (mc_samples labels per "
          "sample, seeded) or 'empirical'.")
      .def(
          "curvature",
          [](const PyBatch& b, const std::string& name, const py::kwargs& options) {
            return make_curvature(b.state, name, options);
          },
          py::arg("name") = "ggn",
          "The curvature matrix C of plugin `name` on this batch (ggn, hessian, "
          "empirical-fisher, mc-fisher, kfac, diag-ggn, diag-ef or any loaded plugin), created "
          "as the command line creates it: keyword arguments are the plugin's options (quadra "
          "plugins describe NAME lists them), e.g. batch.curvature('kfac', type='mc', seed=1).")
      .def("__repr__", [](const PyBatch& b) {
        return visit(b, [](auto& s) {
          return fmt::format("quadra.Batch({} samples, '{}', {}, {})", s.batch.batch_size(),
                             s.batch.network().spec(), nn::to_string(s.batch.loss_kind()),
                             std::is_same_v<std::decay_t<decltype(s.batch.loss())>, double>
                                 ? "float64"
                                 : "float32");
        });
      });
}

}  // namespace quadra::python
