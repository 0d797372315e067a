// Run settings from a config. See settings.hpp.

#include <fmt/format.h>

#include <quadra/data/augment.hpp>
#include <quadra/error.hpp>
#include <quadra/option_parsing.hpp>
#include <quadra/train/settings.hpp>

namespace quadra::train {

const OptionSchema& model_schema() {
  static const OptionSchema schema = {
      OptionSpec::string("spec", "",
                         "layer spec, e.g. 'linear(256) tanh linear(10)'; or give model.file"),
      OptionSpec::string("file", "",
                         "model file (.npz, spec and weights) or ONNX file (.onnx) to start from"),
      OptionSpec::choice("batch_norm", "auto", {"auto", "running", "batch"},
                         "how batchnorm normalises while training: running (its running "
                         "statistics) or batch (the batch's, PyTorch's train mode, updating the "
                         "running statistics once per step); auto: batch for an ONNX file "
                         "exported in training mode, running otherwise"),
      OptionSpec::string("input_shape", "", "F or CxHxW; empty: the data's sample shape"),
      OptionSpec::choice("loss", "auto", {"auto", "cross-entropy", "mse"},
                         "auto: cross-entropy for classification, mse for regression"),
      OptionSpec::choice("precision", "float32", {"float32", "float64"}, "arithmetic precision"),
  };
  return schema;
}

const OptionSchema& data_schema() {
  static const OptionSchema schema = {
      OptionSpec::string("source", "fashion-mnist", "data source (quadra data --help lists them)"),
      OptionSpec::choice("normalize", "standardize-global",
                         {"none", "minmax", "standardize", "standardize-channel",
                          "standardize-global"},
                         "feature normalisation fitted on the training split"),
      OptionSpec::integer("validation_size", -1,
                          "samples moved from the training file to validation; -1: one sixth")
          .at_least(-1),
      OptionSpec::choice("split", "random", {"random", "last"}, "which samples form validation"),
      OptionSpec::string("augment", "none",
                         "training batches of images: none, or crop:P (random crop after padding "
                         "by P) and/or flip (random horizontal flip), e.g. crop:4,flip"),
  };
  return schema;
}

const OptionSchema& train_schema() {
  static const OptionSchema schema = {
      OptionSpec::integer("batch_size", 128,
                          "samples per batch (debiasing plans scale it per role)")
          .at_least(1),
      OptionSpec::real("epochs", 0, "budget: epochs of the gradient batches; 0: no limit")
          .at_least(0.0),
      OptionSpec::integer("max_steps", 0, "budget: optimizer steps; 0: no limit").at_least(0),
      OptionSpec::real("max_seconds", 0, "budget: wall time in seconds; 0: no limit").at_least(0.0),
      OptionSpec::real("weight_decay", 0, "eta: adds eta/2 |theta|^2 to the loss").at_least(0.0),
      OptionSpec::real("step_scale", 1, "multiplies every step").greater_than(0.0),
      OptionSpec::integer("seed", 0, "initialisation, validation split, batches, sampled labels")
          .at_least(0),
      OptionSpec::integer("threads", 0, "worker threads; 0: all cores").in_range(0, 1024),
      OptionSpec::integer("eval_every", 0, "steps between evaluations; 0: every epoch").at_least(0),
      OptionSpec::real("eval_every_seconds", 0,
                       "also evaluate whenever this much wall time has passed (comparable points "
                       "for fast and slow optimizers); 0: off")
          .at_least(0.0),
      OptionSpec::choice("keep_best", "validation_loss",
                         {"validation_loss", "validation_accuracy", "none"},
                         "write best.npz, the model of the best evaluation by this metric"),
      OptionSpec::integer("patience", 0,
                          "stop after this many evaluations without improving the keep_best "
                          "metric (validation loss if none); 0: never")
          .at_least(0),
      OptionSpec::integer("eval_chunk", 2048,
                          "samples per forward pass when evaluating (at most: fewer when their "
                          "activations would exceed 64 MiB)")
          .at_least(1),
      OptionSpec::integer("checkpoint_every", 0, "steps between checkpoints; 0: at the end only")
          .at_least(0),
      OptionSpec::integer("max_failures", 10, "consecutive rejected steps before the run stops")
          .at_least(1),
      OptionSpec::choice("progress", "auto", {"auto", "always", "never"},
                         "progress bar on stderr; auto: only on a terminal"),
      OptionSpec::string("out", "runs/train", "output directory (logs, checkpoint, model)"),
  };
  return schema;
}

const OptionSchema& line_search_schema() {
  static const OptionSchema schema = {
      OptionSpec::choice("method", "none", {"none", "armijo"},
                         "backtracking Armijo search along the final step on the acceptance batch"),
      OptionSpec::real("sufficient_decrease", 1e-4,
                       "Armijo's c1: accept t when L(t d) <= L(0) + c1 t g'd")
          .greater_than(0.0)
          .at_most(0.5),
      OptionSpec::real("shrink", 0.5, "factor on t per backtrack").greater_than(0.0).at_most(0.9),
      OptionSpec::integer("max_shrinks", 20, "most backtracks per step").in_range(1, 100),
  };
  return schema;
}

std::set<std::string> run_config_sections() { return {"model", "data", "train", "line_search"}; }

namespace {

template <class Interface>
void create_once(const PluginHost& host, const std::optional<ComponentChoice>& choice) {
  if (!choice) return;
  auto created = host.create<Interface>(choice->component->info.name, choice->given);
  if (!created.is_ok()) throw Error(created.status().message());
}

void describe(std::string& out, const char* section, const OptionSchema& schema) {
  out += fmt::format("[{}]\n", section);
  for (const OptionSpec& spec : schema) {
    const std::string constraint = format_constraint(spec);
    out += fmt::format("  {:<18} = {:<20} {}{}\n", spec.name, format_value(spec.default_value),
                       spec.help, constraint.empty() ? "" : " " + constraint);
  }
}

OptionValues parse_section(const Config& config, const char* section, const OptionSchema& schema) {
  auto values =
      parse_options(schema, config.section(section), fmt::format("config section [{}]", section));
  if (!values.is_ok()) throw Error(values.status().message());
  return std::move(values).value();
}

}  // namespace

RunSettings parse_run_settings(const Config& config) {
  RunSettings s;
  const OptionValues model = parse_section(config, "model", model_schema());
  s.model.spec = model.get_string("spec");
  s.model.file = model.get_string("file");
  s.model.batch_norm = model.get_string("batch_norm") == "auto" ? "" : model.get_string("batch_norm");
  s.model.input_shape = model.get_string("input_shape");
  s.model.loss = model.get_string("loss") == "auto" ? "" : model.get_string("loss");
  s.model.double_precision = model.get_string("precision") == "float64";
  if (s.model.spec.empty() == s.model.file.empty()) {
    throw Error(s.model.spec.empty()
                    ? "config section [model] needs spec = LAYERS (e.g. 'linear(256) tanh "
                      "linear(10)') or file = MODEL.npz"
                    : "config section [model] sets both spec and file; give one of them");
  }

  const OptionValues data = parse_section(config, "data", data_schema());
  s.data.source = data.get_string("source");
  s.data.normalize = data.get_string("normalize");
  s.data.normalize_given = config.section("data").count("normalize") != 0;
  s.data.validation_size = data.get_int("validation_size");
  s.data.split = data.get_string("split");
  s.data.augment = data.get_string("augment");
  try {
    data::parse_augmentation(s.data.augment);
  } catch (const Error& e) {
    throw Error(fmt::format("config key data.augment: {}", e.what()));
  }

  const OptionValues train = parse_section(config, "train", train_schema());
  TrainSettings& t = s.train;
  t.batch_size = train.get_int("batch_size");
  t.epochs = train.get_real("epochs");
  t.max_steps = train.get_int("max_steps");
  t.max_seconds = train.get_real("max_seconds");
  t.weight_decay = train.get_real("weight_decay");
  t.step_scale = train.get_real("step_scale");
  t.seed = static_cast<std::uint64_t>(train.get_int("seed"));
  t.threads = static_cast<int>(train.get_int("threads"));
  t.eval_every = train.get_int("eval_every");
  t.eval_every_seconds = train.get_real("eval_every_seconds");
  const std::string& keep = train.get_string("keep_best");
  t.keep_best = keep == "none"                  ? KeepBest::kNone
                : keep == "validation_accuracy" ? KeepBest::kValidationAccuracy
                                                : KeepBest::kValidationLoss;
  t.patience = train.get_int("patience");
  t.eval_chunk = train.get_int("eval_chunk");
  t.checkpoint_every = train.get_int("checkpoint_every");
  t.max_failures = train.get_int("max_failures");
  const std::string& progress = train.get_string("progress");
  t.progress = progress == "always"  ? Progress::kAlways
               : progress == "never" ? Progress::kNever
                                     : Progress::kAuto;
  t.out = train.get_string("out");
  if (t.epochs == 0 && t.max_steps == 0 && t.max_seconds == 0) {
    throw Error(
        "config section [train] sets no budget; set epochs, max_steps or max_seconds "
        "(any of them > 0)");
  }
  if (t.out.empty()) throw Error("config key train.out is empty; expected an output directory");

  const OptionValues search = parse_section(config, "line_search", line_search_schema());
  t.line_search.method =
      search.get_string("method") == "armijo" ? LineSearch::kArmijo : LineSearch::kNone;
  t.line_search.sufficient_decrease = search.get_real("sufficient_decrease");
  t.line_search.shrink = search.get_real("shrink");
  t.line_search.max_shrinks = static_cast<int>(search.get_int("max_shrinks"));
  return s;
}

std::string format_run_settings(const Config& config) {
  std::string out;
  const std::pair<const char*, const OptionSchema*> sections[] = {
      {"model", &model_schema()},
      {"data", &data_schema()},
      {"train", &train_schema()},
      {"line_search", &line_search_schema()}};
  for (const auto& [name, schema] : sections) {
    const RawOptions given = config.section(name);
    const OptionValues values = parse_section(config, name, *schema);
    out += fmt::format("{}[{}]\n", out.empty() ? "" : "\n", name);
    for (const auto& [key, value] : values.entries()) {
      out += fmt::format("{} = {}{}\n", key, format_value(value),
                         given.count(key) == 0 ? "  # default" : "");
    }
  }
  return out;
}

ResolvedRun resolve_run(const Config& config, const PluginHost& host) {
  auto sections = optimizer_config_sections();
  for (const auto& s : run_config_sections()) sections.insert(s);
  config.check_known(optimizer_config_keys(), sections);
  ResolvedRun run;
  run.optimizer = resolve_optimizer(config, host);
  run.settings = parse_run_settings(config);
  create_once<CurvatureEstimator>(host, run.optimizer.choice(PluginKind::kCurvature));
  create_once<Solver>(host, run.optimizer.choice(PluginKind::kSolver));
  create_once<DampingStrategy>(host, run.optimizer.choice(PluginKind::kDamping));
  create_once<DebiasingStrategy>(host, run.optimizer.choice(PluginKind::kDebiasing));
  if (!run.optimizer.choice(PluginKind::kSolver)) {
    throw Error(
        "the config chooses no solver; set optimizer.solver = NAME (sgd, adam, cg, "
        "eigen-newton, kfac, ...: quadra plugins)");
  }
  run.resolved_config = format_run_settings(config) + "\n" + format_optimizer(run.optimizer);
  return run;
}

std::string run_config_help() {
  std::string out;
  describe(out, "model", model_schema());
  describe(out, "data", data_schema());
  describe(out, "train", train_schema());
  describe(out, "line_search", line_search_schema());
  return out;
}

}  // namespace quadra::train
