// Text <-> typed plugin options, driven by the schema. See option_parsing.hpp.

#include <quadra/option_parsing.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <set>

#include <fmt/format.h>

namespace quadra {
namespace {

/// Shortest text that reads back to the same double: "0.001", "1e+12", "inf".
std::string format_number(double x) {
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  char buffer[32];
  const auto result = std::to_chars(buffer, buffer + sizeof buffer, x);
  return std::string(buffer, result.ptr);
}

std::string lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string_view trim(std::string_view text) {
  const auto first = text.find_first_not_of(" \t");
  if (first == std::string_view::npos) return {};
  const auto last = text.find_last_not_of(" \t");
  return text.substr(first, last - first + 1);
}

bool in_range(const OptionSpec& spec, double x) {
  if (spec.min && (spec.min_exclusive ? !(x > *spec.min) : !(x >= *spec.min))) return false;
  if (spec.max && !(x <= *spec.max)) return false;
  return true;
}

/// Parses one text value as the spec's type. `where` prefixes every message.
Result<OptionValue> parse_value(const OptionSpec& spec, std::string_view text,
                                const std::string& where) {
  const std::string_view value = trim(text);
  auto expected = [&](const char* what) {
    return Status::invalid_argument(fmt::format("{}: expected {}, found '{}'", where, what, text));
  };
  switch (spec.type) {
    case OptionType::kBool: {
      const std::string v = lower(value);
      if (v == "true" || v == "1" || v == "yes" || v == "on") return OptionValue(true);
      if (v == "false" || v == "0" || v == "no" || v == "off") return OptionValue(false);
      return expected("a boolean (true/false, yes/no, on/off, 1/0)");
    }
    case OptionType::kInt: {
      std::int64_t x = 0;
      const char* end = value.data() + value.size();
      const auto [ptr, ec] = std::from_chars(value.data(), end, x);
      if (value.empty() || ec != std::errc() || ptr != end) return expected("an integer");
      if (!in_range(spec, static_cast<double>(x))) {
        return Status::invalid_argument(fmt::format("{}: {} is outside the allowed range {}", where,
                                                    x, format_constraint(spec)));
      }
      return OptionValue(x);
    }
    case OptionType::kReal: {
      const std::string buffer(value);
      char* end = nullptr;
      const double x = std::strtod(buffer.c_str(), &end);
      if (buffer.empty() || end != buffer.c_str() + buffer.size()) return expected("a real number");
      if (!std::isfinite(x)) return expected("a finite real number");  // nan, inf, 1e999
      if (!in_range(spec, x)) {
        return Status::invalid_argument(fmt::format("{}: {} is outside the allowed range {}", where,
                                                    buffer, format_constraint(spec)));
      }
      return OptionValue(x);
    }
    case OptionType::kString: return OptionValue(std::string(value));
    case OptionType::kChoice: {
      const auto it = std::find(spec.choices.begin(), spec.choices.end(), value);
      if (it == spec.choices.end()) {
        return Status::invalid_argument(fmt::format("{}: '{}' is not {}", where, text,
                                                    format_constraint(spec)));
      }
      return OptionValue(std::string(value));
    }
  }
  return Status::failed(fmt::format("{}: unknown option type", where));
}

}  // namespace

std::string format_value(const OptionValue& value) {
  struct Visitor {
    std::string operator()(bool b) const { return b ? "true" : "false"; }
    std::string operator()(std::int64_t i) const { return std::to_string(i); }
    std::string operator()(double x) const { return format_number(x); }
    std::string operator()(const std::string& s) const { return s; }
  };
  return std::visit(Visitor{}, value);
}

std::string format_constraint(const OptionSpec& spec) {
  if (spec.type == OptionType::kChoice) {
    return fmt::format("one of: {}", fmt::join(spec.choices, ", "));
  }
  if (!spec.min && !spec.max) return {};
  // Infinite ends are open: "[0, inf)".
  return fmt::format("{}{}, {}{}", spec.min_exclusive || !spec.min ? "(" : "[",
                     spec.min ? format_number(*spec.min) : "-inf",
                     spec.max ? format_number(*spec.max) : "inf", spec.max ? "]" : ")");
}

Status check_schema(const OptionSchema& schema) {
  std::set<std::string> seen;
  for (const OptionSpec& spec : schema) {
    const bool good_name =
        !spec.name.empty() && std::all_of(spec.name.begin(), spec.name.end(), [](char c) {
          return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
        });
    if (!good_name) {
      return Status::invalid_argument(fmt::format(
          "option name '{}' is invalid: expected lower-case letters, digits and '_'", spec.name));
    }
    if (!seen.insert(spec.name).second) {
      return Status::invalid_argument(fmt::format("option '{}' is declared twice", spec.name));
    }
    const bool numeric = spec.type == OptionType::kInt || spec.type == OptionType::kReal;
    if (!numeric && (spec.min || spec.max)) {
      return Status::invalid_argument(
          fmt::format("option '{}' of type {} cannot have a range", spec.name, to_string(spec.type)));
    }
    if (spec.type == OptionType::kChoice && spec.choices.empty()) {
      return Status::invalid_argument(fmt::format("choice option '{}' has no choices", spec.name));
    }
    // The default must be a value a user could have written.
    const std::string where = fmt::format("option '{}' default", spec.name);
    const bool type_matches = std::visit(
        [&](const auto& v) {
          using T = std::decay_t<decltype(v)>;
          switch (spec.type) {
            case OptionType::kBool: return std::is_same_v<T, bool>;
            case OptionType::kInt: return std::is_same_v<T, std::int64_t>;
            case OptionType::kReal: return std::is_same_v<T, double>;
            case OptionType::kString:
            case OptionType::kChoice: return std::is_same_v<T, std::string>;
          }
          return false;
        },
        spec.default_value);
    if (!type_matches) {
      return Status::invalid_argument(
          fmt::format("{} is not of the declared type {}", where, to_string(spec.type)));
    }
    auto parsed = parse_value(spec, format_value(spec.default_value), where);
    if (!parsed.is_ok()) return parsed.status();
  }
  return Status::ok();
}

Result<OptionValues> parse_options(const OptionSchema& schema, const RawOptions& raw,
                                   const std::string& owner) {
  for (const auto& entry : raw) {
    const std::string& name = entry.first;  // a plain reference: clang 14 cannot capture bindings
    const bool known = std::any_of(schema.begin(), schema.end(),
                                   [&](const OptionSpec& spec) { return spec.name == name; });
    if (!known) {
      std::vector<std::string> valid;
      for (const OptionSpec& spec : schema) valid.push_back(spec.name);
      return Status::invalid_argument(fmt::format(
          "unknown option '{}' for {}; valid options: {}", name, owner,
          valid.empty() ? std::string("none") : fmt::format("{}", fmt::join(valid, ", "))));
    }
  }
  OptionValues values;
  for (const OptionSpec& spec : schema) {
    const auto given = raw.find(spec.name);
    if (given == raw.end()) {
      values.set(spec.name, spec.default_value);
      continue;
    }
    auto parsed = parse_value(spec, given->second,
                              fmt::format("option '{}' of {}", spec.name, owner));
    if (!parsed.is_ok()) return parsed.status();
    values.set(spec.name, std::move(parsed).value());
  }
  return values;
}

}  // namespace quadra
