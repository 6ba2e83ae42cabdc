#!/bin/bash
# `subq eval` end to end on the default teacher: it retrieves a passkey at 256 tokens, a run
# killed with SIGKILL and resumed reports exactly the rows of an uninterrupted run, and bad
# input exits 2 with one line; subq plot draws training curves.
set -u
SUBQ=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# Bad input: one line on stderr, exit 2, before any model is loaded.
expect_error() {
  local what=$1
  shift
  "$SUBQ" "$@" > /dev/null 2> "$dir/err"
  local rc=$?
  [ "$rc" -eq 2 ] || fail "$what: exit $rc, expected 2"
  [ "$(wc -l < "$dir/err")" -eq 1 ] || fail "$what: expected one line, got: $(cat "$dir/err")"
}
expect_error "unknown task" eval mmlu
expect_error "bad lengths" eval passkey --lengths 1K,abc
expect_error "zero trials" eval passkey --trials 0 --lengths 256
expect_error "short length" eval passkey --lengths 8
expect_error "missing model" eval passkey --model "$dir/none.gguf"
expect_error "bad weights" eval speed --weights f16

# The teacher retrieves the key at 256 tokens, every trial.
"$SUBQ" eval passkey --lengths 256 --trials 3 --csv > "$dir/pk.csv" 2> /dev/null ||
  fail "passkey at 256 tokens"
grep -q '^SmolLM2-135M-Instruct.Q4_1,passkey,256,,accuracy,1,3 trials$' "$dir/pk.csv" ||
  fail "passkey accuracy at 256 tokens: $(grep accuracy "$dir/pk.csv")"

# Killed part way, then run again with the same --out: it resumes and ends with the rows of an
# uninterrupted run.
args=(eval niah --lengths 512 --trials 6 --threads 1)
"$SUBQ" "${args[@]}" --out "$dir/whole" > /dev/null 2>&1 || fail "the uninterrupted run"
"$SUBQ" "${args[@]}" --out "$dir/killed" > /dev/null 2>&1 &
pid=$!
for _ in $(seq 600); do
  [ -f "$dir/killed/units.csv" ] && [ "$(grep -c '^done,' "$dir/killed/units.csv")" -ge 2 ] && break
  sleep 0.05
done
kill -9 "$pid" 2> /dev/null
wait "$pid" 2> /dev/null
[ ! -f "$dir/killed/summary.csv" ] || fail "the killed run finished before it was killed"
"$SUBQ" "${args[@]}" --out "$dir/killed" > /dev/null 2> "$dir/resume.err" || fail "the resumed run"
grep -q "units already done" "$dir/resume.err" || fail "the second run did not resume"
diff "$dir/whole/summary.csv" "$dir/killed/summary.csv" > /dev/null ||
  fail "the resumed run's rows differ from the uninterrupted run's"

# The same --out with other settings is refused.
expect_error "other settings" eval niah --lengths 512 --trials 5 --out "$dir/whole"
# subq plot: the loss curves of runs (a directory holding log.csv, or the file).
mkdir -p "$dir/run"
printf 'step,loss,lr,grad_norm,tokens,seconds\n1,5.5,0.001,1,64,0.1\n2,4.5,0.001,1,128,0.2\n' \
  > "$dir/run/log.csv"
"$SUBQ" plot "$dir/run" --out "$dir/loss.svg" > /dev/null 2>&1 || fail "subq plot"
[ -s "$dir/loss.svg" ] && [ -s "$dir/loss.png" ] || fail "subq plot wrote no SVG and PNG"
expect_error "plot of a missing log" plot "$dir/nothing/log.csv" --out "$dir/x"
expect_error "plot of a file that is not a log" plot "$dir/whole/summary.csv" --out "$dir/x"
echo "eval cli: all passed"
