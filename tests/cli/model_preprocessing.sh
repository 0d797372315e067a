#!/usr/bin/env bash
# model_preprocessing.sh QUADRA DIR INPUTS TARGETS [PYTHON_WITH_TORCH]
# A model trained by quadra carries its input preprocessing: model.npz and best.npz record it,
# the analysis commands apply it to raw inputs and say so, a conflicting --normalize or
# data.normalize is refused, training on from the file keeps it, and (with PYTHON_WITH_TORCH)
# examples/pytorch/load_model.py reproduces quadra's test accuracy in PyTorch.
set -u
quadra=$1
dir=$2
inputs=$3
targets=$4
python=${5:-}
root=$(cd "$(dirname "$0")/../.." && pwd)
rm -rf "$dir"
mkdir -p "$dir"
fail() { printf 'FAILED: %s\n%s\n' "$1" "${2:-}"; exit 1; }
run() {  # run STATUS PATTERN ARGS...
  local want=$1 pattern=$2 out status
  shift 2
  out=$("$quadra" "$@" 2>&1)
  status=$?
  [[ $status -eq $want ]] || fail "exit $status, expected $want: quadra $*" "$out"
  grep -Eq -- "$pattern" <<<"$out" || fail "no /$pattern/: quadra $*" "$out"
}
train=(train --set "model.spec=linear(32) tanh linear(10)" --set model.input_shape=784
       --set data.source=fashion-mnist --set optimizer.solver=adam --set train.batch_size=128
       --set train.max_steps=40 --set train.eval_every=20 --set train.progress=never)
run 0 "budget of 40 steps reached" "${train[@]}" --set train.out="$dir/run"
for file in model.npz best.npz checkpoint.npz; do
  [[ -f $dir/run/$file ]] || fail "the run wrote no $file"
done
model=$dir/run/model.npz
recorded="inputs preprocessed as the model file records: standardize-global \\(shift 0\\.28"
run 0 "$recorded" curvature --model "$model" --inputs "$inputs" --targets "$targets" --out "$dir/curvature"
run 0 "$recorded" bias --model "$model" --data fashion-mnist --batch-size 64 --top 2 --repeats 2 \
  --out "$dir/bias"
run 1 "--normalize minmax conflicts with --model .*model.npz, which was trained on inputs normalised by standardize-global \\(shift" \
  bias --model "$model" --data fashion-mnist --normalize minmax --batch-size 64 --top 2 --repeats 2
# Training on from the file keeps its preprocessing; another normalisation is refused.
run 0 "budget of 10 steps reached" train --set model.file="$model" --set data.source=fashion-mnist \
  --set optimizer.solver=sgd --set train.max_steps=10 --set train.progress=never --set train.out="$dir/more"
run 1 "data.normalize = minmax conflicts with model.file .*model.npz, which was trained on inputs normalised by standardize-global" \
  train --set model.file="$model" --set data.source=fashion-mnist --set data.normalize=minmax \
  --set optimizer.solver=sgd --set train.max_steps=10 --set train.out="$dir/conflict"
if [[ -n $python ]]; then
  out=$("$python" "$root/examples/pytorch/check_accuracy.py" "$model" "$dir/run/eval.csv" 2>&1) ||
    fail "PyTorch does not reproduce quadra's test accuracy" "$out"
  echo "$out"
fi
echo "model files carry their preprocessing"
