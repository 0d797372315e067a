#pragma once
/// \file
/// Plugin options declared as data. A plugin describes each option once (name, type, default,
/// range or choices, help); the host derives `quadra plugins describe`, config-file keys,
/// `--set` overrides and validation from that one declaration, and hands the plugin's factory
/// an OptionValues in which every option is present, of its declared type and in range.

#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace quadra {
inline namespace abi_v4 {

enum class OptionType : int { kBool, kInt, kReal, kString, kChoice };

/// Lower-case name used in messages and tables: "bool", "int", "real", "string", "choice".
inline const char* to_string(OptionType type) noexcept {
  switch (type) {
    case OptionType::kBool: return "bool";
    case OptionType::kInt: return "int";
    case OptionType::kReal: return "real";
    case OptionType::kString: return "string";
    case OptionType::kChoice: return "choice";
  }
  return "?";
}

/// A typed value. kChoice options hold std::string.
using OptionValue = std::variant<bool, std::int64_t, double, std::string>;

/// One declared option. Build with the named constructors and chain the bounds:
///   OptionSpec::real("lambda", 1e-3, "Tikhonov damping added to the curvature").at_least(0.0)
struct OptionSpec {
  std::string name;
  OptionType type = OptionType::kReal;
  OptionValue default_value;
  std::optional<double> min;       ///< kInt/kReal only
  std::optional<double> max;       ///< kInt/kReal only
  bool min_exclusive = false;      ///< min is a strict bound (value > min)
  std::vector<std::string> choices;  ///< kChoice only
  std::string help;

  static OptionSpec boolean(std::string name, bool def, std::string help) {
    return make(std::move(name), OptionType::kBool, def, std::move(help));
  }
  static OptionSpec integer(std::string name, std::int64_t def, std::string help) {
    return make(std::move(name), OptionType::kInt, def, std::move(help));
  }
  static OptionSpec real(std::string name, double def, std::string help) {
    return make(std::move(name), OptionType::kReal, def, std::move(help));
  }
  static OptionSpec string(std::string name, std::string def, std::string help) {
    return make(std::move(name), OptionType::kString, std::move(def), std::move(help));
  }
  static OptionSpec choice(std::string name, std::string def, std::vector<std::string> choices,
                           std::string help) {
    OptionSpec spec = make(std::move(name), OptionType::kChoice, std::move(def), std::move(help));
    spec.choices = std::move(choices);
    return spec;
  }

  OptionSpec at_least(double bound) && {
    min = bound;
    min_exclusive = false;
    return std::move(*this);
  }
  OptionSpec greater_than(double bound) && {
    min = bound;
    min_exclusive = true;
    return std::move(*this);
  }
  OptionSpec at_most(double bound) && {
    max = bound;
    return std::move(*this);
  }
  OptionSpec in_range(double lo, double hi) && {
    min = lo;
    min_exclusive = false;
    max = hi;
    return std::move(*this);
  }

 private:
  static OptionSpec make(std::string name, OptionType type, OptionValue def, std::string help) {
    OptionSpec spec;
    spec.name = std::move(name);
    spec.type = type;
    spec.default_value = std::move(def);
    spec.help = std::move(help);
    return spec;
  }
};

using OptionSchema = std::vector<OptionSpec>;

/// Validated values, one per declared option, filled by the host. Getters throw
/// std::logic_error on a name that was not declared or a type that does not match: that is a
/// bug in the plugin, and the SDK's factory thunk turns it into a Status inside the plugin.
class OptionValues {
 public:
  void set(std::string name, OptionValue value) {
    for (auto& [key, existing] : entries_) {
      if (key == name) {
        existing = std::move(value);
        return;
      }
    }
    entries_.emplace_back(std::move(name), std::move(value));
  }

  [[nodiscard]] bool contains(const std::string& name) const noexcept { return find(name) != nullptr; }
  [[nodiscard]] const std::vector<std::pair<std::string, OptionValue>>& entries() const noexcept {
    return entries_;
  }

  [[nodiscard]] bool get_bool(const std::string& name) const { return get<bool>(name, "bool"); }
  [[nodiscard]] std::int64_t get_int(const std::string& name) const {
    return get<std::int64_t>(name, "int");
  }
  [[nodiscard]] double get_real(const std::string& name) const { return get<double>(name, "real"); }
  /// String and choice options.
  [[nodiscard]] const std::string& get_string(const std::string& name) const {
    return get<std::string>(name, "string or choice");
  }

 private:
  [[nodiscard]] const OptionValue* find(const std::string& name) const noexcept {
    for (const auto& [key, value] : entries_) {
      if (key == name) return &value;
    }
    return nullptr;
  }
  template <class T>
  const T& get(const std::string& name, const char* wanted) const {
    const OptionValue* value = find(name);
    if (value == nullptr) throw std::logic_error("option '" + name + "' was not declared");
    if (const T* typed = std::get_if<T>(value)) return *typed;
    throw std::logic_error("option '" + name + "' is not of type " + wanted);
  }

  std::vector<std::pair<std::string, OptionValue>> entries_;
};

}  // namespace abi_v4
}  // namespace quadra
