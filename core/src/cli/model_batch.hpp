#pragma once
// Shared by the analysis subcommands (curvature, spectrum, ...): the model from
// `--model SPEC|FILE [--input-shape] [--weights]` and one batch from `--inputs X.npy
// --targets y.npy` or `--data SOURCE --batch-size B`, bound to the engine.

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <boost/program_options/options_description.hpp>
#include <boost/program_options/variables_map.hpp>

#include <quadra/data/source.hpp>
#include <quadra/io/npy.hpp>
#include <quadra/nn/bound_batch.hpp>
#include <quadra/nn/onnx_import.hpp>

namespace quadra::cli {

/// --model, --input-shape, --weights, --loss, --precision, --threads, --seed.
void add_model_options(boost::program_options::options_description& options);
/// Whether --model names a model file (.npz) or an ONNX file (.onnx) rather than a layer spec:
/// anything that exists there but a directory, or a missing path with one of those extensions.
[[nodiscard]] bool is_model_file(const std::string& model_arg);
/// How --model imports an ONNX file (--batch-norm).
[[nodiscard]] nn::OnnxImportOptions onnx_options(const boost::program_options::variables_map& vm);
/// --inputs, --targets (NumPy files) and, when `with_data`, --data, --batch-size, --normalize.
void add_batch_options(boost::program_options::options_description& options, bool with_data);

/// A model, its parameters and one batch, in precision S.
template <class S>
struct ModelBatch {
  std::optional<nn::Network> network;
  Vector<S> params;
  Matrix<S> inputs;  ///< features x N
  nn::Targets<S> targets;
  nn::Loss loss = nn::Loss::kCrossEntropy;
  /// e.g. "X.npy (128 samples)" for messages and headers, with the model file's recorded
  /// preprocessing when it was applied to the inputs.
  std::string batch_description;
  /// "; inputs preprocessed as the model file records: ..." when it was, else empty.
  std::string preprocessing;

  [[nodiscard]] nn::BoundBatch<S> bind() const {
    return nn::BoundBatch<S>(*network, params, inputs, targets, loss);
  }
  /// Binds this rank's share of the batch's samples (the whole batch with one rank).
  /// Collective: see nn::BoundBatch.
  [[nodiscard]] nn::BoundBatch<S> bind_share(const dist::Communicator& comm) const {
    if (comm.size() == 1) return bind();
    const dist::SampleShare share = comm.share_of(inputs.cols());
    nn::Targets<S> mine;
    if (!targets.labels.empty()) {
      mine.labels.assign(targets.labels.begin() + share.begin, targets.labels.begin() + share.end);
    }
    if (targets.values.size() > 0) mine.values = targets.values.middleCols(share.begin, share.size());
    return nn::BoundBatch<S>(*network, params, inputs.middleCols(share.begin, share.size()),
                             std::move(mine), loss, comm, share);
  }
};

/// Reads everything the options name. Throws Error on any mismatch (model vs inputs, targets vs
/// loss), naming the file and the shapes, and UsageError when neither or both of --inputs and
/// --data are given.
template <class S>
ModelBatch<S> load_model_batch(const boost::program_options::variables_map& vm);

/// The model and `--inputs X.npy` as load_model_batch reads them, for predictions: `--targets
/// y.npy` is optional (without it, `targets` is empty). Throws like load_model_batch.
template <class S>
ModelBatch<S> load_model_inputs(const boost::program_options::variables_map& vm);

/// The arrays of the --model file other than its weights, spec and input shape (metadata such
/// as input preprocessing), for files that embed the model; empty when --model is a spec.
std::vector<std::pair<std::string, io::NpyArray>> model_file_metadata(
    const boost::program_options::variables_map& vm);

/// A model, its parameters and a data source's splits (normalised as --normalize says), for the
/// subcommands that work on whole data sets (bias, laplace).
template <class S>
struct ModelData {
  data::DataSplits data;
  std::optional<nn::Network> network;
  Vector<S> params;
  nn::Loss loss = nn::Loss::kCrossEntropy;
  /// "; inputs preprocessed as the model file records: ..." when --model records the
  /// preprocessing its inputs had (then applied instead of --normalize), else empty.
  std::string preprocessing;
};

/// Reads --model/--weights (or a spec initialised with --seed), --data with --normalize and the
/// split seed --seed, and --loss; a model file's recorded preprocessing replaces --normalize
/// (which, given explicitly, must name the same kind). Throws Error when the model and the data
/// disagree (features, task, outputs), naming both.
template <class S>
ModelData<S> load_model_data(const boost::program_options::variables_map& vm);

/// NumPy's spelling of a shape for messages: (3, 4), (5,), ().
std::string numpy_shape(const std::vector<std::int64_t>& shape);

/// "float32" -> false, "float64" -> true; UsageError otherwise. Also applies --threads.
bool use_double_precision(const boost::program_options::variables_map& vm);

}  // namespace quadra::cli
