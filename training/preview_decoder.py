"""Distil a tiny preview autoencoder (TAESD's design: diffusers' AutoencoderTiny) for a base's VAE.

Live text-to-image previews decode with it instead of the full VAE (models.speed.taesd loads a
`taesd/` folder beside the base's weights; `python -m training export ... --preview-decoder RUN`
puts it there). Like TAESD it reads UNet-space latents as they are (scaling factor 1) and has no
normalisation layers, so it costs a fraction of the full decoder. It is trained to make what the
full VAE makes of the same latents, on latents of two kinds each step:
- the VAE's encoder samples of training images;
- the base's own one-step samples (x0 at t = 999) for training captions: what previews decode.
Decoder loss: L1 to the full VAE's decode (+ optional features of our classifier, --perceptual).
Encoder loss: MSE to the VAE's scaled latent means (so the folder is a whole autoencoder).
The one-step rows are spread evenly over the batch (`generated_rows`), so under several processes
(runner.Trainer) each process makes its share of them and any process count trains on the same rows;
flips and noise are drawn for the global batch and sharded.
Writes OUT/model/taesd (config.json + safetensors) and OUT/model/preview.json (the base it serves).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderTiny

from models.running.sd_turbo import FINAL_TIMESTEP, SDTurbo
from models.speed.taesd import PREVIEW_FOLDER, PREVIEW_RECORD, TAESD_CONFIG
from training import runner
from training.autoencoder import feature_distance, has_split, load_perceptual, load_splits
from training.common import CaptionedImages, mirror_rows, parameter_count
from training.pix2pix_turbo import base_record, load_base
from training.turbo_common import CaptionEncoder

RECIPE = "preview-decoder"
SAMPLE_COUNT = 8
MEASURE_LIMIT = 128  # held-out images (and as many one-step samples) for the final PSNR


def add_arguments(parser: argparse.ArgumentParser) -> None:
    runner.add_common_arguments(parser, base=True, default_resolution=128, default_steps=1000,
                                default_batch_size=8, default_lr=1e-3)
    parser.add_argument("--also", type=Path, nargs="+", default=[], metavar="DATASET",
                        help="more captioned folders beside --dataset (e.g. scenes beside emoji)")
    parser.add_argument("--decoder-width", type=runner.positive_int, default=32,
                        help="channels of every decoder stage (AutoencoderTiny needs one width)")
    parser.add_argument("--decoder-blocks", default="3,3,3,0",
                        help="blocks per decoder stage, lowest resolution first (TAESD: 3,3,3,1)")
    parser.add_argument("--encoder-width", type=runner.positive_int, default=16)
    parser.add_argument("--encoder-blocks", default="1,1,1,1", help="blocks per encoder stage (TAESD: 1,3,3,3)")
    parser.add_argument("--generated-fraction", type=float, default=0.5,
                        help="share of each batch that is the base's one-step samples (the rest: encoded images)")
    parser.add_argument("--perceptual", type=Path, default=None, metavar="CLASSIFIER_RUN",
                        help="add a feature loss from our classifier (training.classifier)")
    parser.add_argument("--perceptual-weight", type=float, default=1.0)


def tiny_config(args: argparse.Namespace, latent_channels: int) -> dict[str, Any]:
    decoder_blocks = parse_blocks(args.decoder_blocks, "--decoder-blocks")
    encoder_blocks = parse_blocks(args.encoder_blocks, "--encoder-blocks")
    return {**TAESD_CONFIG, "latent_channels": latent_channels,
            "decoder_block_out_channels": (args.decoder_width,) * len(decoder_blocks),
            "num_decoder_blocks": decoder_blocks,
            "encoder_block_out_channels": (args.encoder_width,) * len(encoder_blocks),
            "num_encoder_blocks": encoder_blocks}


def parse_blocks(text: str, flag: str) -> tuple[int, ...]:
    """'3,3,3,0' -> (3, 3, 3, 0): four stages (f = 8), zero or more blocks each."""
    try:
        blocks = tuple(int(part) for part in text.split(","))
    except ValueError as error:
        raise runner.TrainingInputError(f"{flag} {text!r} is not a comma-separated list of integers") from error
    if len(blocks) != 4 or min(blocks) < 0:
        raise runner.TrainingInputError(f"{flag} {text!r}: give 4 non-negative counts (4 stages: f = 8)")
    return blocks


class Teacher:
    """What the full VAE and the one-step base make: latents (UNet space) and their full decodes."""

    def __init__(self, base: SDTurbo) -> None:
        self.base = base
        self.encode_captions = CaptionEncoder(base)

    @torch.no_grad()
    def encoded(self, images: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sampled latents, latent means) of images, both scaled into the UNet's space; noise: one
        unit-normal latent per image."""
        posterior = self.base.vae.encode(images).latent_dist
        sampled = posterior.mean + posterior.std * noise.to(images.device)
        return sampled * self.base.latent_scale, posterior.mean * self.base.latent_scale

    @torch.no_grad()
    def generated(self, captions: list[str], noise: torch.Tensor) -> torch.Tensor:
        """The base's one-step samples for the captions: x0 from pure noise (one unit-normal latent
        per caption) at t = 999."""
        noise = noise.to(self.base.device)
        start = self.base.add_noise(torch.zeros_like(noise), noise, FINAL_TIMESTEP)
        return self.base.predict_x0(start, FINAL_TIMESTEP, self.encode_captions(captions))

    @torch.no_grad()
    def decoded(self, latents: torch.Tensor) -> torch.Tensor:
        return self.base.vae.decode(latents / self.base.latent_scale).sample.clamp(-1, 1)


def unit_noise(count: int, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """count unit-normal latents of the shape, drawn on the CPU."""
    return torch.randn((count, *shape), generator=generator)


def generated_rows(count: int, fraction: float) -> torch.Tensor:
    """Which of a batch's rows are one-step samples (bool, count): `fraction` of them, spread evenly
    (row j where floor((j + 1) * fraction) passes an integer), so each process's shard of the global
    batch holds its share and any process count picks the same rows."""
    rows = torch.arange(count, dtype=torch.float64)
    return torch.floor((rows + 1) * fraction) > torch.floor(rows * fraction)


def psnr_db(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean PSNR (dB) of image pairs in [-1, 1]."""
    mse = ((a.float() - b.float()) / 2).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return float((-10 * torch.log10(mse)).mean())


def keep_encoder_inputs_scaled(tiny: AutoencoderTiny) -> None:
    """No gradient checkpointing in the tiny encoder: diffusers' EncoderTiny.forward (0.42.1,
    models/autoencoders/vae.py) skips its [-1, 1] -> [0, 1] input scaling on the checkpointed path,
    so it would train on other inputs than it serves. The decoder keeps whatever prepare_modules set."""
    tiny.encoder.gradient_checkpointing = False


def main(args: argparse.Namespace) -> None:
    runner.check_resolution(args.resolution)
    if not 0 <= args.generated_fraction <= 1:
        raise runner.TrainingInputError(f"--generated-fraction {args.generated_fraction} must be in [0, 1]")
    trainer = runner.Trainer(args)
    device = trainer.device
    runner.check_out(args.out, RECIPE, args.resume)
    train = load_splits([args.dataset, *args.also], "train", args.resolution)
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory(prefix="preview-base-") as scratch:
        base, base_dir = load_base(args, Path(scratch), trainer)
    base_info = base_record(args, base_dir)
    base.unet.requires_grad_(False).eval()
    base.vae.requires_grad_(False).eval()
    base.text_encoder.requires_grad_(False).eval()
    teacher = Teacher(base)
    latent_channels = base.unet.config.in_channels
    config = tiny_config(args, latent_channels)
    tiny = AutoencoderTiny(**config)
    runner.prepare_modules({"taesd": tiny}, device, args.gradient_checkpointing)
    keep_encoder_inputs_scaled(tiny)
    tiny.train()
    perceptual = load_perceptual(args.perceptual, device)
    optimizer = trainer.adamw(tiny.parameters(), lr=args.lr, weight_decay=0.0)
    latent_shape = (latent_channels, args.resolution // 8, args.resolution // 8)
    fixed = train.spread(SAMPLE_COUNT)

    def step(index: int) -> dict[str, float]:
        everyone = trainer.global_batch  # per-example draws for the global batch, then this process's rows
        indices = trainer.batch_indices(len(train), index)
        generated = trainer.shard(generated_rows(everyone, args.generated_fraction))
        images = train.batch(indices, device)
        flip = trainer.shard(torch.rand(everyone, generator=runner.step_generator(args.seed, index, stream=1))) < 0.5
        images = mirror_rows(images, flip.to(device))
        noise = trainer.shard(unit_noise(everyone, latent_shape, runner.step_generator(args.seed, index, stream=2)))
        latents, means = teacher.encoded(images, noise)
        if generated.any():
            start = trainer.shard(unit_noise(everyone, latent_shape, runner.step_generator(args.seed, index, 3)))
            captions = [train.captions[i] for i in indices[generated].tolist()]
            latents[generated.to(device)] = teacher.generated(captions, start[generated])
        targets = teacher.decoded(latents)
        with trainer.autocast():
            decoded = tiny.decode(latents).sample
            encoded = tiny.encode(images).latents
            l1 = (decoded.float() - targets).abs().mean()
            encoder_mse = F.mse_loss(encoded.float(), means)
            losses = {"l1": l1, "encoder_mse": encoder_mse}
            total = l1 + encoder_mse
            if perceptual is not None:
                losses["perceptual"] = feature_distance(perceptual, decoded.float(), targets)
                total = total + args.perceptual_weight * losses["perceptual"]
        trainer.backward(total)
        trainer.step(optimizer)
        return {"total": total.item(), **{name: value.item() for name, value in losses.items()}}

    def sample(path: Path) -> None:
        """Rows: full VAE on encoded images, tiny decoder on them, full VAE on one-step samples, tiny on them."""
        tiny.eval()
        images = fixed.batch(torch.arange(len(fixed)), device)
        noise = unit_noise(len(fixed), latent_shape, torch.Generator().manual_seed(0))
        encoded, _ = teacher.encoded(images, noise)
        one_step = teacher.generated(fixed.captions, noise)
        rows = [teacher.decoded(encoded), tiny.decode(encoded).sample, teacher.decoded(one_step),
                tiny.decode(one_step).sample]
        runner.save_grid(torch.cat(rows).float(), path, columns=len(fixed))

    def finish(model_dir: Path) -> dict[str, Any]:
        tiny.eval()
        metrics = {"taesd_parameters": parameter_count(tiny),
                   "decoder_parameters": parameter_count(tiny.decoder),
                   "full_decoder_parameters": parameter_count(base.vae.decoder, base.vae.post_quant_conv)}
        held_out = [dataset for dataset in [args.dataset, *args.also] if has_split(dataset, "test")]
        if held_out:
            metrics.update(agreement(teacher, tiny, load_splits(held_out, "test", args.resolution), latent_shape,
                                     device, args.batch_size))
        tiny.save_pretrained(model_dir / PREVIEW_FOLDER, safe_serialization=True)
        (model_dir / PREVIEW_RECORD).write_text(json.dumps({**base_info, "recipe": RECIPE}, indent=2))
        return metrics

    runner.run_training(args, recipe=RECIPE, modules={"taesd": tiny}, optimizers={"taesd": optimizer}, step=step,
                        sample=sample, finish=finish,
                        config={"taesd": {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()},
                                "generated_per_global_batch": int(generated_rows(trainer.global_batch,
                                                                                 args.generated_fraction).sum()),
                                "train_images": len(train),
                                **base_info}, trainer=trainer)


@torch.no_grad()
def agreement(teacher: Teacher, tiny: AutoencoderTiny, test: CaptionedImages, latent_shape: tuple[int, ...],
              device: torch.device, batch_size: int) -> dict[str, float]:
    """PSNR (dB) of the tiny decoder against the full VAE on held-out images' latents and on one-step
    samples of held-out captions, plus the full VAE's own reconstruction PSNR for scale."""
    test = test.spread(MEASURE_LIMIT)
    encoded_psnr, generated_psnr, full_psnr = [], [], []
    for start in range(0, len(test), batch_size):
        indices = torch.arange(start, min(len(test), start + batch_size))
        images = test.batch(indices, device)
        noise = unit_noise(len(indices), latent_shape, torch.Generator().manual_seed(start))
        _, means = teacher.encoded(images, noise)
        full = teacher.decoded(means)
        encoded_psnr.append(psnr_db(tiny.decode(means).sample.clamp(-1, 1), full) * len(indices))
        full_psnr.append(psnr_db(full, images) * len(indices))
        generated = teacher.generated([test.captions[i] for i in indices.tolist()],
                                      unit_noise(len(indices), latent_shape, torch.Generator().manual_seed(start)))
        generated_psnr.append(psnr_db(tiny.decode(generated).sample.clamp(-1, 1), teacher.decoded(generated))
                              * len(indices))
    count = len(test)
    return {"test_images": count,
            "test_psnr_vs_full_vae_encoded_db": sum(encoded_psnr) / count,
            "test_psnr_vs_full_vae_one_step_db": sum(generated_psnr) / count,
            "test_full_vae_reconstruction_psnr_db": sum(full_psnr) / count}
