"""LDM stage 1: train an AutoencoderKL (f = 8, 4 latent channels) on the captioned images.

Loss: L1 + optional perceptual term (features of our own classifier, --perceptual RUN) + KL
(weight 1e-6) + a patch discriminator with hinge loss from --disc-start on, its weight scaled
adaptively by the ratio of gradient norms at the decoder's last layer (as LDM's autoencoder does).
At the end the scaling factor is set to 1 / std of the latents of training images, and the VAE is
written to OUT/model/vae (diffusers layout). Sample grids: originals above reconstructions.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from torch import nn

from models.weights.base_loading import load_vae
from training import runner
from training.common import CaptionedImages, load_captioned_images, mirror_rows, parameter_count, parse_widths

RECIPE = "autoencoder"
SAMPLE_COUNT = 8
SCALE_IMAGES = 512  # training images whose latents set the scaling factor


def add_arguments(parser: argparse.ArgumentParser) -> None:
    runner.add_common_arguments(parser, default_resolution=128, default_steps=3000, default_batch_size=16,
                                default_lr=2e-4)
    parser.add_argument("--vae-channels", default="32,64,128,128", help="block_out_channels, 4 values (f = 8)")
    parser.add_argument("--layers-per-block", type=runner.positive_int, default=1)
    parser.add_argument("--norm-groups", type=runner.positive_int, default=8, help="GroupNorm groups")
    parser.add_argument("--crop", type=runner.positive_int, default=None,
                        help="train on random square crops of this size (a multiple of 8); the network is "
                             "convolutional, so it still works at --resolution, and half the size costs a quarter")
    parser.add_argument("--kl-weight", type=float, default=1e-6)
    parser.add_argument("--perceptual", type=Path, default=None, metavar="CLASSIFIER_RUN",
                        help="add a feature loss from our classifier (training.classifier)")
    parser.add_argument("--perceptual-weight", type=float, default=1.0)
    parser.add_argument("--disc-start", type=int, default=1500, help="step that switches the discriminator on")
    parser.add_argument("--disc-weight", type=float, default=0.5)
    parser.add_argument("--disc-channels", type=runner.positive_int, default=32)
    parser.add_argument("--disc-layers", type=runner.positive_int, default=3)
    parser.add_argument("--also", type=Path, nargs="+", default=[], metavar="DATASET",
                        help="more captioned folders to train on beside --dataset (e.g. scenes beside emoji, "
                             "so one VAE serves every task)")
    parser.add_argument("--init", type=Path, default=None, metavar="VAE_DIR",
                        help="start from a trained VAE folder (e.g. RUN/model/vae) instead of random weights; "
                             "its architecture replaces --vae-channels, --layers-per-block and --norm-groups")
    parser.add_argument("--decoder-only", action="store_true",
                        help="with --init: train only the decoder (as SD's ft-MSE decoder was), so the latents, "
                             "their scaling factor and a latent diffusion model trained on them stay valid")


def vae_config(args: argparse.Namespace) -> dict[str, Any]:
    widths = parse_widths(args.vae_channels)
    if len(widths) != 4:
        raise runner.TrainingInputError(
            f"--vae-channels {args.vae_channels}: needs 4 widths (4 down blocks: f = 8 and the 4 skip taps)")
    if any(width % args.norm_groups for width in widths):
        raise runner.TrainingInputError(f"--norm-groups {args.norm_groups} must divide every width in {widths}")
    return {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": widths,
            "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
            "layers_per_block": args.layers_per_block, "norm_num_groups": args.norm_groups,
            "sample_size": args.resolution, "scaling_factor": 1.0}


class PatchDiscriminator(nn.Module):
    """PatchGAN: strided 4x4 convs with GroupNorm and LeakyReLU, one logit per patch."""

    def __init__(self, channels: int = 32, layers: int = 3) -> None:
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        width = channels
        for index in range(1, layers + 1):
            wider = channels * min(2 ** index, 8)
            stride = 2 if index < layers else 1
            blocks += [nn.Conv2d(width, wider, 4, stride, 1, bias=False), nn.GroupNorm(8, wider), nn.LeakyReLU(0.2)]
            width = wider
        blocks.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.net = nn.Sequential(*blocks)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


def crop_offsets(count: int, side: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """(count, 2) random (top, left) offsets of size x size crops in side x side images."""
    return torch.randint(0, side - size + 1, (count, 2), generator=generator)


def random_crops(images: torch.Tensor, size: int, offsets: torch.Tensor) -> torch.Tensor:
    """One size x size crop per image at its (top, left) offset."""
    return torch.stack([image[:, top:top + size, left:left + size]
                        for image, (top, left) in zip(images, offsets.tolist(), strict=True)])


def sample_latents(posterior: DiagonalGaussianDistribution, noise: torch.Tensor) -> torch.Tensor:
    """posterior.sample with the noise given (drawn as diffusers draws it: randn of the mean's shape
    in the parameters' dtype and device), so a process can take its rows of the global batch's."""
    return posterior.mean + posterior.std * noise


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def adaptive_gan_weight(reconstruction_loss: torch.Tensor, gan_loss: torch.Tensor, last_layer: torch.Tensor,
                        trainer: runner.Trainer) -> torch.Tensor:
    """||d rec / d w|| / ||d gan / d w|| at the decoder's last layer, clamped to [0, 1e4]; the
    gradients are the global batch's (averaged over the processes)."""
    rec_grad = trainer.mean_over_processes(torch.autograd.grad(reconstruction_loss, last_layer, retain_graph=True)[0])
    gan_grad = trainer.mean_over_processes(torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0])
    return (rec_grad.norm() / (gan_grad.norm() + 1e-4)).clamp(0, 1e4).detach()


def load_perceptual(path: Path | None, device: torch.device) -> Callable[[torch.Tensor], Any] | None:
    """Our classifier's feature extractor (frozen), or None."""
    if path is None:
        return None
    from training.classifier import load_feature_extractor

    extractor = load_feature_extractor(path)
    if isinstance(extractor, nn.Module):
        extractor.to(device).eval().requires_grad_(False)
    return extractor


def feature_distance(extractor: Callable[[torch.Tensor], Any], a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the features (one tensor or a list of them)."""
    features_a, features_b = extractor(a), extractor(b)
    if isinstance(features_a, torch.Tensor):
        features_a, features_b = [features_a], [features_b]
    return sum(F.mse_loss(x, y) for x, y in zip(features_a, features_b, strict=True)) / len(features_a)


@torch.no_grad()
def latent_std(vae: AutoencoderKL, data: CaptionedImages, device: torch.device, seed: int,
               batch_size: int) -> float:
    """Std of sampled latents of up to SCALE_IMAGES training images (SD's scaling factor method)."""
    count = min(len(data), SCALE_IMAGES)
    latents = []
    for start in range(0, count, batch_size):
        indices = torch.arange(start, min(count, start + batch_size))
        posterior = vae.encode(data.batch(indices, device)).latent_dist
        latents.append(posterior.sample(generator=runner.step_generator(seed, start, stream=3, device=device)).float())
    return float(torch.cat(latents).std())


@torch.no_grad()
def reconstruction_psnr(vae: AutoencoderKL, data: CaptionedImages, device: torch.device, batch_size: int,
                        limit: int = 256) -> float:
    """Mean PSNR (dB, images in [0, 1]) of mode reconstructions of up to `limit` images."""
    values = []
    for start in range(0, min(len(data), limit), batch_size):
        indices = torch.arange(start, min(len(data), limit, start + batch_size))
        images = data.batch(indices, device)
        reconstruction = vae.decode(vae.encode(images).latent_dist.mode()).sample.clamp(-1, 1)
        mse = ((reconstruction - images) / 2).pow(2).flatten(1).mean(1).clamp_min(1e-10)
        values.append(-10 * torch.log10(mse))
    return float(torch.cat(values).mean())


def main(args: argparse.Namespace) -> None:
    runner.check_resolution(args.resolution)
    crop = args.crop or args.resolution
    if crop % 8 or crop > args.resolution:
        raise runner.TrainingInputError(f"--crop {crop} must be a multiple of 8 and at most --resolution {args.resolution}")
    trainer = runner.Trainer(args)
    device = trainer.device
    runner.check_out(args.out, RECIPE, args.resume)
    if args.decoder_only and args.init is None:
        raise runner.TrainingInputError("--decoder-only needs --init VAE_DIR (the VAE whose encoder is kept)")
    config = vae_config(args) if args.init is None else dict(initial_vae_config(args.init))
    train = load_splits([args.dataset, *args.also], "train", args.resolution)
    torch.manual_seed(args.seed)
    vae = AutoencoderKL(**config) if args.init is None else load_vae(args.init, subfolder="")
    if args.decoder_only:
        vae.encoder.requires_grad_(False)
        vae.quant_conv.requires_grad_(False)
    disc = PatchDiscriminator(args.disc_channels, args.disc_layers)
    runner.prepare_modules({"vae": vae, "disc": disc}, device, args.gradient_checkpointing)
    vae.train()
    disc.train()
    perceptual = load_perceptual(args.perceptual, device)
    trained = [parameter for parameter in vae.parameters() if parameter.requires_grad]
    opt_vae = trainer.adamw(trained, lr=args.lr, betas=(0.5, 0.9), weight_decay=0.0)
    opt_disc = trainer.adamw(disc.parameters(), lr=args.lr, betas=(0.5, 0.9), weight_decay=0.0)
    last_layer = vae.decoder.conv_out.weight
    fixed = train.batch(torch.linspace(0, len(train) - 1, min(SAMPLE_COUNT, len(train))).long(), device)

    def step(index: int) -> dict[str, float]:
        everyone = trainer.global_batch  # per-example draws for the global batch, then this process's rows
        images = train.batch(trainer.batch_indices(len(train), index), device)
        flip = trainer.shard(torch.rand(everyone, generator=runner.step_generator(args.seed, index, stream=1))) < 0.5
        images = mirror_rows(images, flip.to(device))
        if crop < args.resolution:
            offsets = crop_offsets(everyone, args.resolution, crop, runner.step_generator(args.seed, index, stream=4))
            images = random_crops(images, crop, trainer.shard(offsets))
        gan_on = index >= args.disc_start
        with trainer.autocast():
            posterior = vae.encode(images).latent_dist
            noise = torch.randn((everyone, *posterior.mean.shape[1:]), device=posterior.parameters.device,
                                dtype=posterior.parameters.dtype,
                                generator=runner.step_generator(args.seed, index, stream=2, device=device))
            latents = sample_latents(posterior, trainer.shard(noise))
            reconstruction = vae.decode(latents).sample
            l1 = (reconstruction.float() - images).abs().mean()
            kl = posterior.kl().mean()
            losses = {"l1": l1}
            rec_loss = l1
            if perceptual is not None:
                losses["perceptual"] = feature_distance(perceptual, reconstruction.float(), images)
                rec_loss = rec_loss + args.perceptual_weight * losses["perceptual"]
            total = rec_loss + args.kl_weight * kl
            if gan_on:
                disc.requires_grad_(False)
                gan = -disc(reconstruction).float().mean()
                disc.requires_grad_(True)
                weight = adaptive_gan_weight(rec_loss, gan, last_layer, trainer) * args.disc_weight
                total = total + weight * gan
                losses.update({"gan": gan, "gan_weight": weight})
        trainer.backward(total)
        trainer.step(opt_vae)
        if gan_on:
            with trainer.autocast():
                d_loss = hinge_discriminator_loss(disc(images).float(), disc(reconstruction.detach()).float())
            trainer.backward(d_loss)
            trainer.step(opt_disc)
            losses["disc"] = d_loss
        return {"total": total.item(), "kl": kl.item(), **{name: value.item() for name, value in losses.items()}}

    def sample(path: Path) -> None:
        vae.eval()
        reconstruction = vae.decode(vae.encode(fixed).latent_dist.mode()).sample
        runner.save_grid(torch.cat([fixed, reconstruction.float()]), path, columns=len(fixed))

    def finish(model_dir: Path) -> dict[str, Any]:
        vae.eval()
        metrics: dict[str, Any] = {}
        if not args.decoder_only:  # a kept encoder keeps its latents and their scaling factor
            metrics["latent_std"] = latent_std(vae, train, device, args.seed, args.batch_size)
            vae.register_to_config(scaling_factor=1.0 / metrics["latent_std"])
        metrics.update({"scaling_factor": vae.config.scaling_factor,
                        "train_psnr_db": reconstruction_psnr(vae, train, device, args.batch_size)})
        with_test = [dataset for dataset in [args.dataset, *args.also] if has_split(dataset, "test")]
        test = load_splits(with_test, "test", args.resolution) if with_test else None
        if test is not None:
            metrics["test_psnr_db"] = reconstruction_psnr(vae, test, device, args.batch_size)
        runner.save_model_folder(model_dir, vae=vae.to(torch.float32), scheduler_config=None)
        return metrics

    runner.run_training(args, recipe=RECIPE, modules={"vae": vae, "disc": disc},
                        optimizers={"vae": opt_vae, "disc": opt_disc}, step=step, sample=sample, finish=finish,
                        config={"vae": {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()},
                                "crop": crop,
                                "vae_parameters": parameter_count(vae), "disc_parameters": parameter_count(disc),
                                "train_images": len(train)}, trainer=trainer)


def load_splits(datasets: list[Path], split: str, resolution: int) -> CaptionedImages:
    """One split of several captioned folders, concatenated."""
    parts = [load_captioned_images(dataset, split, resolution) for dataset in datasets]
    return CaptionedImages(np.concatenate([part.images for part in parts]),
                           [caption for part in parts for caption in part.captions])


def initial_vae_config(folder: Path) -> dict[str, Any]:
    """The config of the --init VAE, with a clear error when the folder holds none."""
    if not (folder / "config.json").is_file():
        raise runner.TrainingInputError(f"--init {folder}: no config.json (give a VAE folder such as RUN/model/vae)")
    return AutoencoderKL.load_config(folder)


def has_split(dataset: Path, split: str) -> bool:
    return (dataset / split).is_dir()
