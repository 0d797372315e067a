#pragma once
/// \file
/// The plugin host: loads plugin libraries (Boost.DLL), checks each one's descriptor, keeps a
/// registry of components by kind and name, and creates components from validated options.
///
/// Lifetime: every object created through a plugin's factory comes back as a PluginHandle whose
/// deleter holds a reference to the library, so no object outlives its code. Libraries stay
/// loaded for the lifetime of the host or of the last handle, whichever is longer.
/// Thread safety: load and create from one thread; the registry is read-only afterwards.

#include <filesystem>
#include <functional>
#include <memory>
#include <quadra/error.hpp>
#include <quadra/option_parsing.hpp>
#include <quadra/sdk/registrar.hpp>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace quadra {

/// unique_ptr deleter that keeps the creating library loaded until after `delete`. It lets go
/// of the library right after the delete, because unique_ptr::reset() keeps its deleter alive.
template <class Interface>
struct LibraryBoundDeleter {
  std::shared_ptr<const void> library;
  void operator()(Interface* object) noexcept {
    delete object;
    library.reset();
  }
};

template <class Interface>
using PluginHandle = std::unique_ptr<Interface, LibraryBoundDeleter<Interface>>;

/// How the host creates a component: a library's factory function, or any callable for the
/// components a host program registers itself (add_in_process).
template <class Interface>
using HostFactory = std::function<Status(const OptionValues& options, Interface** out)>;

/// One registered component.
struct Component {
  PluginKind kind;
  ComponentInfo info;
  std::filesystem::path file;   ///< the library it came from, or the in-process origin
  std::string library_name;     ///< from the plugin descriptor
  std::string library_version;  ///< from the plugin descriptor
  std::variant<HostFactory<CurvatureEstimator>, HostFactory<Solver>, HostFactory<DampingStrategy>,
               HostFactory<DebiasingStrategy>>
      factory;
  /// Keeps the library loaded, or whatever an in-process component's objects need alive.
  std::shared_ptr<const void> library;
};

/// A library that was refused, and why (one complete sentence naming the file).
struct RefusedLibrary {
  std::filesystem::path file;
  std::string reason;
};

template <class Interface>
constexpr PluginKind kind_of();
template <>
constexpr PluginKind kind_of<CurvatureEstimator>() { return PluginKind::kCurvature; }
template <>
constexpr PluginKind kind_of<Solver>() { return PluginKind::kSolver; }
template <>
constexpr PluginKind kind_of<DampingStrategy>() { return PluginKind::kDamping; }
template <>
constexpr PluginKind kind_of<DebiasingStrategy>() { return PluginKind::kDebiasing; }

/// Parses "curvature", "solver", "damping" or "debiasing".
Result<PluginKind> parse_plugin_kind(std::string_view text);

/// "damping plugin 'halving' (\"/path/libhalving.so\")": how messages name a plugin.
std::string describe_plugin(PluginKind kind, std::string_view name,
                            const std::filesystem::path& file);
std::string describe_plugin(const Component& component);

/// A plugin broke its contract in a way no optimizer step can absorb: a method threw (anything,
/// std::exception or not), or returned an invalid plan, verdict or structure. The message names
/// the plugin, its library file and the method. (Non-finite numbers a plugin returns are a
/// kNumericalIssue Status instead, naming the same: the loop rejects that step.)
class PluginFailure : public Error {
 public:
  using Error::Error;
};

namespace detail {
/// Wraps a plugin object in a host-side decorator of the same interface that guards every call
/// (see PluginFailure) and checks that returned numbers are finite.
PluginHandle<CurvatureEstimator> guard_plugin(const Component& component,
                                              PluginHandle<CurvatureEstimator> raw);
PluginHandle<Solver> guard_plugin(const Component& component, PluginHandle<Solver> raw);
PluginHandle<DampingStrategy> guard_plugin(const Component& component,
                                           PluginHandle<DampingStrategy> raw);
PluginHandle<DebiasingStrategy> guard_plugin(const Component& component,
                                             PluginHandle<DebiasingStrategy> raw);
}  // namespace detail

class PluginHost {
 public:
  PluginHost();
  ~PluginHost();
  PluginHost(const PluginHost&) = delete;
  PluginHost& operator=(const PluginHost&) = delete;

  /// Loads one library. On refusal nothing of it is registered and the status says why.
  Status load_library(const std::filesystem::path& file);

  /// Loads every shared library (by file suffix) in `dir`, in file-name order, or `dir` itself
  /// if it is a file. A missing directory is an error; refused libraries are collected in
  /// refused() and do not stop the others.
  Status load_path(const std::filesystem::path& path);

  /// The built-in plugin directory, then QUADRA_PLUGIN_PATH (':'-separated), then `extra`.
  Status load_default_paths(const std::vector<std::filesystem::path>& extra);
  /// The same with another built-in directory (skipped when it does not exist), for hosts that
  /// are not the `quadra` executable: the Python module finds the plugins from its own file.
  Status load_default_paths(const std::filesystem::path& builtin,
                            const std::vector<std::filesystem::path>& extra);

  /// Registers a component defined by the host program itself rather than by a library (the
  /// Python module's strategies written in Python), with the checks a library's components get
  /// (name, schema, no duplicate). `origin` stands where messages name a library file;
  /// `keep_alive` is held by every object the factory creates, as a library is. With `replace`,
  /// an in-process component of the same kind and name is replaced (a class defined again).
  template <class Interface>
  Status add_in_process(ComponentInfo info, HostFactory<Interface> factory, std::string origin,
                        std::shared_ptr<const void> keep_alive, bool replace = false) {
    return add_in_process_component(
        Component{kind_of<Interface>(), std::move(info), std::move(origin),
                  std::string(kInProcessLibrary), "", std::move(factory), std::move(keep_alive)},
        replace);
  }

  /// The library_name of in-process components.
  static constexpr std::string_view kInProcessLibrary = "in-process";

  [[nodiscard]] const std::vector<Component>& components() const noexcept { return components_; }
  [[nodiscard]] const std::vector<RefusedLibrary>& refused() const noexcept { return refused_; }

  /// The component of this kind and name, or nullptr.
  [[nodiscard]] const Component* find(PluginKind kind, std::string_view name) const;
  /// Every component with this name, of any kind.
  [[nodiscard]] std::vector<const Component*> find_all(std::string_view name) const;
  /// Names of every component of a kind, sorted.
  [[nodiscard]] std::vector<std::string> names(PluginKind kind) const;

  /// Validates `raw` against the component's schema and runs its factory. The object comes back
  /// guarded: every call into it is checked (see PluginFailure).
  template <class Interface>
  Result<PluginHandle<Interface>> create(std::string_view name, const RawOptions& raw) const {
    auto found = find_checked(kind_of<Interface>(), name);
    if (!found.is_ok()) return found.status();
    const Component& component = *found.value();
    auto options = parse_options(component.info.options, raw, describe(component));
    if (!options.is_ok()) return options.status();
    Interface* object = nullptr;
    Status status;
    try {  // the SDK's factory thunk catches, but a hand-written factory might not
      status = std::get<HostFactory<Interface>>(component.factory)(options.value(), &object);
    } catch (...) {
      return factory_failed(component, Status::failed("the factory threw an exception"));
    }
    if (!status.is_ok() || object == nullptr) return factory_failed(component, status);
    return detail::guard_plugin(
        component,
        PluginHandle<Interface>(object, LibraryBoundDeleter<Interface>{component.library}));
  }

  /// The built-in plugin directory: next to the executable, at the install layout's relative
  /// path (bin/../lib/quadra/plugins).
  static std::filesystem::path builtin_plugin_dir();

 private:
  class Registrar;
  [[nodiscard]] Result<const Component*> find_checked(PluginKind kind, std::string_view name) const;
  Status add_in_process_component(Component component, bool replace);
  static std::string describe(const Component& component);
  static Status factory_failed(const Component& component, const Status& status);

  std::vector<Component> components_;
  std::vector<RefusedLibrary> refused_;
};

}  // namespace quadra
