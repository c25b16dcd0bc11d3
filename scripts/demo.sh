#!/usr/bin/env bash
# Install (chat-only, offline-capable) and start the demo bot on http://127.0.0.1:8080/
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/voicebot serve "$@"
