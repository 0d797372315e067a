// quadra.lanczos, quadra.cg, quadra.hutchinson_trace and quadra.slq_density: the core's
// matrix-free algorithms on a curvature operator; quadra.gram_eigenpairs: the GGN's top
// eigenpairs through its Gram matrix. All run without the GIL.

#include <fmt/format.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <quadra/curvature/gram.hpp>
#include <quadra/error.hpp>
#include <quadra/linalg/cg.hpp>
#include <quadra/linalg/hutchinson.hpp>
#include <quadra/linalg/lanczos.hpp>
#include <quadra/linalg/spectral_density.hpp>
#include <string>
#include <vector>

#include "arrays.hpp"
#include "curvature.hpp"

namespace quadra::python {

namespace {

/// A copy of a small result vector (eigenvalues, residual norms) as a 1-D float64 array.
py::array_t<double> vector_to_numpy(const Vector<double>& v) {
  auto out = new_array<double>({static_cast<py::ssize_t>(v.size())});
  Eigen::Map<Vector<double>>(out.mutable_data(), v.size()) = v;
  return out;
}

/// Result objects: plain attribute bags, documented in the stubs.
struct LanczosOut {
  py::object eigenvalues, eigenvectors, residual_norms;
  double norm_estimate = 0.0;
  Index num_products = 0, num_restarts = 0, num_thick_restarts = 0;
  bool converged = false;
  std::string stop;
};
struct CgOut {
  py::object x;
  std::string termination;
  Index iterations = 0, num_products = 0;
  double residual_norm = 0.0, b_norm = 0.0, negative_curvature = 0.0;
  std::vector<double> quadratic, residual_norms, step_lengths, curvatures;
};
struct TraceOut {
  double mean = 0.0, standard_error = 0.0;
  std::vector<double> samples;
  Index num_products = 0;
};
struct DensityOut {
  py::object x, density;
  std::vector<double> nodes, weights;
  double sigma = 0.0;
  Index num_products = 0;
};

struct GramOut {
  py::object eigenvalues, eigenvectors, residual_norms;
  double trace = 0.0;
  Index gram_size = 0, num_products = 0;
  bool converged = false;
};

// The largest Gram matrix gram_eigenpairs builds, as quadra spectrum --method gram.
constexpr double kMaxGramGib = 8.0;

template <class S>
GramOut gram(BatchState<S>& s, Index k, double tolerance, Index max_products, std::uint64_t seed) {
  curvature::check_gram_supported(s.batch.network());
  const double gib = curvature::gram_bytes(s.batch.batch_size(), s.batch.num_outputs(), sizeof(S)) /
                     (1024.0 * 1024.0 * 1024.0);
  if (gib > kMaxGramGib) {
    throw Error(
        fmt::format("gram_eigenpairs: the Gram matrix of {} samples x {} outputs needs "
                    "{:.1f} GiB (its lower triangle), above the {} GiB limit; use a "
                    "smaller batch or quadra.lanczos",
                    s.batch.batch_size(), s.batch.num_outputs(), gib, kMaxGramGib));
  }
  curvature::GramEigenOptions options;
  options.tolerance = tolerance;
  options.max_products = max_products;
  options.seed = seed;
  auto r = without_gil(s, [&] { return curvature::ggn_top_eigenpairs_gram(s.batch, k, options); });
  GramOut out;
  out.eigenvalues = vector_to_numpy(r.eigenvalues);
  out.residual_norms = vector_to_numpy(r.residual_norms);
  out.eigenvectors = matrix_to_numpy<S>(std::move(r.eigenvectors));
  out.trace = r.trace;
  out.gram_size = r.gram_size;
  out.num_products = r.num_products;
  out.converged = r.converged;
  return out;
}

const char* stop_name(linalg::LanczosStop s) {
  switch (s) {
    case linalg::LanczosStop::kConverged:
      return "converged";
    case linalg::LanczosStop::kSpaceExhausted:
      return "space-exhausted";
    case linalg::LanczosStop::kBudget:
      return "budget";
    case linalg::LanczosStop::kNumericalIssue:
      return "numerical-issue";
  }
  return "?";
}

const char* termination_name(linalg::CgTermination t) {
  switch (t) {
    case linalg::CgTermination::kConverged:
      return "converged";
    case linalg::CgTermination::kRelativeProgress:
      return "relative-progress";
    case linalg::CgTermination::kMaxIterations:
      return "max-iterations";
    case linalg::CgTermination::kNegativeCurvature:
      return "negative-curvature";
    case linalg::CgTermination::kNumericalIssue:
      return "numerical-issue";
  }
  return "?";
}

template <class F>
auto visit(const PyCurvature& c, F&& f) {
  return std::visit([&](const auto& state) { return f(*state); }, c.state);
}

template <class S>
LanczosOut lanczos(CurvatureState<S>& c, Index k, const std::string& which, double tolerance,
                   Index max_products, std::uint64_t seed, Index max_basis) {
  const Index n = c.dim();
  linalg::SpectrumEnd end = linalg::SpectrumEnd::kLargest;
  if (which == "smallest") {
    end = linalg::SpectrumEnd::kSmallest;
  } else if (which != "largest") {
    throw Error(fmt::format("lanczos: which='{}'; expected 'largest' or 'smallest'", which));
  }
  if (k < 1 || k > n) {
    throw Error(fmt::format("lanczos: k = {} must be in [1, {}] (the number of parameters)", k, n));
  }
  linalg::LanczosOptions options;
  options.max_products = std::min(max_products, n);  // as quadra spectrum: n products suffice
  options.tolerance = tolerance;
  options.seed = seed;
  options.max_basis = max_basis;
  if (options.max_products < k) {
    throw Error(fmt::format("lanczos: max_products = {} is smaller than k = {}", max_products, k));
  }
  auto r = c.run([&](CurvatureOperator<S>& op) { return linalg::lanczos<S>(op, k, end, options); });
  check(r.status);
  LanczosOut out;
  out.eigenvalues = vector_to_numpy(r.eigenvalues);
  out.residual_norms = vector_to_numpy(r.residual_norms);
  out.eigenvectors = matrix_to_numpy<S>(std::move(r.eigenvectors));
  out.norm_estimate = r.norm_estimate;
  out.num_products = r.num_products;
  out.num_restarts = r.num_restarts;
  out.num_thick_restarts = r.num_thick_restarts;
  out.converged = r.converged;
  out.stop = stop_name(r.stop);
  return out;
}

template <class S>
CgOut cg(CurvatureState<S>& c, const py::handle& b, double damping, double tolerance,
         Index max_iterations, const py::object& x0, bool martens) {
  const VectorArg<S> rhs(b, "b", c.dim());
  std::optional<Vector<S>> start;
  if (!x0.is_none()) start = VectorArg<S>(x0, "x0", c.dim()).ref();
  linalg::CgOptions options;
  options.damping = damping;
  options.tolerance = tolerance;
  options.max_iterations = max_iterations;
  options.use_martens_rule = martens;
  auto r = c.run([&](CurvatureOperator<S>& op) {
    return linalg::conjugate_gradients<S>(op, rhs.ref(), options, start ? &*start : nullptr);
  });
  // Non-positive curvature is an outcome (x is the last good iterate), not an error.
  if (r.termination != linalg::CgTermination::kNegativeCurvature) check(r.status);
  CgOut out;
  auto x = new_array<S>({static_cast<py::ssize_t>(r.x.size())});
  Eigen::Map<Vector<S>>(x.mutable_data(), r.x.size()) = r.x;
  out.x = std::move(x);
  out.termination = termination_name(r.termination);
  out.iterations = r.iterations;
  out.num_products = r.num_products;
  out.residual_norm = r.residual_norm;
  out.b_norm = r.b_norm;
  out.negative_curvature = r.negative_curvature;
  out.quadratic = std::move(r.trace.quadratic);
  out.residual_norms = std::move(r.trace.residual_norms);
  out.step_lengths = std::move(r.trace.step_lengths);
  out.curvatures = std::move(r.trace.curvatures);
  return out;
}

template <class S>
TraceOut hutchinson(CurvatureState<S>& c, Index probes, std::uint64_t seed) {
  linalg::HutchinsonOptions options;
  options.num_probes = probes;
  options.seed = seed;
  auto r =
      c.run([&](CurvatureOperator<S>& op) { return linalg::hutchinson_trace<S>(op, options); });
  check(r.status);
  return TraceOut{r.mean, r.standard_error, std::move(r.samples), r.num_products};
}

template <class S>
DensityOut slq(CurvatureState<S>& c, Index probes, Index steps, std::uint64_t seed, Index points,
               double sigma) {
  linalg::SlqOptions options;
  options.num_probes = probes;
  options.num_steps = steps;
  options.seed = seed;
  options.num_points = points;
  options.sigma = sigma;
  auto r = c.run([&](CurvatureOperator<S>& op) {
    return linalg::stochastic_lanczos_quadrature<S>(op, options);
  });
  check(r.status);
  DensityOut out;
  auto x = new_array<double>({static_cast<py::ssize_t>(r.points.size())});
  auto d = new_array<double>({static_cast<py::ssize_t>(r.points.size())});
  for (std::size_t i = 0; i < r.points.size(); ++i) {
    x.mutable_data()[i] = r.points[i].x;
    d.mutable_data()[i] = r.points[i].density;
  }
  out.x = std::move(x);
  out.density = std::move(d);
  out.nodes = std::move(r.nodes);
  out.weights = std::move(r.weights);
  out.sigma = r.sigma;
  out.num_products = r.num_products;
  return out;
}

}  // namespace

void register_linalg(py::module_& m) {
  py::class_<LanczosOut>(m, "LanczosResult", "Extreme eigenpairs of a curvature operator.")
      .def_readonly("eigenvalues", &LanczosOut::eigenvalues,
                    "(k,) float64, from the wanted end inwards (descending for 'largest').")
      .def_readonly("eigenvectors", &LanczosOut::eigenvectors,
                    "(P, k), orthonormal columns in C's dtype; column i belongs to eigenvalue i.")
      .def_readonly("residual_norms", &LanczosOut::residual_norms, "(k,) ||C y - theta y||.")
      .def_readonly("norm_estimate", &LanczosOut::norm_estimate,
                    "The largest ||C v|| seen: the scale the tolerance is relative to.")
      .def_readonly("num_products", &LanczosOut::num_products, "Products with C used.")
      .def_readonly("num_restarts", &LanczosOut::num_restarts,
                    "Restarts after invariant subspaces.")
      .def_readonly("num_thick_restarts", &LanczosOut::num_thick_restarts,
                    "Restarts of a full basis.")
      .def_readonly("converged", &LanczosOut::converged,
                    "The k pairs met the tolerance (or the space was exhausted).")
      .def_readonly("stop", &LanczosOut::stop, "'converged', 'space-exhausted' or 'budget'.")
      .def("__iter__",
           [](const LanczosOut& r) {
             return py::iter(py::make_tuple(r.eigenvalues, r.eigenvectors));
           })
      .def("__repr__", [](const LanczosOut& r) {
        return fmt::format("quadra.LanczosResult({} eigenvalues, {} products, {})",
                           py::len(r.eigenvalues), r.num_products, r.stop);
      });

  py::class_<CgOut>(m, "CgResult", "The outcome of conjugate gradients on (C + damping I) x = b.")
      .def_readonly("x", &CgOut::x, "The final iterate (P,) in C's dtype.")
      .def_readonly("termination", &CgOut::termination,
                    "'converged', 'relative-progress', 'max-iterations' or 'negative-curvature' "
                    "(x is then the last iterate before the direction of non-positive curvature).")
      .def_readonly("iterations", &CgOut::iterations, "K, the CG steps taken.")
      .def_readonly("num_products", &CgOut::num_products,
                    "Products with C (K, plus one with a warm start).")
      .def_readonly("residual_norm", &CgOut::residual_norm, "||r_K|| by the recurrence.")
      .def_readonly("b_norm", &CgOut::b_norm, "||b||.")
      .def_readonly("negative_curvature", &CgOut::negative_curvature,
                    "p'(C + damping I)p of the offending direction, for 'negative-curvature'.")
      .def_readonly("quadratic", &CgOut::quadratic,
                    "phi(x_i) = 1/2 x'(C + damping I)x - b'x for every iterate x_0 .. x_K.")
      .def_readonly("residual_norms", &CgOut::residual_norms, "||r_0|| .. ||r_K||.")
      .def_readonly("step_lengths", &CgOut::step_lengths, "alpha_0 .. alpha_{K-1}.")
      .def_readonly("curvatures", &CgOut::curvatures, "p_i'(C + damping I)p_i per step.")
      .def("__repr__", [](const CgOut& r) {
        return fmt::format("quadra.CgResult({}, {} iterations, residual {:.3g})", r.termination,
                           r.iterations, r.residual_norm);
      });

  py::class_<TraceOut>(m, "TraceEstimate", "Hutchinson's estimate of tr(C).")
      .def_readonly("mean", &TraceOut::mean, "The estimate of tr(C).")
      .def_readonly("standard_error", &TraceOut::standard_error,
                    "The samples' standard deviation / sqrt(probes).")
      .def_readonly("samples", &TraceOut::samples, "z'Cz for every probe.")
      .def_readonly("num_products", &TraceOut::num_products, "Products with C used.")
      .def("__float__", [](const TraceOut& t) { return t.mean; })
      .def("__repr__", [](const TraceOut& t) {
        return fmt::format("quadra.TraceEstimate({:.6g} +- {:.3g})", t.mean, t.standard_error);
      });

  py::class_<DensityOut>(m, "SpectralDensity", "A Gaussian-smoothed spectral density by SLQ.")
      .def_readonly("x", &DensityOut::x, "Grid (points,), increasing.")
      .def_readonly("density", &DensityOut::density, "Density at x; integrates to 1.")
      .def_readonly("nodes", &DensityOut::nodes,
                    "Quadrature nodes (Ritz values), probe after probe.")
      .def_readonly("weights", &DensityOut::weights, "Their weights; they sum to 1.")
      .def_readonly("sigma", &DensityOut::sigma, "The Gaussian kernel's width.")
      .def_readonly("num_products", &DensityOut::num_products, "Products with C used.");

  py::class_<GramOut>(m, "GramEigenpairs", "The GGN's top eigenpairs through its Gram matrix.")
      .def_readonly("eigenvalues", &GramOut::eigenvalues, "(k,) float64, descending.")
      .def_readonly("eigenvectors", &GramOut::eigenvectors, "(P, k) in the batch's dtype.")
      .def_readonly("residual_norms", &GramOut::residual_norms, "(k,) in Gram space.")
      .def_readonly("trace", &GramOut::trace, "tr G, exact (the Gram matrix's trace).")
      .def_readonly("gram_size", &GramOut::gram_size, "Rows of the Gram matrix.")
      .def_readonly("num_products", &GramOut::num_products, "Gram-matrix products used.")
      .def_readonly("converged", &GramOut::converged, "The k pairs met the tolerance.")
      .def("__iter__", [](const GramOut& r) {
        return py::iter(py::make_tuple(r.eigenvalues, r.eigenvectors));
      });

  m.def(
      "gram_eigenpairs",
      [](const PyBatch& b, Index k, double tolerance, Index max_products, std::uint64_t seed) {
        return std::visit([&](const auto& s) { return gram(*s, k, tolerance, max_products, seed); },
                          b.state);
      },
      py::arg("batch"), py::arg("k"), py::arg("tolerance") = 1e-6, py::arg("max_products") = 300,
      py::arg("seed") = 0,
      "The k largest eigenpairs of the batch's GGN and its exact trace through the Gram matrix "
      "of the GGN's factor (N*C rows; N*(C-1) for cross-entropy), as quadra spectrum --method "
      "gram: for networks whose parameter layers are all Linear. Returns GramEigenpairs.");

  m.def(
      "lanczos",
      [](const PyCurvature& c, Index k, const std::string& which, double tolerance,
         Index max_products, std::uint64_t seed, Index max_basis) {
        return visit(c, [&](auto& s) {
          return lanczos(s, k, which, tolerance, max_products, seed, max_basis);
        });
      },
      py::arg("C"), py::arg("k"), py::arg("which") = "largest", py::arg("tolerance") = 1e-8,
      py::arg("max_products") = 300, py::arg("seed") = 0, py::arg("max_basis") = 0,
      "k extreme eigenpairs of C by thick-restart Lanczos with full reorthogonalisation, as "
      "quadra spectrum. which: 'largest' or 'smallest'. tolerance: residual relative to ||C||. "
      "Returns a LanczosResult; `values, vectors = quadra.lanczos(C, k)` unpacks it.");
  m.def(
      "cg",
      [](const PyCurvature& c, const py::handle& b, double damping, double tolerance,
         Index max_iterations, const py::object& x0, bool martens) {
        return visit(
            c, [&](auto& s) { return cg(s, b, damping, tolerance, max_iterations, x0, martens); });
      },
      py::arg("C"), py::arg("b"), py::arg("damping") = 0.0, py::arg("tolerance") = 1e-6,
      py::arg("max_iterations") = 250, py::arg("x0") = py::none(), py::arg("martens") = false,
      "Solves (C + damping I) x = b by conjugate gradients (the core's CG, which the cg solver "
      "plugin uses): stops when ||r|| <= tolerance ||b||, by Martens' relative-progress rule "
      "when martens=True, or after max_iterations. x0: warm start. Returns a CgResult.");
  m.def(
      "hutchinson_trace",
      [](const PyCurvature& c, Index probes, std::uint64_t seed) {
        return visit(c, [&](auto& s) { return hutchinson(s, probes, seed); });
      },
      py::arg("C"), py::arg("probes") = 100, py::arg("seed") = 0,
      "Hutchinson's estimate of tr(C) from `probes` seeded Rademacher probes (one product each).");
  m.def(
      "slq_density",
      [](const PyCurvature& c, Index probes, Index steps, std::uint64_t seed, Index points,
         double sigma) {
        return visit(c, [&](auto& s) { return slq(s, probes, steps, seed, points, sigma); });
      },
      py::arg("C"), py::arg("probes") = 10, py::arg("steps") = 80, py::arg("seed") = 0,
      py::arg("points") = 512, py::arg("sigma") = 0.0,
      "The spectral density of C by stochastic Lanczos quadrature, smoothed by a Gaussian of "
      "width sigma (0: 1 % of the spectrum's range). Returns a SpectralDensity.");
}

}  // namespace quadra::python
