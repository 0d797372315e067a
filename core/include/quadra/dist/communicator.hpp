#pragma once
/// \file
/// Data-parallel runs over several processes (ranks), the one place of quadra that knows MPI.
///
/// `mpirun -np R quadra ...` starts R copies of the executable; each one splits every batch by
/// samples (share_of), computes its share, and the partial sums are combined with sum(), which
/// is deterministic: every rank receives the same bits, the partials added in rank order
/// ((p_0 + p_1) + p_2) + ..., so a run with a fixed R is bitwise reproducible and parameters
/// stay identical on every rank. Without MPI (a build with QUADRA_MPI=OFF, or the executable
/// started without a launcher) the world is one rank and every collective is a no-op.
///
/// Errors: a collective that some ranks enter and others never reach hangs, so a rank that
/// fails must tell the others first. agree() is that step: every rank passes its own error
/// (or none), and when any rank failed all of them throw AgreedError with the message of the
/// lowest failing rank. An error that escapes without agreement ends the job (abort()).

#include <cstdint>
#include <functional>
#include <optional>
#include <quadra/error.hpp>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace quadra::dist {

/// Whether this build can run as several processes (CMake option QUADRA_MPI).
[[nodiscard]] bool built_with_mpi() noexcept;

/// The number of processes a launcher started this one among, from the launcher's environment
/// (Open MPI's OMPI_COMM_WORLD_SIZE, PMI_SIZE of MPICH and Slurm), read through `getenv`; 1
/// when none is set. `variable` receives the name of the variable read. A value that is not a
/// positive integer counts as 1.
[[nodiscard]] int launched_ranks(const std::function<const char*(const char*)>& getenv,
                                 std::string* variable = nullptr);

/// The message a build without MPI refuses to run with when a launcher started `ranks` > 1
/// copies of it (read from `variable`).
[[nodiscard]] std::string refusal_without_mpi(int ranks, std::string_view variable);

/// An error every rank knows about (see agree()): each rank leaves through the same path, and
/// only rank 0 prints it.
class AgreedError : public Error {
 public:
  using Error::Error;
};

/// Samples [begin, end) of a batch of `total` that one rank owns: contiguous, in rank order,
/// sizes differing by at most one (the first total % size ranks get one more).
struct SampleShare {
  std::int64_t begin = 0;
  std::int64_t end = 0;
  std::int64_t total = 0;
  [[nodiscard]] std::int64_t size() const noexcept { return end - begin; }
};

class Communicator {
 public:
  /// The process's world: all ranks of the job (one rank when MPI is not running).
  [[nodiscard]] static Communicator& world();

  [[nodiscard]] int rank() const noexcept { return rank_; }
  [[nodiscard]] int size() const noexcept { return size_; }
  [[nodiscard]] bool is_root() const noexcept { return rank_ == 0; }

  /// This rank's share of `total` samples.
  [[nodiscard]] SampleShare share_of(std::int64_t total) const noexcept;

  /// In place, on every rank: values = Σ_r values_r, summed in rank order (bitwise the same on
  /// every rank and in every run with this many ranks). Every rank passes the same length.
  void sum(std::span<double> values) const;
  void sum(std::span<float> values) const;
  /// Every rank receives every rank's `mine` concatenated in rank order; the ranks may pass
  /// different lengths (0 too). `counts`, when given, receives each rank's length. With one
  /// rank, a copy of `mine`. Defined in gather.cpp.
  [[nodiscard]] std::vector<double> all_gather(std::span<const double> mine,
                                               std::vector<std::int64_t>* counts = nullptr) const;
  /// In place: every rank receives rank 0's values (every rank passes the same length).
  void broadcast(std::span<double> values) const;
  void broadcast(std::span<float> values) const;
  void broadcast(std::span<std::int64_t> values) const;
  /// Every rank receives rank 0's string.
  void broadcast(std::string& text) const;
  void barrier() const;

  /// Collective error check: call on every rank with this rank's error, if any. Throws
  /// AgreedError on every rank when any rank passed one, with the message of the lowest such
  /// rank; returns normally on every rank otherwise.
  void agree(const std::optional<std::string>& error) const;

  /// Runs `body` and then agree()s on whether it threw quadra::Error: either every rank
  /// returns, or every rank throws AgreedError. Other exceptions are agreed on as well, with
  /// their what() as the message.
  void run_agreed(const std::function<void()>& body) const;

  /// Bytes this rank has contributed to collectives so far: its own partials in sum(), what it
  /// broadcasts as the root, its flags and messages in agree(). What the network carries
  /// depends on MPI's algorithms; this is the payload. 0 with one rank.
  [[nodiscard]] std::int64_t bytes_sent() const noexcept { return bytes_sent_; }
  /// Collective calls this rank has made so far (sum, broadcast, agree, barrier): the count of
  /// latencies a step pays, for the cost model of docs/mpi.md. 0 with one rank.
  [[nodiscard]] std::int64_t collectives() const noexcept { return collectives_; }

  /// Ends every rank of the job at once with `code` (MPI_Abort); exits this process when MPI
  /// is not running. For errors that could not be agreed on.
  [[noreturn]] void abort(int code) const;

 private:
  friend class Session;
  Communicator() = default;
  int rank_ = 0;
  int size_ = 1;
  bool mpi_ = false;
  mutable std::int64_t bytes_sent_ = 0;
  mutable std::int64_t collectives_ = 0;
};

/// Writes `message` and a newline to this process's stderr, also on a rank whose output Session
/// discards: for errors only this rank knows.
void write_error(const std::string& message);

/// Starts and ends MPI for the process: one per executable, in main(). With MPI built in and a
/// launcher's environment present it initialises MPI and Communicator::world() spans the job;
/// otherwise the world is one rank. A build without MPI throws quadra::Error
/// (refusal_without_mpi) when a launcher started several copies of it, rather than letting
/// each run alone. Ranks other than 0 discard what is written to std::cout and std::cerr.
class Session {
 public:
  Session(int* argc, char*** argv);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
};

}  // namespace quadra::dist
