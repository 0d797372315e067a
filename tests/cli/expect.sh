#!/usr/bin/env bash
# expect.sh STATUS PATTERN -- COMMAND...
# Runs COMMAND and passes when it exits with STATUS and its combined output matches the
# extended regular expression PATTERN (several, each matching some line: 'A &&& B'). Prints
# what it got otherwise.
set -u
want_status=$1
pattern=$2
shift 3
output=$("$@" 2>&1)
status=$?
if [[ $status -ne $want_status ]]; then
  printf 'expected exit status %s, got %s\ncommand: %s\noutput:\n%s\n' "$want_status" "$status" "$*" "$output"
  exit 1
fi
rest=$pattern
while [[ -n $rest ]]; do
  one=${rest%% &&& *}
  if [[ $one == "$rest" ]]; then rest=""; else rest=${rest#* &&& }; fi
  if ! grep -Eq -- "$one" <<<"$output"; then
    printf 'output does not match /%s/\ncommand: %s\noutput:\n%s\n' "$one" "$*" "$output"
    exit 1
  fi
done
exit 0
