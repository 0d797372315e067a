// The `quadra` executable: the command line of cli.cpp on a fresh plugin host.

#include <exception>
#include <iostream>
#if defined(__GLIBC__)
#include <malloc.h>  // mallopt
#endif

#include <quadra/error.hpp>
#include <quadra/plugin_host.hpp>

#include "cli.hpp"

int main(int argc, char** argv) {
#if defined(__GLIBC__)
  // Every training step binds a batch, and its activation buffers are freed and allocated again
  // at the same sizes. glibc returns freed blocks above its mmap threshold (at most 32 MiB; a
  // CNN's activations at batch 1024 exceed it) to the kernel, so each step would page-fault them
  // back in (17 % of such a gradient). Keep every block in the heap, and the heap's top too.
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
  try {
    quadra::PluginHost host;
    quadra::cli::Context context{host};
    return quadra::cli::run(quadra::cli::Args(argv + 1, argv + argc), context);
  } catch (const quadra::Error& e) {
    std::cerr << "quadra: error: " << e.what() << "\n";
    return quadra::cli::kExitFailure;
  } catch (const std::exception& e) {
    std::cerr << "quadra: internal error: " << e.what() << "\n";
    return quadra::cli::kExitFailure;
  }
}
