#!/bin/bash
# `subq train` end to end: a run killed with SIGKILL and resumed logs exactly the losses of an
# uninterrupted run; SIGINT writes a checkpoint and exits 130; bad input exits 2 with one line.
set -u
SUBQ=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

cat > "$dir/tiny.json" <<'JSON'
{
  "model_config": {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
                   "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                   "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 64,
                   "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
                   "tie_word_embeddings": true},
  "data": {"task": "mqar", "vocab": 64, "seq_len": 32, "num_pairs": 4},
  "batch_size": 4, "steps": 300, "lr": 3e-3, "warmup_steps": 10, "checkpoint_every": 7,
  "seed": 1
}
JSON

"$SUBQ" train --config "$dir/tiny.json" --out "$dir/whole" --threads 1 > /dev/null 2>&1 ||
  fail "the uninterrupted run"
[ "$(wc -l < "$dir/whole/log.csv")" -eq 301 ] || fail "log.csv of the whole run"

# Killed without warning part way, then resumed: the same losses, step for step.
"$SUBQ" train --config "$dir/tiny.json" --out "$dir/killed" --threads 1 > /dev/null 2>&1 &
pid=$!
for _ in $(seq 600); do
  [ -f "$dir/killed/log.csv" ] && [ "$(wc -l < "$dir/killed/log.csv")" -gt 60 ] && break
  sleep 0.05
done
kill -9 "$pid" 2> /dev/null
wait "$pid" 2> /dev/null
[ -d "$dir/killed/checkpoint" ] || [ -d "$dir/killed/checkpoint.old" ] || fail "no checkpoint after kill -9"
"$SUBQ" train --config "$dir/tiny.json" --out "$dir/killed" --threads 1 --resume > /dev/null 2>&1 ||
  fail "the resumed run"
diff <(cut -d, -f1-4 "$dir/whole/log.csv") <(cut -d, -f1-4 "$dir/killed/log.csv") > /dev/null ||
  fail "the resumed run's losses differ from the uninterrupted run's"

# SIGINT: a checkpoint, exit 130.
"$SUBQ" train --config "$dir/tiny.json" --out "$dir/int" --threads 1 > /dev/null 2> "$dir/int.err" &
pid=$!
for _ in $(seq 600); do
  [ -f "$dir/int/log.csv" ] && [ "$(wc -l < "$dir/int/log.csv")" -gt 20 ] && break
  sleep 0.05
done
kill -INT "$pid"
wait "$pid"
rc=$?
[ "$rc" -eq 130 ] || fail "SIGINT: exit $rc, expected 130"
step=$(sed -n 's/.*"step": \([0-9]*\).*/\1/p' "$dir/int/checkpoint/state.json")
rows=$(($(wc -l < "$dir/int/log.csv") - 1))
[ "$step" = "$rows" ] || fail "SIGINT: checkpoint at step $step, log at $rows"
grep -q "interrupted" "$dir/int.err" || fail "SIGINT: no message"

# Bad input: one line on stderr, exit 2.
expect_2() {
  local what=$1; shift
  "$SUBQ" "$@" > /dev/null 2> "$dir/err"
  local rc=$?
  [ "$rc" -eq 2 ] || fail "$what: exit $rc, expected 2"
  [ "$(wc -l < "$dir/err")" -eq 1 ] || fail "$what: not one line: $(cat "$dir/err")"
}
echo '{"model": "x", "stpes": 3}' > "$dir/bad.json"
expect_2 "bad config" train --config "$dir/bad.json" --out "$dir/bad"
expect_2 "missing config" train --config "$dir/none.json" --out "$dir/bad"
sed 's/"seed": 1/"seed": 2/' "$dir/tiny.json" > "$dir/other.json"
expect_2 "a checkpoint of another run" train --config "$dir/other.json" --out "$dir/whole" --resume
expect_2 "resume without a checkpoint" train --config "$dir/tiny.json" --out "$dir/empty" --resume
hash=$(sed -n 's/.*"config_hash": "\([0-9]*\)".*/\1/p' "$dir/killed/checkpoint/state.json")
printf '{"config_hash": "%s", "step": "x", "tokens": 1}' "$hash" > "$dir/killed/checkpoint/state.json"
expect_2 "a checkpoint whose step is not a number" train --config "$dir/tiny.json" --out "$dir/killed" --resume
printf 'garbage' > "$dir/killed/checkpoint/state.json"
expect_2 "a corrupt checkpoint" train --config "$dir/tiny.json" --out "$dir/killed" --resume
echo "train CLI: all passed"
