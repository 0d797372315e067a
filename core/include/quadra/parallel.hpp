#pragma once
/// \file
/// Thread-count control and deterministic parallel loops, shared by all of core.
///
/// Work is split into chunks whose boundaries depend only on the problem size, never on the
/// number of threads, and partial results are combined in chunk order. A computation built from
/// these helpers is therefore bitwise identical with 1, 2 or any number of threads (the
/// project's determinism rule). This is also the one seam where a data-parallel (MPI) backend
/// would add an all-reduce of the per-chunk sums.
///
/// Eigen's own threading stays off: quadra never enables OpenMP, so every Eigen call inside a
/// task runs on that task's thread.

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

namespace quadra {

/// Limits oneTBB to `n` worker threads process-wide (`n` = 0: all cores of the affinity mask).
/// Replaces the limit set by an earlier call. Throws quadra::Error for negative `n`.
void set_num_threads(int n);

/// The number of threads parallel loops may currently use.
[[nodiscard]] int num_threads();

/// Scoped limit: at most `n` threads while alive (0: no extra limit). Limits nest by minimum, as
/// oneTBB's global_control does.
class ThreadLimit {
 public:
  explicit ThreadLimit(int n);
  ~ThreadLimit();
  ThreadLimit(const ThreadLimit&) = delete;
  ThreadLimit& operator=(const ThreadLimit&) = delete;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// One chunk [begin, end) of an index range; `index` counts chunks from 0.
struct ChunkRange {
  std::int64_t index = 0;
  std::int64_t begin = 0;
  std::int64_t end = 0;
  [[nodiscard]] std::int64_t size() const noexcept { return end - begin; }
};

/// Number of chunks of `chunk_size` covering [0, n) (the last one may be shorter).
[[nodiscard]] constexpr std::int64_t num_chunks(std::int64_t n, std::int64_t chunk_size) noexcept {
  return n <= 0 ? 0 : (n + chunk_size - 1) / chunk_size;
}

/// The `index`-th chunk of [0, n).
[[nodiscard]] constexpr ChunkRange chunk_at(std::int64_t n, std::int64_t chunk_size,
                                            std::int64_t index) noexcept {
  const std::int64_t begin = index * chunk_size;
  const std::int64_t end = begin + chunk_size < n ? begin + chunk_size : n;
  return {index, begin, end};
}

/// Runs `body(chunk)` for every chunk of [0, n), in parallel, each chunk on one thread. The
/// chunks must write disjoint outputs. Exceptions thrown by `body` propagate to the caller.
void parallel_for_chunks(std::int64_t n, std::int64_t chunk_size,
                         const std::function<void(const ChunkRange&)>& body);

/// Runs `task(i)` for i in [0, count) in parallel: one task per index (for lists of unequal
/// jobs, e.g. one per output tile).
void parallel_for_tasks(std::int64_t count, const std::function<void(std::int64_t)>& task);

/// Deterministic reduction: `map(chunk)` computes each chunk's partial result in parallel; the
/// partials are then folded in chunk order, `acc = combine(std::move(acc), partial)`. Holds one
/// partial per chunk in memory at once.
template <class T, class Map, class Combine>
T deterministic_reduce(std::int64_t n, std::int64_t chunk_size, T init, Map&& map,
                       Combine&& combine) {
  std::vector<T> partials(static_cast<std::size_t>(num_chunks(n, chunk_size)));
  parallel_for_chunks(n, chunk_size, [&](const ChunkRange& chunk) {
    partials[static_cast<std::size_t>(chunk.index)] = map(chunk);
  });
  T acc = std::move(init);
  for (T& partial : partials) acc = combine(std::move(acc), partial);
  return acc;
}

}  // namespace quadra
