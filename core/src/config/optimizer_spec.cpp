// Optimizer specs from configs. See optimizer_spec.hpp.

#include <quadra/optimizer_spec.hpp>

#include <fmt/format.h>
#include <fmt/std.h>

#include <quadra/error.hpp>

namespace quadra {

std::set<std::string> optimizer_config_keys() {
  std::set<std::string> keys;
  for (int k = 0; k < kNumPluginKinds; ++k) {
    keys.insert(fmt::format("optimizer.{}", to_string(static_cast<PluginKind>(k))));
  }
  return keys;
}

std::set<std::string> optimizer_config_sections() {
  std::set<std::string> sections;
  for (int k = 0; k < kNumPluginKinds; ++k) sections.insert(to_string(static_cast<PluginKind>(k)));
  return sections;
}

OptimizerSpec resolve_optimizer(const Config& config, const PluginHost& host) {
  OptimizerSpec spec;
  for (int k = 0; k < kNumPluginKinds; ++k) {
    const auto kind = static_cast<PluginKind>(k);
    const std::string kind_name = to_string(kind);
    const RawOptions given = config.section(kind_name);
    const std::optional<std::string> name = config.get("optimizer." + kind_name);
    if (!name) {
      if (!given.empty()) {
        throw Error(fmt::format("config section [{}] sets '{}', but no {} plugin is chosen; "
                                "set optimizer.{} = NAME",
                                kind_name, given.begin()->first, kind_name, kind_name));
      }
      continue;
    }
    const Component* component = host.find(kind, *name);
    if (component == nullptr) {
      const auto known = host.names(kind);
      throw Error(fmt::format("optimizer.{}: unknown {} plugin '{}'; available: {}", kind_name,
                              kind_name, *name,
                              known.empty() ? std::string("none") : fmt::format("{}", fmt::join(known, ", "))));
    }
    auto values = parse_options(component->info.options, given,
                                fmt::format("{} '{}' (config section [{}])", kind_name, *name, kind_name));
    if (!values.is_ok()) throw Error(values.status().message());
    spec.choices[k] = ComponentChoice{component, given, std::move(values).value()};
  }
  return spec;
}

std::string format_optimizer(const OptimizerSpec& spec) {
  std::string out = "[optimizer]\n";
  for (int k = 0; k < kNumPluginKinds; ++k) {
    if (const auto& choice = spec.choices[k]) {
      out += fmt::format("{} = {}\n", to_string(static_cast<PluginKind>(k)),
                         choice->component->info.name);
    }
  }
  for (int k = 0; k < kNumPluginKinds; ++k) {
    const auto& choice = spec.choices[k];
    if (!choice || choice->component->info.options.empty()) continue;
    const Component& component = *choice->component;
    out += fmt::format("\n[{}]  # {} {} from {}\n", to_string(component.kind), component.info.name,
                       component.library_version, component.file.filename().string());
    for (const auto& [name, value] : choice->values.entries()) {
      const bool is_default = choice->given.count(name) == 0;
      out += fmt::format("{} = {}{}\n", name, format_value(value), is_default ? "  # default" : "");
    }
  }
  return out;
}

}  // namespace quadra
