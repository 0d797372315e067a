#!/usr/bin/env bash
# with_memory_limit.sh KB -- COMMAND...
# Runs COMMAND with its address space limited to KB kilobytes (ulimit -v), so that a loader
# that allocates whatever a hostile file declares fails here even on a machine with memory to
# spare. Used with expect.sh by tests/cli/inputs.cmake.
set -eu
limit=$1
shift
if [[ ${1-} == -- ]]; then shift; fi
ulimit -v "$limit"
exec "$@"
