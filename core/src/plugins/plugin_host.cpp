// Plugin host: loading, the descriptor handshake and the registry. See plugin_host.hpp.

#include <dlfcn.h>
#include <fmt/format.h>
#include <fmt/std.h>

#include <algorithm>
#include <boost/dll/runtime_symbol_info.hpp>
#include <boost/dll/shared_library.hpp>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <quadra/plugin_host.hpp>
#include <quadra/sdk/plugin.hpp>
#include <system_error>

#include "build_config.hpp"

namespace quadra {
namespace fs = std::filesystem;
namespace dll = boost::dll;

namespace {

constexpr std::size_t kMinDescriptorSize =
    offsetof(quadra_plugin_descriptor, abi_version) + sizeof(std::uint32_t);

bool is_valid_component_name(std::string_view name) {
  if (name.empty() || name.front() == '-' || name.back() == '-') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
  });
}

const char* or_empty(const char* text) { return text == nullptr ? "" : text; }

/// Why the dynamic loader refuses `file`, in its own words ("file too short", "invalid ELF
/// header", a missing dependency): Boost.DLL's error code says only "Bad file descriptor".
std::string why_not_loadable(const fs::path& file) {
  std::error_code ec;
  if (fs::file_size(file, ec) == 0 && !ec) return "the file is empty";
  static_cast<void>(::dlerror());
  void* handle = ::dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle != nullptr) {  // it loads now: report what Boost.DLL saw
    ::dlclose(handle);
    return "the loader refused it once and accepted it on a second try";
  }
  const char* reason = ::dlerror();
  return reason == nullptr ? "the dynamic loader gives no reason" : reason;
}

}  // namespace

Result<PluginKind> parse_plugin_kind(std::string_view text) {
  for (int k = 0; k < kNumPluginKinds; ++k) {
    const auto kind = static_cast<PluginKind>(k);
    if (text == to_string(kind)) return kind;
  }
  return Status::invalid_argument(fmt::format(
      "unknown plugin kind '{}'; expected one of: curvature, solver, damping, debiasing", text));
}

/// Collects one library's registrations; commits them only if the whole library is sound.
namespace {

/// What every component must satisfy to be registered, from a library or in process; with a
/// host, also that it registers no such component yet.
Status check_component(const PluginHost* host, PluginKind kind, const ComponentInfo& info,
                       bool has_factory) {
  if (!is_valid_component_name(info.name)) {
    return Status::invalid_argument(fmt::format(
        "invalid {} plugin name '{}': expected lower-case letters, digits and inner '-'",
        to_string(kind), info.name));
  }
  if (!has_factory) {
    return Status::invalid_argument(
        fmt::format("{} plugin '{}' has no factory", to_string(kind), info.name));
  }
  if (const Component* existing = host != nullptr ? host->find(kind, info.name) : nullptr) {
    return Status::invalid_argument(fmt::format("duplicate {} plugin '{}': already registered by {}",
                                                to_string(kind), info.name, existing->file));
  }
  if (Status schema = check_schema(info.options); !schema.is_ok()) {
    return Status::invalid_argument(
        fmt::format("{} plugin '{}': {}", to_string(kind), info.name, schema.message()));
  }
  return Status::ok();
}

}  // namespace

class PluginHost::Registrar final : public IRegistrar {
 public:
  Registrar(const PluginHost& host, fs::path file, std::string library_name,
            std::string library_version)
      : host_(host),
        file_(std::move(file)),
        library_name_(std::move(library_name)),
        library_version_(std::move(library_version)) {}

  void add_curvature(ComponentInfo info, Factory<CurvatureEstimator> factory) override {
    add(PluginKind::kCurvature, std::move(info), factory);
  }
  void add_solver(ComponentInfo info, Factory<Solver> factory) override {
    add(PluginKind::kSolver, std::move(info), factory);
  }
  void add_damping(ComponentInfo info, Factory<DampingStrategy> factory) override {
    add(PluginKind::kDamping, std::move(info), factory);
  }
  void add_debiasing(ComponentInfo info, Factory<DebiasingStrategy> factory) override {
    add(PluginKind::kDebiasing, std::move(info), factory);
  }

  /// The first problem found, or ok.
  [[nodiscard]] const Status& status() const { return status_; }
  std::vector<Component>& pending() { return pending_; }

 private:
  template <class Interface>
  void add(PluginKind kind, ComponentInfo info, Factory<Interface> factory) noexcept {
    if (!status_.is_ok()) return;  // report the first problem only
    try {
      status_ = check(kind, info, factory != nullptr);
      if (!status_.is_ok()) return;
      pending_.push_back(Component{kind, std::move(info), file_, library_name_, library_version_,
                                   HostFactory<Interface>(factory), nullptr});
    } catch (const std::exception& e) {
      status_ = Status::failed(fmt::format("registration failed: {}", e.what()));
    }
  }

  Status check(PluginKind kind, const ComponentInfo& info, bool has_factory) const {
    for (const Component& other : pending_) {
      if (other.kind == kind && other.info.name == info.name) {
        return Status::invalid_argument(fmt::format(
            "duplicate {} plugin '{}': registered twice by this library", to_string(kind), info.name));
      }
    }
    return check_component(&host_, kind, info, has_factory);
  }

  const PluginHost& host_;
  fs::path file_;
  std::string library_name_;
  std::string library_version_;
  std::vector<Component> pending_;
  Status status_;
};

PluginHost::PluginHost() = default;

PluginHost::~PluginHost() {
  // Components hold factories into their libraries: drop them before the libraries go.
  components_.clear();
}

Status PluginHost::load_library(const fs::path& file) {
  auto refuse = [&](std::string reason) {
    std::string message = fmt::format("refused plugin {}: {}", file, reason);
    refused_.push_back({file, message});
    return Status::invalid_argument(std::move(message));
  };

  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) return refuse("no such file");

  // rtld_now: unresolved symbols are reported here, not at some later call.
  auto library = std::make_shared<dll::shared_library>();
  boost::dll::fs::error_code load_error;
  library->load(file, load_error, dll::load_mode::rtld_now | dll::load_mode::rtld_local);
  if (load_error)
    return refuse(fmt::format("not a loadable shared library ({})", why_not_loadable(file)));
  if (!library->has(QUADRA_PLUGIN_ENTRY_SYMBOL)) {
    return refuse(fmt::format(
        "no entry point: the library does not export '{}' (define one with QUADRA_PLUGIN)",
        QUADRA_PLUGIN_ENTRY_SYMBOL));
  }
  const quadra_plugin_descriptor* descriptor =
      library->get<const quadra_plugin_descriptor*()>(QUADRA_PLUGIN_ENTRY_SYMBOL)();
  if (descriptor == nullptr) return refuse("the entry point returned no descriptor");
  if (descriptor->struct_size < kMinDescriptorSize) {
    return refuse(fmt::format("descriptor too small: {} bytes, expected at least {}",
                              descriptor->struct_size, kMinDescriptorSize));
  }
  if (descriptor->abi_version != QUADRA_PLUGIN_ABI_VERSION) {
    return refuse(fmt::format("plugin ABI version mismatch: expected {}, found {} "
                              "(rebuild the plugin against this quadra SDK)",
                              QUADRA_PLUGIN_ABI_VERSION, descriptor->abi_version));
  }
  if (descriptor->struct_size < sizeof(quadra_plugin_descriptor)) {
    return refuse(fmt::format("descriptor too small for ABI {}: {} bytes, expected {}",
                              QUADRA_PLUGIN_ABI_VERSION, descriptor->struct_size,
                              sizeof(quadra_plugin_descriptor)));
  }
  if (descriptor->sdk_major != QUADRA_SDK_VERSION_MAJOR ||
      descriptor->sdk_minor > QUADRA_SDK_VERSION_MINOR) {
    return refuse(fmt::format(
        "SDK version mismatch: expected {}.x with x <= {}, found {}.{}.{}", QUADRA_SDK_VERSION_MAJOR,
        QUADRA_SDK_VERSION_MINOR, descriptor->sdk_major, descriptor->sdk_minor,
        descriptor->sdk_patch));
  }
  const char* key = or_empty(descriptor->build_key);
  if (std::strcmp(key, QUADRA_BUILD_KEY) != 0) {
    return refuse(fmt::format(
        "build key mismatch: expected '{}', found '{}' (rebuild the plugin with the compiler, "
        "standard library and Eigen that built quadra; quadra --version prints the key)",
        QUADRA_BUILD_KEY, key));
  }
  if (descriptor->register_components == nullptr) {
    return refuse("the descriptor has no registration function");
  }

  Registrar registrar(*this, file, or_empty(descriptor->library_name),
                      or_empty(descriptor->library_version));
  try {
    descriptor->register_components(registrar);
  } catch (const std::exception& e) {  // caught while the library is still loaded
    return refuse(fmt::format("registration failed: {}", e.what()));
  } catch (...) {
    return refuse("registration failed: unknown exception");
  }
  if (!registrar.status().is_ok()) return refuse(registrar.status().message());
  if (registrar.pending().empty()) return refuse("the library registers no component");

  const std::shared_ptr<const void> keep_loaded = library;
  for (Component& component : registrar.pending()) {
    component.library = keep_loaded;
    components_.push_back(std::move(component));
  }
  return Status::ok();
}

Status PluginHost::load_path(const fs::path& path) {
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) return load_library(path);
  if (!fs::is_directory(path, ec)) {
    return Status::invalid_argument(
        fmt::format("plugin path {} is neither a directory nor a file", path));
  }
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(path, ec)) {
    if (entry.is_regular_file(ec) && entry.path().extension() == QUADRA_SHARED_LIBRARY_SUFFIX) {
      files.push_back(entry.path());
    }
  }
  if (ec) return Status::invalid_argument(fmt::format("cannot read plugin directory {}: {}", path, ec.message()));
  std::sort(files.begin(), files.end());
  for (const fs::path& file : files) static_cast<void>(load_library(file));  // refusals collected
  return Status::ok();
}

Status PluginHost::load_default_paths(const std::vector<fs::path>& extra) {
  return load_default_paths(builtin_plugin_dir(), extra);
}

Status PluginHost::load_default_paths(const fs::path& builtin, const std::vector<fs::path>& extra) {
  std::vector<fs::path> paths;
  std::error_code ec;
  if (fs::is_directory(builtin, ec)) paths.push_back(builtin);
  if (const char* env = std::getenv("QUADRA_PLUGIN_PATH"); env != nullptr) {
    std::string_view rest(env);
    while (!rest.empty()) {
      const std::size_t colon = rest.find(':');
      const std::string_view item = rest.substr(0, colon);
      if (!item.empty()) paths.emplace_back(item);
      rest = colon == std::string_view::npos ? std::string_view() : rest.substr(colon + 1);
    }
  }
  paths.insert(paths.end(), extra.begin(), extra.end());
  for (const fs::path& path : paths) {
    if (Status status = load_path(path); !status.is_ok()) return status;
  }
  return Status::ok();
}

Status PluginHost::add_in_process_component(Component component, bool replace) {
  const bool has_factory = std::visit([](const auto& f) { return static_cast<bool>(f); },
                                      component.factory);
  for (Component& existing : components_) {
    if (replace && existing.kind == component.kind && existing.info.name == component.info.name &&
        existing.library_name == kInProcessLibrary) {
      Status status = check_component(nullptr, component.kind, component.info, has_factory);
      if (status.is_ok()) existing = std::move(component);
      return status;
    }
  }
  Status status = check_component(this, component.kind, component.info, has_factory);
  if (!status.is_ok()) return status;
  components_.push_back(std::move(component));
  return Status::ok();
}

const Component* PluginHost::find(PluginKind kind, std::string_view name) const {
  for (const Component& component : components_) {
    if (component.kind == kind && component.info.name == name) return &component;
  }
  return nullptr;
}

std::vector<const Component*> PluginHost::find_all(std::string_view name) const {
  std::vector<const Component*> found;
  for (const Component& component : components_) {
    if (component.info.name == name) found.push_back(&component);
  }
  return found;
}

std::vector<std::string> PluginHost::names(PluginKind kind) const {
  std::vector<std::string> result;
  for (const Component& component : components_) {
    if (component.kind == kind) result.push_back(component.info.name);
  }
  std::sort(result.begin(), result.end());
  return result;
}

Result<const Component*> PluginHost::find_checked(PluginKind kind, std::string_view name) const {
  if (const Component* component = find(kind, name)) return component;
  const std::vector<std::string> known = names(kind);
  return Status::invalid_argument(
      fmt::format("unknown {} plugin '{}'; available: {}", to_string(kind), name,
                  known.empty() ? std::string("none") : fmt::format("{}", fmt::join(known, ", "))));
}

std::string PluginHost::describe(const Component& component) {
  return fmt::format("{} '{}'", to_string(component.kind), component.info.name);
}

Status PluginHost::factory_failed(const Component& component, const Status& status) {
  return Status::failed(fmt::format("{} plugin '{}' ({}) could not be created: {}",
                                    to_string(component.kind), component.info.name,
                                    component.file,
                                    status.is_ok() ? "the factory returned no object"
                                                   : status.message()));
}

fs::path PluginHost::builtin_plugin_dir() {
  boost::dll::fs::error_code ec;
  const fs::path exe = boost::dll::program_location(ec);
  if (ec) return {};
  return (exe.parent_path() / QUADRA_PLUGIN_DIR_FROM_BINDIR).lexically_normal();
}

}  // namespace quadra
