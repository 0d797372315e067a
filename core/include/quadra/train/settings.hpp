#pragma once
/// \file
/// A training run as data: the [model], [data] and [train] sections of a config (the optimizer
/// lives in [optimizer] and the per-kind sections, see optimizer_spec.hpp). Each section is an
/// option schema, so a run config gets the same validation and messages as plugin options:
///
///   [model]                               [data]                      [train]
///   spec = linear(256) tanh linear(10)    source = fashion-mnist      batch_size = 128
///   precision = float32                   normalize = standardize-    epochs = 3
///                                                     global          seed = 0

#include <cstdint>
#include <filesystem>
#include <quadra/config.hpp>
#include <quadra/optimizer_spec.hpp>
#include <quadra/plugin_host.hpp>
#include <quadra/sdk/options.hpp>
#include <set>
#include <string>

namespace quadra::train {

enum class LineSearch { kNone, kArmijo };
/// Which evaluations best.npz keeps, and patience counts improvements of.
enum class KeepBest { kNone, kValidationLoss, kValidationAccuracy };
enum class Progress { kAuto, kAlways, kNever };

struct ModelSettings {
  std::string spec;         ///< layer spec; empty when `file` is given
  std::string file;         ///< model file (.npz with spec and weights, or .onnx) to start from
  std::string batch_norm;   ///< batchnorm's mode, "running" or "batch"; empty: an ONNX file's
                            ///< record, running statistics for a spec or model file
  std::string input_shape;  ///< "F" or "CxHxW"; empty: the data's sample shape
  std::string loss;         ///< "cross-entropy" or "mse"; empty: from the data's task
  bool double_precision = false;
};

struct DataSettings {
  std::string source = "fashion-mnist";
  std::string normalize = "standardize-global";
  bool normalize_given = false;       ///< set in the config, not the default
  std::int64_t validation_size = -1;  ///< -1: one sixth of the training file
  std::string split = "random";
  std::string augment = "none";  ///< training augmentation (data/augment.hpp)
};

/// The backtracking search along the final step on the acceptance draw ([line_search]): the
/// step is multiplied by `shrink` until L(theta + t d) <= L(theta) + sufficient_decrease * t g'd
/// (Armijo's condition), at most `max_shrinks` times. Only for descent steps (g'd < 0).
struct LineSearchSettings {
  LineSearch method = LineSearch::kNone;
  double sufficient_decrease = 1e-4;
  double shrink = 0.5;
  int max_shrinks = 20;
};

struct TrainSettings {
  std::int64_t batch_size = 128;
  double epochs = 0;           ///< budget in epochs of the gradient role; 0: none
  std::int64_t max_steps = 0;  ///< budget in optimizer steps (accepted and rejected); 0: none
  double max_seconds = 0;      ///< wall-time budget; 0: none
  double weight_decay = 0;     ///< eta: eta/2 |theta|^2 added to the loss
  double step_scale = 1;       ///< multiplies every step before it is tested and applied
  LineSearchSettings line_search;
  std::uint64_t seed = 0;             ///< initialisation, validation split, batches, MC labels
  int threads = 0;                    ///< 0: all cores
  std::int64_t eval_every = 0;        ///< steps between evaluations; 0: once per epoch
  double eval_every_seconds = 0;      ///< also evaluate each time this much wall time passed
  KeepBest keep_best = KeepBest::kValidationLoss;  ///< best.npz: the best evaluation's model
  std::int64_t patience = 0;  ///< stop after this many evaluations without improvement; 0: never
  std::int64_t eval_chunk = 2048;     ///< samples per forward pass when evaluating
  std::int64_t checkpoint_every = 0;  ///< steps between checkpoints; 0: only at the end
  std::int64_t max_failures = 10;     ///< consecutive rejected steps before the run stops
  Progress progress = Progress::kAuto;
  std::filesystem::path out = "runs/train";
};

struct RunSettings {
  ModelSettings model;
  DataSettings data;
  TrainSettings train;
};

/// The schemas of the run sections (for validation, `quadra train --help-config` and docs).
const OptionSchema& model_schema();
const OptionSchema& data_schema();
const OptionSchema& train_schema();
const OptionSchema& line_search_schema();

/// Sections a run config may contain besides the optimizer's: model, data, train, line_search.
std::set<std::string> run_config_sections();

/// Reads and validates the run sections. Throws Error naming the key, the value and what is
/// expected; unknown keys list the valid ones. Relative paths (model.file, train.out) are kept
/// as written: the caller decides what they are relative to.
RunSettings parse_run_settings(const Config& config);

/// The sections back as INI text with every value (defaults included), for the run manifest.
std::string format_run_settings(const Config& config);

/// The keys of [model], [data], [train] and [line_search] with defaults, meaning and
/// constraints.
std::string run_config_help();

/// A whole run config resolved against the loaded plugins.
struct ResolvedRun {
  RunSettings settings;
  OptimizerSpec optimizer;
  std::string resolved_config;  ///< every key with its value, defaults marked
};

/// Checks the config's keys (run sections, [optimizer] and the per-kind sections only),
/// resolves the optimizer and the run settings, and creates each chosen plugin once (a plugin
/// may refuse a combination of valid values). Throws Error naming the key or plugin.
ResolvedRun resolve_run(const Config& config, const PluginHost& host);

}  // namespace quadra::train
