#pragma once
/// \file
/// The one exported entry point of a plugin library and the plain-data descriptor it returns.
/// The host checks, in order: library loads -> entry point found -> descriptor size -> ABI
/// version -> SDK version -> build key -> registration succeeded. Only then is any C++ object
/// of the plugin trusted.
///
///   QUADRA_PLUGIN("my-damping", "1.0.0", register_my_components)
///
/// defines the entry point; register_my_components(quadra::IRegistrar&) adds the components.

#include <cstdint>

#include "quadra/sdk/build_key.hpp"
#include "quadra/sdk/export.hpp"
#include "quadra/sdk/registrar.hpp"
#include "quadra/sdk/version.hpp"

extern "C" {

/// Plain data, constant-initialised: calling the entry point runs no plugin code but a return.
/// Fields are only appended; struct_size tells the host which ones a plugin has.
struct quadra_plugin_descriptor {
  std::uint32_t struct_size;
  std::uint32_t abi_version;  ///< QUADRA_PLUGIN_ABI_VERSION the plugin was compiled with
  std::uint32_t sdk_major;
  std::uint32_t sdk_minor;
  std::uint32_t sdk_patch;
  const char* build_key;        ///< QUADRA_BUILD_KEY the plugin was compiled with
  const char* library_name;     ///< e.g. "constant-damping"
  const char* library_version;  ///< the plugin's own version, e.g. "1.0.0"
  void (*register_components)(quadra::IRegistrar& registrar);
};

}  // extern "C"

/// The exported symbol's name, for the host.
#define QUADRA_PLUGIN_ENTRY_SYMBOL "quadra_plugin_entry"

/// Defines the entry point of a plugin library. Use it exactly once per library.
#define QUADRA_PLUGIN(LIBRARY_NAME, LIBRARY_VERSION, REGISTER_FUNCTION)                       \
  extern "C" QUADRA_PLUGIN_EXPORT const quadra_plugin_descriptor* quadra_plugin_entry() {     \
    static constexpr quadra_plugin_descriptor descriptor{                                     \
        sizeof(quadra_plugin_descriptor), QUADRA_PLUGIN_ABI_VERSION, QUADRA_SDK_VERSION_MAJOR, \
        QUADRA_SDK_VERSION_MINOR,         QUADRA_SDK_VERSION_PATCH,  QUADRA_BUILD_KEY,          \
        LIBRARY_NAME,                     LIBRARY_VERSION,           &(REGISTER_FUNCTION)};     \
    return &descriptor;                                                                       \
  }
