#!/usr/bin/env bash
# train_ranks.sh MPIRUN QUADRA NPY_TOOL WORK STEPS -- TRAIN-ARGS...
# `quadra train` (float64, STEPS steps) alone, then as 1, 2 and 3 processes, twice each: the two
# runs with R processes give bitwise the same model, with one process bitwise the run alone's,
# with 2 and 3 within 1e-12 of it (relative to the largest parameter; float64). Then a run of 2 processes
# stopped halfway resumes as 1, 2 and 3 processes: with 2 bitwise the uninterrupted 2-process
# model, with 1 and 3 within 1e-12 of the run alone. Every run's evaluations find the same
# accuracies as the run alone's.
set -euo pipefail
mpirun=$1 quadra=$2 npy_tool=$3 work=$4 steps=$5
shift 6
rm -rf "$work"
mkdir -p "$work"
train() {  # OUT COMMAND...: trains into OUT
  local out=$1
  shift
  "$@" train "${args[@]}" --set "train.out=$out" --set train.progress=never > "$out.log" 2>&1 ||
    { cat "$out.log"; return 1; }
}
same() {  # RUN-A RUN-B TOLERANCE: their model.npz parameters
  "$npy_tool" parameters "$1/model.npz" "$2/model.npz" "$3"
}
args=("$@" --set model.precision=float64 --set "train.max_steps=$steps")
train "$work/alone" "$quadra"
for ranks in 1 2 3; do
  for run in a b; do
    train "$work/np$ranks-$run" "$mpirun" -np "$ranks" --oversubscribe "$quadra"
  done
  grep -q "\"ranks\": $ranks," "$work/np$ranks-a/manifest.json"
  if [[ $ranks -eq 1 ]]; then  # what a rank sends per step: nothing alone
    grep -q '"bytes_sent_per_step": null,' "$work/np1-a/manifest.json"
    grep -q '"collectives_per_step": null,' "$work/np1-a/manifest.json"
  else
    grep -Eq '"bytes_sent_per_step": [1-9][0-9.e+]*,' "$work/np$ranks-a/manifest.json"
    grep -Eq '"collectives_per_step": [1-9][0-9.e+]*,' "$work/np$ranks-a/manifest.json"
  fi
  echo "$ranks processes, run to run:"
  same "$work/np$ranks-a" "$work/np$ranks-b" 0
  # Evaluations count the same correct predictions (eval.csv: step, val and test accuracy).
  diff <(cut -d, -f1,6,8 "$work/alone/eval.csv") <(cut -d, -f1,6,8 "$work/np$ranks-a/eval.csv")
  echo "$ranks processes against one alone:"
  if [[ $ranks -eq 1 ]]; then
    same "$work/alone" "$work/np1-a" 0
  else
    same "$work/alone" "$work/np$ranks-a" 1e-12
  fi
done
# Half the steps on 2 processes, then the rest on 1, 2 and 3 from the same checkpoint.
args=("$@" --set model.precision=float64 --set "train.max_steps=$((steps / 2))")
train "$work/half" "$mpirun" -np 2 --oversubscribe "$quadra"
args=("$@" --set model.precision=float64 --set "train.max_steps=$steps" --resume)
for ranks in 1 2 3; do
  cp -r "$work/half" "$work/resumed-np$ranks"
  train "$work/resumed-np$ranks" "$mpirun" -np "$ranks" --oversubscribe "$quadra"
  grep -q '"resumed_from_step": '$((steps / 2)) "$work/resumed-np$ranks/manifest.json"
  echo "resumed on $ranks processes:"
  if [[ $ranks -eq 2 ]]; then
    same "$work/np2-a" "$work/resumed-np2" 0
  else
    same "$work/alone" "$work/resumed-np$ranks" 1e-12
  fi
done
