#pragma once
/// \file
/// Portable random streams for the data layer: the same seed gives the same numbers with every
/// compiler and standard library. (std::shuffle and the std:: distributions are implementation-
/// defined, so they would make a split or a batch sequence depend on the toolchain.)
///
/// One generator is SplitMix64 (Steele, Lea, Flood 2014): a 64-bit counter passed through a
/// strong mixer. Streams for different purposes (a role's epoch permutation, a synthetic data
/// set, a validation split) use seeds derived from (seed, purpose, index) with derive_seed, so
/// they are independent of each other and of how many numbers another stream consumed.

#include <cmath>
#include <cstdint>
#include <numbers>
#include <span>
#include <utility>

namespace quadra::data {

/// The SplitMix64 output function: a bijective 64-bit mixer.
constexpr std::uint64_t mix64(std::uint64_t z) noexcept {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/// A seed for the stream (purpose, index) under the user's seed.
constexpr std::uint64_t derive_seed(std::uint64_t seed, std::uint64_t purpose,
                                    std::uint64_t index = 0) noexcept {
  return mix64(mix64(mix64(seed + 0x9e3779b97f4a7c15ULL) ^ purpose) + index);
}

/// Purposes for derive_seed, so that no two streams of the data layer share a seed.
enum class Stream : std::uint64_t {
  kRolePermutation = 0x726f6c65,  ///< index: (role key << 32) | epoch
  kSplit = 0x73706c74,
  kSynthetic = 0x73796e74,        ///< index: 0 train, 1 test
};

class Rng {
 public:
  explicit constexpr Rng(std::uint64_t seed) noexcept : state_(seed) {}

  constexpr std::uint64_t next() noexcept {
    state_ += 0x9e3779b97f4a7c15ULL;
    return mix64(state_);
  }

  /// Uniform on [0, 1) with 53 random bits.
  double uniform() noexcept { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

  /// Uniform on [0, n), unbiased (rejection of the incomplete last block); n > 0.
  std::uint64_t below(std::uint64_t n) noexcept {
    constexpr std::uint64_t kMax = ~std::uint64_t{0};
    const std::uint64_t limit = kMax - kMax % n;  // a multiple of n
    std::uint64_t x = next();
    while (x >= limit) x = next();
    return x % n;
  }

  /// Standard normal (Box-Muller; one value per call keeps the stream stateless apart from
  /// the counter).
  double normal() noexcept {
    const double u1 = 1.0 - uniform();  // (0, 1]: log is finite
    const double u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
  }

 private:
  std::uint64_t state_;
};

/// Fisher-Yates shuffle driven by `rng` (portable, unlike std::shuffle).
template <class T>
void shuffle(std::span<T> values, Rng& rng) noexcept {
  for (std::size_t i = values.size(); i > 1; --i) {
    const auto j = static_cast<std::size_t>(rng.below(i));
    std::swap(values[i - 1], values[j]);
  }
}

}  // namespace quadra::data
