// Ranks, deterministic sums and error agreement. See quadra/dist/communicator.hpp.
//
// sum() is an all-gather of every rank's partials followed by the same rank-ordered addition on
// every rank, not MPI_Allreduce: MPI lets an all-reduce combine partials in any order, even a
// different one per rank, and parameters must stay bitwise equal on every rank. It moves R
// times the data of an all-reduce, which for the few ranks of one machine or a small cluster
// is little next to the products that produce the sums.

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <quadra/dist/communicator.hpp>
#include <type_traits>
#include <vector>

#if defined(QUADRA_WITH_MPI)
// The C API only: mpi.h included from C++ would also declare the deprecated C++ bindings, which
// need a library of their own.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace quadra::dist {

bool built_with_mpi() noexcept {
#if defined(QUADRA_WITH_MPI)
  return true;
#else
  return false;
#endif
}

int launched_ranks(const std::function<const char*(const char*)>& getenv, std::string* variable) {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"}) {
    const char* value = getenv(name);
    if (value == nullptr) continue;
    if (variable != nullptr) *variable = name;
    const std::string_view text(value);
    int ranks = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), ranks);
    if (ec != std::errc() || end != text.data() + text.size() || ranks < 1) return 1;
    return ranks;
  }
  return 1;
}

std::string refusal_without_mpi(int ranks, std::string_view variable) {
  return fmt::format(
      "this quadra was built without MPI (CMake option QUADRA_MPI=OFF) but was started as one of "
      "{} processes ({}={}), which would each run the whole job alone; run it without mpirun, or "
      "build quadra with MPI (install libopenmpi-dev and configure with -DQUADRA_MPI=ON)",
      ranks, variable, ranks);
}

namespace {

Communicator*& world_instance() {
  static Communicator* instance = nullptr;
  return instance;
}

/// The process's stderr before Session silenced it on ranks other than 0 (-1: not silenced).
int& saved_stderr() {
  static int fd = -1;
  return fd;
}

/// Writes `text` to the real stderr, also on a silenced rank.
void write_stderr(const std::string& text) {
  const int fd = saved_stderr() >= 0 ? saved_stderr() : STDERR_FILENO;
  std::fflush(stderr);
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<std::size_t>(n);
  }
}

#if defined(QUADRA_WITH_MPI)
/// Elements per collective call: keeps counts within int and the gather buffer bounded.
constexpr std::size_t kPiece = std::size_t{1} << 21;

template <class T>
MPI_Datatype mpi_type() {
  if constexpr (std::is_same_v<T, double>) return MPI_DOUBLE;
  if constexpr (std::is_same_v<T, float>) return MPI_FLOAT;
  if constexpr (std::is_same_v<T, std::int64_t>) return MPI_INT64_T;
  if constexpr (std::is_same_v<T, char>) return MPI_CHAR;
  if constexpr (std::is_same_v<T, int>) return MPI_INT;
}

/// Sums shorter than this (k x k models, scalars, flags) are all-gathered whole: one collective,
/// the least latency. Longer ones are reduce-scattered (see ordered_sum).
constexpr std::size_t kMinScatteredSum = 4096;

/// Adds `size` partials stored one after another in `parts` (each `count` long) into `out`, in
/// rank order: ((p_0 + p_1) + p_2) + ...
template <class T>
void add_in_rank_order(const T* parts, std::size_t count, int size, T* out) {
  std::copy_n(parts, count, out);
  for (int r = 1; r < size; ++r) {
    const T* part = parts + static_cast<std::size_t>(r) * count;
    for (std::size_t i = 0; i < count; ++i) out[i] += part[i];
  }
}

/// values[0, count) = Σ_r values_r in rank order. A short piece is all-gathered and summed on
/// every rank. A long one is split into one segment per rank: each rank receives every rank's
/// copy of its own segment (all-to-all), adds them in rank order, and the summed segments are
/// all-gathered. Each element is added in the same order either way, so the bits do not depend
/// on the path; the long path sends 2 (R - 1) / R of the vector per rank instead of receiving
/// R - 1 whole vectors, which is what keeps a product's traffic flat as R grows.
template <class T>
void ordered_sum_piece(T* values, std::size_t count, int size, int rank, std::vector<T>& scratch) {
  if (count < kMinScatteredSum) {
    scratch.resize(count * static_cast<std::size_t>(size));
    MPI_Allgather(values, static_cast<int>(count), mpi_type<T>(), scratch.data(), static_cast<int>(count),
                  mpi_type<T>(), MPI_COMM_WORLD);
    add_in_rank_order(scratch.data(), count, size, values);
    return;
  }
  const std::size_t ranks = static_cast<std::size_t>(size);
  std::vector<int> counts(ranks), offsets(ranks), mine_counts(ranks), mine_offsets(ranks);
  for (std::size_t r = 0; r < ranks; ++r) {
    const std::size_t begin = count * r / ranks;
    offsets[r] = static_cast<int>(begin);
    counts[r] = static_cast<int>(count * (r + 1) / ranks - begin);
  }
  const std::size_t me = static_cast<std::size_t>(rank);
  const int mine = counts[me];
  for (std::size_t r = 0; r < ranks; ++r) {
    mine_counts[r] = mine;
    mine_offsets[r] = static_cast<int>(r) * mine;
  }
  scratch.resize(static_cast<std::size_t>(mine) * ranks);
  MPI_Alltoallv(values, counts.data(), offsets.data(), mpi_type<T>(), scratch.data(), mine_counts.data(),
                mine_offsets.data(), mpi_type<T>(), MPI_COMM_WORLD);
  std::vector<T> summed(static_cast<std::size_t>(mine));
  add_in_rank_order(scratch.data(), summed.size(), size, summed.data());
  MPI_Allgatherv(summed.data(), mine, mpi_type<T>(), values, counts.data(), offsets.data(), mpi_type<T>(),
                 MPI_COMM_WORLD);
}

template <class T>
void ordered_sum(std::span<T> values, int size, int rank) {
  std::vector<T> scratch;
  for (std::size_t begin = 0; begin < values.size(); begin += kPiece) {
    const std::size_t count = std::min(kPiece, values.size() - begin);
    ordered_sum_piece(values.data() + begin, count, size, rank, scratch);
  }
}

template <class T>
void broadcast_from(std::span<T> values, int root) {
  for (std::size_t begin = 0; begin < values.size(); begin += kPiece) {
    const std::size_t count = std::min(kPiece, values.size() - begin);
    MPI_Bcast(values.data() + begin, static_cast<int>(count), mpi_type<T>(), root, MPI_COMM_WORLD);
  }
}

void broadcast_string(std::string& text, int root) {
  std::int64_t length = static_cast<std::int64_t>(text.size());
  MPI_Bcast(&length, 1, MPI_INT64_T, root, MPI_COMM_WORLD);
  text.resize(static_cast<std::size_t>(length));
  broadcast_from(std::span<char>(text.data(), text.size()), root);
}
#endif

}  // namespace

Communicator& Communicator::world() {
  static Communicator single;
  Communicator* instance = world_instance();
  return instance != nullptr ? *instance : single;
}

SampleShare Communicator::share_of(std::int64_t total) const noexcept {
  const std::int64_t base = total / size_;
  const std::int64_t extra = total % size_;
  const std::int64_t r = rank_;
  const std::int64_t begin = r * base + std::min(r, extra);
  return {begin, begin + base + (r < extra ? 1 : 0), total};
}

void Communicator::sum(std::span<double> values) const {
#if defined(QUADRA_WITH_MPI)
  if (mpi_ && size_ > 1) {
    ordered_sum(values, size_, rank_);
    ++collectives_;
    bytes_sent_ += static_cast<std::int64_t>(values.size_bytes());
  }
#else
  (void)values;
#endif
}

void Communicator::sum(std::span<float> values) const {
#if defined(QUADRA_WITH_MPI)
  if (mpi_ && size_ > 1) {
    ordered_sum(values, size_, rank_);
    ++collectives_;
    bytes_sent_ += static_cast<std::int64_t>(values.size_bytes());
  }
#else
  (void)values;
#endif
}

void Communicator::broadcast(std::span<double> values) const {
#if defined(QUADRA_WITH_MPI)
  if (mpi_ && size_ > 1) {
    broadcast_from(values, 0);
    ++collectives_;
    if (rank_ == 0) bytes_sent_ += static_cast<std::int64_t>(values.size_bytes());
  }
#else
  (void)values;
#endif
}

void Communicator::broadcast(std::span<float> values) const {
#if defined(QUADRA_WITH_MPI)
  if (mpi_ && size_ > 1) {
    broadcast_from(values, 0);
    ++collectives_;
    if (rank_ == 0) bytes_sent_ += static_cast<std::int64_t>(values.size_bytes());
  }
#else
  (void)values;
#endif
}

void Communicator::broadcast(std::span<std::int64_t> values) const {
#if defined(QUADRA_WITH_MPI)
  if (mpi_ && size_ > 1) {
    broadcast_from(values, 0);
    ++collectives_;
    if (rank_ == 0) bytes_sent_ += static_cast<std::int64_t>(values.size_bytes());
  }
#else
  (void)values;
#endif
}

void Communicator::broadcast(std::string& text) const {
#if defined(QUADRA_WITH_MPI)
  if (mpi_ && size_ > 1) {
    broadcast_string(text, 0);
    ++collectives_;
    if (rank_ == 0) bytes_sent_ += static_cast<std::int64_t>(sizeof(std::int64_t) + text.size());
  }
#else
  (void)text;
#endif
}

void Communicator::barrier() const {
#if defined(QUADRA_WITH_MPI)
  if (mpi_ && size_ > 1) {
    MPI_Barrier(MPI_COMM_WORLD);
    ++collectives_;
  }
#endif
}

void Communicator::agree(const std::optional<std::string>& error) const {
#if defined(QUADRA_WITH_MPI)
  if (mpi_ && size_ > 1) {
    const int failed = error.has_value() ? 1 : 0;
    std::vector<int> flags(static_cast<std::size_t>(size_));
    MPI_Allgather(&failed, 1, MPI_INT, flags.data(), 1, MPI_INT, MPI_COMM_WORLD);
    ++collectives_;
    bytes_sent_ += static_cast<std::int64_t>(sizeof(int));
    const auto first = std::find(flags.begin(), flags.end(), 1);
    if (first == flags.end()) return;
    const int root = static_cast<int>(first - flags.begin());
    std::string message = rank_ == root ? *error : std::string();
    broadcast_string(message, root);
    if (rank_ == root) {
      bytes_sent_ += static_cast<std::int64_t>(sizeof(std::int64_t) + message.size());
    }
    throw AgreedError(message);
  }
#endif
  if (error) throw AgreedError(*error);
}

void Communicator::run_agreed(const std::function<void()>& body) const {
  std::optional<std::string> error;
  try {
    body();
  } catch (const AgreedError&) {
    throw;  // already agreed inside
  } catch (const std::exception& e) {
    if (size_ == 1) throw;
    error = e.what();
  }
  agree(error);
}

void Communicator::abort(int code) const {
#if defined(QUADRA_WITH_MPI)
  if (mpi_) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(code);
}

Session::Session(int* argc, char*** argv) {
  std::string variable;
  [[maybe_unused]] const int launched =
      launched_ranks([](const char* name) { return std::getenv(name); }, &variable);
#if defined(QUADRA_WITH_MPI)
  // Only under a launcher: started alone, quadra runs exactly as a build without MPI would,
  // without Open MPI's singleton start-up.
  if (variable.empty()) return;
  int provided = 0;
  // Only the main thread calls MPI; oneTBB's workers never do.
  MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
  static Communicator instance;
  MPI_Comm_rank(MPI_COMM_WORLD, &instance.rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &instance.size_);
  instance.mpi_ = true;
  world_instance() = &instance;
  if (instance.rank_ != 0) {
    // One voice: rank 0 prints. The real stderr is kept for errors only this rank knows.
    std::fflush(stdout);
    std::fflush(stderr);
    saved_stderr() = ::dup(STDERR_FILENO);
    const int null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (null >= 0) {
      ::dup2(null, STDOUT_FILENO);
      ::dup2(null, STDERR_FILENO);
      ::close(null);
    }
  }
#else
  (void)argc;
  (void)argv;
  if (launched > 1) throw Error(refusal_without_mpi(launched, variable));
#endif
}

Session::~Session() {
#if defined(QUADRA_WITH_MPI)
  Communicator* instance = world_instance();
  if (instance == nullptr) return;
  std::fflush(stdout);
  std::fflush(stderr);
  MPI_Finalize();
  world_instance() = nullptr;
#endif
}

void write_error(const std::string& message) { write_stderr(message + "\n"); }

}  // namespace quadra::dist
