// `quadra curvature`: loss, gradient and curvature-vector products of a model on one batch,
// written as .npy files for researchers to inspect or compare with other tools.

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <fmt/std.h>

#include <quadra/dist/communicator.hpp>
#include <quadra/io/npy.hpp>
#include <quadra/nn/bound_batch.hpp>
#include <quadra/nn/serialization.hpp>

#include "cli.hpp"
#include "model_batch.hpp"

namespace quadra::cli {
namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace {

constexpr const char* kUsage =
    "usage: quadra curvature --model SPEC|FILE [--input-shape 784|1x28x28] [--weights W.npz]\n"
    "                        --inputs X.npy --targets y.npy [--loss cross-entropy|mse]\n"
    "                        [--vector v.npy|v.npz] [--diagonals] [--precision float32|float64]\n"
    "                        [--threads N] [--seed S] --out DIR\n\n"
    "Binds the model to the batch (X, y) and writes, atomically, into DIR:\n"
    "  loss.npy (mean loss), grad.npy (gradient), per_sample_loss.npy;\n"
    "  with --vector: ggn_v.npy, hessian_v.npy, ef_v.npy (empirical Fisher) and mc_fisher_v.npy\n"
    "  (one label sampled per sample with --seed);\n"
    "  with --diagonals: ggn_diag.npy and ef_diag.npy.\n"
    "Every result with one entry per parameter is written twice: flat (NAME.npy, in the order of\n"
    "the parameter vector) and keyed by parameter name in PyTorch's shapes (NAME.npz, like a\n"
    "state_dict). The vector is either: a flat .npy, or an .npz keyed by parameter name.\n"
    "All products are exact and use the mean over the batch.\n\n"
    "--model is a layer spec (e.g. 'linear(512) tanh linear(10)') or a model file (.npz with the\n"
    "spec and weights). Without --weights a spec gets PyTorch's default initialisation seeded\n"
    "with --seed. --input-shape defaults to the shape of one sample of X. X is N x features or\n"
    "N x C x H x W, uint8 (scaled by 1/255) or float; y holds int class labels (cross-entropy)\n"
    "or N x outputs floats (mse).";

template <class S>
void write_vector(const fs::path& file, const Vector<S>& v) {
  io::write_npy(file, io::NpyArray::from<S>({static_cast<std::int64_t>(v.size())}, v.data()));
}

/// A per-parameter result as NAME.npy (flat) and NAME.npz (keyed by parameter name); the names
/// of both files are appended to `written`.
template <class S>
void write_per_parameter(const fs::path& dir, const std::string& name, const nn::Network& network,
                         const Vector<S>& v, std::vector<std::string>& written) {
  write_vector<S>(dir / (name + ".npy"), v);
  nn::save_weights<S>(dir / (name + ".npz"), network, v);
  written.insert(written.end(), {name + ".npy", name + ".npz"});
}

/// --vector: a flat .npy with one entry per parameter, or an .npz keyed by parameter name
/// (every parameter once, in its PyTorch shape).
template <class S>
Vector<S> read_direction(const fs::path& v_file, const nn::Network& network) {
  if (v_file.extension() == ".npz") return nn::load_weights<S>(v_file, network);
  const io::NpyArray v_array = io::read_npy(v_file);
  if (v_array.shape != std::vector<std::int64_t>{network.num_parameters()}) {
    throw Error(fmt::format("{}: vector has shape {}; expected ({},), one entry per parameter of "
                            "'{}' (or an .npz keyed by parameter name)",
                            v_file, numpy_shape(v_array.shape), network.num_parameters(),
                            network.spec()));
  }
  if (v_array.dtype != io::DType::kFloat32 && v_array.dtype != io::DType::kFloat64) {
    throw Error(fmt::format("{}: vector has dtype {}; expected float32 or float64", v_file,
                            io::to_string(v_array.dtype)));
  }
  const std::string name = fmt::format("{}", v_file);
  io::require_finite(v_array, name);
  const auto values = v_array.to_vector<S>(name);
  return Eigen::Map<const Vector<S>>(values.data(), static_cast<Index>(values.size()));
}

template <class S>
int run_with(const po::variables_map& vm) {
  // Several ranks split the batch by samples; each reads the inputs, rank 0 writes the results.
  const dist::Communicator& world = dist::Communicator::world();
  const std::uint64_t seed = vm["seed"].as<std::uint64_t>();
  const fs::path out_dir = vm["out"].as<std::string>();
  std::optional<ModelBatch<S>> loaded;
  std::optional<Vector<S>> v;
  // Every rank reads the same files, but agrees before the first collective all the same.
  run_agreed(world, [&] {
    loaded.emplace(load_model_batch<S>(vm));
    if (vm.count("vector") != 0) v = read_direction<S>(vm["vector"].as<std::string>(), *loaded->network);
  });
  const ModelBatch<S>& input = *loaded;
  const nn::Network& network = *input.network;
  const Index n = input.inputs.cols();
  const nn::Loss loss = input.loss;

  nn::BoundBatch<S> batch = input.bind_share(world);
  std::vector<std::pair<std::string, Vector<S>>> results;
  const auto add = [&](const char* name, auto&& compute) {
    Vector<S> out(network.num_parameters());
    compute(out);
    results.emplace_back(name, std::move(out));
  };
  // Per-sample losses: each rank fills its share's entries, the others add zeros.
  Vector<S> per_sample = Vector<S>::Zero(n);
  const dist::SampleShare share = world.share_of(n);
  per_sample.segment(share.begin, share.size()) = batch.per_sample_losses();
  world.sum(std::span<S>(per_sample.data(), static_cast<std::size_t>(n)));
  add("grad", [&](Vector<S>& out) { batch.gradient(out); });
  if (v) {
    add("ggn_v", [&](Vector<S>& out) { batch.ggn_product(*v, out); });
    add("hessian_v", [&](Vector<S>& out) { batch.hessian_product(*v, out); });
    add("ef_v", [&](Vector<S>& out) { batch.empirical_fisher_product(*v, out); });
    batch.set_mc_samples(1, seed);
    add("mc_fisher_v", [&](Vector<S>& out) { batch.mc_fisher_product(*v, out); });
  }
  if (vm.count("diagonals") != 0) {
    add("ggn_diag", [&](Vector<S>& out) { batch.ggn_diagonal(out); });
    add("ef_diag", [&](Vector<S>& out) { batch.empirical_fisher_diagonal(out); });
  }

  const S loss_value = batch.loss();
  std::vector<std::string> written = {"loss.npy", "per_sample_loss.npy"};
  world.run_agreed([&] {
    if (!world.is_root()) return;
    std::error_code ec;
    fs::create_directories(out_dir, ec);
    if (ec) throw Error(fmt::format("cannot create output directory {}: {}", out_dir, ec.message()));
    io::write_npy(out_dir / "loss.npy", io::NpyArray::from<S>({}, &loss_value));
    write_vector<S>(out_dir / "per_sample_loss.npy", per_sample);
    for (const auto& [name, values] : results) {
      write_per_parameter<S>(out_dir, name, network, values, written);
    }
  });
  std::cout << fmt::format("model '{}' on input {}: {} parameters; batch of {}; {} loss {:.8g}{}{}\n",
                           network.spec(), network.input_shape().str(), network.num_parameters(), n,
                           nn::to_string(loss), static_cast<double>(loss_value),
                           input.preprocessing,
                           world.size() > 1 ? fmt::format("; split across {} processes", world.size())
                                            : std::string());
  std::cout << fmt::format("wrote {} to {}\n", fmt::join(written, ", "), out_dir);
  return kExitOk;
}

}  // namespace

int run_curvature(const Args& args, Context& /*context*/) {
  po::options_description options("curvature options");
  add_model_options(options);
  add_batch_options(options, /*with_data=*/false);
  options.add_options()
      ("vector", po::value<std::string>(),
       "vector v for the curvature products: a flat .npy or an .npz keyed by parameter name")
      ("diagonals", "also write the GGN and empirical-Fisher diagonals")
      ("out", po::value<std::string>()->required(), "output directory");
  po::variables_map vm;
  if (!parse(args, kUsage, options, {}, vm)) return kExitOk;
  return use_double_precision(vm) ? run_with<double>(vm) : run_with<float>(vm);
}

}  // namespace quadra::cli
