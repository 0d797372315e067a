// Model and batch loading for the analysis subcommands. See model_batch.hpp.

#include "model_batch.hpp"

#include <filesystem>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <fmt/std.h>

#include <quadra/data/sampler.hpp>
#include <quadra/data/source.hpp>
#include <quadra/nn/dataset_batch.hpp>
#include <quadra/io/npy.hpp>
#include <quadra/nn/serialization.hpp>
#include <quadra/parallel.hpp>

#include "cli.hpp"

namespace quadra::cli {
namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace {

template <class S>
Matrix<S> input_matrix(const io::NpyArray& array, Index features, Index n, const fs::path& file) {
  Matrix<S> x(features, n);  // column-major features x N = the C-order N x ... bytes
  if (array.dtype == io::DType::kUInt8) {
    const auto raw = array.to_vector<std::uint8_t>();
    for (std::size_t i = 0; i < raw.size(); ++i) x.data()[i] = static_cast<S>(raw[i]) / S(255);
  } else if (array.dtype == io::DType::kFloat32 || array.dtype == io::DType::kFloat64) {
    const std::string name = fmt::format("{}", file);
    io::require_finite(array, name);
    const auto raw = array.to_vector<S>(name);
    std::copy(raw.begin(), raw.end(), x.data());
  } else {
    throw Error(fmt::format("{}: inputs have dtype {}; expected uint8 (scaled by 1/255), float32 "
                            "or float64",
                            file, io::to_string(array.dtype)));
  }
  return x;
}

}  // namespace

bool is_model_file(const std::string& model_arg) {
  // A missing file.npz or file.onnx is a file the reader reports missing, not a spec's unknown
  // layer: no layer spec ends so.
  const fs::path path(model_arg);
  const bool file_name = path.extension() == ".npz" || nn::is_onnx_file(path);
  return nn::looks_like_model_file(model_arg) ||
         (file_name && model_arg.find_first_of("() ") == std::string::npos);
}

nn::OnnxImportOptions onnx_options(const po::variables_map& vm) {
  nn::OnnxImportOptions options;
  if (vm.count("batch-norm") != 0) options.batch_norm = vm["batch-norm"].as<std::string>();
  return options;
}

namespace {

/// The network and parameters of --model (a spec or a model file), --input-shape, --seed and
/// --weights; `sample_shape` (of `inputs_name`) gives a spec its input shape without --input-shape.
template <class S>
void load_network(const po::variables_map& vm, const std::vector<std::int64_t>& sample_shape,
                  const std::string& inputs_name, std::optional<nn::Network>& network,
                  Vector<S>& params) {
  const std::string model_arg = vm["model"].as<std::string>();
  if (is_model_file(model_arg)) {
    auto model = nn::load_model<S>(model_arg, onnx_options(vm));
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
        throw Error(fmt::format("{}: cannot take the input shape from samples of shape {}; give "
                                "--input-shape",
                                inputs_name, numpy_shape(sample_shape)));
      }
    }
    network.emplace(model_arg, shape);
    params = network->template initial_parameters<S>(vm["seed"].as<std::uint64_t>());
  }
  if (vm.count("batch-norm") != 0) {
    network->set_batch_norm(nn::parse_norm_mode(vm["batch-norm"].as<std::string>()));
  }
  if (vm.count("weights") != 0) {
    std::vector<double> buffers;
    params = nn::load_weights<S>(vm["weights"].as<std::string>(), *network, &buffers);
    network->set_buffer_values(std::move(buffers));
  }
}

/// The preprocessing a --model file records (nullopt for a spec or an older file).
std::optional<data::FeatureTransform> recorded_preprocessing(const po::variables_map& vm) {
  const std::string model_arg = vm["model"].as<std::string>();
  if (!is_model_file(model_arg)) return std::nullopt;
  return nn::load_model<float>(model_arg, onnx_options(vm)).preprocessing;
}

/// "; inputs preprocessed as the model file records: standardize-global (shift 0.286, ...)".
std::string preprocessing_note(const data::FeatureTransform& t) {
  return fmt::format("; inputs preprocessed as the model file records: {}", t.describe());
}

/// How --data is loaded: --normalize fitted on the training split, or the model file's recorded
/// preprocessing as it is (a --normalize given explicitly must then name the same kind).
data::LoadOptions data_options(const po::variables_map& vm, std::string& note) {
  data::LoadOptions load;
  load.seed = vm["seed"].as<std::uint64_t>();
  load.normalization = data::parse_normalization(vm["normalize"].as<std::string>());
  if (auto recorded = recorded_preprocessing(vm)) {
    if (!vm["normalize"].defaulted() && recorded->kind != load.normalization) {
      throw Error(fmt::format(
          "--normalize {} conflicts with --model {}, which was trained on inputs normalised by "
          "{}; omit --normalize (the model's preprocessing is applied)",
          vm["normalize"].as<std::string>(), vm["model"].as<std::string>(), recorded->describe()));
    }
    note = preprocessing_note(*recorded);
    load.fitted = std::move(recorded);
  }
  return load;
}

/// The network and parameters (load_network), then a check that the `num_samples` inputs of
/// `sample_shape` fit it.
template <class S>
void load_model(const po::variables_map& vm, Index num_samples,
                const std::vector<std::int64_t>& sample_shape, const std::string& inputs_name,
                ModelBatch<S>& out) {
  load_network<S>(vm, sample_shape, inputs_name, out.network, out.params);
  // Samples must have the model's input shape, or a flat layout of the same size.
  const auto& want = out.network->input_shape();
  Index features = 1;
  for (std::int64_t d : sample_shape) features *= d;
  const bool same_dims =
      std::equal(sample_shape.begin(), sample_shape.end(), want.dims.begin(), want.dims.end());
  if (!(same_dims || (sample_shape.size() == 1 && features == want.size()) ||
        (want.is_flat() && features == want.size()))) {
    std::vector<std::int64_t> shape = {num_samples};
    shape.insert(shape.end(), sample_shape.begin(), sample_shape.end());
    throw Error(fmt::format("{}: inputs have shape {} ({} features per sample); the model expects "
                            "{} per sample",
                            inputs_name, numpy_shape(shape), features, want.str()));
  }
}

/// Raw --inputs become what the model was trained on: the model file's recorded preprocessing.
template <class S>
void apply_recorded_preprocessing(const po::variables_map& vm, ModelBatch<S>& out) {
  if (const auto recorded = recorded_preprocessing(vm)) {
    recorded->apply(out.inputs.data(), out.network->num_inputs(), out.inputs.cols());
    out.preprocessing = preprocessing_note(*recorded);
  }
}

/// The model and the inputs of --inputs (an .npy array, N x features or N x C x H x W).
template <class S>
void load_npy_inputs(const po::variables_map& vm, ModelBatch<S>& out) {
  const fs::path inputs_file = vm["inputs"].as<std::string>();
  const io::NpyArray x_array = io::read_npy(inputs_file);
  if (x_array.shape.size() < 2) {
    throw Error(fmt::format("{}: inputs have shape {}; expected N x features or N x C x H x W",
                            inputs_file, numpy_shape(x_array.shape)));
  }
  const Index n = x_array.shape[0];
  const std::vector<std::int64_t> sample_shape(x_array.shape.begin() + 1, x_array.shape.end());
  load_model<S>(vm, n, sample_shape, fmt::format("{}", inputs_file), out);
  out.inputs = input_matrix<S>(x_array, out.network->num_inputs(), n, inputs_file);
  apply_recorded_preprocessing(vm, out);
  out.batch_description =
      fmt::format("{} ({} samples){}", inputs_file.filename().string(), n, out.preprocessing);
}

/// load_npy_inputs and the targets of --targets (labels for cross-entropy, values for mse).
template <class S>
void load_npy_batch(const po::variables_map& vm, ModelBatch<S>& out) {
  if (vm.count("targets") == 0) throw UsageError("--inputs needs --targets");
  const fs::path targets_file = vm["targets"].as<std::string>();
  load_npy_inputs(vm, out);
  const Index n = out.inputs.cols();

  const io::NpyArray y_array = io::read_npy(targets_file);
  const Index c = out.network->num_outputs();
  if (out.loss == nn::Loss::kCrossEntropy) {
    if (y_array.dtype != io::DType::kInt64 && y_array.dtype != io::DType::kInt32 &&
        y_array.dtype != io::DType::kUInt8) {
      throw Error(fmt::format("{}: cross-entropy targets have dtype {}; expected integer class "
                              "labels (int64)",
                              targets_file, io::to_string(y_array.dtype)));
    }
    if (y_array.shape != std::vector<std::int64_t>{n}) {
      throw Error(fmt::format("{}: targets have shape {}; expected ({},), one label per input",
                              targets_file, numpy_shape(y_array.shape), n));
    }
    out.targets.labels = y_array.to_vector<std::int64_t>(fmt::format("{}", targets_file));
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
                              targets_file, numpy_shape(y_array.shape), n, c));
    }
    const std::string name = fmt::format("{}", targets_file);
    io::require_finite(y_array, name);
    const auto values = y_array.to_vector<S>(name);
    out.targets.values = Eigen::Map<const Matrix<S>>(values.data(), c, n);
  }
}


/// One seeded batch of B training samples of a data source (the first draw of a sampler).
template <class S>
void load_data_batch(const po::variables_map& vm, ModelBatch<S>& out) {
  const std::string source = vm["data"].as<std::string>();
  const std::int64_t batch_size = vm["batch-size"].as<std::int64_t>();
  if (batch_size < 1) throw UsageError(fmt::format("--batch-size {} must be at least 1", batch_size));
  const data::DataSplits splits = data::load_data(source, data_options(vm, out.preprocessing));
  const data::Dataset& train = splits.train;
  if (batch_size > train.size()) {
    throw Error(fmt::format("--batch-size {} exceeds the {} training samples of '{}'", batch_size,
                            train.size(), source));
  }
  load_model<S>(vm, batch_size, train.sample_shape, fmt::format("data '{}'", source), out);
  if (train.task == data::Task::kClassification && out.loss != nn::Loss::kCrossEntropy) {
    throw Error(fmt::format("data '{}' is a classification set; use --loss cross-entropy", source));
  }
  if (train.task == data::Task::kRegression && out.loss != nn::Loss::kMse) {
    throw Error(fmt::format("data '{}' is a regression set; use --loss mse", source));
  }

  data::SamplerOptions options;
  options.batch_size = batch_size;
  options.seed = vm["seed"].as<std::uint64_t>();
  data::BatchSampler sampler(train.size(), options);
  BatchPlan plan;
  plan.draws = {BatchDraw{1.0, false}};
  plan.draw_of_role.fill(0);
  const data::StepBatches& step = sampler.next(plan);
  data::GatherBuffer buffer;
  const data::BatchView view = data::gather(train, step.draw(0), buffer);

  nn::DatasetBatch<S> batch = nn::dataset_batch<S>(train, view);
  out.inputs = std::move(batch.inputs);
  out.targets = std::move(batch.targets);
  out.batch_description = fmt::format("{} batch of {} (seed {}){}", train.name, batch_size,
                                      options.seed, out.preprocessing);
}


/// Model and data agree on features, task and outputs.
template <class S>
void check_fit(const po::variables_map& vm, const ModelData<S>& in) {
  const data::Dataset& train = in.data.train;
  const nn::Network& net = *in.network;
  const std::string source = vm["data"].as<std::string>();
  if (net.num_inputs() != train.feature_dim()) {
    throw Error(fmt::format("--model: input {} ({} features) does not fit data '{}' with {} features "
                            "per sample; expected --input-shape {}",
                            net.input_shape().str(), net.num_inputs(), source, train.feature_dim(),
                            train.feature_dim()));
  }
  const bool classification = train.task == data::Task::kClassification;
  if (classification != (in.loss == nn::Loss::kCrossEntropy)) {
    throw Error(fmt::format("--loss {}: data '{}' is a {} set; expected --loss {}", nn::to_string(in.loss),
                            source, data::to_string(train.task), classification ? "cross-entropy" : "mse"));
  }
  const std::int64_t want = classification ? train.num_classes : train.target_dim;
  if (net.num_outputs() != want) {
    throw Error(fmt::format("--model: {} outputs; data '{}' has {} {}", net.num_outputs(), source, want,
                            classification ? "classes" : "targets"));
  }
}

}  // namespace

std::string numpy_shape(const std::vector<std::int64_t>& shape) {
  return shape.size() == 1 ? fmt::format("({},)", shape[0]) : fmt::format("({})", fmt::join(shape, ", "));
}

void add_model_options(po::options_description& options) {
  options.add_options()
      ("model", po::value<std::string>()->required(),
       "layer spec, model file (.npz) or ONNX file (.onnx)")
      ("input-shape", po::value<std::string>(), "F or CxHxW (default: from the inputs)")
      ("batch-norm", po::value<std::string>(),
       "running or batch: batchnorm normalises with its running statistics (eval mode; a spec's "
       "default) or with the batch's statistics (train mode; an ONNX file exported in training "
       "mode)")
      ("weights", po::value<std::string>(), "state_dict-style weights (.npz)")
      ("loss", po::value<std::string>()->default_value("cross-entropy"), "cross-entropy or mse")
      ("precision", po::value<std::string>()->default_value("float32"), "float32 or float64")
      ("threads", po::value<int>()->default_value(0), "worker threads (0: all cores)")
      ("seed", po::value<std::uint64_t>()->default_value(0),
       "seed of the initialisation (spec without weights), the batch and sampled labels");
}

void add_batch_options(po::options_description& options, bool with_data) {
  options.add_options()
      ("inputs", po::value<std::string>(), "inputs X (.npy): N x features or N x C x H x W")
      ("targets", po::value<std::string>(), "targets y (.npy): int labels or N x outputs floats");
  if (with_data) {
    options.add_options()("data", po::value<std::string>(),
                          "data source instead of --inputs/--targets, e.g. fashion-mnist")(
        "batch-size", po::value<std::int64_t>()->default_value(128), "samples drawn from --data")(
        "normalize", po::value<std::string>()->default_value("none"),
        "--data normalisation: none (uint8 pixels are scaled to [0,1] anyway), minmax, "
        "standardize, standardize-channel or standardize-global; a model file's recorded "
        "preprocessing replaces it");
  }
}

bool use_double_precision(const po::variables_map& vm) {
  const int threads = vm["threads"].as<int>();
  if (threads < 0) {
    throw UsageError(fmt::format("--threads {} is negative; expected 0 (all cores) or more", threads));
  }
  set_num_threads(threads);
  const std::string precision = vm["precision"].as<std::string>();
  if (precision == "float32") return false;
  if (precision == "float64") return true;
  throw UsageError(fmt::format("--precision '{}' is not float32 or float64", precision));
}

template <class S>
ModelBatch<S> load_model_batch(const po::variables_map& vm) {
  ModelBatch<S> out;
  out.loss = nn::parse_loss(vm["loss"].as<std::string>());
  const bool npy = vm.count("inputs") != 0;
  const bool data = vm.count("data") != 0;
  const bool data_supported = vm.count("batch-size") != 0;  // it has a default where declared
  if (npy == data) {
    throw UsageError(data ? "give either --inputs/--targets or --data, not both"
                     : data_supported
                         ? "give the batch as --inputs X.npy --targets y.npy or as --data SOURCE"
                         : "give the batch as --inputs X.npy --targets y.npy");
  }
  if (npy) {
    load_npy_batch<S>(vm, out);
  } else {
    load_data_batch<S>(vm, out);
  }
  return out;
}

template <class S>
ModelData<S> load_model_data(const po::variables_map& vm) {
  ModelData<S> out;
  out.data = data::load_data(vm["data"].as<std::string>(), data_options(vm, out.preprocessing));
  out.loss = nn::parse_loss(vm["loss"].as<std::string>());
  load_network<S>(vm, out.data.train.sample_shape, fmt::format("data '{}'", vm["data"].as<std::string>()),
                  out.network, out.params);
  check_fit(vm, out);
  return out;
}

template <class S>
ModelBatch<S> load_model_inputs(const po::variables_map& vm) {
  ModelBatch<S> out;
  out.loss = nn::parse_loss(vm["loss"].as<std::string>());
  if (vm.count("targets") != 0) {
    load_npy_batch<S>(vm, out);
  } else {
    load_npy_inputs<S>(vm, out);
  }
  return out;
}

std::vector<std::pair<std::string, io::NpyArray>> model_file_metadata(const po::variables_map& vm) {
  const std::string model_arg = vm["model"].as<std::string>();
  std::vector<std::pair<std::string, io::NpyArray>> out;
  if (!is_model_file(model_arg)) return out;
  for (auto& [key, array] : io::read_npz(model_arg)) {
    if (key.rfind("__", 0) == 0 && key != "__spec__" && key != "__input_shape__") {
      out.emplace_back(key, std::move(array));
    }
  }
  return out;
}

template ModelData<float> load_model_data<float>(const po::variables_map&);
template ModelData<double> load_model_data<double>(const po::variables_map&);
template ModelBatch<float> load_model_batch<float>(const po::variables_map&);
template ModelBatch<double> load_model_batch<double>(const po::variables_map&);
template ModelBatch<float> load_model_inputs<float>(const po::variables_map&);
template ModelBatch<double> load_model_inputs<double>(const po::variables_map&);

}  // namespace quadra::cli
