#pragma once
/// \file
/// Visibility macros. Plugins are compiled with hidden visibility (quadra_add_plugin does it), so
/// only the entry point is exported. SDK interfaces keep default visibility so that their
/// typeinfo and vtables are the same object in host and plugin.

#if defined(_WIN32)
#define QUADRA_PLUGIN_EXPORT __declspec(dllexport)
#define QUADRA_INTERFACE
#else
#define QUADRA_PLUGIN_EXPORT __attribute__((visibility("default")))
#define QUADRA_INTERFACE __attribute__((visibility("default")))
#endif
