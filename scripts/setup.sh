#!/usr/bin/env bash
# Create .venv (once) and install the pinned packages into it. Usage: scripts/setup.sh [dev]
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
requirements=requirements.txt
[ "${1:-}" = dev ] && requirements=requirements-dev.txt
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r "$requirements"
