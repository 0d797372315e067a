#pragma once
/// \file
/// An optimizer as data: the plugin chosen for each kind and its options, read from a Config.
///
///   [optimizer]               [damping]              [debiasing]
///   damping = constant        lambda = 0.01          ...
///   debiasing = same-batch
///
/// Section `optimizer` names one plugin per kind; the section named after a kind holds the
/// options of the plugin chosen for it. Every option is validated against the plugin's schema.

#include <array>
#include <optional>
#include <set>
#include <string>

#include <quadra/config.hpp>
#include <quadra/plugin_host.hpp>

namespace quadra {

struct ComponentChoice {
  const Component* component = nullptr;  ///< in the host's registry
  RawOptions given;                      ///< as the user wrote them
  OptionValues values;                   ///< validated, defaults filled
};

struct OptimizerSpec {
  std::array<std::optional<ComponentChoice>, kNumPluginKinds> choices;

  [[nodiscard]] const std::optional<ComponentChoice>& choice(PluginKind kind) const {
    return choices[static_cast<int>(kind)];
  }
};

/// Config keys and sections an optimizer spec owns, for Config::check_known.
std::set<std::string> optimizer_config_keys();
std::set<std::string> optimizer_config_sections();

/// Resolves and validates the spec. Throws Error on an unknown plugin (listing the available
/// ones), an options section for a kind that has no plugin chosen, or an invalid option.
OptimizerSpec resolve_optimizer(const Config& config, const PluginHost& host);

/// Writes the spec back as an INI text: every option with its value, defaults marked.
std::string format_optimizer(const OptimizerSpec& spec);

}  // namespace quadra
