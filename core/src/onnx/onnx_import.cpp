// ONNX import (quadra/nn/onnx_import.hpp). The only code that sees ONNX's protobuf classes.
//
// The translation walks back from the graph's output along data inputs. Each step consumes one
// "unit" ending at a value: a single op, a recognised multi-node pattern (GELU, MatMul + Add) or
// a residual block (an Add of two data values: both paths are walked back to the nearest value
// they share, the fork). Chains of units become spec tokens; a residual block becomes
// `residual(BRANCH, shortcut=SHORTCUT)`.

#include <quadra/nn/onnx_import.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <set>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <quadra/error.hpp>
#include <quadra/io/file.hpp>

#ifdef QUADRA_WITH_ONNX
#include <onnx/onnx_pb.h>
#endif

namespace quadra::nn {

bool is_onnx_file(const std::filesystem::path& file) {
  std::string ext = file.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == ".onnx";
}

OnnxModel import_onnx(const std::filesystem::path& file, const OnnxImportOptions& options) {
  if (!onnx_available()) {
    throw Error(fmt::format("{}: this build of quadra cannot read ONNX files (built without "
                            "libonnx-dev); give the model as a spec and an .npz of weights",
                            file.string()));
  }
  return import_onnx_bytes(io::read_file_bytes(file), file.string(), options);
}

#ifndef QUADRA_WITH_ONNX

bool onnx_available() noexcept { return false; }

OnnxModel import_onnx_bytes(std::string_view, std::string_view name, const OnnxImportOptions&) {
  throw Error(fmt::format("{}: this build of quadra cannot read ONNX files (built without "
                          "libonnx-dev)",
                          name));
}

#else

bool onnx_available() noexcept { return true; }

namespace {

constexpr std::int64_t kMaxElements = std::int64_t{1} << 40;

/// Shortest decimal text that reads back as the same float: an exported epsilon of 1e-5 is
/// stored as the float 9.99999974e-06 and comes back as "1e-05", so a spec written by hand and
/// the exported file give the same network.
std::string float_text(float value) { return fmt::format("{}", value); }

class Importer {
 public:
  Importer(std::string_view name, const OnnxImportOptions& options)
      : file_(name), options_(options) {}

  OnnxModel run(std::string_view bytes) {
    if (bytes.size() > static_cast<std::size_t>(std::numeric_limits<int>::max())) {
      fail(fmt::format("{} bytes; ONNX files with the weights inside are limited to 2 GiB",
                       bytes.size()));
    }
    onnx::ModelProto model;
    if (!model.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
      fail("not an ONNX model (the protobuf message does not parse: truncated or another format)");
    }
    if (!model.has_graph() || model.graph().node_size() == 0) {
      fail("not an ONNX model (it has no graph nodes)");
    }
    check_opset(model);
    graph_ = &model.graph();
    collect_constants();
    for (int i = 0; i < graph_->node_size(); ++i) {
      for (const auto& out : graph_->node(i).output()) {
        if (!out.empty()) producer_[out] = i;
      }
    }
    OnnxModel result;
    const std::string input = find_input(result.input_shape);
    if (graph_->output_size() != 1) {
      fail(fmt::format("the graph has {} outputs; quadra imports networks with one output (the "
                       "logits)",
                       graph_->output_size()));
    }
    input_ = input;
    const std::vector<std::string> tokens = chain(input, graph_->output(0).name(), 0);
    for (const auto& t : tokens) {
      if (!result.spec.empty()) result.spec += ' ';
      result.spec += t;
    }
    if (result.spec.empty()) fail("the graph's output is its input; there is no network to import");
    result.arrays = std::move(arrays_);
    result.batch_norm = batch_norm_;
    return result;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(fmt::format("{}: {}", file_, what));
  }
  [[noreturn]] void fail(const onnx::NodeProto& node, const std::string& what) const {
    throw Error(fmt::format("{}: node '{}' ({}): {}", file_, node.name(), node.op_type(), what));
  }

  void check_opset(const onnx::ModelProto& model) const {
    for (const auto& op : model.opset_import()) {
      if (!op.domain().empty() && op.domain() != "ai.onnx") continue;
      if (op.version() < 13 || op.version() > 17) {
        fail(fmt::format("opset {}; quadra reads opsets 13 to 17 (torch.onnx.export(..., "
                         "opset_version=17))",
                         op.version()));
      }
    }
  }

  // ---- constants -----------------------------------------------------------------------------

  io::NpyArray tensor_array(const onnx::TensorProto& t, const std::string& what) const {
    if (t.data_location() == onnx::TensorProto::EXTERNAL) {
      fail(fmt::format("{} keeps its data in an external file; export with the weights inside "
                       "the model file",
                       what));
    }
    std::vector<std::int64_t> shape;
    std::int64_t count = 1;
    for (const auto d : t.dims()) {
      if (d < 0 || (d > 0 && count > kMaxElements / d)) {
        fail(fmt::format("{} has dimension {}; expected a non-negative size below 2^40 elements",
                         what, d));
      }
      shape.push_back(d);
      count *= d;
    }
    const auto take = [&](auto tag, std::size_t item, int typed_size, const auto& typed) {
      using T = decltype(tag);
      // The data's size is checked against the shape before anything of the shape's size is
      // allocated: a file cannot make quadra reserve memory its bytes do not back.
      const bool raw = !t.raw_data().empty();
      if (raw && t.raw_data().size() != static_cast<std::size_t>(count) * item) {
        fail(fmt::format("{} has {} bytes of data; its shape [{}] needs {}", what,
                         t.raw_data().size(), fmt::join(shape, ", "),
                         static_cast<std::size_t>(count) * item));
      }
      if (!raw && typed_size != count) {
        fail(fmt::format("{} has {} values; its shape [{}] needs {}", what, typed_size,
                         fmt::join(shape, ", "), count));
      }
      std::vector<T> values(static_cast<std::size_t>(count));
      if (raw) {
        std::memcpy(values.data(), t.raw_data().data(), t.raw_data().size());
      } else {
        for (std::int64_t i = 0; i < count; ++i) {
          values[static_cast<std::size_t>(i)] = static_cast<T>(typed[static_cast<int>(i)]);
        }
      }
      return io::NpyArray::from<T>(shape, values.data());
    };
    switch (t.data_type()) {
      case onnx::TensorProto::FLOAT:
        return take(float{}, 4, t.float_data_size(), t.float_data());
      case onnx::TensorProto::DOUBLE:
        return take(double{}, 8, t.double_data_size(), t.double_data());
      case onnx::TensorProto::INT64:
        return take(std::int64_t{}, 8, t.int64_data_size(), t.int64_data());
      case onnx::TensorProto::INT32:
        return take(std::int32_t{}, 4, t.int32_data_size(), t.int32_data());
      case onnx::TensorProto::BOOL:  // Dropout's training flag; ONNX keeps bools in int32_data
        return take(std::uint8_t{}, 1, t.int32_data_size(), t.int32_data());
      default:
        fail(fmt::format("{} has ONNX data type {}; expected float, double, int64, int32 or bool", what,
                         t.data_type()));
    }
  }

  void collect_constants() {
    for (const auto& init : graph_->initializer()) {
      constants_[init.name()] = tensor_array(init, fmt::format("initializer '{}'", init.name()));
    }
    // Constant nodes, and Identity of a constant (torch writes one initializer for equal tensors
    // and names the others through Identity nodes): both define named constants.
    for (const auto& node : graph_->node()) {
      if (node.output_size() < 1) continue;
      if (node.op_type() == "Constant") {
        for (const auto& a : node.attribute()) {
          if (a.name() == "value" && a.has_t()) {
            constants_[node.output(0)] = tensor_array(a.t(), fmt::format("constant '{}'", node.name()));
          } else if (a.name() == "value_float") {
            const float v = a.f();
            constants_[node.output(0)] = io::NpyArray::from<float>({}, &v);
          } else if (a.name() == "value_int") {
            const std::int64_t v = a.i();
            constants_[node.output(0)] = io::NpyArray::from<std::int64_t>({}, &v);
          } else if (a.name() == "value_ints") {
            const std::vector<std::int64_t> v(a.ints().begin(), a.ints().end());
            constants_[node.output(0)] = io::NpyArray::from<std::int64_t>(
                {static_cast<std::int64_t>(v.size())}, v.data());
          } else if (a.name() == "value_floats") {
            const std::vector<float> v(a.floats().begin(), a.floats().end());
            constants_[node.output(0)] =
                io::NpyArray::from<float>({static_cast<std::int64_t>(v.size())}, v.data());
          }
        }
        if (constants_.count(node.output(0)) == 0) fail(node, "expected a tensor value");
      } else if (node.op_type() == "Identity" && node.input_size() == 1 &&
                 constants_.count(node.input(0)) != 0) {
        constants_[node.output(0)] = constants_.at(node.input(0));
      }
    }
  }

  [[nodiscard]] bool is_constant(const std::string& value) const {
    return constants_.count(value) != 0;
  }

  const io::NpyArray& constant(const onnx::NodeProto& node, int input, const char* role) const {
    if (node.input_size() <= input || node.input(input).empty()) {
      fail(node, fmt::format("has no {} (input {})", role, input + 1));
    }
    const auto it = constants_.find(node.input(input));
    if (it == constants_.end()) {
      fail(node, fmt::format("its {} '{}' is not an initializer; quadra needs it constant", role,
                             node.input(input)));
    }
    return it->second;
  }

  std::vector<double> values(const onnx::NodeProto& node, int input, const char* role) const {
    const auto& a = constant(node, input, role);
    if (a.dtype != io::DType::kFloat32 && a.dtype != io::DType::kFloat64) {
      fail(node, fmt::format("its {} has dtype {}; expected float", role, io::to_string(a.dtype)));
    }
    return a.to_vector<double>();
  }

  /// A scalar constant (any shape of one element), or nullopt when `value` is not constant.
  std::optional<double> scalar(const std::string& value) const {
    const auto it = constants_.find(value);
    if (it == constants_.end() || it->second.size() != 1) return std::nullopt;
    return it->second.to_vector<double>().front();
  }

  // ---- attributes ----------------------------------------------------------------------------

  static const onnx::AttributeProto* attribute(const onnx::NodeProto& node, const char* name) {
    for (const auto& a : node.attribute()) {
      if (a.name() == name) return &a;
    }
    return nullptr;
  }
  std::int64_t int_attr(const onnx::NodeProto& node, const char* name, std::int64_t fallback) const {
    const auto* a = attribute(node, name);
    if (a == nullptr) return fallback;
    if (a->type() != onnx::AttributeProto::INT) fail(node, fmt::format("attribute {} is not an int", name));
    return a->i();
  }
  float float_attr(const onnx::NodeProto& node, const char* name, float fallback) const {
    const auto* a = attribute(node, name);
    if (a == nullptr) return fallback;
    if (a->type() != onnx::AttributeProto::FLOAT) fail(node, fmt::format("attribute {} is not a float", name));
    return a->f();
  }
  std::vector<std::int64_t> ints_attr(const onnx::NodeProto& node, const char* name) const {
    const auto* a = attribute(node, name);
    if (a == nullptr) return {};
    if (a->type() != onnx::AttributeProto::INTS) fail(node, fmt::format("attribute {} is not a list of ints", name));
    return {a->ints().begin(), a->ints().end()};
  }
  std::string string_attr(const onnx::NodeProto& node, const char* name) const {
    const auto* a = attribute(node, name);
    return a == nullptr ? std::string() : a->s();
  }

  /// One value shared by every entry of a 2-D attribute (quadra's kernels, strides and pads are
  /// square), `fallback` when absent.
  std::int64_t square(const onnx::NodeProto& node, const char* name, std::int64_t fallback) const {
    const auto v = ints_attr(node, name);
    if (v.empty()) return fallback;
    if (std::adjacent_find(v.begin(), v.end(), std::not_equal_to<>()) != v.end() ||
        (v.size() != 2 && v.size() != 4)) {
      fail(node, fmt::format("{} = [{}]; quadra needs 2-D windows with equal entries", name,
                             fmt::join(v, ", ")));
    }
    if (v.front() < 0) fail(node, fmt::format("{} = {}; expected >= 0", name, v.front()));
    return v.front();
  }

  void require_default(const onnx::NodeProto& node, const char* name, std::int64_t expected) const {
    const auto v = int_attr(node, name, expected);
    if (v != expected) fail(node, fmt::format("{} = {}; quadra supports {} only", name, v, expected));
  }
  void require_unit_dilations(const onnx::NodeProto& node) const {
    for (const auto d : ints_attr(node, "dilations")) {
      if (d != 1) fail(node, fmt::format("dilation {}; quadra supports dilation 1 only", d));
    }
    const auto pad = string_attr(node, "auto_pad");
    if (!pad.empty() && pad != "NOTSET") {
      fail(node, fmt::format("auto_pad = {}; expected explicit pads (NOTSET)", pad));
    }
  }

  // ---- the input -----------------------------------------------------------------------------

  std::string find_input(TensorShape& shape) const {
    const onnx::ValueInfoProto* found = nullptr;
    for (const auto& in : graph_->input()) {
      if (is_constant(in.name())) continue;  // older exports list initializers as inputs
      if (found != nullptr) {
        fail(fmt::format("the graph has several inputs ('{}', '{}'); quadra imports networks "
                         "with one",
                         found->name(), in.name()));
      }
      found = &in;
    }
    if (found == nullptr) fail("the graph has no input");
    const auto& type = found->type();
    if (!type.has_tensor_type() || !type.tensor_type().has_shape()) {
      fail(fmt::format("input '{}' has no tensor shape", found->name()));
    }
    const auto elem = type.tensor_type().elem_type();
    if (elem != onnx::TensorProto::FLOAT && elem != onnx::TensorProto::DOUBLE) {
      fail(fmt::format("input '{}' has element type {}; expected float", found->name(), elem));
    }
    const auto& dims = type.tensor_type().shape().dim();
    if (dims.size() != 2 && dims.size() != 4) {
      fail(fmt::format("input '{}' has {} dimensions; expected [batch, features] or [batch, "
                       "channels, height, width]",
                       found->name(), dims.size()));
    }
    for (int i = 1; i < dims.size(); ++i) {
      if (!dims[i].has_dim_value() || dims[i].dim_value() <= 0) {
        fail(fmt::format("input '{}' has a dynamic dimension '{}' at axis {}; only the batch "
                         "(axis 0) may be dynamic",
                         found->name(), dims[i].dim_param(), i));
      }
      if (dims[i].dim_value() > (std::int64_t{1} << 31)) {
        fail(fmt::format("input '{}' has dimension {} at axis {}; too large", found->name(),
                         dims[i].dim_value(), i));
      }
      shape.dims.push_back(dims[i].dim_value());
    }
    return found->name();
  }

  // ---- the walk ------------------------------------------------------------------------------

  const onnx::NodeProto& producer(const std::string& value, const onnx::NodeProto* consumer) const {
    const auto it = producer_.find(value);
    if (it == producer_.end()) {
      if (consumer != nullptr) {
        fail(*consumer, fmt::format("its input '{}' is neither computed by a node nor an "
                                    "initializer",
                                    value));
      }
      fail(fmt::format("value '{}' is neither computed by a node nor an initializer", value));
    }
    return graph_->node(it->second);
  }

  /// The data input of a node that has one: its first input, which must not be constant.
  const std::string& data_input(const onnx::NodeProto& node) const {
    if (node.input_size() < 1 || node.input(0).empty()) fail(node, "has no input");
    if (is_constant(node.input(0))) {
      fail(node, "its data input is a constant; quadra imports ops applied to the network input");
    }
    return node.input(0);
  }

  struct Unit {
    std::string from;                 ///< the value the unit starts at
    std::vector<std::string> tokens;  ///< spec tokens (empty for Identity)
  };

  /// Spec tokens from `from` to `to` (exclusive of `from`), walking back unit by unit.
  std::vector<std::string> chain(const std::string& from, const std::string& to, int depth) {
    if (depth > 64) fail("residual blocks nest more than 64 deep");
    std::vector<std::vector<std::string>> pieces;
    std::string value = to;
    std::size_t steps = 0;
    while (value != from) {
      if (value == input_) {
        fail(fmt::format("value '{}' is not computed from '{}' along one chain; quadra imports "
                         "chains of ops and residual blocks joined by Add",
                         to, from));
      }
      if (++steps > static_cast<std::size_t>(graph_->node_size()) + 1) fail("the graph has a cycle");
      const Unit& unit = step(value, depth);
      pieces.push_back(unit.tokens);
      value = unit.from;
    }
    std::vector<std::string> tokens;
    for (auto it = pieces.rbegin(); it != pieces.rend(); ++it) {
      tokens.insert(tokens.end(), it->begin(), it->end());
    }
    return tokens;
  }

  /// The values `value` is computed from, back to the network input, unit by unit (for finding
  /// the fork of a residual block).
  std::vector<std::string> dominators(const std::string& value, int depth) {
    std::vector<std::string> out{value};
    std::string v = value;
    while (v != input_) {
      if (out.size() > static_cast<std::size_t>(graph_->node_size()) + 1) fail("the graph has a cycle");
      v = step(v, depth).from;
      out.push_back(v);
    }
    return out;
  }

  /// The unit ending at `value`, translated once (forks are found by walking paths that are
  /// translated again afterwards).
  const Unit& step(const std::string& value, int depth) {
    if (const auto it = units_.find(value); it != units_.end()) return it->second;
    if (depth > 64) fail("residual blocks nest more than 64 deep");
    if (!in_progress_.insert(value).second) fail(fmt::format("the graph has a cycle through '{}'", value));
    Unit unit = translate(value, depth);
    in_progress_.erase(value);
    return units_.emplace(value, std::move(unit)).first->second;
  }

  Unit translate(const std::string& value, int depth) {
    const onnx::NodeProto& node = producer(value, nullptr);
    const std::string& op = node.op_type();
    if (op == "Add" && node.input_size() == 2 && !is_constant(node.input(0)) &&
        !is_constant(node.input(1))) {
      return residual(node, depth);
    }
    if (op == "Add") return matmul_add(node);
    if (op == "Mul") return gelu(node);
    if (op == "AveragePool") return average_pool(node);
    Unit u{data_input(node), {}};
    if (op == "Conv") {
      u.tokens.push_back(conv(node));
    } else if (op == "Gemm") {
      u.tokens.push_back(gemm(node));
    } else if (op == "MatMul") {
      u.tokens.push_back(linear_from_matmul(node, nullptr));
    } else if (op == "Relu" || op == "Tanh" || op == "Sigmoid" || op == "Softplus") {
      std::string name = op;
      std::transform(name.begin(), name.end(), name.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      u.tokens.push_back(name);
    } else if (op == "LeakyRelu") {
      u.tokens.push_back(fmt::format("leakyrelu({})", float_text(float_attr(node, "alpha", 0.01F))));
    } else if (op == "MaxPool") {
      u.tokens.push_back(pool(node, 0));
    } else if (op == "GlobalAveragePool") {
      u.tokens.emplace_back("globalavgpool");
    } else if (op == "Flatten") {
      const auto axis = int_attr(node, "axis", 1);
      if (axis != 1) fail(node, fmt::format("axis = {}; quadra flattens from axis 1", axis));
      u.tokens.emplace_back("flatten");
    } else if (op == "Reshape") {
      check_reshape_to_flat(node);
      u.tokens.emplace_back("flatten");
    } else if (op == "BatchNormalization") {
      u.tokens.push_back(batch_norm(node));
    } else if (op == "LayerNormalization") {
      u.tokens.push_back(layer_norm(node));
    } else if (op == "Dropout") {
      double p = 0.5;
      if (node.input_size() > 1 && !node.input(1).empty()) {
        const auto ratio = scalar(node.input(1));
        if (!ratio) fail(node, "its ratio is not a constant scalar");
        p = *ratio;
      }
      u.tokens.push_back(fmt::format("dropout({})", float_text(static_cast<float>(p))));
    } else if (op == "Identity") {
      // nothing: the value passes through
    } else {
      fail(node, "this op is not supported; quadra imports Conv, Gemm, MatMul, Add, Relu, "
                 "LeakyRelu, Tanh, Sigmoid, Softplus, GELU (Div, Erf, Add, Mul), MaxPool, "
                 "AveragePool, GlobalAveragePool, Flatten, Reshape to [batch, features], "
                 "BatchNormalization, LayerNormalization, Identity and Dropout");
    }
    return u;
  }

  Unit residual(const onnx::NodeProto& node, int depth) {
    const auto left = dominators(node.input(0), depth + 1);
    const std::set<std::string> on_left(left.begin(), left.end());
    const auto right = dominators(node.input(1), depth + 1);
    const auto fork = std::find_if(right.begin(), right.end(),
                                   [&](const std::string& v) { return on_left.count(v) != 0; });
    // Both walks end at the network input, so they always meet.
    auto branch = chain(*fork, node.input(0), depth + 1);
    auto shortcut = chain(*fork, node.input(1), depth + 1);
    // The longer path is the branch; an identity shortcut is left out.
    if (shortcut.size() > branch.size()) std::swap(branch, shortcut);
    if (branch.empty()) fail(node, "adds a value to itself; expected a residual block");
    std::string token = "residual(" + fmt::format("{}", fmt::join(branch, " "));
    if (!shortcut.empty()) token += ", shortcut=" + fmt::format("{}", fmt::join(shortcut, " "));
    token += ")";
    return {*fork, {token}};
  }

  // ---- parameter layers ----------------------------------------------------------------------

  /// The layer name: P when the weight is `P.weight` and the bias (if any) `P.bias`, else the
  /// node's name path (`/layer1/conv1/Conv` -> `layer1.conv1`).
  std::string layer_name(const onnx::NodeProto& node, const std::string& weight,
                         const std::string* bias) {
    std::string name;
    const std::string suffix = ".weight";
    if (weight.size() > suffix.size() &&
        weight.compare(weight.size() - suffix.size(), suffix.size(), suffix) == 0) {
      name = weight.substr(0, weight.size() - suffix.size());
      if (bias != nullptr && *bias != name + ".bias") name.clear();
    }
    if (name.empty()) {
      std::string path = node.name();
      while (!path.empty() && path.front() == '/') path.erase(path.begin());
      // Scopes are module paths, the last part the op: /layer2/down/down.0/Conv. A Sequential's
      // child repeats its parent's name (down, down.0), which the state_dict does not.
      std::vector<std::string> parts;
      for (std::size_t begin = 0; begin <= path.size();) {
        const auto end = std::min(path.find('/', begin), path.size());
        parts.push_back(path.substr(begin, end - begin));
        begin = end + 1;
      }
      parts.pop_back();
      for (const auto& part : parts) {
        if (!name.empty()) {
          const auto last = name.rfind('.') == std::string::npos ? 0 : name.rfind('.') + 1;
          const std::string previous = name.substr(last);
          if (part.rfind(previous + ".", 0) == 0) name.erase(last == 0 ? 0 : last - 1);
        }
        if (!name.empty()) name += '.';
        name += part;
      }
      // A bare parameter (x @ self.w) is named after its initializer unless torch generated it.
      if (name.empty() && weight.find("::") == std::string::npos) name = weight;
      if (name.empty()) name = fmt::format("layer{}", names_.size());
    }
    // Characters the spec grammar uses to separate things are replaced.
    for (char& c : name) {
      if (std::isspace(static_cast<unsigned char>(c)) != 0 || c == ',' || c == '(' || c == ')' ||
          c == '=') {
        c = '_';
      }
    }
    std::string unique = name;
    for (int i = 1; names_.count(unique) != 0; ++i) unique = fmt::format("{}_{}", name, i);
    names_.insert(unique);
    return unique;
  }

  void add_array(const onnx::NodeProto& node, const std::string& key, io::NpyArray array) {
    if (array.dtype != io::DType::kFloat32 && array.dtype != io::DType::kFloat64) {
      fail(node, fmt::format("'{}' has dtype {}; expected float", key, io::to_string(array.dtype)));
    }
    arrays_[key] = std::move(array);
  }

  std::string conv(const onnx::NodeProto& node) {
    require_default(node, "group", 1);
    require_unit_dilations(node);
    const auto& w = constant(node, 1, "weight");
    if (w.shape.size() != 4) fail(node, fmt::format("its weight has {} dimensions; expected 4 (2-D convolution)", w.shape.size()));
    if (w.shape[2] != w.shape[3]) {
      fail(node, fmt::format("kernel {}x{}; quadra supports square kernels", w.shape[2], w.shape[3]));
    }
    const auto kernel = square(node, "kernel_shape", w.shape[2]);
    if (kernel != w.shape[2]) fail(node, "kernel_shape does not match the weight");
    const auto stride = square(node, "strides", 1);
    const auto pad = square(node, "pads", 0);
    const bool bias = node.input_size() > 2 && !node.input(2).empty();
    const std::string name = layer_name(node, node.input(1), bias ? &node.input(2) : nullptr);
    add_array(node, name + ".weight", w);
    if (bias) {
      const auto& b = constant(node, 2, "bias");
      if (b.shape != std::vector<std::int64_t>{w.shape[0]}) fail(node, "its bias does not have one entry per output channel");
      add_array(node, name + ".bias", b);
    }
    return fmt::format("conv({},{},stride={},pad={},bias={},name={})", w.shape[0], kernel, stride,
                       pad, bias, name);
  }

  static io::NpyArray transposed(const io::NpyArray& a) {
    const auto rows = a.shape[0];
    const auto cols = a.shape[1];
    const auto item = io::itemsize(a.dtype);
    io::NpyArray t = a;
    t.shape = {cols, rows};
    for (std::int64_t r = 0; r < rows; ++r) {
      for (std::int64_t c = 0; c < cols; ++c) {
        std::memcpy(&t.bytes[static_cast<std::size_t>(c * rows + r) * item],
                    &a.bytes[static_cast<std::size_t>(r * cols + c) * item], item);
      }
    }
    return t;
  }

  std::string linear(const onnx::NodeProto& node, io::NpyArray weight, const std::string& weight_name,
                     const io::NpyArray* bias, const std::string* bias_name) {
    const std::string name = layer_name(node, weight_name, bias_name);
    const auto out = weight.shape[0];
    add_array(node, name + ".weight", std::move(weight));
    if (bias != nullptr) {
      if (bias->size() != out) {
        fail(node, fmt::format("its bias has {} entries; expected {} (one per output)", bias->size(), out));
      }
      io::NpyArray b = *bias;
      b.shape = {out};
      add_array(node, name + ".bias", std::move(b));
    }
    return fmt::format("linear({},bias={},name={})", out, bias != nullptr, name);
  }

  std::string gemm(const onnx::NodeProto& node) {
    require_default(node, "transA", 0);
    if (float_attr(node, "alpha", 1.0F) != 1.0F || float_attr(node, "beta", 1.0F) != 1.0F) {
      fail(node, "alpha or beta is not 1; quadra imports Gemm as a Linear layer");
    }
    const auto& w = constant(node, 1, "weight");
    if (w.shape.size() != 2) fail(node, "its weight is not a matrix");
    // Linear stores out x in; Gemm computes x W^T with transB = 1 (as torch exports it).
    io::NpyArray weight = int_attr(node, "transB", 0) == 1 ? w : transposed(w);
    const bool bias = node.input_size() > 2 && !node.input(2).empty();
    return linear(node, std::move(weight), node.input(1), bias ? &constant(node, 2, "bias") : nullptr,
                  bias ? &node.input(2) : nullptr);
  }

  /// MatMul(x, W) with W in x out, optionally followed by `add` (Add of a bias constant).
  std::string linear_from_matmul(const onnx::NodeProto& node, const onnx::NodeProto* add) {
    const auto& w = constant(node, 1, "weight");
    if (w.shape.size() != 2) fail(node, "its weight is not a matrix; quadra imports MatMul with a constant matrix");
    const io::NpyArray* bias = nullptr;
    const std::string* bias_name = nullptr;
    if (add != nullptr) {
      const int slot = add->input(0) == node.output(0) ? 1 : 0;
      bias = &constant(*add, slot, "bias");
      bias_name = &add->input(slot);
    }
    return linear(node, transposed(w), node.input(1), bias, bias_name);
  }

  Unit matmul_add(const onnx::NodeProto& add) {
    if (add.input_size() != 2) fail(add, "expected two inputs");
    const int data_slot = is_constant(add.input(0)) ? 1 : 0;
    const onnx::NodeProto& mm = producer(add.input(data_slot), &add);
    if (mm.op_type() != "MatMul") {
      fail(add, "adds a constant to something other than MatMul; quadra imports Add as a "
                "residual connection or as the bias of a MatMul");
    }
    return {data_input(mm), {linear_from_matmul(mm, &add)}};
  }

  /// GELU as torch exports it before opset 20: Mul(Mul(x, Add(Erf(Div(x, sqrt 2)), 1)), 0.5).
  [[noreturn]] void not_gelu(const onnx::NodeProto& node) const {
    fail(node, "Mul is imported only as part of the exact GELU pattern x * 0.5 * (1 + "
               "erf(x / sqrt(2)))");
  }

  Unit gelu(const onnx::NodeProto& half) {
    const auto refuse = [&] { not_gelu(half); };
    if (half.input_size() != 2) refuse();
    const int half_slot = scalar(half.input(0)) ? 0 : 1;
    const auto half_value = scalar(half.input(half_slot));
    if (!half_value || *half_value != 0.5) refuse();
    const onnx::NodeProto& mul = producer(half.input(1 - half_slot), &half);
    if (mul.op_type() != "Mul" || mul.input_size() != 2) refuse();
    for (int x_slot = 0; x_slot < 2; ++x_slot) {
      const std::string& x = mul.input(x_slot);
      if (is_constant(x) || producer_.count(mul.input(1 - x_slot)) == 0) continue;
      const onnx::NodeProto& add = producer(mul.input(1 - x_slot), &mul);
      if (add.op_type() != "Add" || add.input_size() != 2) continue;
      const int one_slot = scalar(add.input(0)) ? 0 : 1;
      const auto one = scalar(add.input(one_slot));
      if (!one || *one != 1.0 || producer_.count(add.input(1 - one_slot)) == 0) continue;
      const onnx::NodeProto& erf = producer(add.input(1 - one_slot), &add);
      if (erf.op_type() != "Erf" || erf.input_size() != 1 || producer_.count(erf.input(0)) == 0) continue;
      const onnx::NodeProto& div = producer(erf.input(0), &erf);
      if (div.op_type() != "Div" || div.input_size() != 2 || div.input(0) != x) continue;
      const auto root2 = scalar(div.input(1));
      if (!root2 || std::abs(*root2 - std::sqrt(2.0)) > 1e-6) continue;
      return {x, {"gelu"}};
    }
    not_gelu(half);
  }

  /// AveragePool, and Pad + AveragePool: torch writes an average pooling with padding (counted,
  /// its default) as a zero Pad followed by a pool without padding.
  Unit average_pool(const onnx::NodeProto& node) {
    const std::string& in = data_input(node);
    const auto it = producer_.find(in);
    if (it == producer_.end() || graph_->node(it->second).op_type() != "Pad") {
      return {in, {pool(node, 0)}};
    }
    const auto& pad = graph_->node(it->second);
    const auto mode = string_attr(pad, "mode");
    if (!mode.empty() && mode != "constant") fail(pad, fmt::format("mode {}; expected constant", mode));
    if (pad.input_size() > 2 && !pad.input(2).empty()) {
      const auto value = scalar(pad.input(2));
      if (!value || *value != 0.0) fail(pad, "pads with a value other than zero");
    }
    const auto pads = shape_value(pad.input_size() > 1 ? pad.input(1) : std::string());
    // [n, c, top, left, n, c, bottom, right]: zero but for one spatial padding.
    const bool symmetric = pads && pads->size() == 8 && std::all_of(pads->begin(), pads->end(), [](const auto& p) { return p.has_value(); }) &&
                           *(*pads)[0] == 0 && *(*pads)[1] == 0 && *(*pads)[4] == 0 && *(*pads)[5] == 0 &&
                           *(*pads)[2] == *(*pads)[3] && *(*pads)[2] == *(*pads)[6] && *(*pads)[2] == *(*pads)[7] &&
                           *(*pads)[2] >= 0;
    if (!symmetric) fail(pad, "pads are not the same on every side of height and width");
    return {data_input(pad), {pool(node, *(*pads)[2])}};
  }

  std::string pool(const onnx::NodeProto& node, std::int64_t padded) {
    const bool max = node.op_type() == "MaxPool";
    require_default(node, "ceil_mode", 0);
    require_unit_dilations(node);
    if (max && node.output_size() > 1 && !node.output(1).empty()) fail(node, "its indices output is not supported");
    require_default(node, "storage_order", 0);
    const auto kernel = square(node, "kernel_shape", -1);
    if (kernel <= 0) fail(node, "has no kernel_shape");
    const auto stride = square(node, "strides", 1);
    const auto pad = square(node, "pads", 0) + padded;
    if (!max && padded == 0 && pad > 0 && int_attr(node, "count_include_pad", 0) != 1) {
      fail(node, "pads without count_include_pad; quadra's average pooling counts the padding "
                 "(PyTorch's default)");
    }
    return fmt::format("{}({},stride={},pad={})", max ? "maxpool" : "avgpool", kernel, stride, pad);
  }

  /// The value of a shape computation: constants, Unsqueeze, Concat, and Gather of index 0 of
  /// Shape(x) (the batch size, nullopt), as torch writes x.view(x.size(0), -1). nullopt when the
  /// value is computed otherwise.
  using ShapeValue = std::vector<std::optional<std::int64_t>>;
  std::optional<ShapeValue> shape_value(const std::string& value, int depth = 0) const {
    if (depth > 16) return std::nullopt;
    if (const auto it = constants_.find(value); it != constants_.end()) {
      if (it->second.dtype != io::DType::kInt64 || it->second.size() > 8) return std::nullopt;
      const auto v = it->second.to_vector<std::int64_t>();
      return ShapeValue(v.begin(), v.end());
    }
    const auto it = producer_.find(value);
    if (it == producer_.end()) return std::nullopt;
    const auto& node = graph_->node(it->second);
    if (node.op_type() == "Unsqueeze" && node.input_size() >= 1) {
      return shape_value(node.input(0), depth + 1);
    }
    if (node.op_type() == "Concat") {
      ShapeValue out;
      for (const auto& in : node.input()) {
        const auto part = shape_value(in, depth + 1);
        if (!part) return std::nullopt;
        out.insert(out.end(), part->begin(), part->end());
      }
      return out;
    }
    if (node.op_type() == "Gather" && node.input_size() == 2 &&
        producer_.count(node.input(0)) != 0 &&
        graph_->node(producer_.at(node.input(0))).op_type() == "Shape") {
      const auto index = shape_value(node.input(1), depth + 1);
      if (index && index->size() == 1 && index->front() == 0) return ShapeValue{std::nullopt};
    }
    return std::nullopt;
  }

  void check_reshape_to_flat(const onnx::NodeProto& node) const {
    if (node.input_size() < 2) fail(node, "has no shape input");
    const auto shape = shape_value(node.input(1));
    if (!shape) {
      fail(node, "its target shape is computed in a way quadra does not recognise; export with "
                 "torch.flatten(x, 1) or x.view(x.size(0), -1)");
    }
    // [batch or -1 or 0, -1 or features]; Network checks the feature count.
    if (shape->size() != 2 || !(*shape)[1] || *(*shape)[1] == 0 || *(*shape)[1] < -1) {
      fail(node, "reshapes to something other than [batch, features]; quadra imports Reshape "
                 "only as a flatten");
    }
  }

  std::string batch_norm(const onnx::NodeProto& node) {
    const auto& scale = constant(node, 1, "scale");
    const auto& bias = constant(node, 2, "bias");
    const auto& mean = constant(node, 3, "running mean");
    const auto& var = constant(node, 4, "running variance");
    if (scale.shape.size() != 1) fail(node, "its scale is not a vector");
    const std::vector<std::int64_t> c{scale.shape[0]};
    if (bias.shape != c || mean.shape != c || var.shape != c) {
      fail(node, "scale, bias, mean and variance do not all have one entry per channel");
    }
    const std::string name = layer_name(node, node.input(1), &node.input(2));
    add_array(node, name + ".weight", scale);
    add_array(node, name + ".bias", bias);
    add_array(node, name + ".running_mean", mean);
    add_array(node, name + ".running_var", var);
    const std::int64_t tracked = 0;
    arrays_[name + ".num_batches_tracked"] = io::NpyArray::from<std::int64_t>({}, &tracked);
    const bool batch = options_.batch_norm ? *options_.batch_norm == "batch"
                                           : int_attr(node, "training_mode", 0) == 1;
    // quadra chooses one mode for every batchnorm of a network.
    const NormMode mode = batch ? NormMode::kBatchStatistics : NormMode::kRunningStatistics;
    if (batch_norm_seen_ && mode != batch_norm_) {
      fail(node, fmt::format("training_mode = {} while an earlier BatchNormalization has {}; "
                             "quadra normalises every batchnorm of a network alike: pass "
                             "--batch-norm running or --batch-norm batch",
                             batch ? 1 : 0, batch ? 0 : 1));
    }
    batch_norm_seen_ = true;
    batch_norm_ = mode;
    // ONNX's momentum weighs the running value, PyTorch's the new batch statistic.
    // Both in float precision's shortest text: 0.9 stored as a float gives back 0.1.
    const double onnx_momentum = std::stod(float_text(float_attr(node, "momentum", 0.9F)));
    const auto momentum = static_cast<float>(1.0 - onnx_momentum);
    return fmt::format("batchnorm(eps={},momentum={},name={})",
                       float_text(float_attr(node, "epsilon", 1e-5F)), float_text(momentum), name);
  }

  std::string layer_norm(const onnx::NodeProto& node) {
    const auto axis = int_attr(node, "axis", -1);
    const auto& scale = constant(node, 1, "scale");
    // quadra's layernorm normalizes a whole sample: axis 1, or -1 on [batch, features].
    if (!(axis == 1 || (axis == -1 && scale.shape.size() == 1))) {
      fail(node, fmt::format("axis = {}; quadra normalizes over the whole sample (axis 1)", axis));
    }
    const bool bias = node.input_size() > 2 && !node.input(2).empty();
    const std::string name = layer_name(node, node.input(1), bias ? &node.input(2) : nullptr);
    add_array(node, name + ".weight", scale);
    if (bias) {
      const auto& b = constant(node, 2, "bias");
      if (b.shape != scale.shape) fail(node, "its bias and scale have different shapes");
      add_array(node, name + ".bias", b);
    } else {
      // quadra's affine layer norm always has a bias; a zero bias is the same map.
      std::vector<double> zeros(static_cast<std::size_t>(scale.size()), 0.0);
      add_array(node, name + ".bias", io::NpyArray::from<double>(scale.shape, zeros.data()));
    }
    return fmt::format("layernorm(eps={},name={})", float_text(float_attr(node, "epsilon", 1e-5F)),
                       name);
  }

  std::string file_;
  OnnxImportOptions options_;
  const onnx::GraphProto* graph_ = nullptr;
  std::string input_;
  std::unordered_map<std::string, io::NpyArray> constants_;
  std::unordered_map<std::string, int> producer_;
  std::unordered_map<std::string, Unit> units_;
  std::set<std::string> in_progress_;
  std::set<std::string> names_;
  std::map<std::string, io::NpyArray> arrays_;
  bool batch_norm_seen_ = false;
  NormMode batch_norm_ = NormMode::kRunningStatistics;
};

}  // namespace

OnnxModel import_onnx_bytes(std::string_view bytes, std::string_view name,
                            const OnnxImportOptions& options) {
  if (options.batch_norm && *options.batch_norm != "running" && *options.batch_norm != "batch") {
    throw Error(fmt::format("--batch-norm '{}'; expected running or batch", *options.batch_norm));
  }
  return Importer(name, options).run(bytes);
}

#endif  // QUADRA_WITH_ONNX

}  // namespace quadra::nn
