#!/usr/bin/env bash
# Create .venv with a pinned CPU torch and the pack's test extras from pyproject.toml.
# torch is pinned on its own (2.13.0 is a local CPU build on the project's machines): an
# unpinned torch, asked for directly or by a dependency, would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
echo "torch==$TORCH_VERSION" > "$VENV/constraints.txt"
"$VENV/bin/python" -m pip install -q "torch==$TORCH_VERSION"
"$VENV/bin/python" - > "$VENV/requirements-test.txt" <<'PY'
import tomllib
with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["optional-dependencies"]["test"]))
PY
"$VENV/bin/python" -m pip install -q -r "$VENV/requirements-test.txt" -c "$VENV/constraints.txt"
