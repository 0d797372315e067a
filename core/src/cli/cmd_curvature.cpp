// `quadra curvature`: loss, gradient and curvature-vector products of a model on one batch,
// written as .npy files for researchers to inspect or compare with other tools.

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <optional>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <fmt/std.h>

#include <quadra/io/npy.hpp>
#include <quadra/nn/bound_batch.hpp>
#include <quadra/nn/serialization.hpp>
#include <quadra/parallel.hpp>

#include "cli.hpp"

namespace quadra::cli {
namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace {

constexpr const char* kUsage =
    "usage: quadra curvature --model SPEC|FILE [--input-shape 784|1x28x28] [--weights W.npz]\n"
    "                        --inputs X.npy --targets y.npy [--loss cross-entropy|mse]\n"
    "                        [--vector v.npy] [--diagonals] [--precision float32|float64]\n"
    "                        [--threads N] [--seed S] --out DIR\n\n"
    "Binds the model to the batch (X, y) and writes, atomically, into DIR:\n"
    "  loss.npy (mean loss), grad.npy (gradient), per_sample_loss.npy;\n"
    "  with --vector: ggn_v.npy, hessian_v.npy, ef_v.npy (empirical Fisher) and mc_fisher_v.npy\n"
    "  (one label sampled per sample with --seed);\n"
    "  with --diagonals: ggn_diag.npy and ef_diag.npy.\n"
    "All products are exact and use the mean over the batch.\n\n"
    "--model is a layer spec (e.g. 'linear(512) tanh linear(10)') or a model file (.npz with the\n"
    "spec and weights). Without --weights a spec gets PyTorch's default initialisation seeded\n"
    "with --seed. --input-shape defaults to the shape of one sample of X. X is N x features or\n"
    "N x C x H x W, uint8 (scaled by 1/255) or float; y holds int class labels (cross-entropy)\n"
    "or N x outputs floats (mse).";

struct Inputs {
  std::vector<std::int64_t> sample_shape;
  Index n = 0;
  io::NpyArray array;
};

template <class S>
Matrix<S> input_matrix(const io::NpyArray& array, Index features, Index n, const fs::path& file) {
  Matrix<S> x(features, n);  // column-major features × N = the C-order N × ... bytes
  if (array.dtype == io::DType::kUInt8) {
    const auto raw = array.to_vector<std::uint8_t>();
    for (std::size_t i = 0; i < raw.size(); ++i) x.data()[i] = static_cast<S>(raw[i]) / S(255);
  } else if (array.dtype == io::DType::kFloat32 || array.dtype == io::DType::kFloat64) {
    const auto raw = array.to_vector<S>();
    std::copy(raw.begin(), raw.end(), x.data());
  } else {
    throw Error(fmt::format("{}: inputs have dtype {}; expected uint8 (scaled by 1/255), float32 "
                            "or float64",
                            file, io::to_string(array.dtype)));
  }
  return x;
}

/// NumPy's spelling of a shape: (3, 4), (5,), ().
std::string shape_str(const std::vector<std::int64_t>& shape) {
  return shape.size() == 1 ? fmt::format("({},)", shape[0]) : fmt::format("({})", fmt::join(shape, ", "));
}

template <class S>
void write_vector(const fs::path& file, const Vector<S>& v) {
  io::write_npy(file, io::NpyArray::from<S>({static_cast<std::int64_t>(v.size())}, v.data()));
}

template <class S>
int run_with(const po::variables_map& vm) {
  const std::string model_arg = vm["model"].as<std::string>();
  const std::uint64_t seed = vm["seed"].as<std::uint64_t>();
  const fs::path inputs_file = vm["inputs"].as<std::string>();
  const fs::path targets_file = vm["targets"].as<std::string>();
  const fs::path out_dir = vm["out"].as<std::string>();
  const nn::Loss loss = nn::parse_loss(vm["loss"].as<std::string>());
  set_num_threads(vm["threads"].as<int>());

  const io::NpyArray x_array = io::read_npy(inputs_file);
  if (x_array.shape.size() < 2) {
    throw Error(fmt::format("{}: inputs have shape {}; expected N x features or N x C x H x W",
                            inputs_file, shape_str(x_array.shape)));
  }
  const Index n = x_array.shape[0];
  const std::vector<std::int64_t> sample_shape(x_array.shape.begin() + 1, x_array.shape.end());
  Index features = 1;
  for (std::int64_t d : sample_shape) features *= d;

  // The model: a file, or a spec on the given (or the inputs') shape.
  const bool is_file = fs::is_regular_file(model_arg);
  std::optional<nn::Network> network;
  Vector<S> params;
  if (is_file) {
    auto model = nn::load_model<S>(model_arg);
    if (vm.count("input-shape") != 0 &&
        nn::parse_shape(vm["input-shape"].as<std::string>()) != model.network.input_shape()) {
      throw Error(fmt::format("--input-shape {} differs from the model file's input shape {}",
                              vm["input-shape"].as<std::string>(), model.network.input_shape().str()));
    }
    network.emplace(std::move(model.network));
    params = std::move(model.params);
  } else {
    nn::TensorShape shape;
    if (vm.count("input-shape") != 0) {
      shape = nn::parse_shape(vm["input-shape"].as<std::string>());
    } else {
      for (std::int64_t d : sample_shape) shape.dims.push_back(d);
      if (!shape.is_flat() && !shape.is_image()) {
        throw Error(fmt::format("{}: cannot take the input shape from inputs of shape {}; give "
                                "--input-shape",
                                inputs_file, shape_str(x_array.shape)));
      }
    }
    network.emplace(model_arg, shape);
    params = network->initial_parameters<S>(seed);
  }
  if (vm.count("weights") != 0) params = nn::load_weights<S>(vm["weights"].as<std::string>(), *network);

  // Inputs must have the model's per-sample shape, or a flat layout of the same size.
  const auto& want = network->input_shape();
  const bool same_dims =
      std::equal(sample_shape.begin(), sample_shape.end(), want.dims.begin(), want.dims.end());
  if (!(same_dims || (sample_shape.size() == 1 && features == want.size()) ||
        (want.is_flat() && features == want.size()))) {
    throw Error(fmt::format("{}: inputs have shape {} ({} features per sample); the model expects "
                            "{} per sample",
                            inputs_file, shape_str(x_array.shape), features, want.str()));
  }
  const Matrix<S> x = input_matrix<S>(x_array, features, n, inputs_file);

  // Targets.
  const io::NpyArray y_array = io::read_npy(targets_file);
  nn::Targets<S> targets;
  const Index c = network->num_outputs();
  if (loss == nn::Loss::kCrossEntropy) {
    if (y_array.dtype != io::DType::kInt64 && y_array.dtype != io::DType::kInt32 &&
        y_array.dtype != io::DType::kUInt8) {
      throw Error(fmt::format("{}: cross-entropy targets have dtype {}; expected integer class "
                              "labels (int64)",
                              targets_file, io::to_string(y_array.dtype)));
    }
    if (y_array.shape != std::vector<std::int64_t>{n}) {
      throw Error(fmt::format("{}: targets have shape {}; expected ({},), one label per input",
                              targets_file, shape_str(y_array.shape), n));
    }
    targets.labels = y_array.to_vector<std::int64_t>();
  } else {
    if (y_array.dtype != io::DType::kFloat32 && y_array.dtype != io::DType::kFloat64) {
      throw Error(fmt::format("{}: mse targets have dtype {}; expected float32 or float64",
                              targets_file, io::to_string(y_array.dtype)));
    }
    const bool ok = y_array.shape == std::vector<std::int64_t>{n, c} ||
                    (c == 1 && y_array.shape == std::vector<std::int64_t>{n});
    if (!ok) {
      throw Error(fmt::format("{}: mse targets have shape {}; expected ({}, {}) (inputs x model "
                              "outputs)",
                              targets_file, shape_str(y_array.shape), n, c));
    }
    const auto values = y_array.to_vector<S>();
    targets.values = Eigen::Map<const Matrix<S>>(values.data(), c, n);
  }

  std::optional<Vector<S>> v;
  if (vm.count("vector") != 0) {
    const fs::path v_file = vm["vector"].as<std::string>();
    const io::NpyArray v_array = io::read_npy(v_file);
    if (v_array.shape != std::vector<std::int64_t>{network->num_parameters()}) {
      throw Error(fmt::format("{}: vector has shape {}; expected ({},), one entry per parameter of "
                              "'{}'",
                              v_file, shape_str(v_array.shape), network->num_parameters(),
                              network->spec()));
    }
    if (v_array.dtype != io::DType::kFloat32 && v_array.dtype != io::DType::kFloat64) {
      throw Error(fmt::format("{}: vector has dtype {}; expected float32 or float64", v_file,
                              io::to_string(v_array.dtype)));
    }
    const auto values = v_array.to_vector<S>();
    v = Eigen::Map<const Vector<S>>(values.data(), static_cast<Index>(values.size()));
  }

  nn::BoundBatch<S> batch(*network, params, x, std::move(targets), loss);
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) throw Error(fmt::format("cannot create output directory {}: {}", out_dir, ec.message()));

  const S loss_value = batch.loss();
  io::write_npy(out_dir / "loss.npy", io::NpyArray::from<S>({}, &loss_value));
  write_vector<S>(out_dir / "per_sample_loss.npy", batch.per_sample_losses());
  Vector<S> out(network->num_parameters());
  batch.gradient(out);
  write_vector<S>(out_dir / "grad.npy", out);
  std::vector<std::string> written = {"loss.npy", "per_sample_loss.npy", "grad.npy"};
  if (v) {
    batch.ggn_product(*v, out);
    write_vector<S>(out_dir / "ggn_v.npy", out);
    batch.hessian_product(*v, out);
    write_vector<S>(out_dir / "hessian_v.npy", out);
    batch.empirical_fisher_product(*v, out);
    write_vector<S>(out_dir / "ef_v.npy", out);
    batch.set_mc_samples(1, seed);
    batch.mc_fisher_product(*v, out);
    write_vector<S>(out_dir / "mc_fisher_v.npy", out);
    written.insert(written.end(), {"ggn_v.npy", "hessian_v.npy", "ef_v.npy", "mc_fisher_v.npy"});
  }
  if (vm.count("diagonals") != 0) {
    batch.ggn_diagonal(out);
    write_vector<S>(out_dir / "ggn_diag.npy", out);
    batch.empirical_fisher_diagonal(out);
    write_vector<S>(out_dir / "ef_diag.npy", out);
    written.insert(written.end(), {"ggn_diag.npy", "ef_diag.npy"});
  }
  std::cout << fmt::format("model '{}' on input {}: {} parameters; batch of {}; {} loss {:.8g}\n",
                           network->spec(), network->input_shape().str(),
                           network->num_parameters(), n, nn::to_string(loss),
                           static_cast<double>(loss_value));
  std::cout << fmt::format("wrote {} to {}\n", fmt::join(written, ", "), out_dir);
  return kExitOk;
}

}  // namespace

int run_curvature(const Args& args) {
  po::options_description options("curvature options");
  options.add_options()
      ("model", po::value<std::string>()->required(), "layer spec or model file (.npz)")
      ("input-shape", po::value<std::string>(), "F or CxHxW (default: from the inputs)")
      ("weights", po::value<std::string>(), "state_dict-style weights (.npz)")
      ("inputs", po::value<std::string>()->required(), "inputs X (.npy)")
      ("targets", po::value<std::string>()->required(), "targets y (.npy)")
      ("loss", po::value<std::string>()->default_value("cross-entropy"), "cross-entropy or mse")
      ("vector", po::value<std::string>(), "vector v (.npy) for the curvature products")
      ("diagonals", "also write the GGN and empirical-Fisher diagonals")
      ("precision", po::value<std::string>()->default_value("float32"), "float32 or float64")
      ("threads", po::value<int>()->default_value(0), "worker threads (0: all cores)")
      ("seed", po::value<std::uint64_t>()->default_value(0), "seed of the initialisation and MC labels")
      ("out", po::value<std::string>()->required(), "output directory");
  po::variables_map vm;
  if (!parse(args, kUsage, options, {}, vm)) return kExitOk;
  const std::string precision = vm["precision"].as<std::string>();
  if (vm["threads"].as<int>() < 0) {
    throw UsageError(fmt::format("--threads {} is negative; expected 0 (all cores) or more",
                                 vm["threads"].as<int>()));
  }
  if (precision == "float32") return run_with<float>(vm);
  if (precision == "float64") return run_with<double>(vm);
  throw UsageError(fmt::format("--precision '{}' is not float32 or float64", precision));
}

}  // namespace quadra::cli
