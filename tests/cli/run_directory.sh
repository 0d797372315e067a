#!/usr/bin/env bash
# run_directory.sh QUADRA DIR COMPARE_CONFIG -- TRAIN_ARGS...
# The life of a train.out: a second run into it is refused, --overwrite replaces the run,
# --resume continues it (removing an interrupted write's temporary), and a directory another
# process holds locked is refused with the owner's pid; a compare.out that holds an earlier
# comparison is refused unless --overwrite. Prints what failed.
set -u
quadra=$1
dir=$2
compare_config=$3
shift 4
rm -rf "$dir" "$dir-compare"
fail() { printf 'FAILED: %s\n%s\n' "$1" "${2:-}"; exit 1; }
expect() {  # expect STATUS PATTERN ARGS...
  local want=$1 pattern=$2 out status
  shift 2
  out=$("$quadra" train "$@" --set train.out="$dir" 2>&1)
  status=$?
  [[ $status -eq $want ]] || fail "exit $status, expected $want: $*" "$out"
  grep -Eq -- "$pattern" <<<"$out" || fail "no /$pattern/: $*" "$out"
}
expect 0 "budget of 2 steps reached" "$@" --set train.max_steps=2
expect 1 "train.out \"$dir\" already holds a run \\(manifest.json\\); continue it with --resume, replace it with --overwrite, or choose another train.out" \
  "$@" --set train.max_steps=2
expect 0 "budget of 3 steps reached: 3 steps" "$@" --set train.max_steps=3 --overwrite
[[ $(wc -l < "$dir/steps.csv") -eq 4 ]] || fail "steps.csv of the overwriting run has $(wc -l < "$dir/steps.csv") lines, expected 4"
echo "half a file" > "$dir/.model.npz.tmp-AbC123"
expect 0 "budget of 4 steps reached: 4 steps" "$@" --set train.max_steps=4 --resume
[[ ! -e "$dir/.model.npz.tmp-AbC123" ]] || fail "the stale temporary survived --resume"
expect 2 "give one of them" "$@" --set train.max_steps=5 --resume --overwrite
# Another process holds the lock (flock(1) on the lock file, as a live run would).
flock --close "$dir/.quadra.lock" sleep 30 >/dev/null 2>&1 &
holder=$!
sleep 0.5
expect 1 "train.out \"$dir\" is in use by another quadra run" "$@" --set train.max_steps=5 --resume
kill $(pgrep -P "$holder") "$holder" 2>/dev/null
wait "$holder" 2>/dev/null
# A lock file left by a process that is gone is taken over.
expect 0 "budget of 5 steps reached" "$@" --set train.max_steps=5 --resume

compare() { "$quadra" compare --config "$compare_config" --set compare.out="$dir-compare" \
  --set compare.optimizers=moons-sgd.ini --set compare.seeds=0 "$@" 2>&1; }
out=$(compare) || fail "the first comparison failed" "$out"
out=$(compare) && fail "a second comparison into the same compare.out was accepted" "$out"
grep -q "compare.out \"$dir-compare\" already holds a comparison (\"$dir-compare/moons-sgd/seed0\" holds a run); replace it with --overwrite" <<<"$out" ||
  fail "no refusal of the used compare.out" "$out"
out=$(compare --overwrite) || fail "--overwrite was refused" "$out"
echo "run directories behave"
