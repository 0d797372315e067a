// `quadra data describe --data SOURCE`: what a data source holds once loaded and split.

#include <algorithm>
#include <cmath>
#include <iostream>

#include <fmt/format.h>

#include <quadra/data/source.hpp>

#include "cli.hpp"
#include "table.hpp"

namespace quadra::cli {
namespace po = boost::program_options;

namespace {

constexpr const char* kUsage =
    "usage: quadra data describe --data SOURCE [--validation N] [--split random|last] [--seed N]\n"
    "                            [--normalize none|minmax|standardize|standardize-channel|\n"
    "                                         standardize-global]\n\n"
    "Loads a data source, splits off the validation set and applies the normalisation, then\n"
    "prints the size of each split, the sample shape, the classes with per-class counts,\n"
    "feature statistics (min, max, mean, std) and a label histogram (for regression: target\n"
    "statistics and a histogram of the training targets).";

std::string number(double v) { return fmt::format("{:.6g}", v); }

std::string bar(std::int64_t count, std::int64_t largest, int width = 40) {
  if (largest <= 0) return "";
  const auto n = static_cast<std::size_t>(
      std::llround(static_cast<double>(width) * static_cast<double>(count) / static_cast<double>(largest)));
  return std::string(n, '#');
}

struct Split {
  const char* name;
  const data::Dataset* data;
};

void print_description(const data::DataSplits& s, const data::LoadOptions& options) {
  const data::Dataset& train = s.train;
  const std::vector<Split> splits = {{"train", &s.train}, {"validation", &s.validation}, {"test", &s.test}};

  std::cout << fmt::format("source: {}\n", s.source);
  std::cout << fmt::format("task: {}", data::to_string(train.task));
  if (train.task == data::Task::kClassification) {
    std::cout << fmt::format(", {} classes", train.num_classes);
  } else {
    std::cout << fmt::format(", {} target{}", train.target_dim, train.target_dim == 1 ? "" : "s");
  }
  std::cout << fmt::format("\nsample shape: ({}) = {} feature{}\n", fmt::join(train.sample_shape, ", "),
                           train.feature_dim(), train.feature_dim() == 1 ? "" : "s");
  std::cout << fmt::format("split: {} validation (seed {}), normalisation: {}\n\n",
                           data::to_string(options.split), options.seed,
                           data::to_string(options.normalization));

  TextTable sizes({"SPLIT", "SAMPLES", "FEATURE MIN", "MAX", "MEAN", "STD"});
  for (const Split& split : splits) {
    if (split.data->empty()) {
      sizes.add({split.name, "0", "-", "-", "-", "-"});
      continue;
    }
    const data::Summary f = data::summarize_features(*split.data);
    sizes.add({split.name, std::to_string(split.data->size()), number(f.min), number(f.max),
               number(f.mean), number(f.std)});
  }
  std::cout << sizes.str();

  if (train.task == data::Task::kRegression) {
    std::cout << "\n";
    TextTable targets({"SPLIT", "TARGET MIN", "MAX", "MEAN", "STD"});
    for (const Split& split : splits) {
      if (split.data->empty()) continue;
      const data::Summary t = data::summarize_targets(*split.data);
      targets.add({split.name, number(t.min), number(t.max), number(t.mean), number(t.std)});
    }
    std::cout << targets.str();
    // Ten equal-width bins over the training targets.
    const data::Summary t = data::summarize_targets(train);
    constexpr int kBins = 10;
    std::vector<std::int64_t> counts(kBins, 0);
    const double width = t.max > t.min ? (t.max - t.min) / kBins : 1.0;
    for (float v : train.targets) {
      const int b = std::clamp(static_cast<int>((v - t.min) / width), 0, kBins - 1);
      ++counts[static_cast<std::size_t>(b)];
    }
    const std::int64_t largest = *std::max_element(counts.begin(), counts.end());
    std::cout << "\ntarget histogram (train):\n";
    TextTable histogram({"FROM", "TO", "COUNT", "HISTOGRAM"});
    for (int b = 0; b < kBins; ++b) {
      histogram.add({number(t.min + b * width), number(t.min + (b + 1) * width),
                     std::to_string(counts[static_cast<std::size_t>(b)]),
                     bar(counts[static_cast<std::size_t>(b)], largest)});
    }
    std::cout << histogram.str();
    return;
  }

  std::cout << "\nclasses (label histogram):\n";
  TextTable classes({"CLASS", "NAME", "TRAIN", "VALIDATION", "TEST", "HISTOGRAM (TRAIN)"});
  std::vector<std::vector<std::int64_t>> counts;
  for (const Split& split : splits) counts.push_back(split.data->class_counts());
  const std::int64_t largest =
      counts[0].empty() ? 0 : *std::max_element(counts[0].begin(), counts[0].end());
  for (std::int64_t c = 0; c < train.num_classes; ++c) {
    const auto k = static_cast<std::size_t>(c);
    const std::string name = k < train.class_names.size() ? train.class_names[k] : "";
    std::vector<std::string> row = {std::to_string(c), name};
    for (const auto& split_counts : counts) {
      row.push_back(k < split_counts.size() ? std::to_string(split_counts[k]) : "0");
    }
    row.push_back(bar(counts[0][k], largest));
    classes.add(std::move(row));
  }
  std::cout << classes.str();
}

}  // namespace

int run_data(const Args& args, Context& /*context*/) {
  po::options_description options("data options");
  options.add_options()("data,d", po::value<std::string>(), "data source (see above)")(
      "validation", po::value<std::int64_t>()->default_value(-1),
      "samples moved from the training file to the validation split; -1: one sixth")(
      "split", po::value<std::string>()->default_value("random"),
      "how the validation samples are chosen: random (seeded) or last")(
      "seed", po::value<std::uint64_t>()->default_value(0), "seed of the random split")(
      "normalize", po::value<std::string>()->default_value("none"),
      "none, minmax, standardize (per feature), standardize-channel (per image channel) or "
      "standardize-global; fitted on the training split")(
      "command", po::value<std::vector<std::string>>(), "describe");
  po::positional_options_description positional;
  positional.add("command", -1);
  po::variables_map vm;
  const std::string usage = std::string(kUsage) + "\n\n" + data::data_source_help();
  if (!parse(args, usage, options, positional, vm)) return kExitOk;

  std::vector<std::string> words;
  if (vm.count("command") != 0) words = vm["command"].as<std::vector<std::string>>();
  if (words.empty()) throw UsageError("missing subcommand; expected 'data describe --data SOURCE'");
  if (words.front() != "describe") {
    throw UsageError(fmt::format("unknown data subcommand '{}'; expected 'describe'", words.front()));
  }
  if (words.size() != 1) {
    throw UsageError(fmt::format("'data describe' takes no positional arguments; found '{}' (give the "
                                 "source with --data)",
                                 words[1]));
  }
  if (vm.count("data") == 0) throw UsageError("'data describe' needs --data SOURCE");

  data::LoadOptions load;
  load.validation_size = vm["validation"].as<std::int64_t>();
  if (load.validation_size < -1) {
    throw UsageError(fmt::format("--validation {}: expected a number of samples >= 0, or -1 for one "
                                 "sixth",
                                 load.validation_size));
  }
  try {
    load.split = data::parse_split_mode(vm["split"].as<std::string>());
  } catch (const Error& e) {
    throw UsageError(fmt::format("--split: {}", e.what()));
  }
  try {
    load.normalization = data::parse_normalization(vm["normalize"].as<std::string>());
  } catch (const Error& e) {
    throw UsageError(fmt::format("--normalize: {}", e.what()));
  }
  load.seed = vm["seed"].as<std::uint64_t>();
  const data::DataSplits splits = data::load_data(vm["data"].as<std::string>(), load);
  print_description(splits, load);
  return kExitOk;
}

}  // namespace quadra::cli
