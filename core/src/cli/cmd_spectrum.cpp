// `quadra spectrum`: extreme eigenvalues, trace and spectral density of a curvature plugin's
// matrix on one batch, matrix-free (Lanczos with full reorthogonalisation, Hutchinson, SLQ).

#include <chrono>
#include <functional>
#include <iostream>
#include <optional>

#include <fmt/format.h>
#include <fmt/std.h>

#include <quadra/curvature/engine_backend.hpp>
#include <quadra/curvature/gram.hpp>
#include <quadra/dist/communicator.hpp>
#include <quadra/io/atomic_file.hpp>
#include <quadra/io/npy.hpp>
#include <quadra/linalg/hutchinson.hpp>
#include <quadra/linalg/lanczos.hpp>
#include <quadra/linalg/spectral_density.hpp>

#include "cli.hpp"
#include "model_batch.hpp"

namespace quadra::cli {
namespace po = boost::program_options;

namespace {

// Largest Gram matrix --method gram builds (its lower triangle; float32: N*C of about 65000).
constexpr double kMaxGramGib = 8.0;

constexpr const char* kUsage =
    "usage: quadra spectrum --model SPEC|FILE [--weights W.npz]\n"
    "                       (--inputs X.npy --targets y.npy | --data SOURCE --batch-size B)\n"
    "                       --curvature NAME [--set curvature.KEY=VALUE]... --top K\n"
    "                       [--method lanczos|gram] [--bottom K] [--tolerance T]\n"
    "                       [--max-products M] [--probes P]\n"
    "                       [--density FILE.csv] [--eigenvectors FILE.npy]\n"
    "                       [--precision float32|float64] [--threads N] [--seed S]\n\n"
    "Prints the top K eigenvalues of the curvature matrix C of plugin NAME on the batch, one per\n"
    "line, largest first (Lanczos with full reorthogonalisation), then a Hutchinson estimate of\n"
    "tr(C) from P Rademacher probes (P curvature products; --probes 0 skips it). Lines starting\n"
    "with '#' describe the run. --density writes the Gaussian-smoothed spectral density by\n"
    "stochastic Lanczos quadrature as CSV (eigenvalue,density), from P/10 probes (at least 1).\n\n"
    "--method gram (GGN of networks whose parameter layers are all Linear): the same top\n"
    "eigenpairs from the Gram matrix of the GGN's factor (N*C rows; N*(C-1) for cross-entropy)\n"
    "by Lanczos, and the exact trace. Building it costs about 20 GGN products at batch 1024 and\n"
    "little at 128; each of its products is then cheap: it pays when many products are needed.";

template <class S>
int run_with(const po::variables_map& vm, Context& context) {
  PluginHost& host = context.host;
  const RawOptions curvature_options = load_curvature_setup(context, vm);
  const std::string name = vm["curvature"].as<std::string>();
  auto created = host.create<CurvatureEstimator>(name, curvature_options);
  if (!created.is_ok()) throw Error(created.status().message());
  auto estimator = std::move(created).value();

  // Several ranks split the batch by samples: the plugin and Lanczos see the whole batch's
  // products (nn::BoundBatch sums them over ranks), so every rank runs the same iteration.
  const dist::Communicator& world = dist::Communicator::world();
  std::optional<ModelBatch<S>> loaded;
  run_agreed(world, [&] { loaded.emplace(load_model_batch<S>(vm)); });
  const ModelBatch<S>& input = *loaded;
  nn::BoundBatch<S> batch = input.bind_share(world);
  EngineCurvatureBackend<S> backend(batch);
  throw_if_error(estimator->bind(backend));
  CurvatureOperator<S> op(*estimator, batch.num_parameters());

  const auto top = vm["top"].as<Index>();
  const auto bottom = vm["bottom"].as<Index>();
  const Index n = batch.num_parameters();
  if (top < 1 || top > n) throw UsageError(fmt::format("--top {} must be in [1, {}] (the number of parameters)", top, n));
  if (bottom < 0 || bottom > n) throw UsageError(fmt::format("--bottom {} must be in [0, {}]", bottom, n));
  linalg::LanczosOptions options;
  options.tolerance = vm["tolerance"].as<double>();
  options.max_products = std::min<Index>(vm["max-products"].as<Index>(), n);
  options.seed = vm["seed"].as<std::uint64_t>();
  if (options.max_products < top) {
    throw UsageError(fmt::format("--max-products {} is smaller than --top {}", options.max_products, top));
  }

  std::cout << fmt::format("# curvature {} on {}: model '{}', {} parameters, {}{}\n", name,
                           input.batch_description, input.network->spec(), n,
                           std::is_same_v<S, double> ? "float64" : "float32",
                           world.size() > 1 ? fmt::format(", split across {} processes", world.size())
                                            : std::string());
  // Wall-clock seconds of each phase go in the '#' lines: the numbers the MPI cost model of
  // docs/mpi.md is measured with.
  using Clock = std::chrono::steady_clock;
  const auto seconds_since = [](Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
  };
  auto report = [&](const char* what, const linalg::LanczosResult<S>& r, Index k, double seconds) {
    throw_if_error(r.status);
    std::cout << fmt::format("# {} {} eigenvalues (Lanczos: {} products in {:.3f} s, {}, max residual {:.3g})\n",
                             what, k, r.num_products, seconds, r.converged ? "converged" : "NOT converged",
                             r.residual_norms.size() ? r.residual_norms.maxCoeff() : 0.0);
    for (Index i = 0; i < r.eigenvalues.size(); ++i) std::cout << fmt::format("{:.10g}\n", r.eigenvalues(i));
  };
  const std::string method = vm["method"].as<std::string>();
  Matrix<S> eigenvectors;
  if (method == "gram") {
    curvature::check_gram_supported(*input.network);
    const double gib =
        curvature::gram_bytes(batch.total_batch_size(), batch.num_outputs(), sizeof(S)) / (1024.0 * 1024.0 * 1024.0);
    if (gib > kMaxGramGib) {
      throw UsageError(fmt::format("--method gram: the Gram matrix of {} samples x {} outputs needs {:.1f} GiB "
                                   "(its lower triangle), above the {} GiB limit; use a smaller batch or "
                                   "--method lanczos",
                                   batch.total_batch_size(), batch.num_outputs(), gib, kMaxGramGib));
    }
    curvature::GramEigenOptions gram;
    gram.tolerance = options.tolerance;
    gram.seed = options.seed;
    gram.max_products = options.max_products;
    const auto start = Clock::now();
    const auto r = curvature::ggn_top_eigenpairs_gram(batch, top, gram);
    std::cout << fmt::format("# top {} eigenvalues (Gram matrix {}x{}, Lanczos: {} products, {:.3f} s in all, {}, "
                             "max residual {:.3g})\n",
                             top, r.gram_size, r.gram_size, r.num_products, seconds_since(start),
                             r.converged ? "converged" : "NOT converged",
                             r.residual_norms.size() ? r.residual_norms.maxCoeff() : 0.0);
    for (Index i = 0; i < r.eigenvalues.size(); ++i) std::cout << fmt::format("{:.10g}\n", r.eigenvalues(i));
    std::cout << fmt::format("# trace {:.10g} (exact: the Gram matrix's trace)\n", r.trace);
    eigenvectors = r.eigenvectors;
  } else {
    auto start = Clock::now();
    const auto largest = linalg::lanczos_largest<S>(op, top, options);
    report("top", largest, top, seconds_since(start));
    if (bottom > 0) {
      options.max_products = std::min<Index>(vm["max-products"].as<Index>(), n);
      start = Clock::now();
      const auto smallest = linalg::lanczos_smallest<S>(op, bottom, options);
      report("bottom", smallest, bottom, seconds_since(start));
    }

    if (vm["probes"].as<Index>() > 0) {
      linalg::HutchinsonOptions trace_options;
      trace_options.num_probes = vm["probes"].as<Index>();
      trace_options.seed = options.seed;
      const linalg::TraceEstimate trace = linalg::hutchinson_trace<S>(op, trace_options);
      throw_if_error(trace.status);
      std::cout << fmt::format("# trace {:.10g} +- {:.3g} (Hutchinson, {} Rademacher probes)\n",
                               trace.mean, trace.standard_error, trace_options.num_probes);
    } else {
      std::cout << "# trace not estimated (--probes 0)\n";
    }
    eigenvectors = largest.eigenvectors;
  }

  // Rank 0 writes; a failure there is every rank's.
  const auto on_root = [&](const std::function<void()>& write) {
    world.run_agreed([&] {
      if (world.is_root()) write();
    });
  };
  if (vm.count("eigenvectors") != 0) on_root([&] {
    const Matrix<S>& v = eigenvectors;
    // Row-major k x n on disk: eigenvector i is row i, as numpy users expect.
    const Matrix<S> rows = v.transpose();
    Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> row_major = rows;
    io::write_npy(vm["eigenvectors"].as<std::string>(),
                  io::NpyArray::from<S>({static_cast<std::int64_t>(v.cols()), static_cast<std::int64_t>(v.rows())},
                                        row_major.data()));
  });
  if (vm.count("density") != 0) {
    linalg::SlqOptions slq;
    slq.seed = options.seed;
    slq.num_probes = std::max<Index>(1, vm["probes"].as<Index>() / 10);
    const linalg::SpectralDensity density = linalg::stochastic_lanczos_quadrature<S>(op, slq);
    throw_if_error(density.status);
    std::string csv = "eigenvalue,density\n";
    for (const auto& p : density.points) csv += fmt::format("{:.10g},{:.10g}\n", p.x, p.density);
    on_root([&] { io::write_file_atomically(vm["density"].as<std::string>(), csv); });
    std::cout << fmt::format("# density: {} points by SLQ ({} probes, {} products) in {}\n",
                             density.points.size(), slq.num_probes, density.num_products,
                             vm["density"].as<std::string>());
  }
  return kExitOk;
}

}  // namespace

int run_spectrum(const Args& args, Context& context) {
  po::options_description options("spectrum options");
  add_model_options(options);
  add_batch_options(options, /*with_data=*/true);
  options.add_options()
      ("curvature", po::value<std::string>()->default_value("ggn"), "curvature plugin, e.g. ggn, hessian, kfac")
      ("top", po::value<Index>()->default_value(10), "number of largest eigenvalues")
      ("method", po::value<std::string>()->default_value("lanczos"), "lanczos (any curvature) or gram (ggn, Linear layers)")
      ("bottom", po::value<Index>()->default_value(0), "number of smallest eigenvalues")
      ("tolerance", po::value<double>()->default_value(1e-6), "Lanczos residual tolerance, relative to ||C||")
      ("max-products", po::value<Index>()->default_value(300), "Lanczos budget of curvature products")
      ("probes", po::value<Index>()->default_value(30), "Hutchinson probes for the trace; 0: no trace estimate")
      ("density", po::value<std::string>(), "write the SLQ spectral density to this CSV file")
      ("eigenvectors", po::value<std::string>(), "write the top eigenvectors (K x P) to this .npy file");
  add_config_options(options);
  add_plugin_path_option(options);
  po::variables_map vm;
  if (!parse(args, kUsage, options, {}, vm)) return kExitOk;
  const std::string method = vm["method"].as<std::string>();
  if (method != "lanczos" && method != "gram") {
    throw UsageError(fmt::format("--method '{}' is not known; expected lanczos or gram", method));
  }
  if (method == "gram" && vm["curvature"].as<std::string>() != "ggn") {
    throw UsageError(fmt::format("--method gram works for --curvature ggn only (the Gram matrix of the "
                                 "GGN's factor); got '{}'",
                                 vm["curvature"].as<std::string>()));
  }
  // Checked before anything is computed: a bad count must not cost the Lanczos run first.
  if (vm["probes"].as<Index>() < 0) {
    throw UsageError(fmt::format("--probes {}: expected 0 (no trace estimate) or more probes",
                                 vm["probes"].as<Index>()));
  }
  if (method == "gram" && vm["bottom"].as<Index>() > 0) {
    throw UsageError("--method gram finds the top eigenvalues only; drop --bottom or use --method lanczos");
  }
  return use_double_precision(vm) ? run_with<double>(vm, context) : run_with<float>(vm, context);
}

}  // namespace quadra::cli
