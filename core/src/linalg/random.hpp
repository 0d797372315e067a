#pragma once
// Seeded random vectors for the linalg module. SplitMix64 (Steele, Lea, Flood 2014): tiny
// state, passes BigCrush, and fully specified here, so a seed gives bitwise the same vectors
// on every platform and standard library (std::*_distribution makes no such promise).
// One RNG per purpose: a stream id is mixed into the seed, and the probes of Hutchinson/SLQ
// use one stream per probe index, so probe i is the same whatever the number of probes.

#include <cstdint>

#include <quadra/sdk/types.hpp>

namespace quadra::linalg::detail {

/// Stream ids (arbitrary distinct constants, one per purpose).
inline constexpr std::uint64_t kLanczosStream = 0x4c414e435a4f5331ULL;
inline constexpr std::uint64_t kProbeStreamBase = 0x50524f4245530000ULL;

inline std::uint64_t splitmix64_mix(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

class Rng {
 public:
  Rng(std::uint64_t seed, std::uint64_t stream)
      : state_(splitmix64_mix(seed + 0x9e3779b97f4a7c15ULL) ^
               splitmix64_mix(stream ^ 0xd1b54a32d192ed03ULL)) {}

  std::uint64_t next() {
    state_ += 0x9e3779b97f4a7c15ULL;
    return splitmix64_mix(state_);
  }

  /// Uniform on [-1, 1), 53 random bits.
  double uniform_pm1() {
    return static_cast<double>(next() >> 11) * 0x1.0p-52 - 1.0;
  }

  /// Entries uniform on [-1, 1): a start vector with, almost surely, a component along every
  /// eigenvector (a Rademacher vector can be exactly orthogonal to structured eigenvectors).
  template <class Scalar>
  void fill_uniform(VectorRef<Scalar> v) {
    for (Index i = 0; i < v.size(); ++i) v[i] = static_cast<Scalar>(uniform_pm1());
  }

  /// Entries +-1 with probability 1/2 each, 64 signs per draw.
  template <class Scalar>
  void fill_rademacher(VectorRef<Scalar> v) {
    std::uint64_t bits = 0;
    for (Index i = 0; i < v.size(); ++i) {
      if (i % 64 == 0) bits = next();
      v[i] = (bits & 1U) != 0 ? Scalar(1) : Scalar(-1);
      bits >>= 1;
    }
  }

 private:
  std::uint64_t state_;
};

}  // namespace quadra::linalg::detail
