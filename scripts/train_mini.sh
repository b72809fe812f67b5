#!/usr/bin/env bash
# Train the mini ladder, one stage after another, each resuming from its last checkpoint: run it
# again after any interruption and it continues where it stopped (a finished stage is skipped).
#
#   bash scripts/train_mini.sh [STAGE ...]      # default: every stage, in order
#
# Stages: data vae ldm one-step classifier sketch edge day-night clear-rainy preview export evaluate ship, and
# tasks: the five task stages as two one-thread lanes side by side (sketch, edge, clear-rainy | day-night,
# preview), each logging to $RUNS/lane-*.log (the default ladder runs them so); with edge's 12,000 steps in
# the first lane, about as soon as one stage at a time.
# ship (not in the default ladder, once the evaluation passes) puts the export and its evaluation in assets/mini.
# DATA (default /work/data) and RUNS (default /work/runs) say where datasets and runs live; both are
# outside the repository and rebuilt or resumed by this script. Outside `tasks`, one stage runs at a
# time and uses every core (torch's own threads); the runner keeps freed memory in the process (glibc).
# Beside other work, run it with `nice -n -15` and the kernel's autogroup scheduling off
# (`echo 0 > /proc/sys/kernel/sched_autogroup_enabled`, as root): with autogroup on, each terminal
# session gets an equal share whatever its nice value, a two-thread run waits at every parallel
# region for its descheduled thread, and a step takes 5-7x as long (measured here: 14.5 s instead
# of 2.2 s for the VAE at 128 px, batch 8). Without root, set OMP_NUM_THREADS=1 instead.
set -euo pipefail
SELF=$(realpath "$0")
cd "$(dirname "$SELF")/.."
DATA=${DATA:-/work/data}
RUNS=${RUNS:-/work/runs}
PYTHON=${PYTHON:-.venv/bin/python}
mkdir -p "$RUNS"

finished() {  # finished RUN STEPS: the run has finished STEPS steps, or gone past them in a later phase
  # (a larger --steps continues it)
  [ -f "$1/record.json" ] && "$PYTHON" -c 'import json, sys; record = json.load(open(sys.argv[1]))
done, steps = record.get("steps_done", 0), int(sys.argv[2])
sys.exit(0 if done > steps or (done == steps and record.get("status") == "finished") else 1)' "$1/record.json" "$2"
}

steps_of() {  # the value of --steps among the arguments
  while [ $# -gt 1 ]; do [ "$1" = --steps ] && { echo "$2"; return; }; shift; done
  echo 0
}

train() {  # train RUN PROCESSES GLOBAL_BATCH RECIPE FLAGS...: resume RUN, or skip it when it has finished
  # PROCESSES > 1: that many processes of one thread each (torchrun), each with its share of the batch;
  # bench/results/training_processes.json says which recipes train faster so on two cores
  local run=$1 processes=$2 batch=$3; shift 3
  if finished "$run" "$(steps_of "$@")"; then echo "== $run: finished"; return; fi
  echo "== $run ($processes process(es), global batch $batch): $*"
  if [ "$processes" -gt 1 ]; then
    OMP_NUM_THREADS=1 "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$processes" \
      -m training "$@" --batch-size $((batch / processes)) --out "$run" --resume
  else
    "$PYTHON" -m training "$@" --batch-size "$batch" --out "$run" --resume
  fi
}

cyclegan() {  # cyclegan PAIR FLAGS...: a CycleGAN-Turbo run on the scenes pair, at a constant rate unless FLAGS
  # say otherwise; about 4.7 s a step; checkpoints every 100 steps let `evaluate` show the curve
  local pair=$1; shift
  train "$RUNS/$pair" 1 2 cyclegan-turbo --base "$RUNS/one-step/model" --dataset "$DATA/scenes/${pair/-/_}" \
    --perceptual "$RUNS/classifier" --rank-unet 16 --lr 4e-4 --checkpoint-every 100 --sample-every 200 "$@"
}

pix2pix() {  # pix2pix RUN TASK FLAGS...: a pix2pix-Turbo run on the emoji TASK pairs (sketch, edge); about 1 s a step
  local run=$1 task=$2; shift 2
  train "$RUNS/$run" 1 4 pix2pix-turbo --base "$RUNS/one-step/model" --task "$task" --dataset "$DATA/emoji/$task" \
    --perceptual "$RUNS/classifier" --lr 4e-4 --lr-schedule cosine --gan-start 500 --checkpoint-every 250 \
    --sample-every 500 "$@"
}

stage() {
  case $1 in
    data)
      [ -f "$DATA/emoji/summary.json" ] || "$PYTHON" -m training data emoji --out "$DATA/emoji"
      [ -f "$DATA/scenes/summary.json" ] || "$PYTHON" -m training data scenes --out "$DATA/scenes" --count 2000 ;;
    vae)
      train "$RUNS/vae" 1 32 autoencoder --dataset "$DATA/emoji/captioned" --also "$DATA/scenes/captioned" \
        --crop 32 --lr 1e-3 --lr-schedule cosine --steps 8000 --disc-start 1000000 \
        --checkpoint-every 500 --sample-every 1000
      # then whole 128 px images, as the app and the evaluation use them: attention and GroupNorm see
      # the whole image (the 32 px crops gave 23.1 dB on held-out emoji with colours off by 14 levels);
      # the KL weight is scaled by the 16x larger latent so it keeps its share of the loss
      train "$RUNS/vae-ft" 1 8 autoencoder --init "$RUNS/vae/model/vae" --dataset "$DATA/emoji/captioned" \
        --also "$DATA/scenes/captioned" --crop 128 --lr 2e-4 --lr-schedule cosine --steps 1200 \
        --kl-weight 6e-8 --disc-start 1000000 --checkpoint-every 100 --sample-every 400 ;;
    ldm)
      train "$RUNS/ldm" 2 64 latent-diffusion --vae "$RUNS/vae-ft" --dataset "$DATA/emoji/captioned" \
        --unet-channels 32,64,128,128 --norm-groups 16 --head-channels 32 --text-width 128 --text-layers 2 \
        --text-heads 4 --lr 5e-4 --lr-schedule cosine --ema-decay 0.999 --steps 18000 --colour-variants \
        --checkpoint-every 250 --sample-every 1000 ;;
    one-step)
      # with teacher pairs: UFOGen's losses alone left textured blobs after 1,000 of 3,000 steps here;
      # a v-prediction student: read as epsilon, one step magnified the UNet's errors into speckle;
      # pairs at guidance 3: the teacher at 17,000 steps obeyed all 18 colour prompts at 3, 0.89 at 4
      # and 0.83 at 5 (orange drifts), for top-5 concept 29% / 34.5% / 35.5%
      train "$RUNS/one-step" 1 16 one-step --teacher "$RUNS/ldm" --dataset "$DATA/emoji/captioned" \
        --prediction-type v_prediction --lr 2e-4 --lr-schedule cosine --final-step-fraction 0.75 \
        --colour-variants --distill-pairs 4096 --distill-guidance 3 --steps 2000 --checkpoint-every 250 \
        --sample-every 250 ;;
    classifier)  # the yardstick and the perceptual loss of the task stages
      train "$RUNS/classifier" 1 64 classifier --dataset "$DATA/emoji" "$DATA/scenes:900" --resolution 64 \
        --widths 32,64,128,256 --lr 3e-3 --lr-schedule cosine --steps 3000 \
        --checkpoint-every 250 --sample-every 1000 ;;
    sketch)
      pix2pix sketch sketch --steps 2000 ;;
    edge)
      # three phases. Two in one run: 3,000 steps with upstream's loss weights (held-out PSNR on the first 100
      # pairs by name: 15.6 dB at 1,000, 16.5 at 2,000, 16.8 at 3,000, the cosine's end), then the L2 term
      # weighted 20 instead of 1 and mirrored pairs under a new cosine to 9,000: 17.0 dB from 3,500 on while
      # the PSNR on training pairs rose (20.9 at 4,500, 21.8 at 5,500): it memorises the training concepts
      # (the shipped run mirrored from 5,000 on, 17.7 at 9,000; its steps 3,000-3,750 ran under a cosine to
      # 4,500: record.json's sessions). Then a run that starts from those weights (--init: a new optimizer and
      # discriminator) with each pair also moved by up to 8 px: on every held-out pair 18.3 dB at its start,
      # 17.9 at 500 (the rate back up), 18.1 at 1,000, 18.2 at 2,000, 18.4 at 3,000 (the shipped one started
      # from the fp16 export and its perceptual loss used a classifier trained again by the same command)
      pix2pix edge edge --steps 3000
      pix2pix edge edge --lambda-l2 20 --mirror --steps 9000 --keep-checkpoints 40
      pix2pix edge-ft edge --init "$RUNS/edge" --lr 2e-4 --lambda-l2 20 --mirror --shift 8 --steps 3000 \
        --keep-checkpoints 40 ;;
    day-night)
      # three phases, each continuing the last (a finished phase is skipped): 800 steps under a cosine with
      # upstream's loss weights, 200 at a constant rate, then the GAN weight 2 instead of 0.5. With 0.5,
      # night -> day kept the dark sky, moon and stars from step 400 to 1,000 (0-2% classified day, the
      # samples unchanged); at 2 it was 100% "day" by step 1,300 and at 1,500 its PSNR against the same
      # held-out scenes rendered by day had risen from 10.7 to 16.0 dB (day -> night: 13.8 to 16.0)
      cyclegan day-night --lr-schedule cosine --steps 800
      cyclegan day-night --steps 1000
      cyclegan day-night --lambda-gan 2 --steps 2000 ;;
    clear-rainy)
      cyclegan clear-rainy --lambda-gan 2 --steps 900 ;;
    preview)
      train "$RUNS/preview" 2 8 preview-decoder --base "$RUNS/one-step/model" --dataset "$DATA/emoji/captioned" \
        --also "$DATA/scenes/captioned" --lr 1e-3 --lr-schedule cosine --steps 1500 \
        --checkpoint-every 250 --sample-every 500 ;;
    tasks)
      # each lane one thread (the preview's two processes one each), in its own process group, so that
      # stopping this script (Ctrl-C, kill) stops both lanes' training too; a lane that fails is reported
      # at once, the other goes on, and this script then exits with 1
      local lanes=() failed=0
      OMP_NUM_THREADS=1 setsid bash "$SELF" sketch edge clear-rainy >> "$RUNS/lane-sketch-edge-clear-rainy.log" 2>&1 &
      lanes+=($!)
      OMP_NUM_THREADS=1 setsid bash "$SELF" day-night preview >> "$RUNS/lane-day-night-preview.log" 2>&1 &
      lanes+=($!)
      trap 'kill -TERM -- "-${lanes[0]}" "-${lanes[1]}" 2>/dev/null; exit 143' INT TERM
      echo "== tasks: two lanes, logs in $RUNS/lane-*.log"
      for _ in "${lanes[@]}"; do
        if ! wait -n; then failed=1; echo "a task lane failed: see $RUNS/lane-*.log" >&2; fi
      done
      trap - INT TERM
      [ "$failed" = 0 ] || exit 1 ;;
    export)
      rm -rf "$RUNS/mini-export"
      "$PYTHON" -m training export "$RUNS/sketch" "$RUNS/edge-ft" "$RUNS/day-night" "$RUNS/clear-rainy" \
        --out "$RUNS/mini-export" --dtype float16 --preview-decoder "$RUNS/preview" ;;
    evaluate)
      "$PYTHON" -m training evaluate "$RUNS/mini-export" --classifier "$RUNS/classifier" --emoji "$DATA/emoji" \
        --scenes "$DATA/scenes" --teacher "$RUNS/ldm" --device cpu --out "$RUNS/eval/mini-export.json" \
        --grids "$RUNS/mini-export/samples" ;;
    ship)
      # not in the default ladder: once the evaluation is worth shipping, the export and its evaluation replace
      # assets/mini (the model card stays: update it by hand); written beside it, then swapped in
      local target=assets/mini
      [ -f "$RUNS/eval/mini-export.json" ] && [ -f "$RUNS/mini-export/EXPORT.json" ] \
        || { echo "ship: run the export and evaluate stages first" >&2; exit 1; }
      rm -rf "$target.part"
      cp -r "$RUNS/mini-export" "$target.part"
      cp "$RUNS/eval/mini-export.json" "$target.part/evaluation.json"
      cp "$RUNS/eval/mini-export.md" "$target.part/EVALUATION.md"
      [ ! -f "$target/MODEL_CARD.md" ] || cp "$target/MODEL_CARD.md" "$target.part/"
      rm -rf "$target"
      mv "$target.part" "$target"
      echo "== ship: $target now holds $RUNS/mini-export and its evaluation; update $target/MODEL_CARD.md" ;;
    *) echo "unknown stage $1" >&2; exit 2 ;;
  esac
}

stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(data vae ldm one-step classifier tasks export evaluate)
for name in "${stages[@]}"; do
  stage "$name"
done
