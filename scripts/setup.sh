#!/usr/bin/env bash
# Installs the Debian packages that subq's build and tests need. Idempotent: a package that is
# already installed is left alone, and apt is only called when something is missing.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libhwy-dev          # Highway: portable SIMD with runtime dispatch
  libcli11-dev        # the `subq` command line
  nlohmann-json3-dev  # JSON (configs, bench output)
  libgtest-dev libgmock-dev
  clang-format
)
# Only for `bench/gemm_candidates` (the measurement behind docs/performance.md); the library
# itself does not link them.
packages+=(libxsmm-dev libeigen3-dev)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} Debian packages present"
  exit 0
fi
echo "setup: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
