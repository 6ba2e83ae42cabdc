#!/usr/bin/env bash
# The test command: installs what the build needs, builds, and runs every test (GoogleTest
# suites and the command-line tests) under CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/build.sh
ctest --test-dir build --output-on-failure -j "$(nproc)"
