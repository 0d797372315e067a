// Laplace posteriors as .npz files. See quadra/laplace/posterior_file.hpp.

#include <quadra/laplace/posterior_file.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <fmt/std.h>

#include <quadra/data/random.hpp>
#include <quadra/error.hpp>
#include <quadra/nn/serialization.hpp>

#include "layer_blocks.hpp"

namespace quadra::laplace {
namespace {

namespace fs = std::filesystem;
using RowMajor = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Arrays = std::vector<std::pair<std::string, io::NpyArray>>;

// The model file's own keys (quadra/nn/serialization.hpp).
constexpr const char* kSpecKey = "__spec__";
constexpr const char* kShapeKey = "__input_shape__";

/// |QᵀQx − x| / |x| above this for a test vector x: not an orthonormal basis. Bases found in
/// float32 (Lanczos) are orthonormal to about 1e-6.
constexpr double kOrthonormalTolerance = 1e-4;

const char* const kPriorRules[] = {"grid", "marglik", "per-layer", "fixed"};

bool is_prior_rule(const std::string& rule) {
  return std::find(std::begin(kPriorRules), std::end(kPriorRules), rule) != std::end(kPriorRules);
}

io::NpyArray text_array(const std::string& text) {
  return io::NpyArray::from<std::uint8_t>({static_cast<std::int64_t>(text.size())},
                                          reinterpret_cast<const std::uint8_t*>(text.data()));
}

io::NpyArray matrix_array(const Matrix<double>& m) {
  const RowMajor c_order = m;  // .npy arrays are C order
  return io::NpyArray::from<double>({m.rows(), m.cols()}, c_order.data());
}

io::NpyArray vector_array(const Vector<double>& v) {
  return io::NpyArray::from<double>({v.size()}, v.data());
}

/// The state_dict prefix of the layer whose weight starts at `offset` ("0" for "0.weight").
std::string layer_key(const nn::Network& network, Index offset) {
  for (const nn::ParameterInfo& p : network.parameters()) {
    if (p.offset == offset && !p.is_bias) return p.name.substr(0, p.name.rfind('.'));
  }
  throw Error(fmt::format("no layer of '{}' starts at parameter {}", network.spec(), offset));
}

/// The layers of `network` in `range`.
std::vector<detail::ParameterLayer> layers_in(const nn::Network& network, ParameterRange range) {
  std::vector<detail::ParameterLayer> out;
  for (const detail::ParameterLayer& l : detail::parameter_layers(network)) {
    if (l.offset >= range.offset && l.offset < range.offset + range.size) out.push_back(l);
  }
  return out;
}

/// The subset a posterior's range is, as fit_curvature makes it.
Subset subset_of(const nn::Network& network, const CurvatureModel& m) {
  if (m.structure == Structure::kLastLayerFull) return Subset::kLastLayer;
  if (m.structure == Structure::kFull) return Subset::kAll;
  const ParameterRange all = subset_range(network, Subset::kAll);
  return m.range.offset == all.offset && m.range.size == all.size ? Subset::kAll
                                                                  : Subset::kLastLayer;
}

/// The deterministic test vectors of the orthonormality check.
Vector<double> test_vector(Index size, std::uint64_t which) {
  data::Rng rng(data::derive_seed(0x6f7274686f /* "ortho" */, which));
  Vector<double> x(size);
  for (Index i = 0; i < size; ++i) x(i) = rng.normal();
  return x;
}

/// Reads the posterior's arrays, each with one message per fault naming the file and the key,
/// and remembers which it read, so that the others can be refused.
class Reader {
 public:
  Reader(fs::path file, const std::map<std::string, io::NpyArray>& arrays)
      : file_(std::move(file)), arrays_(arrays) {}

  [[nodiscard]] std::string key(const std::string& name) const { return kPosteriorPrefix + name; }
  [[nodiscard]] std::string where(const std::string& name) const {
    return fmt::format("{}: array '{}'", file_, key(name));
  }
  [[nodiscard]] const fs::path& file() const { return file_; }

  const io::NpyArray& get(const std::string& name, const std::string& why) {
    used_.insert(key(name));
    const auto it = arrays_.find(key(name));
    if (it == arrays_.end()) {
      throw Error(
          fmt::format("{}: missing array '{}' ({}); the file is not a complete Laplace "
                      "posterior",
                      file_, key(name), why));
    }
    return it->second;
  }

  void expect(const std::string& name, const io::NpyArray& a, io::DType dtype,
              const std::vector<std::int64_t>& shape, const std::string& what) const {
    if (a.dtype != dtype) {
      throw Error(fmt::format("{} has dtype {}; expected {} ({})", where(name),
                              io::to_string(a.dtype), io::to_string(dtype), what));
    }
    if (a.shape != shape) {
      throw Error(fmt::format("{} has shape {}; expected {} ({})", where(name), shape_text(a.shape),
                              shape_text(shape), what));
    }
  }

  std::string text(const std::string& name, const std::string& what) {
    const io::NpyArray& a = get(name, what);
    if (a.dtype != io::DType::kUInt8 || a.shape.size() != 1) {
      throw Error(
          fmt::format("{} has dtype {} and shape {}; expected a 1-d uint8 array of text ({})",
                      where(name), io::to_string(a.dtype), shape_text(a.shape), what));
    }
    const std::vector<std::uint8_t> bytes = a.to_vector<std::uint8_t>();
    return {bytes.begin(), bytes.end()};
  }

  /// A name parsed by `parse` (one of the to_string names), its message prefixed with the key.
  template <class Parse>
  auto name(const std::string& key_name, const std::string& what, Parse parse) {
    const std::string value = text(key_name, what);
    try {
      return parse(value);
    } catch (const Error& e) {
      throw Error(fmt::format("{}: {}", where(key_name), e.what()));
    }
  }

  double real(const std::string& name, const std::string& what) {
    const io::NpyArray& a = get(name, what);
    expect(name, a, io::DType::kFloat64, {}, what);
    io::require_finite(a, where(name));
    return a.to_vector<double>().front();
  }

  std::int64_t integer(const std::string& name, const std::string& what) {
    const io::NpyArray& a = get(name, what);
    expect(name, a, io::DType::kInt64, {}, what);
    return a.to_vector<std::int64_t>().front();
  }

  /// A finite float64 array of `shape` (1-d or 2-d, C order) as a column-major matrix.
  Matrix<double> matrix(const std::string& name, const std::vector<std::int64_t>& shape,
                        const std::string& what) {
    const io::NpyArray& a = get(name, what);
    expect(name, a, io::DType::kFloat64, shape, what);
    io::require_finite(a, where(name));
    const std::vector<double> values = a.to_vector<double>();
    const Index rows = shape.front();
    const Index cols = shape.size() == 2 ? shape.back() : 1;
    return Eigen::Map<const RowMajor>(values.data(), rows, cols);
  }

  /// Throws at the first negative entry.
  void require_nonnegative(const std::string& name, const Matrix<double>& values,
                           const std::vector<std::int64_t>& shape) const {
    const RowMajor c_order = values;
    for (Index i = 0; i < c_order.size(); ++i) {
      if (c_order.data()[i] < 0.0) {
        throw Error(fmt::format("{}: {} is {}; expected curvature eigenvalues >= 0", where(name),
                                io::element_name(shape, i), c_order.data()[i]));
      }
    }
  }

  /// Throws unless the columns of `basis` are orthonormal (checked on two test vectors).
  void require_orthonormal(const std::string& name, const Matrix<double>& basis) const {
    for (std::uint64_t which = 0; which < 2; ++which) {
      const Vector<double> x = test_vector(basis.cols(), which);
      const double error = (basis.transpose() * (basis * x) - x).norm() / x.norm();
      if (!(error <= kOrthonormalTolerance)) {
        throw Error(fmt::format(
            "{} is not an orthonormal basis: |Q'Qx - x| = {:.3g} |x| for a test vector x; "
            "expected below {:g} (the eigenvectors quadra laplace saved)",
            where(name), error, kOrthonormalTolerance));
      }
    }
  }

  /// Throws for an array under the prefix that was not read.
  void refuse_others() const {
    std::vector<std::string> known(used_.begin(), used_.end());
    for (const auto& [k, array] : arrays_) {
      if (k.rfind(kPosteriorPrefix, 0) != 0 || used_.count(k) != 0) continue;
      throw Error(fmt::format("{}: unexpected array '{}'; this posterior has: {}", file_, k,
                              fmt::join(known, ", ")));
    }
  }

  static std::string shape_text(const std::vector<std::int64_t>& shape) {
    return shape.size() == 1 ? fmt::format("({},)", shape[0])
                             : fmt::format("({})", fmt::join(shape, ", "));
  }

 private:
  fs::path file_;
  const std::map<std::string, io::NpyArray>& arrays_;
  std::set<std::string> used_;
};

}  // namespace

void save_posterior(const fs::path& file, const nn::Network& network, const Posterior& posterior,
                    const PosteriorInfo& info, const Arrays& model_metadata) {
  const CurvatureModel& m = posterior.model();
  if (posterior.map().size() != network.num_parameters()) {
    throw Error(
        fmt::format("a posterior of {} parameters cannot be saved with the model '{}' of {}",
                    posterior.map().size(), network.spec(), network.num_parameters()));
  }
  if (!is_prior_rule(info.prior_rule)) {
    throw Error(fmt::format("prior rule '{}' is unknown; expected one of {}", info.prior_rule,
                            fmt::join(kPriorRules, ", ")));
  }
  if ((info.prior_rule == "per-layer") != posterior.per_layer_prior()) {
    throw Error(
        posterior.per_layer_prior()
            ? fmt::format("prior rule {}, but the posterior has a per-layer prior; expected "
                          "per-layer",
                          info.prior_rule)
            : fmt::format("prior rule per-layer, but the posterior has one prior precision; "
                          "expected grid, marglik or fixed"));
  }
  const Subset subset = subset_of(network, m);
  const ParameterRange want = subset_range(network, subset);
  if (m.range.offset != want.offset || m.range.size != want.size) {
    throw Error(fmt::format("the posterior's range [{}, {}) is not subset {} of the model '{}'",
                            m.range.offset, m.range.offset + m.range.size, to_string(subset),
                            network.spec()));
  }

  Arrays arrays = nn::parameters_to_arrays<double>(network, posterior.map());
  const std::string spec = network.spec();
  arrays.emplace_back(kSpecKey, text_array(spec));
  const std::vector<std::int64_t> dims(network.input_shape().dims.begin(),
                                       network.input_shape().dims.end());
  arrays.emplace_back(kShapeKey, io::NpyArray::from<std::int64_t>(
                                     {static_cast<std::int64_t>(dims.size())}, dims.data()));
  for (const auto& [key, array] : model_metadata) {
    const bool taken =
        std::any_of(arrays.begin(), arrays.end(), [&](const auto& a) { return a.first == key; });
    if (!taken && key.rfind(kPosteriorPrefix, 0) != 0) arrays.emplace_back(key, array);
  }

  auto add = [&](const std::string& name, io::NpyArray array) {
    arrays.emplace_back(kPosteriorPrefix + name, std::move(array));
  };
  const std::int64_t version = kPosteriorFormatVersion;
  add("format_version", io::NpyArray::from<std::int64_t>({}, &version));
  add("structure", text_array(to_string(m.structure)));
  add("subset", text_array(to_string(subset)));
  add("debiasing", text_array(to_string(info.debiasing)));
  add("kfac_eigenvalues", text_array(to_string(info.kfac_eigenvalues)));
  add("curvature", text_array(info.curvature));
  add("prior_rule", text_array(info.prior_rule));
  add("predictive", text_array(to_string(info.predictive)));
  const std::int64_t samples = info.samples;
  add("samples", io::NpyArray::from<std::int64_t>({}, &samples));
  add("data", text_array(info.data));
  add("normalize", text_array(info.normalize));
  const double n = posterior.data_size();
  add("data_size", io::NpyArray::from<double>({}, &n));
  add("curvature_samples", io::NpyArray::from<std::int64_t>({}, &info.curvature_samples));
  const std::vector<double>& taus = posterior.prior_precisions();
  add("prior_precision",
      io::NpyArray::from<double>({static_cast<std::int64_t>(taus.size())}, taus.data()));
  for (const KroneckerBlock& b : m.kronecker) {
    const std::string layer = layer_key(network, b.offset);
    add(layer + ".values", matrix_array(b.values));
    if (b.identity) continue;
    add(layer + ".qa", matrix_array(b.qa));
    add(layer + ".qs", matrix_array(b.qs));
  }
  for (const EigenBlock& b : m.eigen) {
    add("eigenvectors", matrix_array(b.basis));
    add("eigenvalues", vector_array(b.values));
  }
  io::write_npz(file, arrays);
}

LoadedPosterior load_posterior(const fs::path& file) {
  // The model part loads as any model file does (with that loader's messages).
  nn::Model<double> model = nn::load_model<double>(file);
  const nn::Network& network = model.network;
  const std::map<std::string, io::NpyArray> arrays = io::read_npz(file);
  Reader r(file, arrays);

  if (arrays.count(r.key("format_version")) == 0) {
    throw Error(fmt::format(
        "{}: not a Laplace posterior file: it has no array '{}' (a model file; quadra laplace "
        "--save writes posterior files)",
        file, r.key("format_version")));
  }
  const std::int64_t version = r.integer("format_version", "the posterior file format");
  if (version != kPosteriorFormatVersion) {
    throw Error(
        fmt::format("{} is {}; this quadra reads Laplace posterior files of version {} only",
                    r.where("format_version"), version, kPosteriorFormatVersion));
  }

  CurvatureModel m;
  m.structure = r.name("structure", "the posterior's structure", parse_structure);
  const Subset subset = r.name("subset", "the parameters covered", parse_subset);
  FitOptions fit;
  fit.structure = m.structure;
  fit.subset = subset;
  if (effective_subset(fit) != subset) {
    throw Error(fmt::format("{} is {}, but structure {} covers {}", r.where("subset"),
                            to_string(subset), to_string(m.structure),
                            to_string(effective_subset(fit))));
  }
  m.range = subset_range(network, subset);
  PosteriorInfo info;
  info.debiasing = r.name("debiasing", "the debiasing variant", parse_debiasing);
  info.kfac_eigenvalues =
      r.name("kfac_eigenvalues", "the K-FAC eigenvalues", parse_kfac_eigenvalues);
  info.curvature = r.text("curvature", "the curvature plugin");
  if (info.curvature.empty()) {
    throw Error(
        fmt::format("{} is empty; expected the curvature plugin's name", r.where("curvature")));
  }
  info.prior_rule = r.text("prior_rule", "how the prior precision was chosen");
  if (!is_prior_rule(info.prior_rule)) {
    throw Error(fmt::format("{} is '{}'; expected one of {}", r.where("prior_rule"),
                            info.prior_rule, fmt::join(kPriorRules, ", ")));
  }
  info.predictive =
      r.name("predictive", "the predictive the prior was chosen with", parse_predictive);
  if (info.predictive == PredictiveKind::kMap) {
    throw Error(fmt::format("{} is map; expected probit, glm-mc or nn-mc", r.where("predictive")));
  }
  const std::int64_t samples = r.integer("samples", "the predictive's Monte-Carlo samples");
  if (samples < 1 || samples > std::numeric_limits<int>::max()) {
    throw Error(fmt::format("{} is {}; expected a sample count from 1 to {}", r.where("samples"),
                            samples, std::numeric_limits<int>::max()));
  }
  info.samples = static_cast<int>(samples);
  info.data = r.text("data", "the data source");
  info.normalize = r.text("normalize", "the data's normalisation");
  const double n = r.real("data_size", "N, the training set's size");
  if (!(n >= 1.0)) {
    throw Error(
        fmt::format("{} is {}; expected the training set's size N >= 1", r.where("data_size"), n));
  }
  info.curvature_samples = r.integer("curvature_samples", "the curvature data's size");
  if (info.curvature_samples < 0) {
    throw Error(fmt::format("{} is {}; expected a sample count >= 0", r.where("curvature_samples"),
                            info.curvature_samples));
  }

  const std::vector<detail::ParameterLayer> layers = layers_in(network, m.range);
  for (const detail::ParameterLayer& l : layers) m.layers.push_back({l.offset, l.size()});
  const auto num_layers = static_cast<std::int64_t>(layers.size());
  const Matrix<double> taus_matrix =
      r.matrix("prior_precision", {num_layers},
               fmt::format("one prior precision per parameter layer: {} in the range", num_layers));
  std::vector<double> taus(taus_matrix.data(), taus_matrix.data() + taus_matrix.size());
  for (std::size_t l = 0; l < taus.size(); ++l) {
    if (!(taus[l] > 0.0)) {
      throw Error(fmt::format("{}: element {} is {}; expected prior precisions > 0",
                              r.where("prior_precision"), l, taus[l]));
    }
  }
  const bool per_layer = info.prior_rule == "per-layer";
  if (!per_layer && std::any_of(taus.begin(), taus.end(), [&](double t) { return t != taus[0]; })) {
    throw Error(fmt::format(
        "{} holds different values per layer, but '{}' is {}; expected one value repeated",
        r.where("prior_precision"), r.key("prior_rule"), info.prior_rule));
  }

  const std::string spec = network.spec();
  switch (m.structure) {
    case Structure::kDiagonal:
    case Structure::kKfac: {
      const bool kfac = m.structure == Structure::kKfac;
      for (const detail::ParameterLayer& l : layers) {
        const std::string layer = layer_key(network, l.offset);
        KroneckerBlock b = detail::empty_block(l);
        b.identity = !kfac;
        const std::vector<std::int64_t> shape{l.out, l.cols()};
        const std::string what = fmt::format(
            "eigenvalues of layer {} of '{}' in its [W b] layout: out x cols", layer, spec);
        b.values = r.matrix(layer + ".values", shape, what);
        r.require_nonnegative(layer + ".values", b.values, shape);
        if (kfac) {
          b.qa = r.matrix(
              layer + ".qa", {l.cols(), l.cols()},
              fmt::format("the input-side K-FAC eigenbasis of layer {} of '{}'", layer, spec));
          r.require_orthonormal(layer + ".qa", b.qa);
          b.qs = r.matrix(
              layer + ".qs", {l.out, l.out},
              fmt::format("the output-side K-FAC eigenbasis of layer {} of '{}'", layer, spec));
          r.require_orthonormal(layer + ".qs", b.qs);
        }
        m.kronecker.push_back(std::move(b));
      }
      break;
    }
    case Structure::kLowRank:
    case Structure::kLastLayerFull:
    case Structure::kFull: {
      const io::NpyArray& vectors = r.get("eigenvectors", "the curvature's eigenvectors");
      Index k = m.range.size;
      if (m.structure == Structure::kLowRank) {
        if (vectors.shape.size() != 2 || vectors.shape[0] != m.range.size || vectors.shape[1] < 1 ||
            vectors.shape[1] > m.range.size) {
          throw Error(fmt::format(
              "{} has shape {}; expected ({}, k) with 1 <= k <= {} (the top-k eigenvectors of "
              "the curvature on the range)",
              r.where("eigenvectors"), Reader::shape_text(vectors.shape), m.range.size,
              m.range.size));
        }
        k = vectors.shape[1];
      }
      const std::string what = "range x k eigenvectors of the curvature on the range";
      EigenBlock b;
      b.range = m.range;
      b.basis = r.matrix("eigenvectors", {m.range.size, k}, what);
      r.require_orthonormal("eigenvectors", b.basis);
      b.values = r.matrix("eigenvalues", {k}, "one eigenvalue per eigenvector");
      r.require_nonnegative("eigenvalues", b.values, {k});
      m.eigen.push_back(std::move(b));
      break;
    }
  }
  r.refuse_others();

  try {
    Posterior posterior(std::move(m), std::move(model.params), n, taus.front());
    if (per_layer) posterior.set_prior_precisions(taus);
    return {network, std::move(posterior), info, subset};
  } catch (const Error& e) {
    throw Error(fmt::format("{}: {}", file, e.what()));
  }
}

}  // namespace quadra::laplace
