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

struct KindSpec {
  const char* kind;
  std::size_t min_paths;
  std::size_t max_paths;
  std::vector<std::string> keys;
  const char* paths_help;
};

const std::vector<KindSpec>& kinds() {
  static const std::vector<KindSpec> table = {
      {"fashion-mnist", 0, 1, {}, "[DIR]"},
      {"mnist", 1, 1, {}, "DIR"},
      {"idx", 2, 4, {}, "IMAGES,LABELS[,TEST_IMAGES,TEST_LABELS]"},
      {"csv", 1, 2, {"label", "header", "task"}, "FILE[,TEST_FILE]"},
      {"npy", 2, 4, {"task"}, "X.npy,y.npy[,X_TEST.npy,y_TEST.npy]"},
      {"moons", 0, 0, {"n", "test", "noise", "seed"}, ""},
      {"spirals", 0, 0, {"n", "test", "arms", "noise", "seed"}, ""},
      {"sinusoid", 0, 0, {"n", "test", "noise", "seed"}, ""},
  };
  return table;
}

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

/// Checks the options' values once at parse time, so that a typo fails before any file is read.
void check_values(const DataSource& s) {
  if (s.kind == "csv") {
    choice_option(s, "header", "auto", {"auto", "yes", "no"});
    choice_option(s, "task", "classification", {"classification", "regression"});
    if (s.options.count("label") != 0 && s.options.at("label").empty()) {
      throw Error(fmt::format("data source '{}': label= is empty; expected a column name or index",
                              s.spec));
    }
  } else if (s.kind == "npy") {
    choice_option(s, "task", "auto", {"auto", "classification", "regression"});
  } else if (s.kind == "moons" || s.kind == "spirals" || s.kind == "sinusoid") {
    int_option(s, "n", 1000, 1);
    int_option(s, "test", 1000, 0);
    int_option(s, "arms", 3, 2);
    real_option(s, "noise", 0.1);
    seed_option(s);
  }
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
  TrainTest out;
  if (s.kind == "fashion-mnist") {
    return load_fashion_mnist(s.paths.empty() ? default_fashion_mnist_dir()
                                              : std::filesystem::path(s.paths[0]));
  }
  if (s.kind == "mnist") return load_mnist_style(s.paths[0], "mnist");
  if (s.kind == "idx") {
    if (s.paths.size() == 3) {
      throw Error(fmt::format("data source '{}': idx takes 2 or 4 files (train images and labels, "
                              "then optionally test images and labels), found 3",
                              s.spec));
    }
    out.train = load_idx(s.paths[0], s.paths[1], "idx/train");
    if (s.paths.size() == 4) out.test = load_idx(s.paths[2], s.paths[3], "idx/test");
  } else if (s.kind == "csv") {
    CsvOptions options;
    options.label = option(s, "label", "");
    const std::string header = option(s, "header", "auto");
    options.header = header == "yes" ? CsvHeader::kYes : header == "no" ? CsvHeader::kNo : CsvHeader::kAuto;
    options.task = option(s, "task", "classification") == "regression" ? Task::kRegression
                                                                      : Task::kClassification;
    out.train = load_csv(s.paths[0], options, "csv/train");
    if (s.paths.size() == 2) {
      // Text labels of the test file map to the training file's classes.
      options.class_names = out.train.class_names;
      out.test = load_csv(s.paths[1], options, "csv/test");
      if (out.train.class_names.empty() && !out.test.class_names.empty()) {
        throw Error(fmt::format("{}: the labels are text ({}, ...) but the training file {} has "
                                "integer class labels; use the same kind of label in both files",
                                s.paths[1], out.test.class_names.front(), s.paths[0]));
      }
    }
  } else if (s.kind == "npy") {
    if (s.paths.size() == 3) {
      throw Error(fmt::format("data source '{}': npy takes 2 or 4 files (X and y, then optionally "
                              "the test X and y), found 3",
                              s.spec));
    }
    const std::string task = option(s, "task", "auto");
    const NpyTask t = task == "classification" ? NpyTask::kClassification
                      : task == "regression"   ? NpyTask::kRegression
                                               : NpyTask::kAuto;
    out.train = load_npy_pair(s.paths[0], s.paths[1], t, "npy/train");
    if (s.paths.size() == 4) out.test = load_npy_pair(s.paths[2], s.paths[3], t, "npy/test");
  } else {
    const std::int64_t n = int_option(s, "n", 1000, 1);
    const std::int64_t n_test = int_option(s, "test", 1000, 0);
    const double noise = real_option(s, "noise", 0.1);
    const std::uint64_t seed = seed_option(s);
    const std::uint64_t train_seed = derive_seed(seed, static_cast<std::uint64_t>(Stream::kSynthetic), 0);
    const std::uint64_t test_seed = derive_seed(seed, static_cast<std::uint64_t>(Stream::kSynthetic), 1);
    if (s.kind == "moons") {
      out.train = make_moons(n, noise, train_seed, "moons/train");
      if (n_test > 0) out.test = make_moons(n_test, noise, test_seed, "moons/test");
    } else if (s.kind == "spirals") {
      const std::int64_t arms = int_option(s, "arms", 3, 2);
      out.train = make_spirals(n, arms, noise, train_seed, "spirals/train");
      if (n_test > 0) out.test = make_spirals(n_test, arms, noise, test_seed, "spirals/test");
    } else {
      out.train = make_sinusoid(n, noise, train_seed, "sinusoid/train");
      if (n_test > 0) out.test = make_sinusoid(n_test, noise, test_seed, "sinusoid/test");
    }
  }
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
  const auto it = std::find_if(kinds().begin(), kinds().end(),
                               [&](const KindSpec& k) { return s.kind == k.kind; });
  if (it == kinds().end()) {
    std::vector<std::string> names;
    for (const KindSpec& k : kinds()) names.emplace_back(k.kind);
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
  check_values(s);
  return s;
}

const char* data_source_help() {
  return "data sources (--data): KIND[:ARG,...], each ARG a path or key=value\n"
         "  fashion-mnist[:DIR]       Fashion-MNIST (default: Debian's dataset-fashion-mnist)\n"
         "  mnist:DIR                 the MNIST file layout in DIR (raw or .gz)\n"
         "  idx:IMAGES,LABELS[,TEST_IMAGES,TEST_LABELS]\n"
         "                            any MNIST-style IDX pair (raw or gzip)\n"
         "  csv:FILE[,TEST_FILE][,label=COL][,header=auto|yes|no][,task=classification|regression]\n"
         "                            label: column name or 0-based index (default: last column)\n"
         "  npy:X.npy,y.npy[,X_TEST.npy,y_TEST.npy][,task=auto|classification|regression]\n"
         "  moons[:n=1000,test=1000,noise=0.1,seed=0]\n"
         "  spirals[:n=1000,test=1000,arms=3,noise=0.1,seed=0]\n"
         "  sinusoid[:n=1000,test=1000,noise=0.1,seed=0]\n"
         "uint8 inputs are scaled to [0, 1]. The validation split comes out of the training file\n"
         "(default: a seeded random sixth, e.g. 10000 of Fashion-MNIST's 60000).";
}

const char* to_string(SplitMode mode) { return mode == SplitMode::kRandom ? "random" : "last"; }

const char* to_string(Normalization normalization) {
  switch (normalization) {
    case Normalization::kNone: return "none";
    case Normalization::kMinMax: return "minmax";
    case Normalization::kStandardize: return "standardize";
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
                          Normalization::kStandardizeGlobal}) {
    if (text == to_string(n)) return n;
  }
  throw Error(fmt::format("normalization '{}' is not valid; expected none, minmax, standardize or "
                          "standardize-global",
                          text));
}

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
  out.transform = FeatureTransform::fit(out.train, options.normalization);
  out.transform.apply(out.train);
  out.transform.apply(out.validation);
  out.transform.apply(out.test);
  return out;
}

DataSplits load_data(std::string_view spec, const LoadOptions& options) {
  return load_data(parse_data_source(spec), options);
}

}  // namespace quadra::data
