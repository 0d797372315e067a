// Thread-count control and deterministic parallel loops. See quadra/parallel.hpp.

#include <quadra/parallel.hpp>

#include <mutex>

#include <fmt/format.h>
#include <tbb/blocked_range.h>
#include <tbb/global_control.h>
#include <tbb/info.h>
#include <tbb/parallel_for.h>

#include <quadra/error.hpp>

namespace quadra {
namespace {

std::mutex& limit_mutex() {
  static std::mutex mutex;
  return mutex;
}

std::unique_ptr<tbb::global_control>& process_limit() {
  static std::unique_ptr<tbb::global_control> limit;
  return limit;
}

}  // namespace

void set_num_threads(int n) {
  if (n < 0) throw Error(fmt::format("thread count {} is negative; expected 0 (all cores) or more", n));
  const std::lock_guard<std::mutex> lock(limit_mutex());
  process_limit().reset();
  if (n > 0) {
    process_limit() = std::make_unique<tbb::global_control>(
        tbb::global_control::max_allowed_parallelism, static_cast<std::size_t>(n));
  }
}

int num_threads() {
  return static_cast<int>(
      tbb::global_control::active_value(tbb::global_control::max_allowed_parallelism));
}

struct ThreadLimit::Impl {
  std::unique_ptr<tbb::global_control> control;
};

ThreadLimit::ThreadLimit(int n) : impl_(std::make_unique<Impl>()) {
  if (n < 0) throw Error(fmt::format("thread count {} is negative; expected 0 (all cores) or more", n));
  if (n > 0) {
    impl_->control = std::make_unique<tbb::global_control>(
        tbb::global_control::max_allowed_parallelism, static_cast<std::size_t>(n));
  }
}

ThreadLimit::~ThreadLimit() = default;

void parallel_for_chunks(std::int64_t n, std::int64_t chunk_size,
                         const std::function<void(const ChunkRange&)>& body) {
  const std::int64_t count = num_chunks(n, chunk_size);
  if (count == 1) {
    body(chunk_at(n, chunk_size, 0));
    return;
  }
  // Grain 1: every chunk is a task; which thread runs it does not affect its result.
  tbb::parallel_for(tbb::blocked_range<std::int64_t>(0, count, 1),
                    [&](const tbb::blocked_range<std::int64_t>& range) {
                      for (std::int64_t i = range.begin(); i != range.end(); ++i) {
                        body(chunk_at(n, chunk_size, i));
                      }
                    });
}

void parallel_for_tasks(std::int64_t count, const std::function<void(std::int64_t)>& task) {
  if (count == 1) {
    task(0);
    return;
  }
  tbb::parallel_for(tbb::blocked_range<std::int64_t>(0, count, 1),
                    [&](const tbb::blocked_range<std::int64_t>& range) {
                      for (std::int64_t i = range.begin(); i != range.end(); ++i) task(i);
                    });
}

}  // namespace quadra
