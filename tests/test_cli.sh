#!/usr/bin/env bash
# End-to-end tests of the `subq` command: help, exit codes, bad arguments, bench CSV, check.
# Usage: test_cli.sh path/to/subq
set -u
SUBQ="$1"
fails=0
out=$(mktemp)
err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT

# expect STATUS DESCRIPTION -- command...: runs the command, checks its exit status.
expect() {
  local want="$1" what="$2"
  shift 3
  "$@" >"$out" 2>"$err"
  local got=$?
  if [ "$got" -ne "$want" ]; then
    echo "FAIL: $what: exit $got, expected $want"
    sed 's/^/  stdout: /' "$out" | head -5
    sed 's/^/  stderr: /' "$err" | head -5
    fails=$((fails + 1))
  else
    echo "ok:   $what"
  fi
}
# contains FILE TEXT DESCRIPTION
contains() {
  if ! grep -q -- "$2" "$1"; then
    echo "FAIL: $3: output lacks '$2'"
    fails=$((fails + 1))
  fi
}

expect 0 "subq --help" -- "$SUBQ" --help
contains "$out" "bench" "top-level help lists bench"
contains "$out" "check" "top-level help lists check"
for sub in "bench" "bench peak" "bench flash" "check"; do
  # shellcheck disable=SC2086
  expect 0 "subq $sub --help" -- "$SUBQ" $sub --help
done
"$SUBQ" bench flash --help >"$out" 2>&1
for opt in --B --T --H --Hkv --D --causal --window --dtype --backward --decode --impl --threads --csv; do
  contains "$out" -- "$opt" "bench flash --help documents $opt"
done

# Bad arguments: one line of error, status 2, never a crash.
expect 2 "no subcommand" -- "$SUBQ"
expect 2 "unknown option" -- "$SUBQ" bench flash --nonsense
expect 2 "non-numeric --T" -- "$SUBQ" bench flash --T many
expect 2 "bad --dtype" -- "$SUBQ" bench flash --dtype f64
contains "$err" "--dtype" "bad --dtype names the option"
expect 2 "bad --window" -- "$SUBQ" bench flash --window 1
contains "$err" "--window" "bad --window names the option"
expect 2 "zero --B" -- "$SUBQ" bench flash --B 0
expect 2 "bad --impl" -- "$SUBQ" bench flash --impl slow
expect 2 "bad --threads" -- "$SUBQ" bench flash --threads 0
expect 2 "window < -1" -- "$SUBQ" bench flash --T 64 --window -3,0 --reps 1
contains "$err" "window_size.left" "window error names window_size.left"
expect 2 "GQA heads not dividing" -- "$SUBQ" bench flash --T 64 --H 4 --Hkv 3 --reps 1
contains "$err" "H % Hkv == 0" "GQA error states the rule"
SUBQ_IMPL=bogus expect 2 "bad SUBQ_IMPL" -- env SUBQ_IMPL=bogus "$SUBQ" check
expect 2 "bad SUBQ_NUM_THREADS" -- env SUBQ_NUM_THREADS=zero "$SUBQ" bench peak

# Bench: CSV with the documented columns, fwd and bwd rows per thread count.
expect 0 "bench flash csv" -- "$SUBQ" bench flash --T 96 --H 2 --D 64 --causal --backward \
  --threads 1,2 --reps 1 --warmup 0 --csv
head -1 "$out" | grep -q "^op,impl,dtype,B,T,H,Hkv,D,causal,window,pass,threads,ms,gflops,peak_pct" \
  || { echo "FAIL: CSV header: $(head -1 "$out")"; fails=$((fails + 1)); }
[ "$(grep -c '^flash,fast,f32,1,96,2,2,64,1,' "$out")" -eq 4 ] \
  || { echo "FAIL: expected 4 flash rows"; cat "$out"; fails=$((fails + 1)); }
[ "$(grep -c ',bwd,' "$out")" -eq 2 ] || { echo "FAIL: expected 2 bwd rows"; fails=$((fails + 1)); }
expect 0 "bench flash decode bf16" -- "$SUBQ" bench flash --decode --T 300 --H 4 --Hkv 2 \
  --dtype bf16 --reps 1 --csv
contains "$out" "^flash_decode,fast,bf16,1,300,4,2," "decode row"
expect 0 "bench flash ref" -- "$SUBQ" bench flash --T 40 --H 1 --D 16 --impl ref --reps 1 --csv
contains "$out" "^flash,ref," "ref row"
expect 0 "bench peak" -- "$SUBQ" bench peak --threads 1
contains "$out" "peak_gflops" "bench peak prints peak_gflops"

expect 0 "bench bandwidth" -- "$SUBQ" bench bandwidth --threads 1 --csv
contains "$out" "^threads,bandwidth_gbs$" "bench bandwidth csv header"
contains "$out" "^1,[0-9]" "bench bandwidth row"
expect 2 "bench bandwidth bad --threads" -- "$SUBQ" bench bandwidth --threads 100000000

# The whole model (builds with libtorch only): the default teacher at a short length.
if "$SUBQ" bench --help 2>&1 | grep -q "^  model "; then
  expect 0 "bench model" -- "$SUBQ" bench model --lengths 16,32 --weights f32,bf16 --reps 1 \
    --decode-tokens 2 --threads 1 --csv
  contains "$out" "^length,phase,threads,weights,tok_s,ms_per_token,peak_pct,bandwidth_pct,peak_rss_mib,gemm$" \
    "bench model csv header"
  for row in "^16,prefill,1,f32," "^32,decode,1,bf16," "^32,train,1,f32,"; do
    contains "$out" "$row" "bench model row $row"
  done
  expect 2 "bench model bad --weights" -- "$SUBQ" bench model --weights f16
  expect 2 "bench model bad --phases" -- "$SUBQ" bench model --phases warmup
  expect 2 "bench model bad --lengths" -- "$SUBQ" bench model --lengths 0
  expect 2 "bad SUBQ_GEMM" -- env SUBQ_GEMM=mkl "$SUBQ" bench peak
  # The linear layers on subq's GEMM through a training step.
  expect 0 "bench model on subq's GEMM" -- env SUBQ_GEMM=subq "$SUBQ" bench model --lengths 16 \
    --phases prefill,train --reps 1 --threads 1 --csv
  contains "$out" "^16,train,1,f32," "bench model subq GEMM train row"
  expect 0 "bench gemm" -- "$SUBQ" bench gemm --rows 20 --shapes 33x70 --reps 1 --threads 1 --csv
  contains "$out" "^rows,in,out,pass,impl,threads,ms,gflops,peak_pct$" "bench gemm csv header"
  for row in "^20,33,70,fwd,torch,1," "^20,33,70,bwd_input,onednn,1," "^20,33,70,bwd_weight,subq,1,"; do
    contains "$out" "$row" "bench gemm row $row"
  done
  expect 2 "bench gemm bad --shapes" -- "$SUBQ" bench gemm --shapes 576by576
fi

# The linear-attention family: bench commands, CSV rows, decode.
for op in linear simple_gla gla hybrid conv; do
  expect 0 "bench $op" -- "$SUBQ" bench "$op" --T 128 --H 2 --D 32 --reps 1 --warmup 0 --backward --csv
  contains "$out" "^$op,fast,f32,1,128,2," "bench $op row"
done
expect 0 "bench simple_gla recurrent mode" -- "$SUBQ" bench simple_gla --T 64 --H 2 --D 16 --mode recurrent --reps 1 --csv
contains "$out" ",recurrent$" "mode column"
expect 0 "bench simple_gla decode" -- "$SUBQ" bench simple_gla --T 3000 --H 2 --D 16 --decode --reps 3 --csv
contains "$out" "^simple_gla_step," "decode row"
expect 0 "bench simple_gla vs flash" -- "$SUBQ" bench simple_gla --T 256 --H 2 --D 32 --reps 1 --compare-flash --csv
contains "$out" "^flash,fast," "flash comparison row"
expect 2 "bad --mode" -- "$SUBQ" bench simple_gla --mode diagonal
expect 2 "bad --chunk" -- "$SUBQ" bench simple_gla --T 64 --chunk 48 --reps 1
contains "$err" "chunk_size" "chunk error names chunk_size"
expect 2 "bad --width" -- "$SUBQ" bench conv --width 9

# Check: every line PASS, exit 0.
expect 0 "check" -- "$SUBQ" check
contains "$out" "^PASS  flash_forward" "check runs the forward"
contains "$out" "^PASS  flash_backward" "check runs the backward"
contains "$out" "^PASS  flash_decode" "check runs decode"
for op in linear_attention simple_gla gla short_conv feature_map hybrid; do
  contains "$out" "^PASS  $op" "check runs $op"
done
if grep -q "^FAIL" "$out"; then echo "FAIL: check printed a FAIL line"; fails=$((fails + 1)); fi

if [ "$fails" -ne 0 ]; then
  echo "$fails CLI test(s) failed"
  exit 1
fi
echo "all CLI tests passed"
