// The communicator: launcher detection, sample shares, and (under mpirun) deterministic sums,
// broadcasts and error agreement. Runs alone and as 2 and 3 ranks (tests/dist/CMakeLists.txt).

#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <cmath>
#include <map>
#include <optional>
#include <quadra/dist/communicator.hpp>
#include <string>
#include <vector>

using quadra::dist::AgreedError;
using quadra::dist::Communicator;

namespace {

std::function<const char*(const char*)> env(std::map<std::string, std::string> values) {
  return [values = std::move(values)](const char* name) -> const char* {
    const auto it = values.find(name);
    return it == values.end() ? nullptr : it->second.c_str();
  };
}

/// Rank r's partial: values that make the sum's order visible in the last bits.
template <class S>
std::vector<S> partial(int rank, std::size_t n) {
  std::vector<S> v(n);
  for (std::size_t i = 0; i < n; ++i) {
    v[i] = static_cast<S>(std::sin(0.37 * static_cast<double>(i) + 1.3 * rank) *
                          std::pow(10.0, rank % 3));
  }
  return v;
}

template <class S>
void check_sum(std::size_t n) {
  const Communicator& world = Communicator::world();
  std::vector<S> values = partial<S>(world.rank(), n);
  world.sum(values);
  std::vector<S> expected = partial<S>(0, n);
  for (int r = 1; r < world.size(); ++r) {
    const std::vector<S> p = partial<S>(r, n);
    for (std::size_t i = 0; i < n; ++i) expected[i] += p[i];
  }
  bool bitwise = true;
  for (std::size_t i = 0; i < n; ++i) bitwise = bitwise && values[i] == expected[i];
  CHECK(bitwise);
}

}  // namespace

TEST_CASE("launched_ranks reads Open MPI's and PMI's world size") {
  std::string variable;
  CHECK(quadra::dist::launched_ranks(env({}), &variable) == 1);
  CHECK(variable.empty());
  CHECK(quadra::dist::launched_ranks(env({{"OMPI_COMM_WORLD_SIZE", "3"}}), &variable) == 3);
  CHECK(variable == "OMPI_COMM_WORLD_SIZE");
  CHECK(quadra::dist::launched_ranks(env({{"PMI_SIZE", "2"}}), &variable) == 2);
  CHECK(variable == "PMI_SIZE");
  CHECK(quadra::dist::launched_ranks(env({{"OMPI_COMM_WORLD_SIZE", "x"}})) == 1);
  CHECK(quadra::dist::launched_ranks(env({{"OMPI_COMM_WORLD_SIZE", "0"}})) == 1);
}

TEST_CASE("a build without MPI names the launcher's variable when it refuses") {
  const std::string message = quadra::dist::refusal_without_mpi(4, "OMPI_COMM_WORLD_SIZE");
  CHECK_THAT(message, Catch::Contains("built without MPI (CMake option QUADRA_MPI=OFF)"));
  CHECK_THAT(message, Catch::Contains("one of 4 processes (OMPI_COMM_WORLD_SIZE=4)"));
}

TEST_CASE("sample shares are contiguous, in rank order, and cover the batch") {
  const Communicator& world = Communicator::world();
  for (std::int64_t total : {0, 1, 2, 5, 128, 1001}) {
    const auto share = world.share_of(total);
    CHECK(share.total == total);
    CHECK(share.size() >= total / world.size());
    CHECK(share.size() <= total / world.size() + 1);
    std::vector<std::int64_t> bounds = {share.begin, share.end};
    world.sum(std::span<double>());  // a collective with nothing in it is fine
    std::vector<double> ends(static_cast<std::size_t>(world.size()), 0.0);
    ends[static_cast<std::size_t>(world.rank())] = static_cast<double>(share.end);
    world.sum(ends);
    std::vector<double> begins(static_cast<std::size_t>(world.size()), 0.0);
    begins[static_cast<std::size_t>(world.rank())] = static_cast<double>(share.begin);
    world.sum(begins);
    CHECK(begins.front() == 0.0);
    CHECK(ends.back() == static_cast<double>(total));
    for (std::size_t r = 1; r < begins.size(); ++r) CHECK(begins[r] == ends[r - 1]);
  }
}

TEST_CASE("sum adds every rank's partial in rank order, bitwise the same on every rank") {
  check_sum<double>(1000);
  check_sum<float>(1000);
  // Long sums take the reduce-scatter path, with segments of unequal length when the ranks do
  // not divide the length; the bits are the same as the all-gather path's.
  check_sum<double>(4095);
  check_sum<double>(4096);
  check_sum<float>(100003);
  check_sum<double>((std::size_t{1} << 21) + 7);  // more than one collective piece
  // Every rank ends with the same bits: rank 0's result, broadcast, equals each rank's own.
  const Communicator& world = Communicator::world();
  std::vector<double> mine = partial<double>(world.rank(), 333);
  world.sum(mine);
  std::vector<double> root = mine;
  world.broadcast(root);
  CHECK(root == mine);
}

TEST_CASE("broadcast sends rank 0's values and text") {
  const Communicator& world = Communicator::world();
  std::vector<std::int64_t> ints = {world.rank() * 10 + 1, 7};
  world.broadcast(ints);
  CHECK(ints == std::vector<std::int64_t>{1, 7});
  std::string text = world.is_root() ? "from the root" : "";
  world.broadcast(text);
  CHECK(text == "from the root");
  world.barrier();
}

TEST_CASE("agree throws the lowest failing rank's message on every rank") {
  const Communicator& world = Communicator::world();
  CHECK_NOTHROW(world.agree(std::nullopt));
  const int failing = world.size() - 1;
  const auto mine =
      world.rank() >= failing
          ? std::optional<std::string>("rank " + std::to_string(world.rank()) + " failed")
          : std::nullopt;
  CHECK_THROWS_MATCHES(world.agree(mine), AgreedError,
                       Catch::Message("rank " + std::to_string(failing) + " failed"));
  // run_agreed turns one rank's quadra::Error into everyone's.
  CHECK_THROWS_MATCHES(world.run_agreed([&] {
    if (world.rank() == failing) throw quadra::Error("bad input here");
  }),
                       quadra::Error, Catch::Message("bad input here"));
  CHECK_NOTHROW(world.run_agreed([] {}));
}

TEST_CASE("bytes_sent counts this rank's contributions to collectives, collectives the calls") {
  const Communicator& world = Communicator::world();
  const std::int64_t before = world.bytes_sent();
  const std::int64_t calls_before = world.collectives();
  std::vector<double> sums(100, 1.0);
  world.sum(sums);
  std::vector<float> floats(10, 1.0F);
  world.sum(floats);
  std::vector<std::int64_t> ints(3, 1);
  world.broadcast(ints);
  world.barrier();
  const std::int64_t sent = world.bytes_sent() - before;
  const std::int64_t calls = world.collectives() - calls_before;
  if (world.size() == 1) {
    CHECK(sent == 0);  // nothing leaves a process alone
    CHECK(calls == 0);
  } else {
    CHECK(calls == 4);
    // Each rank's own partials; the broadcast only from the root.
    CHECK(sent == 100 * 8 + 10 * 4 + (world.is_root() ? 3 * 8 : 0));
  }
}

int main(int argc, char** argv) {
  const quadra::dist::Session session(&argc, &argv);
  return Catch::Session().run(argc, argv);
}
