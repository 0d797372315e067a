#pragma once
// Helpers shared by the data layer's sources; not part of the public API.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace quadra::data::detail {

/// out[i] = in[i] / 255.0f, exactly, through a lookup table (idx.cpp).
void convert_bytes_scaled(const unsigned char* in, std::size_t n, float* out) noexcept;

/// Product of a sample shape, or an Error naming `what` when a dimension is < 1 or the product
/// exceeds 2^40 values (a corrupt header; also keeps Dataset::feature_dim from overflowing).
std::int64_t checked_sample_size(const std::vector<std::int64_t>& sample_shape, const std::string& what);

/// Parses a whole field as a double: optional surrounding blanks, an optional sign, then what
/// std::from_chars accepts (including "nan" and "inf"). False when anything is left over.
bool parse_double(std::string_view text, double& value) noexcept;

/// Parses a whole field as a base-10 integer (surrounding blanks allowed).
bool parse_int64(std::string_view text, std::int64_t& value) noexcept;

}  // namespace quadra::data::detail
