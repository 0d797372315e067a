// Source strings, splits and normalisation. See source.hpp.

#include <quadra/data/source.hpp>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>

#include <fmt/format.h>

#include <quadra/data/loaders.hpp>
#include <quadra/data/random.hpp>
#include <quadra/error.hpp>

#include "detail.hpp"

namespace quadra::data {

namespace {

bool is_key_value(std::string_view arg) {
  const auto eq = arg.find('=');
  if (eq == std::string_view::npos || eq == 0) return false;
  return std::all_of(arg.begin(), arg.begin() + static_cast<std::ptrdiff_t>(eq),
                     [](char c) { return (c >= 'a' && c <= 'z') || c == '_'; });
}

std::string option(const DataSource& s, const std::string& key, const std::string& fallback) {
  const auto it = s.options.find(key);
  return it == s.options.end() ? fallback : it->second;
}

std::int64_t int_option(const DataSource& s, const std::string& key, std::int64_t fallback,
                        std::int64_t min) {
  const auto it = s.options.find(key);
  if (it == s.options.end()) return fallback;
  std::int64_t value = 0;
  if (!detail::parse_int64(it->second, value) || value < min) {
    throw Error(fmt::format("data source '{}': {}={} is not valid; expected an integer >= {}", s.spec,
                            key, it->second, min));
  }
  return value;
}

double real_option(const DataSource& s, const std::string& key, double fallback) {
  const auto it = s.options.find(key);
  if (it == s.options.end()) return fallback;
  double value = 0;
  if (!detail::parse_double(it->second, value) || !std::isfinite(value) || value < 0) {
    throw Error(fmt::format("data source '{}': {}={} is not valid; expected a finite number >= 0",
                            s.spec, key, it->second));
  }
  return value;
}

std::uint64_t seed_option(const DataSource& s) {
  const auto it = s.options.find("seed");
  if (it == s.options.end()) return 0;
  std::int64_t value = 0;
  if (!detail::parse_int64(it->second, value) || value < 0) {
    throw Error(fmt::format("data source '{}': seed={} is not valid; expected an integer >= 0", s.spec,
                            it->second));
  }
  return static_cast<std::uint64_t>(value);
}

std::string choice_option(const DataSource& s, const std::string& key, const std::string& fallback,
                          const std::vector<std::string>& allowed) {
  const std::string value = option(s, key, fallback);
  if (std::find(allowed.begin(), allowed.end(), value) == allowed.end()) {
    throw Error(fmt::format("data source '{}': {}={} is not valid; expected one of: {}", s.spec, key,
                            value, fmt::join(allowed, ", ")));
  }
  return value;
}

// ---- one loader and one check per kind --------------------------------------------------------

TrainTest load_fashion_mnist_source(const DataSource& s) {
  return load_fashion_mnist(s.paths.empty() ? default_fashion_mnist_dir()
                                            : std::filesystem::path(s.paths[0]));
}

TrainTest load_mnist_source(const DataSource& s) { return load_mnist_style(s.paths[0], "mnist"); }

TrainTest load_idx_source(const DataSource& s) {
  if (s.paths.size() == 3) {
    throw Error(
        fmt::format("data source '{}': idx takes 2 or 4 files (train images and labels, "
                    "then optionally test images and labels), found 3",
                    s.spec));
  }
  TrainTest out;
  out.train = load_idx(s.paths[0], s.paths[1], "idx/train");
  if (s.paths.size() == 4) out.test = load_idx(s.paths[2], s.paths[3], "idx/test");
  return out;
}

TrainTest load_cifar10_source(const DataSource& s) { return load_cifar10(s.paths[0]); }

void check_cifar100(const DataSource& s) { choice_option(s, "label", "fine", {"fine", "coarse"}); }

TrainTest load_cifar100_source(const DataSource& s) {
  return load_cifar100(s.paths[0], option(s, "label", "fine") == "coarse" ? CifarLabel::kCoarse
                                                                          : CifarLabel::kFine);
}

void check_csv(const DataSource& s) {
  choice_option(s, "header", "auto", {"auto", "yes", "no"});
  choice_option(s, "task", "classification", {"classification", "regression"});
  if (s.options.count("label") != 0 && s.options.at("label").empty()) {
    throw Error(
        fmt::format("data source '{}': label= is empty; expected a column name or index", s.spec));
  }
}

TrainTest load_csv_source(const DataSource& s) {
  CsvOptions options;
  options.label = option(s, "label", "");
  const std::string header = option(s, "header", "auto");
  options.header = header == "yes"  ? CsvHeader::kYes
                   : header == "no" ? CsvHeader::kNo
                                    : CsvHeader::kAuto;
  options.task = option(s, "task", "classification") == "regression" ? Task::kRegression
                                                                     : Task::kClassification;
  TrainTest out;
  out.train = load_csv(s.paths[0], options, "csv/train");
  if (s.paths.size() == 2) {
    // Text labels of the test file map to the training file's classes.
    options.class_names = out.train.class_names;
    out.test = load_csv(s.paths[1], options, "csv/test");
    if (out.train.class_names.empty() && !out.test.class_names.empty()) {
      throw Error(
          fmt::format("{}: the labels are text ({}, ...) but the training file {} has "
                      "integer class labels; use the same kind of label in both files",
                      s.paths[1], out.test.class_names.front(), s.paths[0]));
    }
  }
  return out;
}

void check_npy(const DataSource& s) {
  choice_option(s, "task", "auto", {"auto", "classification", "regression"});
}

TrainTest load_npy_source(const DataSource& s) {
  if (s.paths.size() == 3) {
    throw Error(
        fmt::format("data source '{}': npy takes 2 or 4 files (X and y, then optionally "
                    "the test X and y), found 3",
                    s.spec));
  }
  const std::string task = option(s, "task", "auto");
  const NpyTask t = task == "classification" ? NpyTask::kClassification
                    : task == "regression"   ? NpyTask::kRegression
                                             : NpyTask::kAuto;
  TrainTest out;
  out.train = load_npy_pair(s.paths[0], s.paths[1], t, "npy/train");
  if (s.paths.size() == 4) out.test = load_npy_pair(s.paths[2], s.paths[3], t, "npy/test");
  return out;
}

/// The options every synthetic set takes: n, test, noise, seed.
struct SyntheticOptions {
  std::int64_t n;
  std::int64_t n_test;
  double noise;
  std::uint64_t train_seed;
  std::uint64_t test_seed;
};

SyntheticOptions synthetic_options(const DataSource& s) {
  const std::uint64_t seed = seed_option(s);
  return {int_option(s, "n", 1000, 1), int_option(s, "test", 1000, 0), real_option(s, "noise", 0.1),
          derive_seed(seed, static_cast<std::uint64_t>(Stream::kSynthetic), 0),
          derive_seed(seed, static_cast<std::uint64_t>(Stream::kSynthetic), 1)};
}

void check_synthetic(const DataSource& s) { synthetic_options(s); }

std::int64_t arms_option(const DataSource& s) {
  const std::int64_t arms = int_option(s, "arms", 3, 2);
  if (arms > kMaxClasses) {
    throw Error(
        fmt::format("data source '{}': arms={} is not valid; expected an integer from 2 to "
                    "{} (one class per arm)",
                    s.spec, arms, kMaxClasses));
  }
  return arms;
}

void check_spirals(const DataSource& s) {
  synthetic_options(s);
  arms_option(s);
}

TrainTest load_moons_source(const DataSource& s) {
  const SyntheticOptions o = synthetic_options(s);
  TrainTest out;
  out.train = make_moons(o.n, o.noise, o.train_seed, "moons/train");
  if (o.n_test > 0) out.test = make_moons(o.n_test, o.noise, o.test_seed, "moons/test");
  return out;
}

TrainTest load_spirals_source(const DataSource& s) {
  const SyntheticOptions o = synthetic_options(s);
  const std::int64_t arms = arms_option(s);
  TrainTest out;
  out.train = make_spirals(o.n, arms, o.noise, o.train_seed, "spirals/train");
  if (o.n_test > 0) out.test = make_spirals(o.n_test, arms, o.noise, o.test_seed, "spirals/test");
  return out;
}

TrainTest load_sinusoid_source(const DataSource& s) {
  const SyntheticOptions o = synthetic_options(s);
  TrainTest out;
  out.train = make_sinusoid(o.n, o.noise, o.train_seed, "sinusoid/train");
  if (o.n_test > 0) out.test = make_sinusoid(o.n_test, o.noise, o.test_seed, "sinusoid/test");
  return out;
}

// ---- the table of sources ---------------------------------------------------------------------

/// One kind of data source: everything parse_data_source, load_data and the help text need.
/// Adding a source is adding an entry here (see CONTRIBUTING.md, "How to add a data source").
struct SourceKind {
  const char* kind;
  std::size_t min_paths;
  std::size_t max_paths;
  std::vector<std::string> keys;     ///< the key=value options it accepts
  const char* paths_help;            ///< the positional arguments, for messages
  const char* usage;                 ///< the help text's first column
  const char* help;                  ///< the help text's description; '\n' starts another line
  void (*check)(const DataSource&);  ///< checks option values at parse time; may be null
  TrainTest (*load)(const DataSource&);
};

const std::vector<SourceKind>& source_kinds() {
  static const std::vector<SourceKind> table = {
      {.kind = "fashion-mnist",
       .min_paths = 0,
       .max_paths = 1,
       .keys = {},
       .paths_help = "[DIR]",
       .usage = "fashion-mnist[:DIR]",
       .help = "Fashion-MNIST (default: Debian's dataset-fashion-mnist)",
       .check = nullptr,
       .load = load_fashion_mnist_source},
      {.kind = "mnist",
       .min_paths = 1,
       .max_paths = 1,
       .keys = {},
       .paths_help = "DIR",
       .usage = "mnist:DIR",
       .help = "the MNIST file layout in DIR (raw or .gz)",
       .check = nullptr,
       .load = load_mnist_source},
      {.kind = "idx",
       .min_paths = 2,
       .max_paths = 4,
       .keys = {},
       .paths_help = "IMAGES,LABELS[,TEST_IMAGES,TEST_LABELS]",
       .usage = "idx:IMAGES,LABELS[,TEST_IMAGES,TEST_LABELS]",
       .help = "any MNIST-style IDX pair (raw or gzip)",
       .check = nullptr,
       .load = load_idx_source},
      {.kind = "cifar10",
       .min_paths = 1,
       .max_paths = 1,
       .keys = {},
       .paths_help = "DIR",
       .usage = "cifar10:DIR",
       .help = "CIFAR-10's binary version in DIR (or DIR/cifar-10-batches-bin):\n"
               "data_batch_1..5.bin (training) and test_batch.bin",
       .check = nullptr,
       .load = load_cifar10_source},
      {.kind = "cifar100",
       .min_paths = 1,
       .max_paths = 1,
       .keys = {"label"},
       .paths_help = "DIR",
       .usage = "cifar100:DIR[,label=fine|coarse]",
       .help = "CIFAR-100's binary version in DIR (or DIR/cifar-100-binary): train.bin and\n"
               "test.bin; label: fine (100 classes, the default) or coarse (20 superclasses)",
       .check = check_cifar100,
       .load = load_cifar100_source},
      {.kind = "csv",
       .min_paths = 1,
       .max_paths = 2,
       .keys = {"label", "header", "task"},
       .paths_help = "FILE[,TEST_FILE]",
       .usage = "csv:FILE[,TEST_FILE][,label=COL][,header=auto|yes|no]"
                "[,task=classification|regression]",
       .help = "label: column name or 0-based index (default: last column)\n"
               "header=auto: the first line is a header only when none of its cells is a number",
       .check = check_csv,
       .load = load_csv_source},
      {.kind = "npy",
       .min_paths = 2,
       .max_paths = 4,
       .keys = {"task"},
       .paths_help = "X.npy,y.npy[,X_TEST.npy,y_TEST.npy]",
       .usage = "npy:X.npy,y.npy[,X_TEST.npy,y_TEST.npy][,task=auto|classification|regression]",
       .help = "",
       .check = check_npy,
       .load = load_npy_source},
      {.kind = "moons",
       .min_paths = 0,
       .max_paths = 0,
       .keys = {"n", "test", "noise", "seed"},
       .paths_help = "",
       .usage = "moons[:n=1000,test=1000,noise=0.1,seed=0]",
       .help = "",
       .check = check_synthetic,
       .load = load_moons_source},
      {.kind = "spirals",
       .min_paths = 0,
       .max_paths = 0,
       .keys = {"n", "test", "arms", "noise", "seed"},
       .paths_help = "",
       .usage = "spirals[:n=1000,test=1000,arms=3,noise=0.1,seed=0]",
       .help = "",
       .check = check_spirals,
       .load = load_spirals_source},
      {.kind = "sinusoid",
       .min_paths = 0,
       .max_paths = 0,
       .keys = {"n", "test", "noise", "seed"},
       .paths_help = "",
       .usage = "sinusoid[:n=1000,test=1000,noise=0.1,seed=0]",
       .help = "",
       .check = check_synthetic,
       .load = load_sinusoid_source},
  };
  return table;
}

const SourceKind* find_kind(std::string_view kind) {
  for (const SourceKind& k : source_kinds()) {
    if (kind == k.kind) return &k;
  }
  return nullptr;
}

void make_classes_agree(TrainTest& data) {
  if (data.test.empty() || data.train.task != Task::kClassification) return;
  // Integer labels: the classes are 0..max over both files, so the model's output size fits both.
  const std::int64_t classes = std::max(data.train.num_classes, data.test.num_classes);
  data.train.num_classes = classes;
  data.test.num_classes = classes;
}

void check_same_shape(const TrainTest& data, const std::string& spec) {
  if (data.train.sample_shape != data.test.sample_shape || data.train.task != data.test.task ||
      data.train.target_dim != data.test.target_dim) {
    throw Error(fmt::format("data source '{}': the training samples have shape ({}) and {} targets, "
                            "but the test samples have shape ({}) and {} targets",
                            spec, fmt::join(data.train.sample_shape, ", "), to_string(data.train.task),
                            fmt::join(data.test.sample_shape, ", "), to_string(data.test.task)));
  }
}

TrainTest load_source(const DataSource& s) {
  const SourceKind* kind = find_kind(s.kind);
  if (kind == nullptr) {
    // A DataSource built by hand rather than by parse_data_source.
    throw Error(fmt::format("data source '{}': unknown kind '{}'", s.spec, s.kind));
  }
  TrainTest out = kind->load(s);
  // An empty test set keeps the training set's description (shape, task, classes).
  if (out.test.features.empty()) {
    const std::string test_name = out.train.name.substr(0, out.train.name.find('/')) + "/test";
    out.test = out.train.subset({}, test_name);
  }
  return out;
}

}  // namespace

DataSource parse_data_source(std::string_view spec) {
  DataSource s;
  s.spec = std::string(spec);
  const auto colon = spec.find(':');
  s.kind = std::string(spec.substr(0, colon));
  const SourceKind* it = find_kind(s.kind);
  if (it == nullptr) {
    std::vector<std::string> names;
    for (const SourceKind& k : source_kinds()) names.emplace_back(k.kind);
    throw Error(fmt::format("data source '{}': unknown kind '{}'; expected one of: {}", spec, s.kind,
                            fmt::join(names, ", ")));
  }
  if (colon != std::string_view::npos) {
    std::string_view rest = spec.substr(colon + 1);
    while (true) {
      const auto comma = rest.find(',');
      const std::string_view arg = rest.substr(0, comma);
      if (arg.empty()) {
        throw Error(fmt::format("data source '{}': empty argument; expected {}:{}", spec, it->kind,
                                it->paths_help));
      }
      if (is_key_value(arg)) {
        const auto eq = arg.find('=');
        const std::string key(arg.substr(0, eq));
        if (std::find(it->keys.begin(), it->keys.end(), key) == it->keys.end()) {
          throw Error(fmt::format("data source '{}': unknown option '{}' for {}; expected {}", spec, key,
                                  it->kind,
                                  it->keys.empty() ? std::string("none")
                                                   : fmt::format("{}", fmt::join(it->keys, ", "))));
        }
        if (!s.options.emplace(key, std::string(arg.substr(eq + 1))).second) {
          throw Error(fmt::format("data source '{}': option '{}' is given twice", spec, key));
        }
      } else {
        if (!s.options.empty()) {
          throw Error(fmt::format("data source '{}': path '{}' after an option; paths come first", spec,
                                  arg));
        }
        s.paths.emplace_back(arg);
      }
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  }
  if (s.paths.size() < it->min_paths || s.paths.size() > it->max_paths) {
    throw Error(fmt::format("data source '{}': {} takes {}, found {} path{}", spec, it->kind,
                            it->max_paths == 0 ? std::string("no paths")
                                               : fmt::format("{}:{}", it->kind, it->paths_help),
                            s.paths.size(), s.paths.size() == 1 ? "" : "s"));
  }
  if (it->check != nullptr) it->check(s);
  return s;
}

const char* data_source_help() {
  static const std::string help = [] {
    constexpr std::size_t kColumn = 28;  // where descriptions start
    std::string text = "data sources (--data): KIND[:ARG,...], each ARG a path or key=value\n";
    for (const SourceKind& k : source_kinds()) {
      const std::string usage = fmt::format("  {}", k.usage);
      text += usage;
      std::string_view help_text = k.help;
      bool first = true;
      while (!help_text.empty()) {
        const std::string_view line = help_text.substr(0, help_text.find('\n'));
        if (first && usage.size() < kColumn - 1) {
          text.append(kColumn - usage.size(), ' ');
        } else {
          text += '\n';
          text.append(kColumn, ' ');
        }
        text += line;
        first = false;
        help_text.remove_prefix(std::min(help_text.size(), line.size() + 1));
      }
      text += '\n';
    }
    text +=
        "uint8 inputs are scaled to [0, 1]. The validation split comes out of the training file\n"
        "(default: a seeded random sixth, e.g. 10000 of Fashion-MNIST's 60000).";
    return text;
  }();
  return help.c_str();
}

const char* to_string(SplitMode mode) { return mode == SplitMode::kRandom ? "random" : "last"; }

const char* to_string(Normalization normalization) {
  switch (normalization) {
    case Normalization::kNone: return "none";
    case Normalization::kMinMax: return "minmax";
    case Normalization::kStandardize: return "standardize";
    case Normalization::kStandardizeChannel: return "standardize-channel";
    case Normalization::kStandardizeGlobal: return "standardize-global";
  }
  return "?";
}

SplitMode parse_split_mode(std::string_view text) {
  if (text == "random") return SplitMode::kRandom;
  if (text == "last") return SplitMode::kLast;
  throw Error(fmt::format("split '{}' is not valid; expected random or last", text));
}

Normalization parse_normalization(std::string_view text) {
  for (Normalization n : {Normalization::kNone, Normalization::kMinMax, Normalization::kStandardize,
                          Normalization::kStandardizeChannel, Normalization::kStandardizeGlobal}) {
    if (text == to_string(n)) return n;
  }
  throw Error(fmt::format("normalization '{}' is not valid; expected none, minmax, standardize, "
                          "standardize-channel or standardize-global",
                          text));
}

namespace {

/// One mean and std per channel of {C, H, W} samples (the first dimension), over every pixel of
/// that channel in every training sample, accumulated in double in a fixed order. Stored per
/// feature (each channel's values repeated over its plane), so applying it, checking it and
/// saving it with a model work as for per-feature standardisation.
FeatureTransform fit_channels(const Dataset& train) {
  const auto& shape = train.sample_shape;
  if (shape.size() < 2) {
    throw Error(fmt::format("cannot fit standardize-channel normalisation: '{}' has sample shape "
                            "({}), not images; expected samples of shape (C, H, W) (use "
                            "standardize or standardize-global for flat features)",
                            train.name, fmt::join(shape, ", ")));
  }
  const auto channels = static_cast<std::size_t>(shape[0]);
  const auto d = static_cast<std::size_t>(train.feature_dim());
  const std::size_t plane = d / channels;
  const auto n = static_cast<std::size_t>(train.size());
  const float* x = train.features.data();
  std::vector<double> mean(channels), var(channels);
  for (std::size_t c = 0; c < channels; ++c) {
    double sum = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const float* p = x + i * d + c * plane;
      for (std::size_t k = 0; k < plane; ++k) sum += p[k];
    }
    mean[c] = sum / static_cast<double>(n * plane);
    double sq = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const float* p = x + i * d + c * plane;
      for (std::size_t k = 0; k < plane; ++k) sq += (p[k] - mean[c]) * (p[k] - mean[c]);
    }
    var[c] = sq / static_cast<double>(n * plane);
  }
  FeatureTransform t;
  t.kind = Normalization::kStandardizeChannel;
  t.shift.resize(d);
  t.scale.resize(d);
  for (std::size_t c = 0; c < channels; ++c) {
    const double sd = std::sqrt(var[c]);
    std::fill_n(t.shift.begin() + static_cast<std::ptrdiff_t>(c * plane), plane,
                static_cast<float>(mean[c]));
    std::fill_n(t.scale.begin() + static_cast<std::ptrdiff_t>(c * plane), plane,
                sd > 0 ? static_cast<float>(1.0 / sd) : 1.0f);
  }
  return t;
}

}  // namespace

FeatureTransform FeatureTransform::fit(const Dataset& train, Normalization kind) {
  FeatureTransform t;
  t.kind = kind;
  const auto d = static_cast<std::size_t>(train.feature_dim());
  const auto n = static_cast<std::size_t>(train.size());
  if (kind == Normalization::kNone) return t;
  if (n == 0) {
    throw Error(fmt::format("cannot fit {} normalisation: the training split '{}' is empty",
                            to_string(kind), train.name));
  }
  if (kind == Normalization::kStandardizeChannel) return fit_channels(train);
  if (kind == Normalization::kStandardizeGlobal) {
    const Summary s = summarize_features(train);
    t.shift = {static_cast<float>(s.mean)};
    t.scale = {s.std > 0 ? static_cast<float>(1.0 / s.std) : 1.0f};
    return t;
  }
  // Per feature, accumulated row by row in double: a fixed order, so deterministic.
  std::vector<double> a(d), b(d);
  const float* x = train.features.data();
  if (kind == Normalization::kMinMax) {
    std::copy(x, x + d, a.begin());
    std::copy(x, x + d, b.begin());
    for (std::size_t i = 1; i < n; ++i) {
      for (std::size_t j = 0; j < d; ++j) {
        a[j] = std::min<double>(a[j], x[i * d + j]);
        b[j] = std::max<double>(b[j], x[i * d + j]);
      }
    }
    t.shift.resize(d);
    t.scale.resize(d);
    for (std::size_t j = 0; j < d; ++j) {
      t.shift[j] = static_cast<float>(a[j]);
      t.scale[j] = b[j] > a[j] ? static_cast<float>(1.0 / (b[j] - a[j])) : 1.0f;
    }
    return t;
  }
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t j = 0; j < d; ++j) a[j] += x[i * d + j];
  }
  for (std::size_t j = 0; j < d; ++j) a[j] /= static_cast<double>(n);
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t j = 0; j < d; ++j) {
      const double c = x[i * d + j] - a[j];
      b[j] += c * c;
    }
  }
  t.shift.resize(d);
  t.scale.resize(d);
  for (std::size_t j = 0; j < d; ++j) {
    const double sd = std::sqrt(b[j] / static_cast<double>(n));
    t.shift[j] = static_cast<float>(a[j]);
    t.scale[j] = sd > 0 ? static_cast<float>(1.0 / sd) : 1.0f;
  }
  return t;
}

void FeatureTransform::apply(Dataset& data) const {
  if (kind == Normalization::kNone || shift.empty()) return;
  const auto d = static_cast<std::size_t>(data.feature_dim());
  float* x = data.features.data();
  const std::size_t total = data.features.size();
  if (shift.size() == 1) {
    for (std::size_t k = 0; k < total; ++k) x[k] = (x[k] - shift[0]) * scale[0];
    return;
  }
  for (std::size_t k = 0; k < total; k += d) {
    for (std::size_t j = 0; j < d; ++j) x[k + j] = (x[k + j] - shift[j]) * scale[j];
  }
}

namespace {
template <class T>
void apply_columns(const FeatureTransform& t, T* x, std::int64_t feature_dim,
                   std::int64_t samples) {
  if (t.kind == Normalization::kNone || t.shift.empty()) return;
  const auto d = static_cast<std::size_t>(feature_dim);
  const auto total = d * static_cast<std::size_t>(samples);
  // In float the same arithmetic as apply(Dataset&), so both paths give the same inputs.
  for (std::size_t k = 0; k < total; ++k) {
    const std::size_t j = t.shift.size() == 1 ? 0 : k % d;
    x[k] = (x[k] - static_cast<T>(t.shift[j])) * static_cast<T>(t.scale[j]);
  }
}
}  // namespace

void FeatureTransform::apply(float* features, std::int64_t feature_dim,
                             std::int64_t samples) const {
  apply_columns(*this, features, feature_dim, samples);
}
void FeatureTransform::apply(double* features, std::int64_t feature_dim,
                             std::int64_t samples) const {
  apply_columns(*this, features, feature_dim, samples);
}

void FeatureTransform::check(std::int64_t feature_dim, const std::string& where) const {
  const auto fits = [&](const std::vector<float>& v) {
    return v.size() == 1 || static_cast<std::int64_t>(v.size()) == feature_dim;
  };
  if (kind == Normalization::kNone) {
    if (!shift.empty() || !scale.empty()) {
      throw Error(fmt::format("{}: normalisation none with {} shifts and {} scales; expected none",
                              where, shift.size(), scale.size()));
    }
    return;
  }
  if (!fits(shift) || shift.size() != scale.size()) {
    throw Error(
        fmt::format("{}: {} normalisation has {} shifts and {} scales; expected 1 or {} "
                    "(the features) of each",
                    where, to_string(kind), shift.size(), scale.size(), feature_dim));
  }
  for (std::size_t j = 0; j < shift.size(); ++j) {
    if (!std::isfinite(shift[j]) || !std::isfinite(scale[j]) || scale[j] == 0.0f) {
      throw Error(
          fmt::format("{}: {} normalisation has shift {} and scale {} for feature {}; "
                      "expected finite numbers and a nonzero scale",
                      where, to_string(kind), shift[j], scale[j], j));
    }
  }
}

std::string FeatureTransform::describe() const {
  if (kind == Normalization::kNone || shift.empty()) return to_string(kind);
  if (shift.size() == 1) {
    return fmt::format("{} (shift {:.6g}, scale {:.6g})", to_string(kind), shift[0], scale[0]);
  }
  if (kind == Normalization::kStandardizeChannel) {
    // Each channel's values repeat over its plane: name them once per channel.
    std::vector<float> shifts, scales;
    for (std::size_t j = 0; j < shift.size(); ++j) {
      if (j == 0 || shift[j] != shift[j - 1] || scale[j] != scale[j - 1]) {
        shifts.push_back(shift[j]);
        scales.push_back(scale[j]);
      }
    }
    if (shifts.size() <= 16 && shift.size() % shifts.size() == 0) {
      return fmt::format("{} ({} channels: shift {:.6g}; scale {:.6g})", to_string(kind),
                         shifts.size(), fmt::join(shifts, ", "), fmt::join(scales, ", "));
    }
  }
  return fmt::format("{} ({} features)", to_string(kind), shift.size());
}

std::pair<Dataset, Dataset> split_train_validation(Dataset full, std::int64_t validation_size,
                                                   SplitMode mode, std::uint64_t seed) {
  const std::int64_t n = full.size();
  if (validation_size < 0 || validation_size >= n) {
    throw Error(fmt::format("cannot take a validation split of {} samples from the {} samples of '{}'; "
                            "expected 0 <= size < {} (at least one training sample)",
                            validation_size, n, full.name, n));
  }
  const std::string base = full.name.substr(0, full.name.find('/'));
  std::vector<std::int64_t> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  if (mode == SplitMode::kRandom) {
    // Choose the validation samples at random, then keep each split in file order.
    Rng rng(derive_seed(seed, static_cast<std::uint64_t>(Stream::kSplit)));
    shuffle(std::span<std::int64_t>(order), rng);
    const auto cut = order.begin() + (n - validation_size);
    std::sort(order.begin(), cut);
    std::sort(cut, order.end());
  }
  const auto train_count = static_cast<std::size_t>(n - validation_size);
  std::span<const std::int64_t> all(order);
  Dataset validation = full.subset(all.subspan(train_count), base + "/validation");
  // The training rows are compacted in place (their indices ascend, so row k moves to a position
  // <= k): no second copy of the largest buffer, and no page faults for one.
  const auto d = static_cast<std::size_t>(full.feature_dim());
  const auto t = static_cast<std::size_t>(full.target_dim);
  for (std::size_t k = 0; k < train_count; ++k) {
    const auto from = static_cast<std::size_t>(order[k]);
    if (from == k) continue;
    std::copy_n(full.features.begin() + static_cast<std::ptrdiff_t>(from * d), d,
                full.features.begin() + static_cast<std::ptrdiff_t>(k * d));
    if (full.task == Task::kClassification) {
      full.labels[k] = full.labels[from];
    } else {
      std::copy_n(full.targets.begin() + static_cast<std::ptrdiff_t>(from * t), t,
                  full.targets.begin() + static_cast<std::ptrdiff_t>(k * t));
    }
  }
  full.features.resize(train_count * d);
  full.labels.resize(full.task == Task::kClassification ? train_count : 0);
  full.targets.resize(full.task == Task::kRegression ? train_count * t : 0);
  full.name = base + "/train";
  return {std::move(full), std::move(validation)};
}

DataSplits load_data(const DataSource& source, const LoadOptions& options) {
  TrainTest loaded = load_source(source);
  make_classes_agree(loaded);
  check_same_shape(loaded, source.spec);
  loaded.train.validate();
  loaded.test.validate();
  const std::int64_t n = loaded.train.size();
  const std::int64_t validation =
      options.validation_size >= 0 ? options.validation_size : (n + 3) / 6;
  DataSplits out;
  out.source = source.spec;
  auto [train, val] = split_train_validation(std::move(loaded.train), validation, options.split, options.seed);
  out.train = std::move(train);
  out.validation = std::move(val);
  out.test = std::move(loaded.test);
  if (options.fitted) {
    options.fitted->check(out.train.feature_dim(), fmt::format("data '{}'", source.spec));
    out.transform = *options.fitted;
  } else {
    out.transform = FeatureTransform::fit(out.train, options.normalization);
  }
  out.transform.apply(out.train);
  out.transform.apply(out.validation);
  out.transform.apply(out.test);
  return out;
}

DataSplits load_data(std::string_view spec, const LoadOptions& options) {
  return load_data(parse_data_source(spec), options);
}

}  // namespace quadra::data
