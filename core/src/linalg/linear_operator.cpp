#include <quadra/linalg/linear_operator.hpp>

#include <fmt/format.h>

namespace quadra::linalg::detail {

Status non_finite_product_status(Index dim, Index index, double value) {
  return Status::numerical_issue(
      fmt::format("linear operator product has a non-finite entry: y[{}] = {} (n = {})", index,
                  value, dim));
}

}  // namespace quadra::linalg::detail
