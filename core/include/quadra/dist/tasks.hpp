#pragma once
/// \file
/// Independent tasks spread over the ranks (KAISA, Pauloski et al. 2021; Osawa et al. 2019, for
/// K-FAC's per-layer eigendecompositions): each task runs on one rank, chosen by a deterministic
/// assignment balanced by the tasks' costs, and every rank receives every result. Each task must
/// compute its result from data every rank holds alike, so that the results are bitwise what
/// each rank would compute alone; the work is then divided by the number of ranks at the price
/// of one all-gather of the results (Communicator::all_gather).

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include <quadra/dist/communicator.hpp>

namespace quadra::dist {

/// The rank that runs each task: greedily, tasks by decreasing cost (ties: lower index first) to
/// the rank with the least cost so far (ties: lower rank). Deterministic: every rank computes
/// the same assignment. With one rank, all zeros.
[[nodiscard]] std::vector<int> assign_tasks(std::span<const double> costs, int ranks);

/// Runs task i (i < costs.size()) on rank assign_tasks(costs, comm.size())[i] and returns every
/// task's result on every rank. Collective: every rank calls it with the same costs. A task that
/// throws does not leave the others waiting: the ranks agree (Communicator::agree) before they
/// exchange results, and every rank throws AgreedError with the message of the lowest failing
/// rank's first failing task. With one rank the tasks run here, in order, and their exceptions
/// propagate unchanged.
[[nodiscard]] std::vector<std::vector<double>> run_distributed(
    const Communicator& comm, std::span<const double> costs,
    const std::function<std::vector<double>(std::size_t)>& task);

/// Tasks run_distributed has run on this process so far (all of them with one rank): lets tests
/// check that each rank ran its share only.
[[nodiscard]] std::int64_t distributed_tasks_run() noexcept;

}  // namespace quadra::dist
