// The `quadra` executable: the command line of cli.cpp on a fresh plugin host, as one process
// or, under mpirun, as one rank of several.

#include <exception>
#include <iostream>
#include <optional>
#include <string>
#if defined(__GLIBC__)
#include <malloc.h>  // mallopt
#endif

#include <fmt/format.h>

#include <quadra/dist/communicator.hpp>
#include <quadra/error.hpp>
#include <quadra/plugin_host.hpp>

#include "cli.hpp"

namespace {

/// An error this rank met alone (not agreed on): printed here, and with several ranks the whole
/// job ends.
int fail_alone(const quadra::dist::Communicator* world, const std::string& message) {
  if (world == nullptr || world->size() == 1) {
    std::cerr << message << "\n";
    return quadra::cli::kExitFailure;
  }
  // The other ranks may be waiting in a collective for this one: end them all.
  quadra::dist::write_error(
      fmt::format("{} (process {} of {})", message, world->rank(), world->size()));
  world->abort(quadra::cli::kExitFailure);
}

}  // namespace

int main(int argc, char** argv) {
#if defined(__GLIBC__)
  // Every training step binds a batch, and its activation buffers are freed and allocated again
  // at the same sizes. glibc returns freed blocks above its mmap threshold (at most 32 MiB; a
  // CNN's activations at batch 1024 exceed it) to the kernel, so each step would page-fault them
  // back in (17 % of such a gradient). Keep every block in the heap, and the heap's top too,
  // however large: a trim threshold of 1 GiB made a ResNet's CG step on 256 samples, whose
  // peak exceeds it, page-fault its freed gigabyte back at every step (1.5x its time).
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, -1);
#endif
  // MPI starts before anything else and ends after everything (the Session outlives the try).
  std::optional<quadra::dist::Session> session;
  const quadra::dist::Communicator* world = nullptr;
  try {
    session.emplace(&argc, &argv);
    world = &quadra::dist::Communicator::world();
    quadra::PluginHost host;
    quadra::cli::Context context{host};
    return quadra::cli::run(quadra::cli::Args(argv + 1, argv + argc), context);
  } catch (const quadra::dist::AgreedError& e) {
    // Every rank is here with the same message; rank 0 is the one whose output is shown.
    std::cerr << "quadra: error: " << e.what() << "\n";
    return quadra::cli::kExitFailure;
  } catch (const quadra::Error& e) {
    return fail_alone(world, fmt::format("quadra: error: {}", e.what()));
  } catch (const std::exception& e) {
    return fail_alone(world, fmt::format("quadra: internal error: {}", e.what()));
  }
}
