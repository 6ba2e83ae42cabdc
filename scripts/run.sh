#!/usr/bin/env bash
# The main job until `subq linearize` exists: installs, builds, verifies every op against its
# float64 reference (`subq check`), benchmarks exact attention at the issue's bar shape
# (causal, B 1, H 8, D 128, T 4096, fp32) forward and backward, with 1 and all threads, then
# runs the default teacher (SmolLM2-135M-Instruct, from its GGUF file): a greedy answer, and the
# whole model's prefill, decode and training step against this machine's peak and bandwidth.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/build.sh
./build/subq check
./build/subq bench peak
./build/subq bench flash --causal --B 1 --H 8 --D 128 --T 4096 --backward --threads "1,$(nproc)"
./build/subq bench flash --decode --B 1 --H 8 --D 128 --T 16384 --threads "1,$(nproc)" --reps 21
./build/subq generate --prompt $'<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n' \
  --max-new-tokens 32 --temperature 0 --stats
./build/subq bench bandwidth --threads "1,$(nproc)"
./build/subq bench model --lengths 1024 --threads "1,$(nproc)" --weights f32,bf16
