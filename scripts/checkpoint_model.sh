#!/usr/bin/env bash
# A model folder of one latent-diffusion checkpoint's EMA weights (the UNet and text encoder that
# the run's model/ would hold had it stopped there), to measure a run's curve with `evaluate`:
#
#   bash scripts/checkpoint_model.sh RUN CHECKPOINT_DIR OUT
#
# RUN/model (written when the run first finished) gives the configs, VAE, tokenizer and scheduler.
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: $0 RUN CHECKPOINT_DIR OUT" >&2; exit 2; }
run=$1 checkpoint=$2 out=$3
for file in ema_unet.safetensors ema_text_encoder.safetensors; do
  [ -f "$checkpoint/$file" ] || { echo "$checkpoint: no $file (not a latent-diffusion checkpoint)" >&2; exit 2; }
done
[ -f "$run/model/unet/config.json" ] || { echo "$run: no model/ (the run has not finished once)" >&2; exit 2; }
rm -rf "$out.part"
cp -r "$run/model" "$out.part"
cp "$checkpoint/ema_unet.safetensors" "$out.part/unet/diffusion_pytorch_model.safetensors"
cp "$checkpoint/ema_text_encoder.safetensors" "$out.part/text_encoder/model.safetensors"
rm -rf "$out"
mv "$out.part" "$out"
