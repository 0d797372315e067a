#pragma once
// Fused, parallel vector kernels for the Krylov solvers. Written as separate loops (each dot,
// axpy and norm its own, on one thread), one CG iteration makes about twenty passes over its
// n-vectors; at n ~ 5e5 that costs as much as half a curvature product. These kernels touch each vector once
// per step and split the work into fixed chunks whose partial sums are folded in chunk order,
// so results are bitwise the same for any thread count.

#include <utility>

#include <quadra/parallel.hpp>
#include <quadra/sdk/types.hpp>

namespace quadra::linalg::detail {

/// Entries per chunk: a function of nothing but this constant (never of the thread count);
/// 32k floats are 128 KiB per vector, so the three or four vectors of a step stay in L2.
inline constexpr std::int64_t kVectorChunk = 1 << 15;

/// Sums `map(chunk)` (a double) over the chunks of [0, n) in chunk order.
template <class Map>
double chunked_sum(Index n, Map&& map) {
  return deterministic_reduce(n, kVectorChunk, 0.0, std::forward<Map>(map),
                              [](double acc, double part) { return acc + part; });
}

/// (p'a, p'r) in one pass.
template <class S>
std::pair<double, double> dot2(const Vector<S>& p, const Vector<S>& a, const Vector<S>& r) {
  struct Pair {
    double pa = 0, pr = 0;
  };
  const Pair sum = deterministic_reduce(
      p.size(), kVectorChunk, Pair{},
      [&](const ChunkRange& c) {
        const auto ps = p.segment(c.begin, c.size());
        return Pair{static_cast<double>(ps.dot(a.segment(c.begin, c.size()))),
                    static_cast<double>(ps.dot(r.segment(c.begin, c.size())))};
      },
      [](Pair acc, const Pair& part) {
        return Pair{acc.pa + part.pa, acc.pr + part.pr};
      });
  return {sum.pa, sum.pr};
}

/// x += alpha p and r -= alpha ap in one pass; returns r'r of the updated r.
template <class S>
double step_and_norm2(S alpha, const Vector<S>& p, const Vector<S>& ap, Vector<S>& x,
                      Vector<S>& r) {
  return chunked_sum(p.size(), [&](const ChunkRange& c) {
    x.segment(c.begin, c.size()) += alpha * p.segment(c.begin, c.size());
    auto rs = r.segment(c.begin, c.size());
    rs -= alpha * ap.segment(c.begin, c.size());
    return static_cast<double>(rs.squaredNorm());
  });
}

/// p = z + beta p.
template <class S>
void z_plus_beta_p(const Vector<S>& z, S beta, Vector<S>& p) {
  parallel_for_chunks(p.size(), kVectorChunk, [&](const ChunkRange& c) {
    auto ps = p.segment(c.begin, c.size());
    ps = z.segment(c.begin, c.size()) + beta * ps;
  });
}

}  // namespace quadra::linalg::detail
