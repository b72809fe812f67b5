#!/usr/bin/env bash
# Train the mini ladder, one stage after another, each resuming from its last checkpoint: run it
# again after any interruption and it continues where it stopped (a finished stage is skipped).
#
#   bash scripts/train_mini.sh [STAGE ...]      # default: every stage, in order
#
# Stages: data vae ldm one-step classifier sketch edge day-night clear-rainy preview export evaluate.
# DATA (default /work/data) and RUNS (default /work/runs) say where datasets and runs live; both are
# outside the repository and rebuilt or resumed by this script. One stage runs at a time and uses
# every core (torch's own threads); the runner keeps freed memory in the process (glibc). While
# other work shares the cores, set OMP_NUM_THREADS=1: a two-thread run on a busy two-core machine
# waits at every parallel region for its descheduled thread (10 s a step instead of 0.65 here).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-/work/data}
RUNS=${RUNS:-/work/runs}
PYTHON=${PYTHON:-.venv/bin/python}
mkdir -p "$RUNS"

finished() {  # a run whose record says it reached its --steps
  [ -f "$1/record.json" ] && grep -q '"status": "finished"' "$1/record.json"
}

train() {  # train RUN RECIPE FLAGS...: resume RUN, or skip it when it has finished
  local run=$1; shift
  if finished "$run"; then echo "== $run: finished"; return; fi
  echo "== $run: $*"
  "$PYTHON" -m training "$@" --out "$run" --resume
}

stage() {
  case $1 in
    data)
      [ -f "$DATA/emoji/summary.json" ] || "$PYTHON" -m training data emoji --out "$DATA/emoji"
      [ -f "$DATA/scenes/summary.json" ] || "$PYTHON" -m training data scenes --out "$DATA/scenes" --count 2000 ;;
    vae)
      train "$RUNS/vae" autoencoder --dataset "$DATA/emoji/captioned" --also "$DATA/scenes/captioned" \
        --crop 32 --batch-size 32 --lr 1e-3 --lr-schedule cosine --steps 8000 --disc-start 1000000 \
        --checkpoint-every 500 --sample-every 1000 ;;
    ldm)
      train "$RUNS/ldm" latent-diffusion --vae "$RUNS/vae" --dataset "$DATA/emoji/captioned" \
        --unet-channels 32,64,128,128 --norm-groups 16 --head-channels 32 --text-width 128 --text-layers 2 \
        --text-heads 4 --batch-size 64 --lr 5e-4 --lr-schedule cosine --ema-decay 0.999 --steps 3000 \
        --checkpoint-every 250 --sample-every 500 ;;
    one-step)
      train "$RUNS/one-step" one-step --teacher "$RUNS/ldm" --dataset "$DATA/emoji/captioned" \
        --batch-size 16 --lr 1e-4 --lr-schedule cosine --final-step-fraction 0.75 --steps 3000 \
        --checkpoint-every 250 --sample-every 500 ;;
    classifier)  # the yardstick and the perceptual loss of the task stages
      train "$RUNS/classifier" classifier --dataset "$DATA/emoji" "$DATA/scenes:900" --resolution 64 \
        --widths 32,64,128,256 --batch-size 64 --lr 3e-3 --lr-schedule cosine --steps 3000 \
        --checkpoint-every 250 --sample-every 1000 ;;
    sketch|edge)
      train "$RUNS/$1" pix2pix-turbo --base "$RUNS/one-step/model" --task "$1" --dataset "$DATA/emoji/$1" \
        --perceptual "$RUNS/classifier" --batch-size 4 --lr 4e-4 --lr-schedule cosine --gan-start 500 \
        --steps 3000 --checkpoint-every 250 --sample-every 500 ;;
    day-night|clear-rainy)
      train "$RUNS/$1" cyclegan-turbo --base "$RUNS/one-step/model" --dataset "$DATA/scenes/${1/-/_}" \
        --perceptual "$RUNS/classifier" --batch-size 2 --rank-unet 16 --lr 4e-4 --lr-schedule cosine \
        --steps 2000 --checkpoint-every 100 --sample-every 250 ;;
    preview)
      train "$RUNS/preview" preview-decoder --base "$RUNS/one-step/model" --dataset "$DATA/emoji/captioned" \
        --also "$DATA/scenes/captioned" --batch-size 8 --lr 1e-3 --lr-schedule cosine --steps 1500 \
        --checkpoint-every 250 --sample-every 500 ;;
    export)
      rm -rf "$RUNS/mini-export"
      "$PYTHON" -m training export "$RUNS/sketch" "$RUNS/edge" "$RUNS/day-night" "$RUNS/clear-rainy" \
        --out "$RUNS/mini-export" --dtype float16 --preview-decoder "$RUNS/preview" ;;
    evaluate)
      "$PYTHON" -m training evaluate "$RUNS/mini-export" --classifier "$RUNS/classifier" --emoji "$DATA/emoji" \
        --scenes "$DATA/scenes" --teacher "$RUNS/ldm" --device cpu --out "$RUNS/eval/mini-export.json" ;;
    *) echo "unknown stage $1" >&2; exit 2 ;;
  esac
}

stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(data vae ldm one-step classifier sketch edge day-night clear-rainy preview export evaluate)
for name in "${stages[@]}"; do
  stage "$name"
done
