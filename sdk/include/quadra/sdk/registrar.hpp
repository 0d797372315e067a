#pragma once
/// \file
/// Registration: a plugin's entry point receives the host's IRegistrar and adds its components
/// (any number, of any kind). Each component is a name, a one-line summary, an option schema and
/// a factory. Factories run inside the plugin and return a Status, never an exception.

#include <exception>
#include <new>
#include <string>
#include <type_traits>
#include <utility>

#include "quadra/sdk/curvature.hpp"
#include "quadra/sdk/damping.hpp"
#include "quadra/sdk/debiasing.hpp"
#include "quadra/sdk/export.hpp"
#include "quadra/sdk/options.hpp"
#include "quadra/sdk/solver.hpp"
#include "quadra/sdk/status.hpp"

namespace quadra {
inline namespace abi_v4 {

enum class PluginKind : int { kCurvature, kSolver, kDamping, kDebiasing };
inline constexpr int kNumPluginKinds = 4;

inline const char* to_string(PluginKind kind) noexcept {
  switch (kind) {
    case PluginKind::kCurvature: return "curvature";
    case PluginKind::kSolver: return "solver";
    case PluginKind::kDamping: return "damping";
    case PluginKind::kDebiasing: return "debiasing";
  }
  return "?";
}

/// What the host lists and documents about one component.
struct ComponentInfo {
  std::string name;     ///< unique within its kind; lower-case, digits and '-'
  std::string summary;  ///< one line for `quadra plugins`
  OptionSchema options;
};

/// Creates an object from validated options. On success *out owns a new object (deleted by the
/// host through its virtual destructor while the library is still loaded).
template <class Interface>
using Factory = Status (*)(const OptionValues& options, Interface** out);

namespace detail {
/// Factory thunk for a class constructible from OptionValues; it catches everything the
/// constructor throws, so no exception leaves the plugin.
template <class Interface, class Impl>
Status construct(const OptionValues& options, Interface** out) noexcept {
  try {
    *out = new Impl(options);
    return Status::ok();
  } catch (const std::exception& e) {
    return Status::failed(e.what());
  } catch (...) {
    return Status::failed("unknown exception");
  }
}
}  // namespace detail

/// Implemented by the host. Calls never throw; problems (duplicate names, invalid schemas) are
/// recorded by the host and refuse the whole library after the entry point returns.
class QUADRA_INTERFACE IRegistrar {
 public:
  virtual void add_curvature(ComponentInfo info, Factory<CurvatureEstimator> factory) = 0;
  virtual void add_solver(ComponentInfo info, Factory<Solver> factory) = 0;
  virtual void add_damping(ComponentInfo info, Factory<DampingStrategy> factory) = 0;
  virtual void add_debiasing(ComponentInfo info, Factory<DebiasingStrategy> factory) = 0;

  /// Registers Impl (derived from one SDK interface, constructible from const OptionValues&)
  /// under the kind its base class implies.
  template <class Impl>
  void add(ComponentInfo info) {
    static_assert(std::is_constructible_v<Impl, const OptionValues&>,
                  "a plugin class needs a constructor taking const quadra::OptionValues&");
    if constexpr (std::is_base_of_v<CurvatureEstimator, Impl>) {
      add_curvature(std::move(info), &detail::construct<CurvatureEstimator, Impl>);
    } else if constexpr (std::is_base_of_v<Solver, Impl>) {
      add_solver(std::move(info), &detail::construct<Solver, Impl>);
    } else if constexpr (std::is_base_of_v<DampingStrategy, Impl>) {
      add_damping(std::move(info), &detail::construct<DampingStrategy, Impl>);
    } else {
      static_assert(std::is_base_of_v<DebiasingStrategy, Impl>,
                    "Impl must derive from one of the four SDK plugin interfaces");
      add_debiasing(std::move(info), &detail::construct<DebiasingStrategy, Impl>);
    }
  }

 protected:
  ~IRegistrar() = default;  // the host owns it; plugins never delete it
};

}  // namespace abi_v4
}  // namespace quadra
