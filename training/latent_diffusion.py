"""LDM stage 2: a text-conditioned UNet2DConditionModel on the frozen autoencoder's latents.

The UNet predicts epsilon, L = ||eps - eps_theta(z_t, t, tau(y))||^2 with t uniform in [0, 999]
and SD's scaled_linear betas (0.00085 .. 0.012). The text encoder (CLIPTextModel) is trained
jointly from scratch, with a CLIP-compatible BPE tokenizer learned from the captions; 10% of
captions are dropped (empty) so the model can be sampled with classifier-free guidance. EMA
copies of both networks are what OUT/model holds: vae, unet, text_encoder, tokenizer and the
SD-Turbo scheduler config, so `--source local --model-dir OUT/model` serves it.
Sample grids: one row of multi-step Euler samples with guidance, one row of the one-step x0
prediction at t = 999 (what the app does), for fixed prompts from the captions.

Several processes (runner.Trainer): the tokenizer and the training images' latent posteriors are
made once, by the main process, into OUT/cache (kept for a resumed run; the others wait, then read
them); each process trains on its shard of the global batch, with noise, timesteps and caption
dropout drawn for the global batch; the EMA follows each optimizer step.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, EulerDiscreteScheduler, UNet2DConditionModel
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from models.weights.configs import SCHEDULER_CONFIG
from models.weights.base_loading import load_vae, weights_file
from models.weights.downloads import file_sha256
from training import runner
from training.common import (COLOUR_VARIANTS_HELP, CaptionedImages, load_captioned_images, parameter_count,
                             parse_widths, with_colour_variants)
from training.tokenizer import build_caption_tokenizer

RECIPE = "latent-diffusion"
PROMPT_COUNT = 8
VALIDATION_IMAGES = 64
VALIDATION_TIMESTEPS = (50, 250, 500, 750, 950)
TOKENIZER_CACHE = "tokenizer"
POSTERIOR_CACHE = "train_posteriors.safetensors"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    runner.add_common_arguments(parser, default_resolution=128, default_steps=20000, default_batch_size=32,
                                default_lr=2e-4)
    parser.add_argument("--max-images", type=runner.positive_int, default=None, metavar="N",
                        help="train on N evenly spaced images of the train split (encoding them all takes "
                             "minutes on a CPU; the encoded latents are cached in OUT/cache, written by the "
                             "main process while the others wait)")
    parser.add_argument("--vae", type=Path, required=True, metavar="RUN_OR_DIR",
                        help="the trained autoencoder: its run folder or a model folder with vae/")
    parser.add_argument("--unet-channels", default="64,128,192,256", help="block_out_channels, 4 values")
    parser.add_argument("--layers-per-block", type=runner.positive_int, default=1)
    parser.add_argument("--head-channels", type=runner.positive_int, default=32, help="channels per attention head")
    parser.add_argument("--norm-groups", type=runner.positive_int, default=32)
    parser.add_argument("--text-width", type=runner.positive_int, default=128, help="text encoder hidden size")
    parser.add_argument("--text-layers", type=runner.positive_int, default=4)
    parser.add_argument("--text-heads", type=runner.positive_int, default=4)
    parser.add_argument("--vocab-size", type=runner.positive_int, default=1024, help="tokenizer vocabulary size")
    parser.add_argument("--caption-dropout", type=float, default=0.1)
    parser.add_argument("--colour-variants", action="store_true", help=COLOUR_VARIANTS_HELP + "; the tokenizer "
                        "is learned from the data's own captions, so a resumed run may add this flag")
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--sample-steps", type=runner.positive_int, default=25, help="Euler steps of the sample grid")
    parser.add_argument("--guidance-scale", type=float, default=3.0, help="classifier-free guidance of the samples")


def unet_config(args: argparse.Namespace) -> dict[str, Any]:
    widths = parse_widths(args.unet_channels)
    if len(widths) != 4:
        raise runner.TrainingInputError(f"--unet-channels {args.unet_channels}: needs 4 widths (SD's 4 blocks)")
    if any(width % args.norm_groups for width in widths):
        raise runner.TrainingInputError(f"--norm-groups {args.norm_groups} must divide every width in {widths}")
    return {"sample_size": args.resolution // 8, "in_channels": 4, "out_channels": 4,
            "layers_per_block": args.layers_per_block, "block_out_channels": widths,
            "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            # diffusers reads attention_head_dim as the number of heads (as SD-Turbo's (5, 10, 20, 20))
            "attention_head_dim": tuple(max(1, width // args.head_channels) for width in widths),
            "cross_attention_dim": args.text_width, "use_linear_projection": True,
            "norm_num_groups": args.norm_groups}


def check_flags(args: argparse.Namespace) -> None:
    """Refuse flags that would fail later, before the slow set-up (encoding the data set)."""
    if not 0 <= args.caption_dropout < 1:
        raise runner.TrainingInputError(f"--caption-dropout {args.caption_dropout} must be in [0, 1)")
    if args.text_width % args.text_heads:
        raise runner.TrainingInputError(f"--text-heads {args.text_heads} must divide --text-width {args.text_width}")


def text_config(args: argparse.Namespace, tokenizer: CLIPTokenizer) -> CLIPTextConfig:
    return CLIPTextConfig(hidden_size=args.text_width, intermediate_size=4 * args.text_width,
                          num_hidden_layers=args.text_layers, num_attention_heads=args.text_heads,
                          max_position_embeddings=tokenizer.model_max_length, vocab_size=len(tokenizer),
                          hidden_act="gelu", projection_dim=args.text_width,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id)


def token_ids(tokenizer: CLIPTokenizer, captions: list[str]) -> torch.Tensor:
    """Padded to the tokenizer's 77 positions, as the app encodes prompts."""
    return tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


def load_frozen_vae(model_dir: Path, device: torch.device) -> AutoencoderKL:
    vae = load_vae(model_dir)
    if len(vae.config.block_out_channels) != 4 or vae.config.latent_channels != 4:
        raise runner.TrainingInputError(f"--vae {model_dir}: needs 4 down blocks and 4 latent channels, has "
                                        f"{len(vae.config.block_out_channels)} and {vae.config.latent_channels}")
    return vae.to(device).eval().requires_grad_(False)


def prepare_cache(args: argparse.Namespace, train: CaptionedImages, vae: AutoencoderKL, vae_dir: Path,
                  device: torch.device, tokenizer_captions: list[str]) -> Path:
    """OUT prepared and OUT/cache written, by the main process only (the others wait, then read it):
    the tokenizer learned from tokenizer_captions and the training images' latent posteriors, each
    kept while its inputs are the same."""
    runner.prepare_out(args.out, RECIPE, args.resume)
    cache = args.out / "cache"
    cache_tokenizer(cache / TOKENIZER_CACHE, tokenizer_captions, args.vocab_size)
    cache_posteriors(cache / POSTERIOR_CACHE, vae, vae_dir, train, device)
    return cache


def cache_tokenizer(folder: Path, captions: list[str], vocab_size: int) -> None:
    """The tokenizer learned from the captions, once per run: tokenizers' BPE trainer orders merges
    of equal count differently from process to process, so every process of a run, and a resumed
    run, must read the one the run started with. Its key (captions, size) sits beside the folder."""
    key_file = folder.with_suffix(".key")
    key = hashlib.sha256(json.dumps([vocab_size, captions]).encode()).hexdigest()
    if folder.is_dir() and key_file.is_file() and key_file.read_text() == key:
        return
    key_file.unlink(missing_ok=True)
    temp = folder.with_name(runner.TMP_PREFIX + folder.name)
    shutil.rmtree(temp, ignore_errors=True)
    build_caption_tokenizer(captions, temp, vocab_size)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(temp, folder)
    key_file.write_text(key)


def cache_posteriors(path: Path, vae: AutoencoderKL, vae_dir: Path, data: CaptionedImages,
                     device: torch.device) -> None:
    """encode_posteriors into a safetensors file, kept while the VAE weights and images are the same
    (encoding a whole data set is minutes on a CPU; a resumed run skips it)."""
    key = hashlib.sha256(data.images.tobytes()).hexdigest() + ":" + file_sha256(weights_file(vae_dir, "vae"))
    if path.is_file():
        with safe_open(str(path), "pt") as handle:
            if (handle.metadata() or {}).get("key") == key:
                return
    mean, std = encode_posteriors(vae, data, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(runner.TMP_PREFIX + path.name)
    save_file({"mean": mean.cpu().contiguous(), "std": std.cpu().contiguous()}, str(temp), metadata={"key": key})
    os.replace(temp, path)


def load_posteriors(path: Path, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    stored = load_file(str(path), device=str(device))
    return stored["mean"], stored["std"]


@torch.no_grad()
def encode_posteriors(vae: AutoencoderKL, data: CaptionedImages, device: torch.device,
                      batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of every image's latent distribution (sampled afresh each step), contiguous:
    the encoder may hand back channels-last memory, and the UNet's convolutions round differently
    on it, so a run that read these from its cache would drift from one that encoded them."""
    means, stds = [], []
    for start in range(0, len(data), batch_size):
        indices = torch.arange(start, min(len(data), start + batch_size))
        posterior = vae.encode(data.batch(indices, device)).latent_dist
        means.append(posterior.mean.float())
        stds.append(posterior.std.float())
    return torch.cat(means).contiguous(), torch.cat(stds).contiguous()


def sample_prompts(captions: list[str]) -> list[str]:
    """Up to PROMPT_COUNT distinct captions spread over the data set."""
    distinct = list(dict.fromkeys(caption for caption in captions if caption.strip()))
    step = max(1, len(distinct) // PROMPT_COUNT)
    return distinct[::step][:PROMPT_COUNT]


def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    ema_parameters = [p for p in ema.parameters()]
    parameters = [p.detach() for p in model.parameters()]
    torch._foreach_lerp_(ema_parameters, parameters, 1.0 - decay)


@torch.no_grad()
def euler_samples(unet: UNet2DConditionModel, cond: torch.Tensor, uncond: torch.Tensor, steps: int,
                  guidance: float, generator: torch.Generator, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Multi-step Euler sampling (the SD-Turbo scheduler config) with classifier-free guidance."""
    return euler_from_noise(unet, cond, uncond, steps, guidance, torch.randn(shape, generator=generator).to(device))


@torch.no_grad()
def euler_from_noise(unet: UNet2DConditionModel, cond: torch.Tensor, uncond: torch.Tensor, steps: int,
                     guidance: float, noise: torch.Tensor) -> torch.Tensor:
    """euler_samples from given unit noise: a deterministic function of the noise and the text."""
    scheduler = EulerDiscreteScheduler.from_config(SCHEDULER_CONFIG)
    scheduler.set_timesteps(steps, device=noise.device)
    latents = noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(torch.cat([latents, latents]), t)
        eps_cond, eps_uncond = unet(model_input, t, encoder_hidden_states=torch.cat([cond, uncond])).sample.chunk(2)
        latents = scheduler.step(eps_uncond + guidance * (eps_cond - eps_uncond), t, latents).prev_sample
    return latents


@torch.no_grad()
def one_step_samples(unet: UNet2DConditionModel, cond: torch.Tensor, alphas_cumprod: torch.Tensor,
                     generator: torch.Generator, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """x0 = (x_T - sqrt(1 - abar) eps) / sqrt(abar) from x_T = sqrt(1 - abar) noise at t = 999."""
    alpha_bar = alphas_cumprod[999].to(device)
    noisy = (1 - alpha_bar).sqrt() * torch.randn(shape, generator=generator).to(device)
    eps = unet(noisy, torch.tensor([999], device=device), encoder_hidden_states=cond).sample
    return (noisy - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()


def main(args: argparse.Namespace) -> None:
    runner.check_resolution(args.resolution)
    trainer = runner.Trainer(args)
    device = trainer.device
    runner.check_out(args.out, RECIPE, args.resume)
    check_flags(args)
    config = unet_config(args)
    originals = load_captioned_images(args.dataset, "train", args.resolution).spread(args.max_images)
    if not any(caption.strip() for caption in originals.captions):
        raise runner.TrainingInputError(f"--dataset {args.dataset}: every caption of the train split is empty")
    train = with_colour_variants(originals) if args.colour_variants else originals
    vae_dir = runner.run_model_dir(args.vae, "vae")
    vae = load_frozen_vae(vae_dir, device)
    scale = float(vae.config.scaling_factor)

    cache = trainer.from_main(lambda: prepare_cache(args, train, vae, vae_dir, device, originals.captions))
    tokenizer_dir = cache / TOKENIZER_CACHE
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    means, stds = load_posteriors(cache / POSTERIOR_CACHE, device)
    torch.manual_seed(args.seed)
    text_encoder = CLIPTextModel(text_config(args, tokenizer))
    unet = UNet2DConditionModel(**config)
    ema_text_encoder = copy.deepcopy(text_encoder).requires_grad_(False).eval()
    ema_unet = copy.deepcopy(unet).requires_grad_(False).eval()
    modules = {"unet": unet, "text_encoder": text_encoder, "ema_unet": ema_unet, "ema_text_encoder": ema_text_encoder}
    runner.prepare_modules({"unet": unet, "text_encoder": text_encoder}, device, args.gradient_checkpointing)
    ema_unet.to(device)
    ema_text_encoder.to(device)
    unet.train()
    text_encoder.train()
    optimizer = trainer.adamw([*unet.parameters(), *text_encoder.parameters()], lr=args.lr, weight_decay=1e-2)

    noise_schedule = DDPMScheduler.from_config(SCHEDULER_CONFIG)
    alphas_cumprod = noise_schedule.alphas_cumprod.to(device)
    ids = token_ids(tokenizer, train.captions).to(device)
    empty_ids = token_ids(tokenizer, [""]).to(device)
    prompts = sample_prompts(originals.captions)
    latent_shape = (4, args.resolution // 8, args.resolution // 8)

    def add_noise(latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha_bar = alphas_cumprod[t].view(-1, 1, 1, 1)
        return alpha_bar.sqrt() * latents + (1 - alpha_bar).sqrt() * noise

    def step(index: int) -> dict[str, float]:
        generator = runner.step_generator(args.seed, index)
        everyone = trainer.global_batch  # per-example draws for the global batch, then this process's rows
        picked = trainer.batch_indices(len(train), index).to(device)
        latent_noise = trainer.shard(torch.randn(everyone, *latent_shape, generator=generator)).to(device)
        noise = trainer.shard(torch.randn(everyone, *latent_shape, generator=generator)).to(device)
        t = torch.randint(0, noise_schedule.config.num_train_timesteps, (everyone,), generator=generator)
        t = trainer.shard(t).to(device)
        drop = trainer.shard(torch.rand(everyone, generator=generator) < args.caption_dropout).to(device)
        latents = (means[picked] + stds[picked] * latent_noise) * scale
        batch_ids = torch.where(drop[:, None], empty_ids, ids[picked])
        with trainer.autocast():
            hidden = text_encoder(batch_ids).last_hidden_state
            prediction = unet(add_noise(latents, noise, t), t, encoder_hidden_states=hidden).sample
        loss = F.mse_loss(prediction.float(), noise)
        trainer.backward(loss)
        grad_norm = trainer.step(optimizer, clip=1.0)
        if not trainer.updating:  # an accumulated step's earlier micro-batch: no update, no EMA
            return {"mse": loss.item()}
        decay = min(args.ema_decay, (1 + index) / (10 + index))
        update_ema(ema_unet, unet, decay)
        update_ema(ema_text_encoder, text_encoder, decay)
        return {"mse": loss.item(), "grad_norm": grad_norm.item()}

    def decode(latents: torch.Tensor) -> torch.Tensor:
        return vae.decode(latents / scale).sample.float()

    def sample(path: Path) -> None:
        cond = ema_text_encoder(token_ids(tokenizer, prompts).to(device)).last_hidden_state
        uncond = ema_text_encoder(empty_ids.expand(len(prompts), -1)).last_hidden_state
        shape = (len(prompts), *latent_shape)
        multi = euler_samples(ema_unet, cond, uncond, args.sample_steps, args.guidance_scale,
                              torch.Generator().manual_seed(args.seed), shape, device)
        single = one_step_samples(ema_unet, cond, alphas_cumprod, torch.Generator().manual_seed(args.seed), shape, device)
        runner.save_grid(torch.cat([decode(multi), decode(single)]), path, columns=len(prompts))

    def finish(model_dir: Path) -> dict[str, Any]:
        metrics = {"train_eps_mse_ema": validation_loss(originals, "train")}
        if (args.dataset / "test").is_dir():
            metrics["test_eps_mse_ema"] = validation_loss(load_captioned_images(args.dataset, "test", args.resolution), "test")
        runner.save_model_folder(model_dir, vae=vae, unet=ema_unet, text_encoder=ema_text_encoder,
                                 tokenizer_dir=tokenizer_dir, scheduler_config=SCHEDULER_CONFIG)
        return metrics

    def validation_loss(data: CaptionedImages, split: str) -> float:
        """EMA model's epsilon MSE on up to VALIDATION_IMAGES images at fixed timesteps and noise."""
        count = min(len(data), VALIDATION_IMAGES)
        subset = CaptionedImages(data.images[:count], data.captions[:count])
        mean, std = (means[:count], stds[:count]) if split == "train" else encode_posteriors(vae, subset, device)
        generator = torch.Generator().manual_seed(args.seed + 1)
        total = 0.0
        for start in range(0, count, args.batch_size):
            chunk = slice(start, min(count, start + args.batch_size))
            hidden = ema_text_encoder(token_ids(tokenizer, subset.captions[chunk]).to(device)).last_hidden_state
            for timestep in VALIDATION_TIMESTEPS:
                shape = mean[chunk].shape
                latents = (mean[chunk] + std[chunk] * torch.randn(shape, generator=generator).to(device)) * scale
                noise = torch.randn(shape, generator=generator).to(device)
                t = torch.full((shape[0],), timestep, device=device)
                prediction = ema_unet(add_noise(latents, noise, t), t, encoder_hidden_states=hidden).sample
                total += F.mse_loss(prediction.float(), noise, reduction="sum").item()
        return total / (count * len(VALIDATION_TIMESTEPS) * mean[0].numel())

    runner.run_training(
        args, recipe=RECIPE, modules=modules, optimizers={"model": optimizer}, step=step, sample=sample, finish=finish,
        config={"unet": {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()},
                "unet_parameters": parameter_count(unet), "text_encoder_parameters": parameter_count(text_encoder),
                "vocab_size": len(tokenizer), "vae": str(args.vae), "vae_scaling_factor": scale,
                "train_images": len(originals), "colour_variants": len(train) - len(originals),
                "sample_prompts": prompts}, trainer=trainer)
