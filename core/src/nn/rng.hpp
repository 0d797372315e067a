#pragma once
// The engine's random numbers: std::mt19937_64 (its output sequence is fixed by the standard)
// with our own conversions, because the standard distributions differ between library
// implementations and the project promises the same numbers for the same seed.

#include <cmath>
#include <cstdint>
#include <random>

namespace quadra::nn::detail {

class Rng {
 public:
  explicit Rng(std::uint64_t seed) : engine_(seed) {}
  /// Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }
  /// Standard normal (Box-Muller; one value per call, no caching).
  double normal() {
    double u1 = uniform();
    while (u1 <= 0.0) u1 = uniform();
    const double u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }

 private:
  std::mt19937_64 engine_;
};

}  // namespace quadra::nn::detail
