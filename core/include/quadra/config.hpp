#pragma once
/// \file
/// Run configuration: an INI file (Boost.Program_options syntax: `[section]`, `key = value`,
/// `#` comments) plus `--set section.key=value` overrides, as a flat map of dotted keys.
/// Commands declare which keys and sections they accept; everything else is an error that
/// lists the valid keys.

#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <quadra/option_parsing.hpp>

namespace quadra {

class Config {
 public:
  /// Where a value came from, for the resolved-config printout and the run manifest.
  enum class Source { kFile, kOverride };
  struct Entry {
    std::string value;
    Source source;
  };

  Config() = default;

  /// Reads an INI file. Throws Error naming the file on a missing file, a syntax error, a key
  /// outside any section or a key given twice.
  static Config from_file(const std::filesystem::path& file);

  /// Applies one `section.key=value` override. Throws Error on a malformed assignment.
  void apply_override(std::string_view assignment);

  /// Sets `section.key` as a file would (a config built in code, such as the Python module's
  /// dicts): later calls replace earlier ones. Throws Error on a key without a section.
  void set(std::string_view key, std::string_view value);

  [[nodiscard]] std::optional<std::string> get(std::string_view key) const;
  /// Every key of `section`, without the "section." prefix.
  [[nodiscard]] RawOptions section(std::string_view section) const;
  [[nodiscard]] const std::map<std::string, Entry, std::less<>>& entries() const noexcept {
    return entries_;
  }

  /// Throws Error for the first key that is neither in `keys` nor inside one of `sections`,
  /// listing what is valid.
  void check_known(const std::set<std::string>& keys, const std::set<std::string>& sections) const;

 private:
  std::map<std::string, Entry, std::less<>> entries_;
};

}  // namespace quadra
