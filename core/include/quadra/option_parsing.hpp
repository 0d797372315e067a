#pragma once
/// \file
/// Turns the text values of a config file or `--set` into validated, typed plugin options, and
/// typed values back into text. One schema drives parsing, validation, defaults and help.

#include <map>
#include <string>

#include <quadra/sdk/options.hpp>
#include <quadra/sdk/status.hpp>

namespace quadra {

/// Option name -> text value, as written by the user.
using RawOptions = std::map<std::string, std::string>;

/// Validates `raw` against `schema` and fills defaults for options not given. `owner` names the
/// component in messages, e.g. "damping 'constant'". Fails on the first unknown option (listing
/// the valid ones), value of the wrong type, non-finite number, value out of range or unknown
/// choice.
Result<OptionValues> parse_options(const OptionSchema& schema, const RawOptions& raw,
                                   const std::string& owner);

/// Checks a schema itself (names, defaults of the declared type and within the declared
/// range, choices present). Used when a plugin registers a component.
Status check_schema(const OptionSchema& schema);

/// "1e-3", "true", "relu" ...: a value as a user would write it back into a config file.
std::string format_value(const OptionValue& value);

/// "[0, 1e+12]", "(0, inf)", "one of: a, b" or "" when unconstrained.
std::string format_constraint(const OptionSpec& spec);

}  // namespace quadra
