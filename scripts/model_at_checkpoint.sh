#!/usr/bin/env bash
# The model a pix2pix-turbo or cyclegan-turbo run would have written had it stopped
# at one of its checkpoints, to measure the run's curve with `evaluate` while it trains:
#
#   bash scripts/model_at_checkpoint.sh RUN STEP OUT
#
# Copies RUN's run.json, record and checkpoints/step_<STEP> into OUT and replays the run's last recorded
# command there with --steps STEP: it resumes at STEP, trains nothing and writes OUT/model. Then
# `python -m training export OUT ... --out DIR` gives a folder `evaluate` reads. RUN is only read.
# (Latent-diffusion checkpoints: scripts/checkpoint_model.sh.)
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: $0 RUN STEP OUT" >&2; exit 2; }
run=$1 step=$2 out=$3
PYTHON=${PYTHON:-.venv/bin/python}
checkpoint=$(printf '%s/checkpoints/step_%06d' "$run" "$step")
[ -f "$checkpoint/state.json" ] || { echo "$checkpoint: no complete checkpoint" >&2; exit 2; }
[ ! -e "$out" ] || { echo "$out exists; give a new folder" >&2; exit 2; }
mkdir -p "$out/checkpoints"
cp "$run/record.json" "$run/run.json" "$out/"
cp -r "$checkpoint" "$out/checkpoints/"
mapfile -t command < <("$PYTHON" -c 'import json, sys
command = json.load(open(sys.argv[1]))["sessions"][-1]["command"]
values = {"--steps": sys.argv[2], "--out": sys.argv[3]}
for index, word in enumerate(command):
    if command[index - 1] in values:
        word = values[command[index - 1]]
    print(word)' "$run/record.json" "$step" "$out")
"${command[@]}"
