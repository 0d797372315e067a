#pragma once
/// \file
/// Networks from a layer spec, e.g. `linear(512) tanh linear(10)` or
/// `conv(16,3,pad=1) relu maxpool(2) flatten linear(10)`, on an input shape given at build time
/// (`784` or `1x28x28`). A spec is a chain of layers, or, with residual blocks, a directed
/// acyclic graph whose nodes are kept in topological order; a chain is the graph in which node l
/// reads node l−1's output.
///
/// Layout conventions (the same as PyTorch, so weights move between the two unchanged):
/// - A batch is a column-major matrix with one column per sample; a sample's features are in
///   C-H-W order. This is the memory of a NumPy N×C×H×W (or N×F) array.
/// - All parameters live in one contiguous vector, layer after layer, each layer's weight then
///   its bias. A Linear weight is out×in row-major, a Conv2d weight out×in×kh×kw row-major.
/// - Parameter names are those of the equivalent `torch.nn.Sequential`'s state_dict: the token
///   index counts every layer, activations, pools and flatten included (`0.weight`, `2.bias`).
///   A residual block is a module with submodules `branch` and `shortcut` (two
///   `torch.nn.Sequential`s; no `shortcut` for the identity), so its parameters are named
///   `2.branch.0.weight`, `4.shortcut.0.weight` (examples/pytorch/quadra_modules.py is that
///   module).
///
/// Spec grammar: whitespace-separated tokens `name` or `name(arg, ..., key=value)`:
///   linear(OUT[,bias=true|false])            conv(OUT,KERNEL[,stride=1][,pad=0][,bias=true])
///   maxpool(KERNEL[,stride=KERNEL][,pad=0])  avgpool(KERNEL[,stride=KERNEL][,pad=0])
///   flatten  relu  leakyrelu([SLOPE=0.01])  tanh  sigmoid  gelu  softplus
///   globalavgpool (CxHxW -> Cx1x1, PyTorch's AdaptiveAvgPool2d(1))  dropout([P=0.5])
///   residual(BRANCH...[, shortcut=SHORTCUT...])
/// A residual block's BRANCH and SHORTCUT are whitespace-separated layer specs themselves
/// (residual blocks nest); its output is branch(x) + shortcut(x), the shortcut being the identity
/// when absent, and both must give the same shape.
/// Dropout is the identity: quadra computes curvature and predictions of the network at
/// inference, where PyTorch's dropout passes its input through unchanged; its stochastic training
/// mask would make the loss, and so every curvature matrix, random. It is parsed so that specs and
/// modules from PyTorch carry over.
/// Every layer with parameters also takes `name=PATH`, the module path its parameters are named
/// under instead of its position (letters, digits, `_`, `-`, `:` and `.` between non-empty parts;
/// an imported ONNX model names its layers so). Names must be unique.
///   batchnorm([eps=1e-5][,momentum=0.1][,affine=true])  layernorm([eps=1e-5][,affine=true])
///   groupnorm(GROUPS[,eps=1e-5][,affine=true])
/// Aliases: conv2d, maxpool2d, avgpool2d, leaky_relu; `padding=` for `pad=`. AvgPool counts
/// padding in the divisor (PyTorch's default); Softplus has beta 1 and threshold 20 and GELU is
/// the exact (erf) form, as PyTorch's defaults. batchnorm is BatchNorm1d on a flat input (per
/// feature) and BatchNorm2d on CxHxW (per channel), normalising with its running statistics
/// (buffers `running_mean`, `running_var`, `num_batches_tracked`) or, by Network::set_batch_norm,
/// the batch's statistics (see NormMode); layernorm is LayerNorm over
/// the whole sample shape with elementwise affine; groupnorm is GroupNorm(GROUPS, C) with
/// per-channel affine (a flat input of F features counts as F channels of 1x1). Their weight
/// (γ) starts at 1 and their bias (β) at 0, as in PyTorch.
///
/// Memory: a Network is sized from its spec before anything is allocated. Construction refuses
/// a model whose parameters and one sample's activations (float32) exceed memory_limit(), and
/// BoundBatch refuses a batch whose activations and parameters exceed it, each with the bytes
/// needed, the limit and how to raise it.

#include <cstddef>
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
  kSoftplus,
  kAdd,            ///< sum of two values of one shape; the join of a residual block
  kGlobalAvgPool,  ///< CxHxW -> Cx1x1, the mean over each channel
  kDropout,        ///< the identity (see the file comment)
  kBatchNorm,  ///< BatchNorm1d/2d with running statistics (see norm_layers.hpp)
  kLayerNorm,  ///< LayerNorm over the whole sample shape
  kGroupNorm,  ///< GroupNorm over channel groups
};

/// How BatchNorm normalises. kRunningStatistics: with its running statistics (PyTorch's eval
/// mode, a per-sample affine map). kBatchStatistics: with the mean and biased variance of the
/// bound batch (PyTorch's train mode; over all samples and, for a CxHxW input, all positions),
/// which couples the samples of a batch: BoundBatch then computes every batch-level quantity
/// exactly for the batch loss and refuses per-sample ones, and Network::forward (prediction)
/// still uses the running statistics, as PyTorch's eval mode. The mode is not part of the spec
/// text: Network::set_batch_norm chooses it (`--batch-norm`, `model.batch_norm`).
enum class NormMode { kRunningStatistics, kBatchStatistics };

/// "running" or "batch".
[[nodiscard]] std::string to_string(NormMode mode);
/// "running" or "batch"; `option` names the setting in the quadra::Error for anything else.
[[nodiscard]] NormMode parse_norm_mode(std::string_view text,
                                       std::string_view option = "--batch-norm");

/// One parsed token of a layer spec.
struct LayerSpec {
  LayerKind kind = LayerKind::kRelu;
  Index out = 0;      ///< Linear: out features; Conv2d: out channels
  Index kernel = 0;   ///< Conv2d and pools: square kernel size
  Index stride = 1;   ///< Conv2d and pools (pools default to the kernel size)
  Index padding = 0;  ///< Conv2d and pools: zero padding (pools: ignored positions)
  bool bias = true;   ///< Linear and Conv2d
  double negative_slope = 0.01;  ///< LeakyReLU
  double dropout = 0.5;          ///< Dropout: the training-time drop probability (unused)
  /// Layers with parameters: the module path its parameters are named under (`name=layer1.conv1`
  /// gives `layer1.conv1.weight`); empty: the position in the spec (`3`, `2.branch.0`).
  std::string name;
  double eps = 1e-5;             ///< normalization layers: added to the variance
  double momentum = 0.1;         ///< BatchNorm: running-statistics update rate (PyTorch's)
  bool affine = true;            ///< normalization layers: learnable weight (γ) and bias (β)
  Index groups = 1;              ///< GroupNorm: number of channel groups
  NormMode mode = NormMode::kRunningStatistics;  ///< BatchNorm
  [[nodiscard]] bool has_parameters() const noexcept;
  /// BatchNorm, LayerNorm or GroupNorm.
  [[nodiscard]] bool is_normalization() const noexcept;
  /// Canonical text, e.g. "conv(16,3,stride=1,pad=1)"; parse_layer_spec reads it back.
  [[nodiscard]] std::string str() const;
};

/// One item of a parsed spec: a layer, or a residual block (layer.kind == kAdd) with its branch
/// and shortcut (empty: the identity).
struct SpecItem {
  LayerSpec layer;
  std::vector<SpecItem> branch;
  std::vector<SpecItem> shortcut;
  std::size_t number = 0;  ///< 1-based token number in reading order (nested tokens count)
  std::size_t offset = 0;  ///< character offset of the token in the spec
  [[nodiscard]] bool is_residual() const noexcept { return layer.kind == LayerKind::kAdd; }
  /// Canonical text; parse_spec reads it back.
  [[nodiscard]] std::string str() const;
};

/// Parses a layer spec into its top-level items. A bad token throws quadra::Error naming the
/// token, its position (1-based token number and character offset) and what was expected.
[[nodiscard]] std::vector<SpecItem> parse_spec(std::string_view text);

/// Parses a layer spec into the graph's nodes in topological order (a residual block becomes its
/// branch's nodes, its shortcut's nodes and an add node). Throws as parse_spec.
[[nodiscard]] std::vector<LayerSpec> parse_layer_spec(std::string_view text);

/// One named parameter tensor in the flat parameter vector.
struct ParameterInfo {
  std::string name;             ///< state_dict key, e.g. "0.weight"
  std::vector<Index> shape;     ///< PyTorch layout, e.g. {out, in} or {out, in, kh, kw}
  Index offset = 0;             ///< first entry in the flat vector
  Index size = 0;               ///< number of entries
  Index layer = 0;              ///< node index (for a chain: the token index in the spec)
  bool is_bias = false;
};

/// One named buffer: state that is not a parameter (BatchNorm's running statistics), stored in
/// double in Network::buffer_values() and in a state_dict under `name`.
struct BufferInfo {
  std::string name;          ///< state_dict key, e.g. "1.running_mean"
  std::vector<Index> shape;  ///< PyTorch's shape ({} for the scalar num_batches_tracked)
  Index offset = 0;          ///< first entry in buffer_values()
  Index size = 0;            ///< number of entries
  Index layer = 0;           ///< node index
  bool is_integer = false;   ///< int64 in a state_dict (num_batches_tracked)
};

/// The architecture: the nodes (layers) in topological order, the value each computes, and the
/// parameter layout. Value 0 is the network's input and value l + 1 the output of node l; the
/// last value is the network's output. A value type; the parameters themselves are a separate
/// vector (see Model and BoundBatch).
class Network {
 public:
  /// Throws quadra::Error for a bad spec, a spec that does not fit the input shape (naming
  /// the layer, its position and the shape it received), sizes beyond the int64 range, or a
  /// model that does not fit memory_limit() for one float32 sample (see check_memory).
  Network(std::string_view spec, TensorShape input_shape);

  /// The nodes in topological order.
  [[nodiscard]] const std::vector<LayerSpec>& layers() const noexcept { return layers_; }
  /// Value shapes: shapes()[0] is the input, shapes()[l + 1] the output of node l.
  [[nodiscard]] const std::vector<TensorShape>& shapes() const noexcept { return shapes_; }
  /// The values node l reads, in order: {l} in a chain; two for an add node.
  [[nodiscard]] const std::vector<Index>& inputs(Index layer) const noexcept {
    return inputs_[static_cast<std::size_t>(layer)];
  }
  /// The shape of node l's (first) input.
  [[nodiscard]] const TensorShape& input_shape(Index layer) const noexcept {
    return shapes_[static_cast<std::size_t>(inputs(layer).front())];
  }
  /// Node l's module path in the equivalent PyTorch module ("3", "2.branch.0"; an add node has
  /// the path of its residual block); its parameters are named path.weight and path.bias.
  [[nodiscard]] const std::string& module_path(Index layer) const noexcept {
    return paths_[static_cast<std::size_t>(layer)];
  }
  /// True when every node reads the previous node's output (no residual block).
  [[nodiscard]] bool is_sequential() const noexcept { return sequential_; }
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

  /// Buffers in layer order (per BatchNorm: running_mean, running_var, num_batches_tracked,
  /// PyTorch's state_dict order), and their values, initialised to PyTorch's defaults (mean 0,
  /// variance 1, num_batches_tracked 0). A copied Network keeps its buffer values.
  [[nodiscard]] const std::vector<BufferInfo>& buffers() const noexcept { return buffers_; }
  [[nodiscard]] const std::vector<double>& buffer_values() const noexcept { return buffer_values_; }

  /// Sets the mode of every batchnorm layer (see NormMode); a spec's layers start with running
  /// statistics. The spec text does not change.
  void set_batch_norm(NormMode mode);
  /// True when some batchnorm layer normalises with batch statistics.
  [[nodiscard]] bool has_batch_statistics() const noexcept;
  /// Sets every buffer value. Throws quadra::Error naming the buffer when the count does not
  /// match, a value is not finite, a running variance is negative or num_batches_tracked is not
  /// a whole number >= 0.
  void set_buffer_values(std::vector<double> values);

  /// Floating-point operations of layer l's forward pass for one sample: 2 per multiply-add of
  /// Linear and Conv2d (plus the bias adds), one per window element of a pool, one per output
  /// of an activation (however its function is evaluated), none for flatten; batchnorm 2 per
  /// output (its running statistics fold into one multiply-add), layernorm and groupnorm 5 per
  /// output (mean, variance, normalisation) plus 2 with affine; an add node one per output,
  /// globalavgpool one per input, dropout none. Saturates at the int64 maximum.
  [[nodiscard]] std::int64_t forward_flops(Index layer) const noexcept;

  /// Values of one sample's activations: the input and every layer's output (the sum of
  /// shapes()[i].size()). Binding N samples stores N times this (see BoundBatch).
  [[nodiscard]] Index activations_per_sample() const noexcept { return activations_per_sample_; }
  /// Bytes of the parameters and of `batch` samples' activations in scalars of `scalar_bytes`,
  /// saturated at the int64 maximum: what binding `batch` samples needs at least (products and
  /// the backward pass add work areas of the same order, see BoundBatch).
  [[nodiscard]] std::int64_t memory_bytes(Index batch, std::size_t scalar_bytes) const noexcept;
  /// Throws quadra::Error when memory_bytes(batch, scalar_bytes) exceeds memory_limit(), with
  /// the bytes needed, the limit, where it comes from and how to raise it.
  void check_memory(Index batch, std::size_t scalar_bytes) const;

  /// PyTorch's default initialisation, seeded: weights kaiming-uniform with a = sqrt(5) and
  /// biases uniform, both U(-1/sqrt(fan_in), 1/sqrt(fan_in)). Same values for float and double
  /// (drawn in double, then rounded). Throws quadra::Error when the parameters in Scalar (and
  /// one sample's activations) exceed memory_limit().
  template <class Scalar>
  [[nodiscard]] Vector<Scalar> initial_parameters(std::uint64_t seed) const;

  /// Network outputs (num_outputs × N) for inputs (num_inputs × N). Parallel over samples.
  template <class Scalar>
  [[nodiscard]] Matrix<Scalar> forward(ConstVectorRef<Scalar> params,
                                       ConstMatrixRef<Scalar> inputs) const;

 private:
  /// Appends the nodes of `items` reading value `value`, named under `prefix`; returns the value
  /// the last of them computes.
  Index append(const std::vector<SpecItem>& items, Index value, const std::string& prefix);
  /// Appends one node reading `inputs` with its shape inference and parameters.
  void add_node(const SpecItem& item, std::vector<Index> inputs, std::string path);

  std::vector<LayerSpec> layers_;
  std::vector<TensorShape> shapes_;
  std::vector<std::vector<Index>> inputs_;
  std::vector<std::string> paths_;
  std::string spec_;
  bool sequential_ = true;
  std::vector<ParameterInfo> params_;
  std::vector<Index> offsets_;
  Index num_parameters_ = 0;
  Index activations_per_sample_ = 0;
  std::vector<BufferInfo> buffers_;
  std::vector<double> buffer_values_;
};

/// The bytes models and batches may take, and where that number comes from (for messages).
struct MemoryLimit {
  std::int64_t bytes = 0;
  std::string source;  ///< "QUADRA_MEMORY_LIMIT", "physical memory" or the address-space limit
};

/// QUADRA_MEMORY_LIMIT when set (and not empty); otherwise the smaller of the machine's physical
/// memory and the process's address-space limit (RLIMIT_AS, ignored when unlimited). Read on
/// every call, so a changed variable takes effect at once. Throws quadra::Error naming
/// QUADRA_MEMORY_LIMIT when its value is malformed.
[[nodiscard]] MemoryLimit memory_limit();

/// Bytes from "2000000", "512M" or "16g": a whole number >= 1 with an optional suffix K, M, G or
/// T (powers of 1024). Throws quadra::Error naming `name` and the text otherwise.
[[nodiscard]] std::int64_t parse_memory_size(std::string_view text,
                                             std::string_view name = "QUADRA_MEMORY_LIMIT");

/// "512 bytes" or "2.9 TiB (3144000003136 bytes)".
[[nodiscard]] std::string format_bytes(std::int64_t bytes);

/// Whether a `--model` argument names a model file rather than a layer spec: true for anything
/// that exists there but a directory (a device or FIFO is then refused by the model reader);
/// false when nothing exists there or the text cannot be a path at all (a
/// spec longer than a file name may be). Throws quadra::Error naming the argument when the file
/// system cannot say (e.g. a directory on the way is not readable).
[[nodiscard]] bool looks_like_model_file(const std::string& arg);

}  // namespace quadra::nn
