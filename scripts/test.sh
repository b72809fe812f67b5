#!/usr/bin/env bash
# Set up the dev environment and run the whole test suite (CPU, no network, tiny models).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
export HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
.venv/bin/python -m pytest -q "$@"
