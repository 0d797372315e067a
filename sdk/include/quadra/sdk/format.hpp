#pragma once
/// \file
/// Numbers in messages. std::to_string(double) prints six fixed decimals, so 1e-9 reads as
/// 0.000000 and 0.1 + 0.2 looks like 0.300000; a message should show the value that was found,
/// exactly and briefly. format_number() gives the shortest %g text that reads back as the same
/// double, and `nan`, `inf`, `-inf` for the non-finite ones (every NaN prints as `nan`: its sign
/// and payload mean nothing to a reader).
///
///   format_number(1e-9) == "1e-09"    format_number(0.1) == "0.1"
///   format_number(1.0 / 3) == "0.3333333333333333"    format_number(1e300) == "1e+300"
///
/// Integers keep std::to_string. Like printf, the text follows the C locale's decimal point,
/// which is the host's (it never calls setlocale).

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace quadra {

/// The shortest "%.{p}g" text (p = 1..17) that strtod reads back as `value`.
inline std::string format_number(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  // %.17g always round-trips a double; its text is at most 24 characters
  // ("-1.2345678901234567e-308").
  char buffer[32];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buffer, sizeof buffer, "%.*g", precision, value);
    if (std::strtod(buffer, nullptr) == value) break;
  }
  return buffer;
}

}  // namespace quadra
