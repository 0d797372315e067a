#pragma once
/// \file
/// Sequential networks from a layer spec, e.g. `linear(512) tanh linear(10)` or
/// `conv(16,3,pad=1) relu maxpool(2) flatten linear(10)`, on an input shape given at build time
/// (`784` or `1x28x28`).
///
/// Layout conventions (the same as PyTorch, so weights move between the two unchanged):
/// - A batch is a column-major matrix with one column per sample; a sample's features are in
///   C-H-W order. This is the memory of a NumPy N×C×H×W (or N×F) array.
/// - All parameters live in one contiguous vector, layer after layer, each layer's weight then
///   its bias. A Linear weight is out×in row-major, a Conv2d weight out×in×kh×kw row-major.
/// - Parameter names are those of the equivalent `torch.nn.Sequential`'s state_dict: the token
///   index counts every layer, activations, pools and flatten included (`0.weight`, `2.bias`).
///
/// Spec grammar: whitespace-separated tokens `name` or `name(arg, ..., key=value)`:
///   linear(OUT[,bias=true|false])            conv(OUT,KERNEL[,stride=1][,pad=0][,bias=true])
///   maxpool(KERNEL[,stride=KERNEL][,pad=0])  avgpool(KERNEL[,stride=KERNEL][,pad=0])
///   flatten  relu  leakyrelu([SLOPE=0.01])  tanh  sigmoid  gelu  softplus
/// Aliases: conv2d, maxpool2d, avgpool2d, leaky_relu; `padding=` for `pad=`. AvgPool counts
/// padding in the divisor (PyTorch's default); Softplus has beta 1 and threshold 20 and GELU is
/// the exact (erf) form, as PyTorch's defaults.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <quadra/sdk/types.hpp>

namespace quadra::nn {

/// Shape of one sample: {F} for a flat feature vector or {C, H, W} for an image.
struct TensorShape {
  std::vector<Index> dims;
  [[nodiscard]] Index size() const noexcept;
  [[nodiscard]] bool is_flat() const noexcept { return dims.size() == 1; }
  [[nodiscard]] bool is_image() const noexcept { return dims.size() == 3; }
  /// "784" or "1x28x28".
  [[nodiscard]] std::string str() const;
  friend bool operator==(const TensorShape&, const TensorShape&) = default;
};

/// Parses "784", "1x28x28" (or "1,28,28"). Throws quadra::Error naming the text.
[[nodiscard]] TensorShape parse_shape(std::string_view text);

enum class LayerKind {
  kLinear,
  kConv2d,
  kMaxPool2d,
  kAvgPool2d,
  kFlatten,
  kRelu,
  kLeakyRelu,
  kTanh,
  kSigmoid,
  kGelu,
  kSoftplus
};

/// One parsed token of a layer spec.
struct LayerSpec {
  LayerKind kind = LayerKind::kRelu;
  Index out = 0;      ///< Linear: out features; Conv2d: out channels
  Index kernel = 0;   ///< Conv2d and pools: square kernel size
  Index stride = 1;   ///< Conv2d and pools (pools default to the kernel size)
  Index padding = 0;  ///< Conv2d and pools: zero padding (pools: ignored positions)
  bool bias = true;   ///< Linear and Conv2d
  double negative_slope = 0.01;  ///< LeakyReLU
  [[nodiscard]] bool has_parameters() const noexcept {
    return kind == LayerKind::kLinear || kind == LayerKind::kConv2d;
  }
  /// Canonical text, e.g. "conv(16,3,stride=1,pad=1)"; parse_layer_spec reads it back.
  [[nodiscard]] std::string str() const;
};

/// Parses a layer spec. A bad token throws quadra::Error naming the token, its position (1-based
/// token number and character offset) and what was expected.
[[nodiscard]] std::vector<LayerSpec> parse_layer_spec(std::string_view text);

/// One named parameter tensor in the flat parameter vector.
struct ParameterInfo {
  std::string name;             ///< state_dict key, e.g. "0.weight"
  std::vector<Index> shape;     ///< PyTorch layout, e.g. {out, in} or {out, in, kh, kw}
  Index offset = 0;             ///< first entry in the flat vector
  Index size = 0;               ///< number of entries
  Index layer = 0;              ///< token index in the spec
  bool is_bias = false;
};

/// The architecture: layers, the shape after each, and the parameter layout. A value type; the
/// parameters themselves are a separate vector (see Model and BoundBatch).
class Network {
 public:
  /// Throws quadra::Error for a bad spec, or a spec that does not fit the input shape (naming
  /// the layer, its position and the shape it received).
  Network(std::string_view spec, TensorShape input_shape);

  [[nodiscard]] const std::vector<LayerSpec>& layers() const noexcept { return layers_; }
  /// shapes()[0] is the input, shapes()[l + 1] the output of layer l.
  [[nodiscard]] const std::vector<TensorShape>& shapes() const noexcept { return shapes_; }
  [[nodiscard]] const TensorShape& input_shape() const noexcept { return shapes_.front(); }
  [[nodiscard]] const TensorShape& output_shape() const noexcept { return shapes_.back(); }
  [[nodiscard]] Index num_inputs() const noexcept { return shapes_.front().size(); }
  [[nodiscard]] Index num_outputs() const noexcept { return shapes_.back().size(); }
  [[nodiscard]] Index num_parameters() const noexcept { return num_parameters_; }
  [[nodiscard]] const std::vector<ParameterInfo>& parameters() const noexcept { return params_; }
  /// First entry of layer l's parameters (its weight) in the flat vector.
  [[nodiscard]] Index parameter_offset(Index layer) const noexcept {
    return offsets_[static_cast<std::size_t>(layer)];
  }
  /// Canonical spec text (parses back to the same network).
  [[nodiscard]] std::string spec() const;

  /// PyTorch's default initialisation, seeded: weights kaiming-uniform with a = sqrt(5) and
  /// biases uniform, both U(-1/sqrt(fan_in), 1/sqrt(fan_in)). Same values for float and double
  /// (drawn in double, then rounded).
  template <class Scalar>
  [[nodiscard]] Vector<Scalar> initial_parameters(std::uint64_t seed) const;

  /// Network outputs (num_outputs × N) for inputs (num_inputs × N). Parallel over samples.
  template <class Scalar>
  [[nodiscard]] Matrix<Scalar> forward(ConstVectorRef<Scalar> params,
                                       ConstMatrixRef<Scalar> inputs) const;

 private:
  std::vector<LayerSpec> layers_;
  std::vector<TensorShape> shapes_;
  std::vector<ParameterInfo> params_;
  std::vector<Index> offsets_;
  Index num_parameters_ = 0;
};

}  // namespace quadra::nn
