// Independent tasks spread over the ranks; see quadra/dist/tasks.hpp.

#include <quadra/dist/tasks.hpp>

#include <algorithm>
#include <atomic>
#include <exception>
#include <numeric>
#include <optional>
#include <string>

namespace quadra::dist {

namespace {

std::atomic<std::int64_t> tasks_run{0};

}  // namespace

std::vector<int> assign_tasks(std::span<const double> costs, int ranks) {
  std::vector<int> owner(costs.size(), 0);
  if (ranks <= 1) return owner;
  std::vector<std::size_t> order(costs.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return costs[a] > costs[b]; });
  std::vector<double> load(static_cast<std::size_t>(ranks), 0.0);
  for (std::size_t task : order) {
    const auto least = std::min_element(load.begin(), load.end()) - load.begin();
    owner[task] = static_cast<int>(least);
    load[static_cast<std::size_t>(least)] += std::max(costs[task], 0.0);
  }
  return owner;
}

std::vector<std::vector<double>> run_distributed(
    const Communicator& comm, std::span<const double> costs,
    const std::function<std::vector<double>(std::size_t)>& task) {
  std::vector<std::vector<double>> results(costs.size());
  if (comm.size() == 1) {
    for (std::size_t i = 0; i < costs.size(); ++i) {
      results[i] = task(i);
      ++tasks_run;
    }
    return results;
  }
  const std::vector<int> owner = assign_tasks(costs, comm.size());
  // This rank's results, in task order, each preceded by its length.
  std::vector<double> mine;
  std::optional<std::string> error;
  for (std::size_t i = 0; i < costs.size() && !error; ++i) {
    if (owner[i] != comm.rank()) continue;
    try {
      std::vector<double> out = task(i);
      ++tasks_run;
      mine.push_back(static_cast<double>(out.size()));
      mine.insert(mine.end(), out.begin(), out.end());
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  comm.agree(error);
  std::vector<std::int64_t> counts;
  const std::vector<double> all = comm.all_gather(mine, &counts);
  std::vector<std::size_t> at(counts.size(), 0);  // each rank's read position in `all`
  for (std::size_t r = 1; r < counts.size(); ++r)
    at[r] = at[r - 1] + static_cast<std::size_t>(counts[r - 1]);
  for (std::size_t i = 0; i < costs.size(); ++i) {
    std::size_t& p = at[static_cast<std::size_t>(owner[i])];
    const auto length = static_cast<std::size_t>(all[p]);
    results[i].assign(all.begin() + static_cast<std::ptrdiff_t>(p + 1),
                      all.begin() + static_cast<std::ptrdiff_t>(p + 1 + length));
    p += 1 + length;
  }
  return results;
}

std::int64_t distributed_tasks_run() noexcept { return tasks_run.load(); }

}  // namespace quadra::dist
