#!/bin/bash
# Training really learns: the 2-layer softmax model of configs/mqar_softmax_2layer.json, trained
# with `subq train` on Zoology's MQAR (T 64, K 4, V 256), answers at least 99% of the queries of
# 1000 sequences it never saw (`subq eval mqar`). Softmax attention keeps every key, so its state
# is enough for the task, as in Zoology. One thread, so that it shares the cores with the tests
# ctest runs beside it without oversubscribing them (ctest label: slow).
set -u
SUBQ=$1
CONFIG=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$SUBQ" train --config "$CONFIG" --out "$dir/run" --threads 1 > /dev/null 2>&1 || fail "subq train"
"$SUBQ" eval mqar --model "$dir/run/checkpoint" --vocab 256 --lengths 64 --pairs 4 \
  --examples 1000 --threads 1 --csv > "$dir/mqar.csv" 2> /dev/null || fail "subq eval mqar"
acc=$(awk -F, '$5 == "accuracy" { print $6 }' "$dir/mqar.csv")
echo "MQAR (T 64, K 4, V 256) accuracy after training: $acc; final loss: $(tail -1 "$dir/run/log.csv" | cut -d, -f2)"
awk -v a="$acc" 'BEGIN { exit !(a >= 0.99) }' || fail "accuracy $acc is below 0.99"
