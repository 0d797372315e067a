#pragma once
/// \file
/// Weights and model files in NumPy format, interchangeable with PyTorch.
///
/// Weights: an `.npz` whose keys are the state_dict names of the equivalent
/// `torch.nn.Sequential` (`0.weight`, `0.bias`, `2.weight`, ...) in PyTorch's layout (Linear
/// out×in, Conv2d out×in×kh×kw). A network with buffers (BatchNorm) has them there too, under their
/// state_dict names (`1.running_mean`, `1.running_var`, `1.num_batches_tracked`, the last a
/// 0-d int64 array), so a whole state_dict moves both ways. In Python: `np.savez(f, **{k: v.numpy() for k, v in
/// model.state_dict().items()})`, and back with `model.load_state_dict({k: torch.from_numpy(v)
/// for k, v in np.load(f).items() if not k.startswith("__")})`.
///
/// A model file is such an `.npz` plus two arrays: `__spec__` (uint8, the layer spec as UTF-8
/// text) and `__input_shape__` (int64, e.g. [1, 28, 28]), and, when the model was trained on
/// normalised inputs, its preprocessing: `__normalize__` (uint8 text: none, minmax,
/// standardize, standardize-channel or standardize-global), `__shift__` and `__scale__`
/// (float32, one entry for every feature or one for all). The network's input is
/// x = (raw - shift) * scale, where raw uint8 inputs (images) are first divided by 255. Files
/// are written atomically.
///
/// Loading is strict: a missing key, an unexpected key, a wrong shape, a non-floating dtype, a
/// truncated or non-NumPy file each throw one quadra::Error naming the file and key. float32
/// and float64 files load into either precision (converted).

#include <filesystem>
#include <map>
#include <optional>
#include <quadra/data/source.hpp>
#include <quadra/io/npy.hpp>
#include <quadra/nn/network.hpp>
#include <quadra/nn/onnx_import.hpp>
#include <quadra/sdk/types.hpp>
#include <string>

namespace quadra::nn {

/// A network with its parameters, and the preprocessing of its inputs when the file records
/// one (files written before models carried it, and weight files, have none).
template <class Scalar>
struct Model {
  Network network;
  Vector<Scalar> params;
  std::optional<data::FeatureTransform> preprocessing;
};

/// The preprocessing arrays of a model file (and of checkpoints), and back: nullopt when
/// `arrays` has none. Throws Error naming `file` and the key on a malformed one.
[[nodiscard]] std::vector<std::pair<std::string, io::NpyArray>> preprocessing_to_arrays(
    const data::FeatureTransform& t);
[[nodiscard]] std::optional<data::FeatureTransform> preprocessing_from_arrays(
    const std::map<std::string, io::NpyArray>& arrays, const Network& network,
    const std::filesystem::path& file);

/// The parameter vector from state_dict-style arrays (`file` names the source in errors). The
/// network's buffers must be there too (strict, like the parameters); buffers_from_arrays reads
/// their values.
template <class Scalar>
[[nodiscard]] Vector<Scalar> parameters_from_arrays(const std::map<std::string, io::NpyArray>& arrays,
                                                    const Network& network,
                                                    const std::filesystem::path& file);
/// The buffer values (see Network::buffers) from state_dict-style arrays, validated as
/// Network::set_buffer_values does; num_batches_tracked may be int64 (PyTorch's) or float.
[[nodiscard]] std::vector<double> buffers_from_arrays(const std::map<std::string, io::NpyArray>& arrays,
                                                      const Network& network,
                                                      const std::filesystem::path& file);
/// The state_dict-style arrays of the network's buffers: float ones in Scalar, num_batches_tracked
/// as a 0-d int64 array (as PyTorch writes them).
template <class Scalar>
[[nodiscard]] std::vector<std::pair<std::string, io::NpyArray>> buffers_to_arrays(const Network& network);
/// The state_dict-style arrays of a parameter vector, in parameter order, followed by the
/// network's buffers (buffers_to_arrays).
template <class Scalar>
[[nodiscard]] std::vector<std::pair<std::string, io::NpyArray>> parameters_to_arrays(
    const Network& network, ConstVectorRef<Scalar> params);

/// Reads an `.npz` of weights for `network` (model files are accepted: their spec arrays are
/// ignored). The network's buffers must be in the file; their values go to `buffers` when it is
/// not null (Network::set_buffer_values takes them).
template <class Scalar>
[[nodiscard]] Vector<Scalar> load_weights(const std::filesystem::path& file, const Network& network,
                                          std::vector<double>* buffers = nullptr);
/// Writes the weights as an `.npz` (dtype of Scalar), atomically.
template <class Scalar>
void save_weights(const std::filesystem::path& file, const Network& network,
                  ConstVectorRef<Scalar> params);

/// Reads a model file (spec, input shape, weights and buffers: the network holds the buffers),
/// or imports an ONNX file (by its `.onnx` extension; see onnx_import.hpp) with `onnx`.
template <class Scalar>
[[nodiscard]] Model<Scalar> load_model(const std::filesystem::path& file,
                                       const OnnxImportOptions& onnx = {});
/// Writes a model file, atomically, with the preprocessing its inputs had (if any).
template <class Scalar>
void save_model(const std::filesystem::path& file, const Network& network,
                ConstVectorRef<Scalar> params,
                const std::optional<data::FeatureTransform>& preprocessing = std::nullopt);

}  // namespace quadra::nn
