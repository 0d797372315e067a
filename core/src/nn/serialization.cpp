// NumPy weights and model files. See quadra/nn/serialization.hpp.

#include <quadra/nn/serialization.hpp>

#include <algorithm>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <fmt/std.h>

#include <quadra/error.hpp>

namespace quadra::nn {
namespace {

constexpr const char* kSpecKey = "__spec__";
constexpr const char* kShapeKey = "__input_shape__";
constexpr const char* kNormalizeKey = "__normalize__";
constexpr const char* kShiftKey = "__shift__";
constexpr const char* kScaleKey = "__scale__";

io::NpyArray text_array(const std::string& text) {
  return io::NpyArray::from<std::uint8_t>({static_cast<std::int64_t>(text.size())},
                                          reinterpret_cast<const std::uint8_t*>(text.data()));
}

/// NumPy's spelling of a shape: (3, 4), (5,), ().
std::string shape_str(const std::vector<std::int64_t>& shape) {
  return shape.size() == 1 ? fmt::format("({},)", shape[0]) : fmt::format("({})", fmt::join(shape, ", "));
}

/// The checks of one array against the parameter of the same name; `info` is null for a key
/// the network does not have.
void check_parameter_array(const std::string& key, io::DType dtype,
                           const std::vector<std::int64_t>& shape, const ParameterInfo* info,
                           const Network& network, const std::filesystem::path& file) {
  if (info == nullptr) {
    std::vector<std::string> names;
    for (const ParameterInfo& p : network.parameters()) names.push_back(p.name);
    std::sort(names.begin(), names.end());
    throw Error(fmt::format("{}: unexpected array '{}'; the network '{}' has: {}", file, key,
                            network.spec(), fmt::join(names, ", ")));
  }
  const std::vector<std::int64_t> want(info->shape.begin(), info->shape.end());
  if (shape != want) {
    throw Error(fmt::format("{}: array '{}' has shape {}; the network '{}' needs {}", file, key,
                            shape_str(shape), network.spec(), shape_str(want)));
  }
  if (dtype != io::DType::kFloat32 && dtype != io::DType::kFloat64) {
    throw Error(fmt::format("{}: array '{}' has dtype {}; expected float32 or float64", file, key,
                            io::to_string(dtype)));
  }
}

const ParameterInfo* find_parameter(const Network& network, const std::string& key) {
  for (const ParameterInfo& info : network.parameters()) {
    if (info.name == key) return &info;
  }
  return nullptr;
}

const BufferInfo* find_buffer(const Network& network, const std::string& key) {
  for (const BufferInfo& info : network.buffers()) {
    if (info.name == key) return &info;
  }
  return nullptr;
}

/// The checks of one array against the buffer of the same name: its shape, and a float dtype
/// (an integer one for num_batches_tracked, as PyTorch writes it; floats are accepted there too).
void check_buffer_array(const std::string& key, io::DType dtype,
                        const std::vector<std::int64_t>& shape, const BufferInfo& info,
                        const Network& network, const std::filesystem::path& file) {
  const std::vector<std::int64_t> want(info.shape.begin(), info.shape.end());
  if (shape != want) {
    throw Error(fmt::format("{}: buffer '{}' has shape {}; the network '{}' needs {}", file, key,
                            shape_str(shape), network.spec(), shape_str(want)));
  }
  const bool is_float = dtype == io::DType::kFloat32 || dtype == io::DType::kFloat64;
  const bool is_int = dtype == io::DType::kInt64 || dtype == io::DType::kInt32;
  if (!(is_float || (info.is_integer && is_int))) {
    throw Error(fmt::format("{}: buffer '{}' has dtype {}; expected {}", file, key,
                            io::to_string(dtype),
                            info.is_integer ? "int64 (or a float)" : "float32 or float64"));
  }
}

/// Checks an array of the file against the network's parameters and buffers.
void check_state_array(const std::string& key, io::DType dtype,
                       const std::vector<std::int64_t>& shape, const Network& network,
                       const std::filesystem::path& file) {
  if (const BufferInfo* buffer = find_buffer(network, key)) {
    check_buffer_array(key, dtype, shape, *buffer, network, file);
    return;
  }
  const ParameterInfo* info = find_parameter(network, key);
  if (info == nullptr && !network.buffers().empty()) {
    std::vector<std::string> names;
    for (const ParameterInfo& p : network.parameters()) names.push_back(p.name);
    for (const BufferInfo& b : network.buffers()) names.push_back(b.name);
    std::sort(names.begin(), names.end());
    throw Error(fmt::format("{}: unexpected array '{}'; the network '{}' has: {}", file, key,
                            network.spec(), fmt::join(names, ", ")));
  }
  check_parameter_array(key, dtype, shape, info, network, file);
}

}  // namespace

template <class Scalar>
Vector<Scalar> parameters_from_arrays(const std::map<std::string, io::NpyArray>& arrays,
                                      const Network& network, const std::filesystem::path& file) {
  Vector<Scalar> params(network.num_parameters());
  std::set<std::string> expected;
  for (const ParameterInfo& info : network.parameters()) {
    expected.insert(info.name);
    const io::NpyArray& array = io::require(arrays, info.name, file);
    check_parameter_array(info.name, array.dtype, array.shape, &info, network, file);
    const std::string name = fmt::format("{}: array '{}'", file, info.name);
    io::require_finite(array, name);
    const std::vector<Scalar> values = array.to_vector<Scalar>(name);
    for (Index i = 0; i < info.size; ++i) params[info.offset + i] = values[static_cast<std::size_t>(i)];
  }
  for (const BufferInfo& info : network.buffers()) {
    expected.insert(info.name);
    const io::NpyArray& array = io::require(arrays, info.name, file);
    check_buffer_array(info.name, array.dtype, array.shape, info, network, file);
  }
  for (const auto& [key, array] : arrays) {
    if (key.rfind("__", 0) == 0 || expected.count(key) != 0) continue;
    check_state_array(key, array.dtype, array.shape, network, file);
  }
  return params;
}

std::vector<double> buffers_from_arrays(const std::map<std::string, io::NpyArray>& arrays,
                                        const Network& network, const std::filesystem::path& file) {
  std::vector<double> values = network.buffer_values();
  for (const BufferInfo& info : network.buffers()) {
    const io::NpyArray& array = io::require(arrays, info.name, file);
    check_buffer_array(info.name, array.dtype, array.shape, info, network, file);
    const std::string name = fmt::format("{}: buffer '{}'", file, info.name);
    std::vector<double> data;
    if (array.dtype == io::DType::kInt64 || array.dtype == io::DType::kInt32) {
      for (std::int64_t v : array.to_vector<std::int64_t>(name)) data.push_back(static_cast<double>(v));
    } else {
      data = array.to_vector<double>(name);
    }
    std::copy(data.begin(), data.end(), values.begin() + info.offset);
  }
  Network checked = network;
  try {
    checked.set_buffer_values(values);
  } catch (const Error& e) {
    throw Error(fmt::format("{}: {}", file, e.what()));
  }
  return values;
}

template <class Scalar>
std::vector<std::pair<std::string, io::NpyArray>> buffers_to_arrays(const Network& network) {
  std::vector<std::pair<std::string, io::NpyArray>> arrays;
  const std::vector<double>& values = network.buffer_values();
  for (const BufferInfo& info : network.buffers()) {
    const std::vector<std::int64_t> shape(info.shape.begin(), info.shape.end());
    if (info.is_integer) {
      std::vector<std::int64_t> data;
      for (Index i = 0; i < info.size; ++i) {
        data.push_back(static_cast<std::int64_t>(values[static_cast<std::size_t>(info.offset + i)]));
      }
      arrays.emplace_back(info.name, io::NpyArray::from<std::int64_t>(shape, data.data()));
    } else {
      std::vector<Scalar> data;
      for (Index i = 0; i < info.size; ++i) {
        data.push_back(static_cast<Scalar>(values[static_cast<std::size_t>(info.offset + i)]));
      }
      arrays.emplace_back(info.name, io::NpyArray::from<Scalar>(shape, data.data()));
    }
  }
  return arrays;
}

template <class Scalar>
std::vector<std::pair<std::string, io::NpyArray>> parameters_to_arrays(const Network& network,
                                                                      ConstVectorRef<Scalar> params) {
  if (params.size() != network.num_parameters()) {
    throw Error(fmt::format("parameter vector has {} entries; the network '{}' has {}",
                            params.size(), network.spec(), network.num_parameters()));
  }
  std::vector<std::pair<std::string, io::NpyArray>> arrays;
  for (const ParameterInfo& info : network.parameters()) {
    arrays.emplace_back(info.name, io::NpyArray::from<Scalar>(
                                       std::vector<std::int64_t>(info.shape.begin(), info.shape.end()),
                                       params.data() + info.offset));
  }
  for (auto& entry : buffers_to_arrays<Scalar>(network)) arrays.push_back(std::move(entry));
  return arrays;
}

template <class Scalar>
Vector<Scalar> load_weights(const std::filesystem::path& file, const Network& network,
                            std::vector<double>* buffers) {
  // Arrays the network cannot use are refused from their headers, before their data is read.
  const auto check = [&](const std::string& key, io::DType dtype,
                         const std::vector<std::int64_t>& shape) {
    if (key.rfind("__", 0) == 0) return;
    check_state_array(key, dtype, shape, network, file);
  };
  const auto arrays = io::read_npz(file, check);
  Vector<Scalar> params = parameters_from_arrays<Scalar>(arrays, network, file);
  std::vector<double> values = buffers_from_arrays(arrays, network, file);
  if (buffers != nullptr) *buffers = std::move(values);
  return params;
}

template <class Scalar>
void save_weights(const std::filesystem::path& file, const Network& network,
                  ConstVectorRef<Scalar> params) {
  io::write_npz(file, parameters_to_arrays<Scalar>(network, params));
}

std::vector<std::pair<std::string, io::NpyArray>> preprocessing_to_arrays(
    const data::FeatureTransform& t) {
  const auto floats = [](const std::vector<float>& v) {
    return io::NpyArray::from<float>({static_cast<std::int64_t>(v.size())}, v.data());
  };
  return {{kNormalizeKey, text_array(data::to_string(t.kind))},
          {kShiftKey, floats(t.shift)},
          {kScaleKey, floats(t.scale)}};
}

std::optional<data::FeatureTransform> preprocessing_from_arrays(
    const std::map<std::string, io::NpyArray>& arrays, const Network& network,
    const std::filesystem::path& file) {
  const auto kind = arrays.find(kNormalizeKey);
  if (kind == arrays.end()) {
    for (const char* key : {kShiftKey, kScaleKey}) {
      if (arrays.count(key) != 0) {
        throw Error(fmt::format("{}: array '{}' without '{}'; expected both or neither", file, key,
                                kNormalizeKey));
      }
    }
    return std::nullopt;
  }
  if (kind->second.dtype != io::DType::kUInt8 || kind->second.shape.size() != 1) {
    throw Error(
        fmt::format("{}: array '{}' must be a 1-d uint8 array of text", file, kNormalizeKey));
  }
  const std::vector<std::uint8_t> text = kind->second.to_vector<std::uint8_t>();
  data::FeatureTransform t;
  try {
    t.kind = data::parse_normalization(std::string(text.begin(), text.end()));
  } catch (const Error& e) {
    throw Error(fmt::format("{}: array '{}': {}", file, kNormalizeKey, e.what()));
  }
  for (const auto& [key, out] : {std::pair{kShiftKey, &t.shift}, std::pair{kScaleKey, &t.scale}}) {
    const io::NpyArray& a = io::require(arrays, key, file);
    if (a.shape.size() != 1 || (a.dtype != io::DType::kFloat32 && a.dtype != io::DType::kFloat64)) {
      throw Error(fmt::format("{}: array '{}' must be a 1-d float array", file, key));
    }
    *out = a.to_vector<float>(fmt::format("{}: array '{}'", file, key));
  }
  t.check(network.num_inputs(), fmt::format("{}: the recorded preprocessing", file));
  return t;
}

template <class Scalar>
Model<Scalar> load_model(const std::filesystem::path& file, const OnnxImportOptions& onnx) {
  if (is_onnx_file(file)) {
    OnnxModel imported = import_onnx(file, onnx);
    try {
      Network network(imported.spec, imported.input_shape);
      network.set_batch_norm(imported.batch_norm);
      Vector<Scalar> params = parameters_from_arrays<Scalar>(imported.arrays, network, file);
      network.set_buffer_values(buffers_from_arrays(imported.arrays, network, file));
      return {std::move(network), std::move(params), std::nullopt};
    } catch (const Error& e) {
      if (std::string_view(e.what()).find(file.string()) != std::string_view::npos) throw;
      throw Error(fmt::format("{}: {}", file, e.what()));
    }
  }
  const auto arrays = io::read_npz(file);
  const auto spec_it = arrays.find(kSpecKey);
  const auto shape_it = arrays.find(kShapeKey);
  if (spec_it == arrays.end() || shape_it == arrays.end()) {
    throw Error(fmt::format("{}: not a quadra model file: it has no '{}' and '{}' arrays (a "
                            "weights-only .npz needs --model SPEC and --input-shape)",
                            file, kSpecKey, kShapeKey));
  }
  if (spec_it->second.dtype != io::DType::kUInt8 || spec_it->second.shape.size() != 1) {
    throw Error(fmt::format("{}: array '{}' must be a 1-d uint8 array of spec text", file, kSpecKey));
  }
  const std::vector<std::uint8_t> text = spec_it->second.to_vector<std::uint8_t>();
  const std::string spec(text.begin(), text.end());
  if (shape_it->second.shape.size() != 1 ||
      (shape_it->second.dtype != io::DType::kInt64 && shape_it->second.dtype != io::DType::kInt32)) {
    throw Error(fmt::format("{}: array '{}' must be a 1-d integer array", file, kShapeKey));
  }
  TensorShape shape;
  for (std::int64_t d : shape_it->second.to_vector<std::int64_t>()) shape.dims.push_back(d);
  try {
    Network network(spec, shape);
    Vector<Scalar> params = parameters_from_arrays<Scalar>(arrays, network, file);
    network.set_buffer_values(buffers_from_arrays(arrays, network, file));
    auto preprocessing = preprocessing_from_arrays(arrays, network, file);
    return {std::move(network), std::move(params), std::move(preprocessing)};
  } catch (const Error& e) {
    if (std::string_view(e.what()).find(file.string()) != std::string_view::npos) throw;
    throw Error(fmt::format("{}: {}", file, e.what()));
  }
}

template <class Scalar>
void save_model(const std::filesystem::path& file, const Network& network,
                ConstVectorRef<Scalar> params,
                const std::optional<data::FeatureTransform>& preprocessing) {
  auto arrays = parameters_to_arrays<Scalar>(network, params);
  arrays.emplace_back(kSpecKey, text_array(network.spec()));
  if (preprocessing) {
    for (auto& entry : preprocessing_to_arrays(*preprocessing)) arrays.push_back(std::move(entry));
  }
  const std::vector<std::int64_t> dims(network.input_shape().dims.begin(), network.input_shape().dims.end());
  arrays.emplace_back(kShapeKey, io::NpyArray::from<std::int64_t>(
                                     {static_cast<std::int64_t>(dims.size())}, dims.data()));
  io::write_npz(file, arrays);
}

#define QUADRA_NN_INSTANTIATE(S)                                                                  \
  template Vector<S> parameters_from_arrays<S>(const std::map<std::string, io::NpyArray>&,        \
                                               const Network&, const std::filesystem::path&);     \
  template std::vector<std::pair<std::string, io::NpyArray>> parameters_to_arrays<S>(             \
      const Network&, ConstVectorRef<S>);                                                         \
  template Vector<S> load_weights<S>(const std::filesystem::path&, const Network&,                \
                                     std::vector<double>*);                                      \
  template std::vector<std::pair<std::string, io::NpyArray>> buffers_to_arrays<S>(const Network&);\
  template void save_weights<S>(const std::filesystem::path&, const Network&, ConstVectorRef<S>); \
  template Model<S> load_model<S>(const std::filesystem::path&, const OnnxImportOptions&);                                  \
  template void save_model<S>(const std::filesystem::path&, const Network&, ConstVectorRef<S>,    \
                              const std::optional<data::FeatureTransform>&);
QUADRA_NN_INSTANTIATE(float)
QUADRA_NN_INSTANTIATE(double)
#undef QUADRA_NN_INSTANTIATE

}  // namespace quadra::nn
