#pragma once
/// \file
/// ONNX import: a network exported by `torch.onnx.export` (opsets 13-17) becomes a quadra layer
/// spec plus its weights, so `--model net.onnx` works wherever a model is accepted.
///
/// The file is parsed with ONNX's protobuf classes (Debian's libonnx-dev); everything the import
/// relies on is validated here (op types, attributes, initializer sizes, shapes), so a hostile
/// or truncated file ends in one quadra::Error naming the file, the node (name and op type) and
/// what was expected.
///
/// What is imported: the part of the graph the single output depends on, walked back along
/// data inputs, as chains of ops and residual blocks (two paths from one value joined by `Add`).
/// Shape computations that feed `Reshape` (Shape, Gather, Unsqueeze, Concat) are recognised, not
/// translated. Ops: Conv, Gemm, MatMul (+ Add of a bias), Relu, LeakyRelu, Tanh, Sigmoid,
/// Softplus, the exact GELU pattern (Div by sqrt 2, Erf, Add 1, Mul, Mul 0.5), MaxPool,
/// AveragePool, GlobalAveragePool, Flatten and Reshape to [batch, features], Add,
/// BatchNormalization, LayerNormalization (opset 17; earlier opsets decompose it and are
/// refused), Identity, Dropout.
///
/// Names: a layer whose initializers are `P.weight` (and `P.bias`) is named P, so a model
/// exported with `do_constant_folding=False` keeps its `state_dict` names. Otherwise (constant
/// folding fuses BatchNorm into Conv and names the fused weights `onnx::Conv_67`) the layer is
/// named after its node (`/layer1/conv1/Conv` gives `layer1.conv1`). BatchNorm running mean and
/// variance are buffers under `P.running_mean` and `P.running_var`.

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include <quadra/io/npy.hpp>
#include <quadra/nn/network.hpp>

namespace quadra::nn {

struct OnnxImportOptions {
  /// Overrides every BatchNormalization's `training_mode`: "running" (running statistics,
  /// PyTorch's eval mode) or "batch" (batch statistics, train mode). Unset: the mode the file
  /// records (training_mode = 1: batch statistics).
  std::optional<std::string> batch_norm;
};

/// An imported network: the spec (Network(spec, input_shape) builds it), and every parameter
/// and buffer by name in PyTorch's layout, float32 or float64 as stored.
struct OnnxModel {
  std::string spec;
  TensorShape input_shape;
  std::map<std::string, io::NpyArray> arrays;
  /// How its batchnorm layers normalise (Network::set_batch_norm), from training_mode or the
  /// batch_norm option; the spec text does not record it.
  NormMode batch_norm = NormMode::kRunningStatistics;
};

/// Whether this build can read ONNX files (it was built with libonnx-dev).
[[nodiscard]] bool onnx_available() noexcept;

/// Whether `file` names an ONNX model (by its `.onnx` extension).
[[nodiscard]] bool is_onnx_file(const std::filesystem::path& file);

/// Reads and translates an ONNX file. Throws quadra::Error as described above, and when the
/// build has no ONNX support.
[[nodiscard]] OnnxModel import_onnx(const std::filesystem::path& file,
                                    const OnnxImportOptions& options = {});
/// The same from the bytes of a file; `name` stands for the file in messages.
[[nodiscard]] OnnxModel import_onnx_bytes(std::string_view bytes, std::string_view name,
                                          const OnnxImportOptions& options = {});

}  // namespace quadra::nn
