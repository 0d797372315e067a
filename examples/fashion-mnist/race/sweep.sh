#!/usr/bin/env bash
# The sweep behind examples/fashion-mnist/time-to-88.ini: every candidate configuration trains
# the README's MLP (784-256-10, tanh) on Fashion-MNIST for BUDGET seconds, and candidates are
# ranked by the training time (evaluations excluded) until their first evaluation with 88 %
# VALIDATION accuracy; the test set plays no part in the choice. Adam: learning rate x batch
# size; second order: solver, preconditioner, batch sizes, debiasing.
#   examples/fashion-mnist/race/sweep.sh [OUT]      (QUADRA=..., BUDGET=60, SEED=0, ONLY=REGEX)
# ONLY runs the candidates whose names match an extended regular expression.
set -euo pipefail
cd "$(dirname "$0")/../../.."
quadra=${QUADRA:-build/release/bin/quadra}
out=${1:-runs/race-sweep}
budget=${BUDGET:-60}
seed=${SEED:-0}
mkdir -p "$out/candidates"

candidate() {  # candidate NAME LINES... : writes one optimizer file
  local name=$1
  shift
  [[ -z "${ONLY:-}" || "$name" =~ $ONLY ]] || return 0
  printf '%s\n' "$@" > "$out/candidates/$name.ini"
  names+=("$name.ini")
}
names=()
for lr in 0.0005 0.001 0.002 0.004; do
  for batch in 128 256 512; do
    candidate "adam-lr$lr-b$batch" "[optimizer]" "solver = adam" "[solver]" \
      "learning_rate = $lr" "[train]" "batch_size = $batch"
  done
done
dcg=("[optimizer]" "solver = cg" "curvature = ggn" "damping = levenberg-marquardt"
     "debiasing = cg-line-search" "[debiasing]" "acceptance = estimate")
candidate cg-debiased "${dcg[@]}" "[solver]" "max_iterations = 10" "[train]" "batch_size = 1000"
candidate cg-debiased-b500 "${dcg[@]}" "[solver]" "max_iterations = 10" "[train]" "batch_size = 500"
candidate cg-debiased-diag-ef "${dcg[@]}" "[solver]" "max_iterations = 10" \
  "preconditioner = diag-ef" "[train]" "batch_size = 1000"
candidate cg-debiased-kfac "${dcg[@]}" "[solver]" "max_iterations = 10" \
  "preconditioner = kfac" "preconditioner_exponent = 1" "[train]" "batch_size = 1000"
candidate cg-debiased-subsampled "${dcg[@]}" "curvature_size = 0.25" "[solver]" \
  "max_iterations = 10" "[train]" "batch_size = 2000"
candidate cg-debiased-kfac-subsampled "${dcg[@]}" "curvature_size = 0.25" "[solver]" \
  "max_iterations = 10" "preconditioner = kfac" "preconditioner_exponent = 1" \
  "[train]" "batch_size = 2000"
candidate eigen-newton-debiased "[optimizer]" "solver = eigen-newton" "curvature = ggn" \
  "damping = levenberg-marquardt" "debiasing = rayleigh" "[debiasing]" "form = projected" \
  "acceptance = estimate" "[solver]" "rank = 20" "complement_step = 0.1" "[train]" \
  "batch_size = 500"
dkfac=("[optimizer]" "solver = kfac" "curvature = ggn" "damping = levenberg-marquardt"
       "debiasing = rayleigh" "[debiasing]" "acceptance = estimate")
candidate kfac-debiased "${dkfac[@]}" "[solver]" "inverse_interval = 10" "[train]" \
  "batch_size = 1000"
for batch in 250 500; do
  for interval in 10 20; do
    candidate "kfac-debiased-b$batch-inv$interval" "${dkfac[@]}" "[solver]" \
      "inverse_interval = $interval" "[train]" "batch_size = $batch"
  done
done
candidate kfac-debiased-inv20 "${dkfac[@]}" "[solver]" "inverse_interval = 20" "[train]" \
  "batch_size = 1000"
candidate kfac-debiased-subsampled "${dkfac[@]}" "curvature_size = 0.25" "[solver]" \
  "inverse_interval = 10" "[train]" "batch_size = 2000"
candidate kfac-debiased-pi "${dkfac[@]}" "[solver]" "inverse_interval = 10" \
  "damping_style = pi" "[train]" "batch_size = 1000"

cat > "$out/sweep.ini" <<INI
[compare]
optimizers = ${names[*]/#/candidates/}
seeds = $seed
out = $out/runs
[model]
spec = linear(256) tanh linear(10)
input_shape = 784
[data]
source = fashion-mnist
normalize = standardize-global
[train]
max_seconds = $budget
eval_every = 1000000
eval_every_seconds = 1
progress = never
INI
"$quadra" compare --config "$out/sweep.ini" --overwrite

/usr/bin/python3 - "$out/runs/curves.csv" <<'PY'
import csv, sys
first = {}
for row in csv.DictReader(open(sys.argv[1])):
    name = row["optimizer"]
    accuracy = float(row["val_accuracy"] or "nan")
    if accuracy >= 0.88 and name not in first:
        first[name] = (float(row["train_seconds"]), int(row["step"]))
    first.setdefault(name + "#seen", None)
names = sorted({k[:-5] for k in first if k.endswith("#seen")},
               key=lambda n: first.get(n, (float("inf"), 0))[0])
print("\ntraining time until 88 % validation accuracy (the sweep's criterion):")
for n in names:
    t = first.get(n)
    print(f"  {n:<32} " + (f"{t[0]:7.1f} s  (step {t[1]})" if t else "not reached"))
PY
