#!/usr/bin/env bash
# Set up the dev environment and run the whole test suite (CPU, no network, tiny models).
# The tests run in two worker processes (pytest-xdist, one file per worker at a time), each with one
# torch thread, so both cores stay busy; add `-n 0` to run them in this process. With --timing (the
# time budgets and the latency benchmark) they run in this process with torch's own threads, as the
# app would.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
export HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
parallel=(-n "${TEST_WORKERS:-2}" --dist loadfile)
for argument in "$@"; do
  [ "$argument" = --timing ] && parallel=()
done
if [ ${#parallel[@]} -gt 0 ]; then
  export OMP_NUM_THREADS=1
fi
.venv/bin/python -m pytest -q "${parallel[@]}" "$@"
