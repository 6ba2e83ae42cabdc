#!/usr/bin/env bash
# Configures and builds subq in build/ (Release, Ninja). Extra arguments go to cmake's configure
# step, e.g. scripts/build.sh -DSUBQ_BUILD_TESTS=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja "$@" >/dev/null
cmake --build build -j "$(nproc)"
