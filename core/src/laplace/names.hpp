#pragma once
// Enum <-> name for the Laplace options (structures, predictives, corruptions): one parser, so
// every unknown name gets the same message listing the valid ones.

#include <initializer_list>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include <quadra/error.hpp>

namespace quadra::laplace::detail {

/// The value of `values` whose to_string() is `text`; otherwise throws quadra::Error
/// "<what> '<text>' is unknown; expected one of <names>".
template <class E, class Values = std::initializer_list<E>>
E parse_name(std::string_view text, const Values& values, const char* what) {
  std::string valid;
  for (E v : values) {
    if (text == to_string(v)) return v;
    valid += fmt::format("{}{}", valid.empty() ? "" : ", ", to_string(v));
  }
  throw Error(fmt::format("{} '{}' is unknown; expected one of {}", what, text, valid));
}

}  // namespace quadra::laplace::detail
