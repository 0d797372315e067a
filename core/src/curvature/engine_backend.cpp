// The engine behind the SDK's curvature interface. See engine_backend.hpp.

#include <quadra/curvature/engine_backend.hpp>

#include <exception>
#include <string>

#include <quadra/dist/tasks.hpp>
#include <quadra/error.hpp>

namespace quadra {
namespace {

/// Runs `f`, turning any exception into a Status (the engine throws quadra::Error on bad shapes).
template <class F>
Status guarded(const char* what, F&& f) noexcept {
  try {
    return f();
  } catch (const UnsupportedError& e) {
    return Status::unsupported(std::string(what) + ": " + e.what());
  } catch (const std::exception& e) {
    return Status::failed(std::string(what) + ": " + e.what());
  } catch (...) {
    return Status::failed(std::string(what) + ": unknown exception");
  }
}

nn::KfacType to_engine(KfacVariant variant) {
  switch (variant) {
    case KfacVariant::kType2: return nn::KfacType::kType2;
    case KfacVariant::kMc: return nn::KfacType::kMc;
    case KfacVariant::kEmpirical: return nn::KfacType::kEmpirical;
  }
  return nn::KfacType::kType2;
}

}  // namespace

template <class Scalar>
Status EngineCurvatureBackend<Scalar>::set_mc_samples(int samples, std::uint64_t seed) {
  if (samples < 1) return Status::invalid_argument("MC-Fisher needs at least one sample");
  return guarded("set_mc_samples", [&] {
    batch_.set_mc_samples(samples, seed);
    return Status::ok();
  });
}

template <class Scalar>
Status EngineCurvatureBackend<Scalar>::native_product(CurvatureProduct which,
                                                      ConstVectorRef<Scalar> v,
                                                      VectorRef<Scalar> out) {
  return guarded("curvature product", [&] {
    switch (which) {
      case CurvatureProduct::kGgn: batch_.ggn_product(v, out); break;
      case CurvatureProduct::kHessian: batch_.hessian_product(v, out); break;
      case CurvatureProduct::kEmpiricalFisher: batch_.empirical_fisher_product(v, out); break;
      case CurvatureProduct::kMcFisher: batch_.mc_fisher_product(v, out); break;
    }
    return Status::ok();
  });
}

template <class Scalar>
template <class Other>
Status EngineCurvatureBackend<Scalar>::convert_product(CurvatureProduct which,
                                                       ConstVectorRef<Other> v,
                                                       VectorRef<Other> out) {
  in_ = v.template cast<Scalar>();
  out_.resize(v.size());
  Status status = native_product(which, in_, out_);
  if (status.is_ok()) out = out_.template cast<Other>();
  return status;
}

template <class Scalar>
Status EngineCurvatureBackend<Scalar>::product(CurvatureProduct which, ConstVectorRef<double> v,
                                               VectorRef<double> out) {
  if constexpr (std::is_same_v<Scalar, double>) {
    return native_product(which, v, out);
  } else {
    return convert_product<double>(which, v, out);
  }
}

template <class Scalar>
Status EngineCurvatureBackend<Scalar>::product(CurvatureProduct which, ConstVectorRef<float> v,
                                               VectorRef<float> out) {
  if constexpr (std::is_same_v<Scalar, float>) {
    return native_product(which, v, out);
  } else {
    return convert_product<float>(which, v, out);
  }
}

template <class Scalar>
Status EngineCurvatureBackend<Scalar>::diagonal(CurvatureProduct which, VectorRef<double> out) {
  if (which != CurvatureProduct::kGgn && which != CurvatureProduct::kEmpiricalFisher) {
    return Status::unsupported("the engine computes exact diagonals of the GGN and the "
                               "empirical Fisher only");
  }
  return guarded("curvature diagonal", [&] {
    out_.resize(batch_.num_parameters());
    if (which == CurvatureProduct::kGgn) {
      batch_.ggn_diagonal(out_);
    } else {
      batch_.empirical_fisher_diagonal(out_);
    }
    out = out_.template cast<double>();
    return Status::ok();
  });
}

template <class Scalar>
Status EngineCurvatureBackend<Scalar>::run_tasks(IIndependentTasks& tasks,
                                                 std::vector<std::vector<double>>& results) {
  if (batch_.total_batch_size() == batch_.batch_size()) {
    return ICurvatureBackend::run_tasks(tasks, results);  // not split: every task here
  }
  // A failing task's Status travels as an exception whose message leads with its code, so that
  // every rank returns the same Status after the ranks agreed on it.
  struct TaskFailure : std::exception {
    std::string text;
    explicit TaskFailure(const Status& s)
        : text(std::to_string(static_cast<int>(s.code())) + ":" + s.message()) {}
    const char* what() const noexcept override { return text.c_str(); }
  };
  const Index count = tasks.count();
  std::vector<double> costs(static_cast<std::size_t>(count));
  for (Index i = 0; i < count; ++i) costs[static_cast<std::size_t>(i)] = tasks.cost(i);
  try {
    results = dist::run_distributed(dist::Communicator::world(), costs, [&](std::size_t i) {
      std::vector<double> out;
      if (Status s = tasks.run(static_cast<Index>(i), out); !s.is_ok()) throw TaskFailure(s);
      return out;
    });
  } catch (const dist::AgreedError& e) {
    const std::string text = e.what();
    // "CODE:message" from a TaskFailure; any other exception's message as it is.
    const std::size_t colon = text.find(':');
    const bool coded = colon == 1 && text[0] >= '1' && text[0] <= '9';
    const int code = coded ? text[0] - '0' : 0;
    const std::string message = coded ? text.substr(2) : text;
    switch (static_cast<StatusCode>(code)) {
      case StatusCode::kInvalidArgument: return Status::invalid_argument(message);
      case StatusCode::kNumericalIssue: return Status::numerical_issue(message);
      case StatusCode::kUnsupported: return Status::unsupported(message);
      default: return Status::failed(message);
    }
  }
  return Status::ok();
}

template <class Scalar>
Status EngineCurvatureBackend<Scalar>::kfac_factors(KfacVariant variant, int mc_samples,
                                                    std::uint64_t seed,
                                                    std::vector<KroneckerFactor>& out) {
  return guarded("K-FAC factors", [&] {
    const nn::Network& network = batch_.network();
    out.clear();
    // Normalization layers' γ and β get a diagonal block (as in ASDL and Osawa et al.): the
    // column [γ; β] with A = [1] and S = the exact diagonal of the curvature the variant
    // estimates, the GGN's for type-2 and MC (the MC estimate's expectation; the GGN diagonal
    // is exact and cheaper than sampling) and the empirical Fisher's for empirical. With batch
    // statistics, where those diagonals are not sums over samples, S is the diagonal of the
    // moment the factors take, from the same backward pass. As a Kronecker block it is damped
    // and inverted like the others: its eigenbasis is the identity and its eigenvalues are the
    // diagonal.
    const bool coupled = network.has_batch_statistics();
    Vector<Scalar> diagonal;
    if (coupled) diagonal.resize(batch_.num_parameters());
    const auto engine = batch_.kfac_factors(to_engine(variant), mc_samples, seed,
                                            coupled ? diagonal.data() : nullptr);
    for (const nn::LayerSpec& layer : network.layers()) {
      if (!coupled && layer.is_normalization() && layer.has_parameters()) {
        diagonal.resize(batch_.num_parameters());
        if (variant == KfacVariant::kEmpirical) {
          batch_.empirical_fisher_diagonal(diagonal);
        } else {
          batch_.ggn_diagonal(diagonal);
        }
        break;
      }
    }
    auto next = engine.begin();
    const auto& layers = network.layers();
    for (std::size_t l = 0; l < layers.size(); ++l) {
      if (!layers[l].has_parameters()) continue;
      KroneckerFactor k;
      const auto index = static_cast<Index>(l);
      k.offset = network.parameter_offset(index);
      if (layers[l].is_normalization()) {
        const Index size = (l + 1 < layers.size() ? network.parameter_offset(index + 1)
                                                  : network.num_parameters()) -
                           k.offset;
        k.out = size;
        k.in = 1;
        k.bias = false;
        k.a = Matrix<double>::Ones(1, 1);
        k.s = diagonal.segment(k.offset, size).template cast<double>().asDiagonal();
        out.push_back(std::move(k));
        continue;
      }
      if (next == engine.end() || next->layer != index) {
        throw Error("the engine gave no K-FAC factors for layer " + std::to_string(l));
      }
      const auto& f = *next++;
      k.out = layers[l].out;
      k.bias = f.augmented;
      k.in = f.a.rows() - (f.augmented ? 1 : 0);
      k.a = f.a.template cast<double>();
      k.s = f.s.template cast<double>();
      out.push_back(std::move(k));
    }
    return Status::ok();
  });
}

template <class Scalar>
Status CurvatureOperator<Scalar>::apply_impl(ConstVectorRef<Scalar> x, VectorRef<Scalar> y) {
  // The estimator is guarded (see PluginHost::create): what it throws names the plugin already.
  try {
    return estimator_.apply(x, y);
  } catch (const std::exception& e) {
    return Status::failed(e.what());
  }
}

template class EngineCurvatureBackend<float>;
template class EngineCurvatureBackend<double>;
template class CurvatureOperator<float>;
template class CurvatureOperator<double>;

}  // namespace quadra
