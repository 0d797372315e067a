#!/usr/bin/env bash
# with_memory_limit.sh KB -- COMMAND...
# Runs COMMAND with its address space limited to KB KiB (ulimit -v): a model or batch too large
# for that must be refused by quadra's estimate, not attempted. Chain it after expect.sh.
ulimit -v "$1" || exit 125
shift 2
exec "$@"
