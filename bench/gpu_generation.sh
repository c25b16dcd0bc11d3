#!/usr/bin/env bash
# Prepared GPU check for the device tool (one H200, a few minutes): bf16 and fp16 generation and
# batched vs unbatched throughput on t5-small dimensions, plus a larger batch sweep. Figures only.
# Usage (from the repository root on the device machine): bash bench/gpu_generation.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv /tmp/vb-venv
/tmp/vb-venv/bin/pip install -q --upgrade pip
/tmp/vb-venv/bin/pip install -q "torch==2.13.0" 2>/dev/null || /tmp/vb-venv/bin/pip install -q torch
/tmp/vb-venv/bin/pip install -q -e ".[generation]"
nvidia-smi --query-gpu=name,memory.total --format=csv
mkdir -p "${OUT:-/tmp}"
for precision in bf16 fp16; do
    /tmp/vb-venv/bin/python bench/generation_throughput.py --device cuda --precision "$precision" \
        --sessions 1,4,16,64,256 --requests 4 --max-batch 256 --json "${OUT:-/tmp}/generation-$precision.json"
done
