// The engine behind the SDK's curvature interface. See engine_backend.hpp.

#include <quadra/curvature/engine_backend.hpp>

#include <exception>
#include <string>

namespace quadra {
namespace {

/// Runs `f`, turning any exception into a Status (the engine throws quadra::Error on bad shapes).
template <class F>
Status guarded(const char* what, F&& f) noexcept {
  try {
    return f();
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
Status EngineCurvatureBackend<Scalar>::kfac_factors(KfacVariant variant, int mc_samples,
                                                    std::uint64_t seed,
                                                    std::vector<KroneckerFactor>& out) {
  return guarded("K-FAC factors", [&] {
    const nn::Network& network = batch_.network();
    out.clear();
    for (const auto& f : batch_.kfac_factors(to_engine(variant), mc_samples, seed)) {
      KroneckerFactor k;
      const nn::LayerSpec& layer = network.layers()[static_cast<std::size_t>(f.layer)];
      k.offset = network.parameter_offset(f.layer);
      k.out = layer.out;
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
