#pragma once
/// \file
/// The build key: the toolchain facts on which the C++ plugin ABI depends. A plugin bakes the
/// key in at compile time (this header is compiled into it); the host compares it with its own
/// at load time and refuses a plugin built differently, printing both keys.

#include <Eigen/Core>

#define QUADRA_DETAIL_STR2(x) #x
#define QUADRA_DETAIL_STR(x) QUADRA_DETAIL_STR2(x)

#if defined(__clang__)
#define QUADRA_DETAIL_COMPILER "clang-" QUADRA_DETAIL_STR(__clang_major__)
#elif defined(__GNUC__)
#define QUADRA_DETAIL_COMPILER "gcc-" QUADRA_DETAIL_STR(__GNUC__)
#elif defined(_MSC_VER)
#define QUADRA_DETAIL_COMPILER "msvc-" QUADRA_DETAIL_STR(_MSC_VER)
#else
#define QUADRA_DETAIL_COMPILER "unknown-compiler"
#endif

// Clang and GCC share libstdc++'s ABI, so the standard library is keyed separately: a clang
// plugin built against libstdc++ differs from a gcc host only in the compiler field.
#if defined(_LIBCPP_VERSION)
#define QUADRA_DETAIL_STDLIB "libc++-" QUADRA_DETAIL_STR(_LIBCPP_ABI_VERSION)
#elif defined(__GLIBCXX__)
#define QUADRA_DETAIL_STDLIB "libstdc++-cxx11abi" QUADRA_DETAIL_STR(_GLIBCXX_USE_CXX11_ABI)
#else
#define QUADRA_DETAIL_STDLIB "unknown-stdlib"
#endif

#define QUADRA_DETAIL_EIGEN                                                  \
  "eigen-" QUADRA_DETAIL_STR(EIGEN_WORLD_VERSION) "." QUADRA_DETAIL_STR(     \
      EIGEN_MAJOR_VERSION) "-align" QUADRA_DETAIL_STR(EIGEN_MAX_ALIGN_BYTES) \
      "-index" QUADRA_DETAIL_STR(EIGEN_DEFAULT_DENSE_INDEX_TYPE)

/// The key, e.g. "gcc-12/libstdc++-cxx11abi1/eigen-3.4-align16-indexstd::ptrdiff_t".
#define QUADRA_BUILD_KEY QUADRA_DETAIL_COMPILER "/" QUADRA_DETAIL_STDLIB "/" QUADRA_DETAIL_EIGEN
