#!/usr/bin/env bash
# Create .venv and install voicebot with the given extras (default: none = chat only).
# torch is installed first and pinned, so no extra ever pulls an unpinned multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-}"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
if [[ "$EXTRAS" == *embeddings* || "$EXTRAS" == *generation* || "$EXTRAS" == *coqui* ]]; then
    .venv/bin/python -m pip install -q "torch==2.13.0"
fi
if [ -n "$EXTRAS" ]; then
    .venv/bin/python -m pip install -q -e ".[$EXTRAS]"
else
    .venv/bin/python -m pip install -q -e .
fi
