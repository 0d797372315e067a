// `quadra model describe`: a model's layers with their output shapes and cost, and every
// parameter with its state_dict name, shape and place in the flat parameter vector, and the
// buffers (BatchNorm's running statistics) with their state_dict names, shapes and values.

#include <algorithm>
#include <iostream>
#include <limits>
#include <string>
#include <vector>

#include <boost/program_options/parsers.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <quadra/nn/network.hpp>
#include <quadra/nn/serialization.hpp>

#include "cli.hpp"
#include "model_batch.hpp"
#include "model_batch.hpp"
#include "table.hpp"

namespace quadra::cli {
namespace po = boost::program_options;

namespace {

constexpr const char* kUsage =
    "usage: quadra model describe --model SPEC|FILE [--input-shape 784|1x28x28] [--batch-norm "
    "running|batch]\n\n"
    "Prints the model's layers in order with each one's output shape, parameters and forward\n"
    "FLOPs per sample (2 per multiply-add; a pool's window elements; one per activation\n"
    "output; one per output of a residual block's add); with residual blocks also each layer's\n"
    "module path and the layers it reads. Then every parameter with its state_dict name,\n"
    "PyTorch shape and offset in the flat parameter vector (the order of grad.npy, --vector and\n"
    "model files), then every buffer (batchnorm's running_mean, running_var,\n"
    "num_batches_tracked: state, not parameters) with its state_dict name and shape. A spec\n"
    "needs --input-shape; a model file (.npz) or ONNX file (.onnx) records its own. A model\n"
    "with batchnorm layers also says how they normalise: with their running statistics (eval\n"
    "mode; a spec's and a model file's default) or with the batch's statistics (train mode; an\n"
    "ONNX file exported in training mode); --batch-norm running|batch chooses.";

/// "1,234,567": costs are easier to compare with separators.
std::string grouped(std::int64_t value) {
  const std::string digits = std::to_string(value);
  std::string out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0 && digits[i - 1] != '-') out += ',';
    out += digits[i];
  }
  return out;
}

nn::Network load_network_as_given(const po::variables_map& vm) {
  const std::string model = vm["model"].as<std::string>();
  if (is_model_file(model)) {
    nn::Network network = nn::load_model<float>(model, onnx_options(vm)).network;
    if (vm.count("input-shape") != 0 &&
        nn::parse_shape(vm["input-shape"].as<std::string>()) != network.input_shape()) {
      throw Error(fmt::format("--input-shape {} differs from the model file's input shape {}",
                              vm["input-shape"].as<std::string>(), network.input_shape().str()));
    }
    return network;
  }
  if (vm.count("input-shape") == 0) {
    throw UsageError(fmt::format("--model '{}' is a layer spec: give its --input-shape (e.g. 784 "
                                 "or 1x28x28)",
                                 model));
  }
  return nn::Network(model, nn::parse_shape(vm["input-shape"].as<std::string>()));
}

nn::Network load_network(const po::variables_map& vm) {
  nn::Network network = load_network_as_given(vm);
  if (vm.count("batch-norm") != 0) {
    network.set_batch_norm(nn::parse_norm_mode(vm["batch-norm"].as<std::string>()));
  }
  return network;
}

int describe(const po::variables_map& vm) {
  const nn::Network network = load_network(vm);
  const auto num_layers = static_cast<Index>(network.layers().size());
  std::int64_t total_flops = 0;
  // A graph also shows each node's module path and the nodes it reads ("input": the network's
  // input), so the residual structure is visible; a chain keeps the plain table.
  const bool graph = !network.is_sequential();
  const auto row = [&](std::vector<std::string> cells, std::string module, std::string inputs) {
    if (graph) {
      cells.insert(cells.begin() + 1, std::move(module));
      cells.insert(cells.begin() + 3, std::move(inputs));
    }
    return cells;
  };
  TextTable layers(
      row({"layer", "op", "output", "parameters", "FLOPs/sample"}, "module", "inputs"));
  layers.add(row({"", "input", network.input_shape().str(), "", ""}, "", ""));
  for (Index l = 0; l < num_layers; ++l) {
    Index count = 0;
    for (const nn::ParameterInfo& p : network.parameters()) {
      if (p.layer == l) count += p.size;
    }
    const std::int64_t flops = network.forward_flops(l);
    total_flops = flops > std::numeric_limits<std::int64_t>::max() - total_flops
                      ? std::numeric_limits<std::int64_t>::max()
                      : total_flops + flops;
    std::vector<std::string> reads;
    for (Index v : network.inputs(l)) reads.push_back(v == 0 ? "input" : std::to_string(v - 1));
    layers.add(row({std::to_string(l), network.layers()[static_cast<std::size_t>(l)].str(),
                    network.shapes()[static_cast<std::size_t>(l + 1)].str(),
                    count == 0 ? "" : grouped(count), grouped(flops)},
                   network.module_path(l), fmt::format("{}", fmt::join(reads, ","))));
  }
  layers.add(
      row({"total", "", "", grouped(network.num_parameters()), grouped(total_flops)}, "", ""));

  TextTable parameters({"name", "shape", "offset", "size"});
  for (const nn::ParameterInfo& p : network.parameters()) {
    parameters.add({p.name, numpy_shape({p.shape.begin(), p.shape.end()}), std::to_string(p.offset),
                    std::to_string(p.size)});
  }
  const std::size_t num_buffers = network.buffers().size();
  std::cout << fmt::format("# model '{}' on input {}: {} parameters, {}\n", network.spec(),
                           network.input_shape().str(), grouped(network.num_parameters()),
                           num_buffers == 0         ? std::string("no buffers")
                           : num_buffers == 1       ? std::string("1 buffer")
                                                    : fmt::format("{} buffers", num_buffers));
  const bool has_batch_norm =
      std::any_of(network.layers().begin(), network.layers().end(),
                  [](const nn::LayerSpec& l) { return l.kind == nn::LayerKind::kBatchNorm; });
  if (has_batch_norm) {
    std::cout << (network.has_batch_statistics()
                      ? "# batchnorm: batch statistics (train mode: the batch's mean and biased "
                        "variance; --batch-norm running for the running statistics)\n"
                      : "# batchnorm: running statistics (eval mode; --batch-norm batch for the "
                        "batch's statistics)\n");
  }
  std::cout << layers.str() << "\n";
  std::cout << "# parameters, in the order of the flat parameter vector\n" << parameters.str();
  if (num_buffers > 0) {
    TextTable buffers({"name", "shape", "size"});
    for (const nn::BufferInfo& b : network.buffers()) {
      buffers.add({b.name, numpy_shape({b.shape.begin(), b.shape.end()}), std::to_string(b.size)});
    }
    std::cout << "\n# buffers (not parameters: state the model keeps, saved with it)\n"
              << buffers.str();
  }
  return kExitOk;
}

}  // namespace

int run_model(const Args& args, Context& /*context*/) {
  po::options_description options("model options");
  options.add_options()("model", po::value<std::string>()->required(),
                        "layer spec, model file (.npz) or ONNX file (.onnx)")(
      "input-shape", po::value<std::string>(), "F or CxHxW (a spec needs it)")(
      "batch-norm", po::value<std::string>(),
      "running or batch: how batchnorm normalises (default: running statistics, or batch "
      "statistics for an ONNX file exported in training mode)");
  po::positional_options_description positional;
  options.add_options()("action", po::value<std::string>()->required(), "describe");
  positional.add("action", 1);
  po::variables_map vm;
  if (!parse(args, kUsage, options, positional, vm)) return kExitOk;
  const std::string action = vm["action"].as<std::string>();
  if (action != "describe") {
    throw UsageError(fmt::format("unknown action '{}'; expected describe", action));
  }
  return describe(vm);
}

}  // namespace quadra::cli
