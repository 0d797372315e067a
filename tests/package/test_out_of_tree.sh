#!/usr/bin/env bash
# Installs the build tree into a fresh prefix, builds examples/custom-damping-plugin against the
# installed CMake package (the way a third party would), and loads it with the installed quadra.
# Usage: test_out_of_tree.sh BUILD_DIR SOURCE_DIR WORK_DIR
set -euo pipefail
build=$1 source=$2 work=$3
rm -rf "$work"
mkdir -p "$work"
prefix=$work/prefix

cmake --install "$build" --prefix "$prefix" > "$work/install.log"
cmake -S "$source/examples/custom-damping-plugin" -B "$work/plugin" -G Ninja \
      -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release > "$work/configure.log"
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
echo "out-of-tree plugin: OK"
