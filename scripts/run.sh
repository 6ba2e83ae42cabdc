#!/usr/bin/env bash
# The main job until `subq linearize` exists: installs, builds, verifies every op against its
# float64 reference (`subq check`), then benchmarks exact attention at the issue's bar shape
# (causal, B 1, H 8, D 128, T 4096, fp32) forward and backward, with 1 and all threads.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/build.sh
./build/subq check
./build/subq bench peak
./build/subq bench flash --causal --B 1 --H 8 --D 128 --T 4096 --backward --threads "1,$(nproc)"
./build/subq bench flash --decode --B 1 --H 8 --D 128 --T 16384 --threads "1,$(nproc)" --reps 21
