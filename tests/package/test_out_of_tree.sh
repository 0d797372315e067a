#!/usr/bin/env bash
# Installs the build tree into a fresh prefix, builds examples/custom-damping-plugin against the
# installed CMake package (the way a third party would), and loads it with the installed quadra.
# The plugin asks for the package's sdk component only, and is built with the core's
# dependencies (oneTBB, fmt, Boost, zlib) hidden from CMake: a plugin needs Eigen alone. A
# program on the library finds quadra::core with find_package(quadra) and links it.
# Usage: test_out_of_tree.sh BUILD_DIR SOURCE_DIR WORK_DIR
set -euo pipefail
build=$1 source=$2 work=$3
rm -rf "$work"
mkdir -p "$work"
prefix=$work/prefix
hide_core_dependencies=(-DCMAKE_DISABLE_FIND_PACKAGE_TBB=ON -DCMAKE_DISABLE_FIND_PACKAGE_fmt=ON
                        -DCMAKE_DISABLE_FIND_PACKAGE_Boost=ON -DCMAKE_DISABLE_FIND_PACKAGE_ZLIB=ON)

cmake --install "$build" --prefix "$prefix" > "$work/install.log"
cmake -S "$source/examples/custom-damping-plugin" -B "$work/plugin" -G Ninja \
      -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release "${hide_core_dependencies[@]}" \
      > "$work/configure.log"
cmake --build "$work/plugin" > "$work/build.log"

quadra=$prefix/bin/quadra
export QUADRA_PLUGIN_PATH=
list=$("$quadra" plugins --plugin-path "$work/plugin")
echo "$list"
grep -Eq '^damping +nielsen +1\.0\.0 ' <<<"$list"
# The installed quadra also finds its own built-in plugins in the installed tree.
grep -Eq "^damping +constant .*$prefix/" <<<"$list"
"$quadra" plugins describe nielsen --plugin-path "$work/plugin" | grep -Eq '^initial_lambda +real +1 +\(0, inf\)'
"$quadra" config --plugin-path "$work/plugin" --set optimizer.damping=nielsen \
  --set damping.initial_lambda=0.1 | grep -q '^initial_lambda = 0.1$'
# The plugin exports exactly one dynamic symbol: its entry point.
exported=$(nm -D --defined-only "$work"/plugin/libnielsen_damping.so | awk '$2 ~ /^[TDB]$/ {print $3}')
[[ "$exported" == "quadra_plugin_entry" ]] || { echo "unexpected exports: $exported"; exit 1; }

# Which targets each request for components gives, and a program that links quadra::core.
consumer=$work/consumer-src
mkdir -p "$consumer"
cat > "$consumer/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.22)
project(consumer CXX)
if(COMPONENTS STREQUAL "default")
  find_package(quadra 0.3 REQUIRED)
else()
  find_package(quadra 0.3 REQUIRED COMPONENTS ${COMPONENTS})
endif()
foreach(target IN LISTS EXPECT)
  if(NOT TARGET ${target})
    message(FATAL_ERROR "COMPONENTS ${COMPONENTS}: no target ${target}")
  endif()
endforeach()
foreach(target IN LISTS ABSENT)
  if(TARGET ${target})
    message(FATAL_ERROR "COMPONENTS ${COMPONENTS}: unexpected target ${target}")
  endif()
endforeach()
if(TARGET quadra::core)
  add_executable(consumer main.cpp)
  target_link_libraries(consumer PRIVATE quadra::core)
endif()
CMAKE
cat > "$consumer/main.cpp" <<'CPP'
#include <quadra/config.hpp>
int main() {
  quadra::Config config;
  config.apply_override("damping.lambda=0.5");
  return config.get("damping.lambda") == "0.5" ? 0 : 1;
}
CPP
configure() {  # configure NAME COMPONENTS EXPECT ABSENT [cmake args...]
  local name=$1 components=$2 expect=$3 absent=$4
  shift 4
  cmake -S "$consumer" -B "$work/$name" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" \
        -DCMAKE_BUILD_TYPE=Release "-DCOMPONENTS=$components" "-DEXPECT=$expect" \
        "-DABSENT=$absent" "$@" > "$work/$name.log" 2>&1
}
configure sdk-only sdk "quadra::sdk" "quadra::core" "${hide_core_dependencies[@]}" ||
  { cat "$work/sdk-only.log"; exit 1; }
grep -q 'quadra_add_plugin' "$prefix"/lib*/cmake/quadra/QuadraPluginHelpers.cmake
configure core core "quadra::sdk;quadra::core" "" || { cat "$work/core.log"; exit 1; }
configure default default "quadra::sdk;quadra::core" "" || { cat "$work/default.log"; exit 1; }
cmake --build "$work/default" > "$work/default-build.log" || { cat "$work/default-build.log"; exit 1; }
"$work/default/consumer"
# The core without its dependencies is an error that names the missing package.
if configure core-hidden core "" "" "${hide_core_dependencies[@]}"; then
  echo "find_package(quadra COMPONENTS core) succeeded without oneTBB"; exit 1
fi
grep -q 'TBB' "$work/core-hidden.log" || { cat "$work/core-hidden.log"; exit 1; }
if configure bogus bogus "" ""; then echo "COMPONENTS bogus was accepted"; exit 1; fi
grep -q "quadra has no component 'bogus'; its components are sdk and core" "$work/bogus.log" ||
  { cat "$work/bogus.log"; exit 1; }
echo "out-of-tree plugin: OK"
