// INI configuration with overrides. See config.hpp.

#include <quadra/config.hpp>

#include <sstream>

#include <boost/program_options/options_description.hpp>
#include <boost/program_options/parsers.hpp>
#include <fmt/format.h>
#include <fmt/std.h>

#include <quadra/error.hpp>
#include <quadra/io/file.hpp>

namespace quadra {
namespace po = boost::program_options;

namespace {
std::string_view trim(std::string_view text) {
  const auto first = text.find_first_not_of(" \t");
  if (first == std::string_view::npos) return {};
  const auto last = text.find_last_not_of(" \t");
  return text.substr(first, last - first + 1);
}
}  // namespace

Config Config::from_file(const std::filesystem::path& file) {
  // Read whole (a regular file only), so that a FIFO cannot block and /dev/zero cannot fill
  // memory.
  std::string text;
  const std::string why = io::try_read_file_bytes(file, text);
  if (!why.empty()) throw Error(fmt::format("config file {}: cannot be opened: {}", file, why));
  std::istringstream in(text);
  Config config;
  try {
    // An empty description with allow_unregistered: every key comes back as unregistered, so
    // the config's vocabulary is decided by the command, not by the parser.
    const po::options_description none;
    const po::parsed_options parsed = po::parse_config_file(in, none, true);
    for (const po::option& option : parsed.options) {
      const std::string& key = option.string_key;
      if (key.find('.') == std::string::npos) {
        throw Error(fmt::format("config file {}: key '{}' is outside any [section]", file, key));
      }
      const std::string value = option.value.empty() ? std::string() : option.value.front();
      if (!config.entries_.emplace(key, Entry{value, Source::kFile}).second) {
        throw Error(fmt::format("config file {}: key '{}' is given twice", file, key));
      }
    }
  } catch (const po::error& e) {
    throw Error(fmt::format("config file {}: {}", file, e.what()));
  }
  return config;
}

void Config::apply_override(std::string_view assignment) {
  const auto eq = assignment.find('=');
  const std::string_view key = trim(assignment.substr(0, eq));
  const auto dot = key.find('.');
  if (eq == std::string_view::npos || dot == std::string_view::npos || dot == 0 ||
      dot + 1 == key.size()) {
    throw Error(fmt::format("--set '{}': expected section.key=value", assignment));
  }
  entries_[std::string(key)] = Entry{std::string(trim(assignment.substr(eq + 1))), Source::kOverride};
}

void Config::set(std::string_view key, std::string_view value) {
  const std::string_view k = trim(key);
  const auto dot = k.find('.');
  if (dot == std::string_view::npos || dot == 0 || dot + 1 == k.size()) {
    throw Error(fmt::format("config key '{}': expected section.key", key));
  }
  entries_[std::string(k)] = Entry{std::string(trim(value)), Source::kFile};
}

std::optional<std::string> Config::get(std::string_view key) const {
  const auto it = entries_.find(key);
  if (it == entries_.end()) return std::nullopt;
  return it->second.value;
}

RawOptions Config::section(std::string_view section) const {
  RawOptions result;
  const std::string prefix = std::string(section) + ".";
  for (const auto& [key, entry] : entries_) {
    if (key.size() > prefix.size() && key.compare(0, prefix.size(), prefix) == 0) {
      result.emplace(key.substr(prefix.size()), entry.value);
    }
  }
  return result;
}

void Config::check_known(const std::set<std::string>& keys,
                         const std::set<std::string>& sections) const {
  for (const auto& [key, entry] : entries_) {
    if (keys.count(key) != 0) continue;
    const std::string section = key.substr(0, key.find('.'));
    if (sections.count(section) != 0) continue;
    std::vector<std::string> valid(keys.begin(), keys.end());
    for (const std::string& s : sections) valid.push_back(s + ".*");
    throw Error(fmt::format("unknown config key '{}'{}; valid keys: {}", key,
                            entry.source == Source::kOverride ? " (from --set)" : "",
                            fmt::join(valid, ", ")));
  }
}

}  // namespace quadra
