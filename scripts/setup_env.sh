#!/usr/bin/env bash
# Make .venv for development: Python 3.11, a pinned CPU build of torch, and the test extras from
# pyproject.toml (pytest, ruff, diffusers, tokenizers, ...). Safe to run again: it reuses .venv.
#
# torch is installed first, on its own, and every later install is constrained to that version:
# a plain `pip install torch` (or a test extra that depends on torch) takes PyPI's Linux wheel,
# which is a CUDA build of several GB, while the tests need only the CPU build. The script asks
# pip's own indexes for the CPU build (TORCH_VERSION+cpu) and, when they have none, PyTorch's CPU
# wheel index (TORCH_INDEX_URL).
#
# Settings (environment): PYTHON (default python3.11), VENV (default .venv),
# TORCH_VERSION (default 2.13.0), TORCH_INDEX_URL (default PyTorch's CPU index).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}

if [ ! -x "$VENV/bin/python" ]; then
    command -v "$PYTHON" >/dev/null || { echo "setup_env.sh: $PYTHON not found; install Python 3.11 or set PYTHON=/path/to/python3.11" >&2; exit 1; }
    "$PYTHON" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip install -q)
"${pip[@]}" --upgrade pip
echo "torch==$TORCH_VERSION" > "$VENV/constraints.txt"
if ! "${pip[@]}" "torch==$TORCH_VERSION+cpu" 2>/dev/null; then
    echo "setup_env.sh: no torch $TORCH_VERSION+cpu on pip's indexes; trying $TORCH_INDEX_URL"
    "${pip[@]}" "torch==$TORCH_VERSION" --extra-index-url "$TORCH_INDEX_URL"
fi
"$VENV/bin/python" - > "$VENV/requirements-test.txt" <<'PY'
import tomllib
with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["optional-dependencies"]["test"]))
PY
"${pip[@]}" -r "$VENV/requirements-test.txt" -c "$VENV/constraints.txt"
"$VENV/bin/python" - <<'PY'
import sys

import torch

build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU build"
print(f"setup_env.sh: Python {sys.version.split()[0]}, torch {torch.__version__} ({build}) in {sys.prefix}")
PY
