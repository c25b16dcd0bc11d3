#!/usr/bin/env bash
# Install and start the demo bot, offline, on the bundled models:
#   chat at http://127.0.0.1:8080/   voice calls at http://127.0.0.1:8080/call
# VOICEBOT_DEMO_CHAT_ONLY=1 skips the voice stack (a much smaller install).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${VOICEBOT_DEMO_CHAT_ONLY:-0}" = 1 ]; then
    bash scripts/setup.sh
    export VOICEBOT_SERVER__CHANNELS="${VOICEBOT_SERVER__CHANNELS:-[\"websocket\"]}"
else
    if ! command -v espeak-ng >/dev/null 2>&1; then
        SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
        $SUDO apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q espeak-ng >/dev/null
    fi
    bash scripts/setup.sh voice
    export VOICEBOT_SERVER__CHANNELS="${VOICEBOT_SERVER__CHANNELS:-[\"websocket\", \"webrtc\"]}"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/voicebot serve "$@"
