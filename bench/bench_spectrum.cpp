// quadra side of the spectrum benchmark (bench/compare_spectrum.py runs both): top-20 GGN
// eigenpairs by Lanczos on GGN products and by the Gram method, and 50 CG iterations on (G + lambda I) x = -g, for the MLP
// 784-512-256-10 (tanh) on the problem files torch_spectrum_peer.py wrote to
// $QUADRA_SPECTRUM_DIR (same weights, inputs and labels). Timings include binding the batch
// (the forward pass), as the peer's include building its graph.

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>

#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include <quadra/curvature/engine_backend.hpp>
#include <quadra/io/npy.hpp>
#include <quadra/linalg/cg.hpp>
#include <quadra/curvature/gram.hpp>
#include <quadra/linalg/lanczos.hpp>
#include <quadra/nn/serialization.hpp>
#include <quadra/parallel.hpp>

namespace {

namespace fs = std::filesystem;
using quadra::Index;
using Vec = quadra::Vector<float>;

struct Problem {
  quadra::nn::Network network{"linear(512) tanh linear(256) tanh linear(10)", {{784}}};
  Vec params;
  quadra::Matrix<float> inputs;
  std::vector<std::int64_t> labels;
};

fs::path problem_dir() {
  const char* dir = std::getenv("QUADRA_SPECTRUM_DIR");
  if (dir == nullptr) {
    std::cerr << "bench_spectrum: set QUADRA_SPECTRUM_DIR to the --out directory of "
                 "bench/torch_spectrum_peer.py (bench/compare_spectrum.py does both)\n";
    std::exit(2);
  }
  return dir;
}

const Problem& problem(Index batch) {
  static std::map<Index, Problem> cache;
  auto [it, inserted] = cache.try_emplace(batch);
  if (inserted) {
    Problem& p = it->second;
    const fs::path dir = problem_dir();
    p.params = quadra::nn::load_weights<float>(dir / "weights.npz", p.network);
    const auto x = quadra::io::read_npy(dir / fmt::format("x_{}.npy", batch)).to_vector<float>();
    p.inputs = Eigen::Map<const quadra::Matrix<float>>(x.data(), 784, batch);
    p.labels = quadra::io::read_npy(dir / fmt::format("y_{}.npy", batch)).to_vector<std::int64_t>();
  }
  return it->second;
}

quadra::nn::BoundBatch<float> bind(const Problem& p) {
  return {p.network, p.params, p.inputs, quadra::nn::Targets<float>::from_labels(p.labels),
          quadra::nn::Loss::kCrossEntropy};
}

quadra::linalg::FunctionOperator<float> ggn(quadra::nn::BoundBatch<float>& batch) {
  return {batch.num_parameters(),
          [&batch](quadra::ConstVectorRef<float> x, quadra::VectorRef<float> y) { batch.ggn_product(x, y); }};
}

void top20(benchmark::State& state) {
  const Problem& p = problem(state.range(0));
  quadra::linalg::LanczosOptions options;
  options.tolerance = 1e-6;
  options.max_products = 400;
  quadra::linalg::LanczosResult<float> result;
  for (auto _ : state) {
    auto batch = bind(p);
    auto op = ggn(batch);
    result = quadra::linalg::lanczos_largest<float>(op, 20, options);
    benchmark::DoNotOptimize(result.eigenvalues.data());
  }
  state.counters["products"] = static_cast<double>(result.num_products);
  state.counters["converged"] = result.converged ? 1 : 0;
  // The eigenvalues, for the accuracy comparison in compare_spectrum.py, and the product count
  // (noise-free cost, compared with the peer's matvec count).
  std::cerr << fmt::format("eigenvalues {} {}\n", state.range(0),
                           fmt::join(result.eigenvalues.data(), result.eigenvalues.data() + result.eigenvalues.size(), " "));
  std::cerr << fmt::format("products {} {} basis {} thick_restarts {} converged {}\n",
                           state.range(0), result.num_products, result.basis_size,
                           result.num_thick_restarts, result.converged ? 1 : 0);
}

// The same eigenpairs through the GGN's Gram matrix (quadra spectrum --method gram).
void top20_gram(benchmark::State& state) {
  const Problem& p = problem(state.range(0));
  quadra::curvature::GramEigenOptions options;
  options.tolerance = 1e-6;
  quadra::curvature::GramEigenResult<float> result;
  for (auto _ : state) {
    auto batch = bind(p);
    result = quadra::curvature::ggn_top_eigenpairs_gram(batch, 20, options);
    benchmark::DoNotOptimize(result.eigenvectors.data());
  }
  state.counters["products"] = static_cast<double>(result.num_products);
  state.counters["converged"] = result.converged ? 1 : 0;
  std::cerr << fmt::format("eigenvalues_gram {} {}\n", state.range(0),
                           fmt::join(result.eigenvalues.data(), result.eigenvalues.data() + result.eigenvalues.size(), " "));
  std::cerr << fmt::format("products_gram {} {} gram_size {}\n", state.range(0), result.num_products,
                           result.gram_size);
}

void cg50(benchmark::State& state) {
  const Problem& p = problem(state.range(0));
  quadra::linalg::CgOptions options;
  options.damping = 1e-3;
  options.tolerance = 0.0;
  options.max_iterations = 50;
  for (auto _ : state) {
    auto batch = bind(p);
    Vec b(batch.num_parameters());
    batch.gradient(b);
    b = -b;
    auto op = ggn(batch);
    auto result = quadra::linalg::conjugate_gradients<float>(op, b, options);
    benchmark::DoNotOptimize(result.x.data());
  }
}

}  // namespace

BENCHMARK(top20)->Arg(128)->Arg(1024)->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();
BENCHMARK(top20_gram)->Arg(128)->Arg(1024)->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();
BENCHMARK(cg50)->Arg(128)->Arg(1024)->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();
int main(int argc, char** argv) {
  // Threads: QUADRA_THREADS (default: all cores), as the peer's --threads.
  if (const char* threads = std::getenv("QUADRA_THREADS")) quadra::set_num_threads(std::atoi(threads));
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
