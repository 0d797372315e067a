// Communicator::all_gather: every rank's array of its own length, concatenated in rank order on
// every rank. Kept apart from communicator.cpp's sums and agreements; see
// quadra/dist/communicator.hpp.

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <quadra/dist/communicator.hpp>
#include <vector>

#if defined(QUADRA_WITH_MPI)
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace quadra::dist {

namespace {

/// Elements one rank sends per round: keeps MPI's int counts and displacements in range.
constexpr std::int64_t kRoundElements = std::int64_t{1} << 24;

}  // namespace

std::vector<double> Communicator::all_gather(std::span<const double> mine,
                                             std::vector<std::int64_t>* counts) const {
  const auto own = static_cast<std::int64_t>(mine.size());
#if defined(QUADRA_WITH_MPI)
  if (mpi_ && size_ > 1) {
    std::vector<std::int64_t> sizes(static_cast<std::size_t>(size_));
    MPI_Allgather(&own, 1, MPI_INT64_T, sizes.data(), 1, MPI_INT64_T, MPI_COMM_WORLD);
    std::vector<std::int64_t> offsets(sizes.size() + 1, 0);
    std::partial_sum(sizes.begin(), sizes.end(), offsets.begin() + 1);
    std::vector<double> out(static_cast<std::size_t>(offsets.back()));
    const std::int64_t largest = *std::max_element(sizes.begin(), sizes.end());
    // Round k carries elements [k B, (k + 1) B) of every rank's array, B = kRoundElements, as
    // long as some rank has any left; each round's receive buffer is then at most R B.
    std::vector<double> round;
    std::vector<int> round_counts(sizes.size()), displacements(sizes.size());
    for (std::int64_t begin = 0; begin < largest; begin += kRoundElements) {
      int total = 0;
      for (std::size_t r = 0; r < sizes.size(); ++r) {
        round_counts[r] =
            static_cast<int>(std::clamp<std::int64_t>(sizes[r] - begin, 0, kRoundElements));
        displacements[r] = total;
        total += round_counts[r];
      }
      round.resize(static_cast<std::size_t>(total));
      const int sent = round_counts[static_cast<std::size_t>(rank_)];
      MPI_Allgatherv(mine.data() + (sent > 0 ? begin : 0), sent, MPI_DOUBLE, round.data(),
                     round_counts.data(), displacements.data(), MPI_DOUBLE, MPI_COMM_WORLD);
      for (std::size_t r = 0; r < sizes.size(); ++r) {
        std::copy_n(round.data() + displacements[r], round_counts[r],
                    out.data() + offsets[r] + begin);
      }
    }
    bytes_sent_ += static_cast<std::int64_t>(sizeof(std::int64_t) + mine.size_bytes());
    if (counts != nullptr) *counts = std::move(sizes);
    return out;
  }
#endif
  if (counts != nullptr) *counts = {own};
  return {mine.begin(), mine.end()};
}

}  // namespace quadra::dist
