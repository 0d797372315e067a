#!/usr/bin/env bash
# kill_rank.sh MPIRUN QUADRA WORK -- TRAIN-ARGS...
# A long `quadra train` as 3 processes; once it has taken steps, process 1 is killed (SIGKILL).
# The job must end within 60 s with a non-zero status, not hang with the other ranks waiting.
set -uo pipefail
mpirun=$1 quadra=$2 work=$3
shift 4
rm -rf "$work"
mkdir -p "$work"
"$mpirun" -np 3 --oversubscribe "$quadra" train "$@" --set "train.out=$work/run" \
  > "$work/log" 2>&1 &
job=$!
# The process of rank 1 among this mpirun's descendants (not any other job's).
rank_one() {
  local pids=($job) i=0
  while [[ $i -lt ${#pids[@]} ]]; do
    local pid=${pids[$i]}
    if tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=1; then
      echo "$pid"
      return 0
    fi
    pids+=($(cat /proc/$pid/task/*/children 2>/dev/null))
    i=$((i + 1))
  done
  return 1
}
victim=
for _ in $(seq 600); do  # up to 60 s for the run to start stepping
  if [[ -f $work/run/steps.csv && $(wc -l < "$work/run/steps.csv") -gt 3 ]]; then
    victim=$(rank_one) && break
  fi
  kill -0 "$job" 2>/dev/null || break
  sleep 0.1
done
if [[ -z $victim ]]; then
  echo "the run never reached its third step with a process of rank 1:"
  cat "$work/log"
  kill -- "$job" 2>/dev/null
  exit 1
fi
echo "killing process $victim (rank 1)"
kill -9 "$victim"
for _ in $(seq 600); do
  kill -0 "$job" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$job" 2>/dev/null; then
  echo "the job still runs 60 s after rank 1 was killed"
  kill -9 "$job"
  exit 1
fi
wait "$job"
status=$?
cat "$work/log"
echo "mpirun exited with status $status"
[[ $status -ne 0 ]]
