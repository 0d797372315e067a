#pragma once
// A compare file resolved: shared by `quadra compare`, which runs it, and `quadra config`,
// which checks it.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <quadra/config.hpp>
#include <quadra/plugin_host.hpp>
#include <quadra/train/settings.hpp>
#include <string>
#include <vector>

namespace quadra::cli {

/// One optimizer of a comparison.
struct Entrant {
  std::string name;  ///< the optimizer file's stem
  std::filesystem::path file;
  Config config;  ///< shared sections of the compare file, then the optimizer file's
};

struct Comparison {
  std::vector<Entrant> entrants;
  std::vector<train::ResolvedRun> resolved;  ///< one per entrant
  std::vector<std::uint64_t> seeds;
  std::filesystem::path out;
  /// [compare] target_accuracy (percent) and target_loss, on the test set: a run reaches the
  /// target at its first evaluation that meets every target given.
  std::optional<double> target_accuracy;
  std::optional<double> target_loss;
};

/// Whether `config` is a compare file: it sets keys of [compare].
bool is_comparison(const Config& config);

/// Checks the compare file's keys, reads [compare], and resolves every optimizer file (relative
/// to `config_file`'s directory) merged over the shared sections, creating its plugins. Throws
/// Error naming the file and key at the first fault, before anything runs.
Comparison resolve_comparison(const Config& shared, const std::filesystem::path& config_file,
                              const PluginHost& host);

}  // namespace quadra::cli
