#!/usr/bin/env bash
# interrupt_ranks.sh MPIRUN QUADRA WORK -- TRAIN-ARGS...
# A long `quadra train` as 2 processes gets SIGINT (Ctrl-C) once it has taken steps: the ranks
# finish the step, rank 0 writes the checkpoint and says so, the job ends within 60 s, and the
# run then resumes as one process.
set -uo pipefail
mpirun=$1 quadra=$2 work=$3
shift 4
rm -rf "$work"
mkdir -p "$work"
"$mpirun" -np 2 --oversubscribe "$quadra" train "$@" --set train.max_steps=100000000 \
  --set "train.out=$work/run" > "$work/log" 2>&1 &
job=$!
for _ in $(seq 600); do  # up to 60 s for the run to start stepping
  [[ -f $work/run/steps.csv && $(wc -l < "$work/run/steps.csv") -gt 3 ]] && break
  kill -0 "$job" 2>/dev/null || break
  sleep 0.1
done
kill -INT "$job"
for _ in $(seq 600); do
  kill -0 "$job" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$job" 2>/dev/null; then
  echo "the job still runs 60 s after SIGINT"
  kill -9 "$job"
  exit 1
fi
wait "$job"
echo "mpirun exited with status $?"
cat "$work/log"
grep -q "^interrupted; continue with --resume: " "$work/log" || exit 1
steps=$(grep -o "^interrupted; continue with --resume: [0-9]* steps" "$work/log" | grep -o '[0-9]*')
"$quadra" train "$@" --set "train.max_steps=$((steps + 5))" --set "train.out=$work/run" --resume \
  > "$work/resumed.log" 2>&1 || { cat "$work/resumed.log"; exit 1; }
cat "$work/resumed.log"
grep -q '"ranks": 1,' "$work/run/manifest.json"
