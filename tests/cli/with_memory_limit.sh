#!/usr/bin/env bash
# with_memory_limit.sh KB -- COMMAND...
# Runs COMMAND with its address space limited to KB KiB (ulimit -v), so that a model, batch or
# file too large for that is refused by quadra's own size checks, not attempted, even on a
# machine with memory to spare. Chain it after expect.sh.
set -eu
limit=$1
shift
if [[ ${1-} == -- ]]; then shift; fi
ulimit -v "$limit" || exit 125
exec "$@"
