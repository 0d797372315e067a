#pragma once
/// \file
/// Weights and model files in NumPy format, interchangeable with PyTorch.
///
/// Weights: an `.npz` whose keys are the state_dict names of the equivalent
/// `torch.nn.Sequential` (`0.weight`, `0.bias`, `2.weight`, ...) in PyTorch's layout (Linear
/// out×in, Conv2d out×in×kh×kw). In Python: `np.savez(f, **{k: v.numpy() for k, v in
/// model.state_dict().items()})`, and back with `model.load_state_dict({k: torch.from_numpy(v)
/// for k, v in np.load(f).items() if not k.startswith("__")})`.
///
/// A model file is such an `.npz` plus two arrays: `__spec__` (uint8, the layer spec as UTF-8
/// text) and `__input_shape__` (int64, e.g. [1, 28, 28]). Files are written atomically.
///
/// Loading is strict: a missing key, an unexpected key, a wrong shape, a non-floating dtype, a
/// truncated or non-NumPy file each throw one quadra::Error naming the file and key. float32
/// and float64 files load into either precision (converted).

#include <filesystem>
#include <map>
#include <string>

#include <quadra/io/npy.hpp>
#include <quadra/nn/network.hpp>
#include <quadra/sdk/types.hpp>

namespace quadra::nn {

/// A network with its parameters.
template <class Scalar>
struct Model {
  Network network;
  Vector<Scalar> params;
};

/// The parameter vector from state_dict-style arrays (`file` names the source in errors).
template <class Scalar>
[[nodiscard]] Vector<Scalar> parameters_from_arrays(const std::map<std::string, io::NpyArray>& arrays,
                                                    const Network& network,
                                                    const std::filesystem::path& file);
/// The state_dict-style arrays of a parameter vector, in parameter order.
template <class Scalar>
[[nodiscard]] std::vector<std::pair<std::string, io::NpyArray>> parameters_to_arrays(
    const Network& network, ConstVectorRef<Scalar> params);

/// Reads an `.npz` of weights for `network` (model files are accepted: their spec arrays are
/// ignored).
template <class Scalar>
[[nodiscard]] Vector<Scalar> load_weights(const std::filesystem::path& file, const Network& network);
/// Writes the weights as an `.npz` (dtype of Scalar), atomically.
template <class Scalar>
void save_weights(const std::filesystem::path& file, const Network& network,
                  ConstVectorRef<Scalar> params);

/// Reads a model file (spec, input shape and weights).
template <class Scalar>
[[nodiscard]] Model<Scalar> load_model(const std::filesystem::path& file);
/// Writes a model file, atomically.
template <class Scalar>
void save_model(const std::filesystem::path& file, const Network& network, ConstVectorRef<Scalar> params);

}  // namespace quadra::nn
