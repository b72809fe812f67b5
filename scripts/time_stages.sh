#!/usr/bin/env bash
# Time the mini ladder's stages on this machine with short runs of scripts/train_mini.sh's flags: the shipped
# mini (assets/mini) stands in for the base and the teacher, a 25-step classifier of the ladder's network for the
# perceptual one. Prints each run's median step (what a long run's steps take; a short run's wall time is mostly
# its set-up) and device. Pause any training first: the runs share the cores.
#
#   DATA=/work/data bash scripts/time_stages.sh      # the datasets that `train_mini.sh data` builds
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-/work/data}
PYTHON=${PYTHON:-.venv/bin/python}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
short=(--checkpoint-every 1000 --sample-every 1000)
run() {  # run NAME COMMAND...: one short run, its output kept in a log shown only on failure
  local name=$1; shift
  "$@" "${short[@]}" > "$out/$name.log" 2>&1 || { tail -5 "$out/$name.log"; exit 1; }
}
run classifier "$PYTHON" -m training classifier --dataset "$DATA/emoji" "$DATA/scenes:900" --resolution 64 \
  --widths 32,64,128,256 --lr 3e-3 --steps 40 --batch-size 64 --out "$out/classifier"
run one-step "$PYTHON" -m training one-step --teacher assets/mini --dataset "$DATA/emoji/captioned" \
  --prediction-type v_prediction --lr 2e-4 --final-step-fraction 0.75 --colour-variants --distill-pairs 256 \
  --distill-guidance 3 --steps 20 --batch-size 16 --out "$out/one-step"
run sketch "$PYTHON" -m training pix2pix-turbo --base assets/mini --task sketch --dataset "$DATA/emoji/sketch" \
  --perceptual "$out/classifier" --lr 4e-4 --gan-start 0 --steps 20 --batch-size 4 --out "$out/sketch"
run day-night "$PYTHON" -m training cyclegan-turbo --base assets/mini --dataset "$DATA/scenes/day_night" \
  --perceptual "$out/classifier" --rank-unet 16 --lr 4e-4 --lambda-gan 2 --steps 20 --batch-size 2 --out "$out/day-night"
OMP_NUM_THREADS=1 run preview "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node 2 -m training \
  preview-decoder --base assets/mini --dataset "$DATA/emoji/captioned" --also "$DATA/scenes/captioned" --lr 1e-3 \
  --steps 30 --batch-size 4 --out "$out/preview"
for name in classifier one-step sketch day-night preview; do
  "$PYTHON" -c 'import json, sys; s = json.load(open(sys.argv[2]))["sessions"][-1]
print("{:<11} median step {:.2f} s  {}, {} process(es)".format(sys.argv[1], s["step_s_median"], s["device"], s.get("processes", 1)))' \
    "$name" "$out/$name/record.json"
done
