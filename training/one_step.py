"""One-step text to image (UFOGen): fine-tune the teacher's UNet into a one-step generator.

UFOGen (Xu et al., arXiv 2311.09257) reads the diffusion UNet as an x0 predictor,
x0' = G(x_t, t) = (x_t - sqrt(1 - abar_t) * eps(x_t, t)) / sqrt(abar_t), and models
p(x_s | x_t) = q(x_s | x0 = x0'): the predicted x0' and the real x0 are both noised forward to an
earlier step s < t (independent noise), and a discriminator D(x_s, s, text) tells them apart.
The generator loss is the adversarial term plus lambda * gamma_t * ||x0 - x0'||^2.

Choices made here (the paper leaves them open or states them for SD at scale):
- gamma_t: "snr+1" = 1 / (1 - abar_t) (default; the weight a v-prediction loss puts on x0, so the
  final step t = 999 keeps weight ~1 and small t weigh like the teacher's epsilon loss) or "snr" =
  abar_t / (1 - abar_t) (||eps - eps'||^2, what the authors' public DiT code adds).
- t: the final step 999 with probability --final-step-fraction, else uniform on 1..998. At t = 999
  the generator sees exactly what one-step sampling gives it, sqrt(1 - abar) * noise (no signal
  term), as pipelines/text_to_image.py and diffusers' SD-Turbo start.
- s: uniform on max(0, t - gap)..t-1 (--discriminator-gap 1 is the paper's t-1; the default 1000
  lets the discriminator also judge the one-step image at low noise, where detail shows).
- Discriminator: the teacher UNet's time embedding, conv_in, down blocks and mid block (with
  cross-attention to the text), then a zero-initialised GroupNorm-SiLU-1x1 conv head giving a
  logit per bottleneck location. Non-saturating GAN loss with the authors' logit margin (real
  logits above +m and fake below -m give no further discriminator gradient; the generator stops
  pushing past +m), discriminator Adam betas (0, 0.999), both networks' gradients clipped to 1.
- Teacher pairs (--distill-pairs N, off by default, not in the paper): the teacher's multi-step
  Euler samples of N (noise, caption) pairs, made once before training, and an L2 term pulling
  G(x_T, 999) from the same noise towards them. The UFOGen terms alone regress x0 at t = 999 to the
  data's mean and leave sharpening to the GAN, which a small model on a CPU budget does not reach
  (mini's samples stayed textured blobs for 1,000 steps); the teacher's samples are a deterministic
  function of the noise, so the same step count learns shapes (as Luhman & Luhman's one-step
  distillation, arXiv 2101.02388, and ADD's distillation term do).
- What the UNet outputs (--prediction-type, not in the paper): the teacher predicts epsilon, and at
  t = 999 x0 = (x_T - sqrt(1 - abar) * eps) / sqrt(abar) divides by sqrt(abar_999) ~ 0.068, so a small
  UNet's epsilon errors come out 15x as speckle (mini's teacher read in one step is all speckle).
  With v_prediction the student's output is read as v = sqrt(abar) * eps - sqrt(1 - abar) * x0
  (x0 ~ -v at t = 999, no magnification); OUT/model/scheduler records it and the app reads x0 the
  same way (models.running.sd_turbo.x0_from_prediction).
- The text encoder and the VAE stay frozen (the teacher's); only the UNet and the discriminator
  train. An EMA of the generator (decay 0.99, as the authors sample) is what the grids show and
  OUT/model holds.

Output: OUT/samples/teacher_one_step.png and teacher_25_steps.png (the teacher's one step and its
Euler sampling with guidance 3, as the latent-diffusion grids), step_NNNNNN.png (one step, two
seeds per prompt), and OUT/model/ in the stabilityai/sd-turbo layout (the new UNet; the teacher's
VAE, text encoder, tokenizer and scheduler), which `--source local --model-dir OUT/model` serves.

Several processes (runner.Trainer): each encodes its shard of the global batch; t, s and the noises
are drawn for the global batch and sharded; both updates average the gradients over the processes;
the EMA follows each generator step.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from models.running.sd_turbo import FINAL_TIMESTEP, PREDICTION_TYPES, SDTurbo, x0_from_prediction
from models.weights.base_loading import load_sd_turbo, load_vae
from training.common import COLOUR_VARIANTS_HELP, load_captioned_images, with_colour_variants
from training.latent_diffusion import euler_from_noise, euler_samples, sample_prompts
from training.runner import (TMP_PREFIX, Trainer, TrainingInputError, add_common_arguments, check_out, check_resolution,
                             prepare_modules, prepare_out, run_model_dir, run_training, save_grid, save_model_folder,
                             step_generator)

RECIPE = "one-step"
Weighting = Literal["snr", "snr+1"]
WEIGHTINGS: tuple[Weighting, ...] = ("snr+1", "snr")


@dataclass(frozen=True)
class UFOGenSettings:
    """The objective's knobs (see the module docstring)."""

    final_step_fraction: float = 0.5
    discriminator_gap: int = 1000
    reconstruction_lambda: float = 1.0
    weighting: Weighting = "snr+1"
    logit_margin: float = 0.5
    prediction_type: str = "epsilon"

    def __post_init__(self) -> None:
        if not 0.0 <= self.final_step_fraction <= 1.0:
            raise ValueError(f"--final-step-fraction: {self.final_step_fraction} is outside [0, 1]")
        if not 1 <= self.discriminator_gap <= 1000:
            raise ValueError(f"--discriminator-gap: {self.discriminator_gap} is outside 1..1000")
        if self.reconstruction_lambda < 0:
            raise ValueError(f"--reconstruction-lambda: {self.reconstruction_lambda} must be >= 0")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"--weighting: {self.weighting!r} is not one of {', '.join(WEIGHTINGS)}")
        if self.logit_margin <= 0:
            raise ValueError(f"--logit-margin: {self.logit_margin} must be > 0")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"--prediction-type: {self.prediction_type!r} is not one of {', '.join(PREDICTION_TYPES)}")


class Discriminator(nn.Module):
    """D(x_s, s, text): the teacher UNet's down path (time embedding, conv_in, down blocks, mid
    block, all with their cross-attention) and a small zero-initialised head, one logit per
    bottleneck location."""

    def __init__(self, teacher_unet: UNet2DConditionModel) -> None:
        super().__init__()
        if teacher_unet.mid_block is None:
            raise ValueError("the teacher UNet has no mid block (mid_block_type None); the discriminator needs it")
        self.time_proj = copy.deepcopy(teacher_unet.time_proj)
        self.time_embedding = copy.deepcopy(teacher_unet.time_embedding)
        self.conv_in = copy.deepcopy(teacher_unet.conv_in)
        self.down_blocks = copy.deepcopy(teacher_unet.down_blocks)
        self.mid_block = copy.deepcopy(teacher_unet.mid_block)
        channels = int(teacher_unet.config.block_out_channels[-1])
        groups = int(teacher_unet.config.norm_num_groups or 32)
        head_out = nn.Conv2d(channels, 1, kernel_size=1)
        nn.init.zeros_(head_out.weight)
        nn.init.zeros_(head_out.bias)
        self.head = nn.Sequential(nn.GroupNorm(groups, channels), nn.SiLU(), head_out)

    def forward(self, sample: torch.Tensor, timesteps: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Logits of shape (batch, h, w) at the UNet's bottleneck resolution."""
        t_emb = self.time_proj(timesteps.expand(sample.shape[0])).to(sample.dtype)
        emb = self.time_embedding(t_emb)
        hidden = self.conv_in(sample)
        for block in self.down_blocks:
            if getattr(block, "has_cross_attention", False):
                hidden, _ = block(hidden_states=hidden, temb=emb, encoder_hidden_states=text)
            else:
                hidden, _ = block(hidden_states=hidden, temb=emb)
        if getattr(self.mid_block, "has_cross_attention", False):
            hidden = self.mid_block(hidden, emb, encoder_hidden_states=text)
        else:
            hidden = self.mid_block(hidden, emb)
        return self.head(hidden).squeeze(1)


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.view(-1, *([1] * (like.dim() - 1)))


def noise_forward(x0: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """q(x_t | x0): sqrt(abar_t) * x0 + sqrt(1 - abar_t) * noise, abar_t per sample."""
    alpha_bar = _per_sample(alpha_bar, x0)
    return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise


def reconstruction_weights(alpha_bar: torch.Tensor, weighting: Weighting) -> torch.Tensor:
    """gamma_t: "snr" = abar / (1 - abar), "snr+1" = 1 / (1 - abar)."""
    if weighting == "snr":
        return alpha_bar / (1 - alpha_bar)
    return 1 / (1 - alpha_bar)


def sample_timesteps(batch: int, final_step_fraction: float, generator: torch.Generator) -> torch.Tensor:
    """t = 999 with probability final_step_fraction, else uniform on 1..998 (long, on the CPU)."""
    final = torch.rand(batch, generator=generator) < final_step_fraction
    other = torch.randint(1, FINAL_TIMESTEP, (batch,), generator=generator)
    return torch.where(final, torch.full_like(other, FINAL_TIMESTEP), other)


def sample_discriminator_steps(timesteps: torch.Tensor, gap: int, generator: torch.Generator) -> torch.Tensor:
    """s uniform on max(0, t - gap)..t-1, per sample (long, on the CPU)."""
    low = (timesteps - gap).clamp(min=0)
    span = timesteps - low
    return low + (torch.rand(timesteps.shape, generator=generator) * span).long().clamp(max=span - 1)


def generator_inputs(x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor,
                     alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """x_t = q(x_t | x0), except at the final step: sqrt(1 - abar) * noise, the one-step sampler's start."""
    alpha_bar = alphas_cumprod[timesteps]
    noisy = noise_forward(x0, noise, alpha_bar)
    pure = _per_sample((1 - alpha_bar).sqrt(), noise) * noise
    return torch.where(_per_sample(timesteps == FINAL_TIMESTEP, x0), pure, noisy)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, margin: float) -> torch.Tensor:
    """Non-saturating (binary cross-entropy) loss; logits past the margin give no gradient."""
    real = F.softplus(-real_logits.clamp(max=margin)).mean()
    fake = F.softplus(fake_logits.clamp(min=-margin)).mean()
    return real + fake


def generator_adversarial_loss(fake_logits: torch.Tensor, margin: float) -> torch.Tensor:
    """-log D(fake), the non-saturating generator loss, with no gradient past the margin."""
    return F.softplus(-fake_logits.clamp(max=margin)).mean()


@dataclass
class StepLosses:
    discriminator: float
    adversarial: float
    reconstruction: float
    generator: float
    distillation: float = 0.0


@dataclass(frozen=True)
class TeacherTargets:
    """Teacher pairs for one step (--distill-pairs): the one-step start x_T = sqrt(1 - abar_999) *
    noise, the text, and the teacher's multi-step sample from that noise (scaled latents)."""

    start: torch.Tensor
    text: torch.Tensor
    latents: torch.Tensor
    weight: float


def predict_x0(unet: UNet2DConditionModel, x_t: torch.Tensor, timesteps: torch.Tensor, text: torch.Tensor,
               alphas_cumprod: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """G(x_t, t): one UNet call read as x0 as the app reads it (x0_from_prediction, in float32),
    abar_t per sample."""
    output = unet(x_t, timesteps, encoder_hidden_states=text).sample
    alpha_bar = _per_sample(alphas_cumprod[timesteps], x_t)
    return x0_from_prediction(x_t.float(), output.float(), alpha_bar, prediction_type)


@dataclass(frozen=True)
class UFOGenDraws:
    """A step's randomness, one row per example, on the CPU: t, s, and the noises of x_t, of the
    real x_s and of the generated x_s."""

    timesteps: torch.Tensor
    steps_s: torch.Tensor
    noises: tuple[torch.Tensor, torch.Tensor, torch.Tensor]

    @classmethod
    def draw(cls, count: int, latent_shape: Sequence[int], settings: UFOGenSettings,
             generator: torch.Generator) -> UFOGenDraws:
        """Draws for `count` examples from `generator` (a run is reproducible across devices and
        resumable from the generator's seed)."""
        timesteps = sample_timesteps(count, settings.final_step_fraction, generator)
        steps_s = sample_discriminator_steps(timesteps, settings.discriminator_gap, generator)
        first, second, third = torch.randn((3, count, *latent_shape), generator=generator)
        return cls(timesteps, steps_s, (first, second, third))

    def shard(self, trainer: Trainer) -> UFOGenDraws:
        """This process's rows of draws made for the global batch."""
        first, second, third = (trainer.shard(noise) for noise in self.noises)
        return UFOGenDraws(trainer.shard(self.timesteps), trainer.shard(self.steps_s), (first, second, third))


def ufogen_step(unet: UNet2DConditionModel, discriminator: Discriminator, unet_optimizer: torch.optim.Optimizer,
                discriminator_optimizer: torch.optim.Optimizer, latents: torch.Tensor, text: torch.Tensor,
                alphas_cumprod: torch.Tensor, settings: UFOGenSettings, draws: UFOGenDraws, trainer: Trainer,
                max_grad_norm: float = 1.0, teacher: TeacherTargets | None = None) -> StepLosses:
    """One discriminator update, then one generator update, on one batch of scaled latents, with
    the batch's draws; the updates go through the trainer (gradients averaged over the processes).
    With `teacher`, the generator's loss adds weight * ||G(x_T, 999) - teacher sample||^2."""
    device = latents.device
    noises = [noise.to(device) for noise in draws.noises]
    timesteps, steps_s = draws.timesteps.to(device), draws.steps_s.to(device)
    x0 = latents.float()

    x_t = generator_inputs(x0, noises[0], timesteps, alphas_cumprod)
    x0_pred = predict_x0(unet, x_t, timesteps, text, alphas_cumprod, settings.prediction_type)
    alpha_bar_s = alphas_cumprod[steps_s]
    real_s = noise_forward(x0, noises[1], alpha_bar_s)
    fake_s = noise_forward(x0_pred, noises[2], alpha_bar_s)

    # discriminator: real x_s against the generator's x_s (detached)
    discriminator.requires_grad_(True)
    logits = discriminator(torch.cat([real_s, fake_s.detach()]), torch.cat([steps_s, steps_s]),
                           torch.cat([text, text]))
    real_logits, fake_logits = logits.chunk(2)
    d_loss = discriminator_loss(real_logits, fake_logits, settings.logit_margin)
    trainer.backward(d_loss)
    trainer.step(discriminator_optimizer, max_grad_norm)

    # generator: fool the updated discriminator and stay close to the data (gamma_t-weighted L2)
    discriminator.requires_grad_(False)
    adversarial = generator_adversarial_loss(discriminator(fake_s, steps_s, text), settings.logit_margin)
    gamma = reconstruction_weights(alphas_cumprod[timesteps], settings.weighting)
    squared_error = (x0 - x0_pred).pow(2).mean(dim=tuple(range(1, x0.dim())))
    reconstruction = (gamma * squared_error).mean()
    g_loss = adversarial + settings.reconstruction_lambda * reconstruction
    distillation = torch.zeros((), device=device)
    if teacher is not None:
        final = torch.full((len(teacher.start),), FINAL_TIMESTEP, device=device, dtype=torch.long)
        predicted = predict_x0(unet, teacher.start.to(device), final, teacher.text, alphas_cumprod,
                               settings.prediction_type)
        distillation = (predicted - teacher.latents.to(device)).pow(2).mean()
        g_loss = g_loss + teacher.weight * distillation
    trainer.backward(g_loss)
    trainer.step(unet_optimizer, max_grad_norm)
    discriminator.requires_grad_(True)
    return StepLosses(d_loss.item(), adversarial.item(), reconstruction.item(), g_loss.item(), distillation.item())


# ------------------------------------------------------------------------------------ the recipe

SAMPLE_PROMPT_COUNT = 8
SAMPLE_SEEDS = (0, 1)
TEACHER_SAMPLING_STEPS = 25
TEACHER_GUIDANCE = 3.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", type=Path, required=True,
                        help="the latent-diffusion run folder (its model/) or a model folder in the "
                             "stabilityai/sd-turbo layout; its UNet is the generator's and the discriminator's start")
    add_common_arguments(parser, default_resolution=128, default_steps=2000, default_batch_size=16, default_lr=1e-4)
    parser.add_argument("--discriminator-lr", type=float, default=None, help="default: --lr")
    parser.add_argument("--ema-decay", type=float, default=0.99,
                        help="EMA of the generator, which the samples and OUT/model use (default: %(default)s)")
    parser.add_argument("--final-step-fraction", type=float, default=UFOGenSettings.final_step_fraction,
                        help="share of examples trained at t = 999, the one-step sampler's step (default: %(default)s)")
    parser.add_argument("--discriminator-gap", type=int, default=UFOGenSettings.discriminator_gap,
                        help="s is drawn from max(0, t - gap)..t-1; 1 is the paper's t-1 (default: %(default)s)")
    parser.add_argument("--reconstruction-lambda", type=float, default=UFOGenSettings.reconstruction_lambda,
                        help="lambda of lambda * gamma_t * ||x0 - x0'||^2 (default: %(default)s)")
    parser.add_argument("--weighting", choices=WEIGHTINGS, default=UFOGenSettings.weighting,
                        help="gamma_t: snr+1 = 1/(1-abar_t), snr = abar_t/(1-abar_t) (default: %(default)s)")
    parser.add_argument("--logit-margin", type=float, default=UFOGenSettings.logit_margin,
                        help="no GAN gradient past this logit (default: %(default)s)")
    parser.add_argument("--prediction-type", choices=PREDICTION_TYPES, default=UFOGenSettings.prediction_type,
                        help="what the one-step UNet outputs, written to OUT/model/scheduler for the app to read: "
                             "epsilon (SD-Turbo's, the teacher's), v_prediction or sample. At t = 999 the epsilon "
                             "reading divides by sqrt(abar_999) ~ 0.068, so a small UNet's errors come out 15x as "
                             "speckle; v_prediction gives x0 = -v there (default: %(default)s)")
    parser.add_argument("--colour-variants", action="store_true",
                        help=COLOUR_VARIANTS_HELP + "; the teacher pairs' captions are drawn from them too")
    parser.add_argument("--distill-pairs", type=int, default=0, metavar="N",
                        help="teacher pairs: before training, the teacher samples N (noise, training caption) pairs "
                             "with --distill-steps Euler steps and guidance --distill-guidance (kept in OUT/cache), and "
                             "every step adds --distill-weight * ||G(x_T, 999) - teacher sample||^2 on a batch of them: "
                             "a deterministic target that a small generator learns far faster than the GAN alone "
                             "(0: UFOGen's losses only; default: %(default)s)")
    parser.add_argument("--distill-weight", type=float, default=1.0, help="(default: %(default)s)")
    parser.add_argument("--distill-steps", type=int, default=TEACHER_SAMPLING_STEPS, help="(default: %(default)s)")
    parser.add_argument("--distill-guidance", type=float, default=TEACHER_GUIDANCE, help="(default: %(default)s)")
    parser.add_argument("--vae", type=Path, default=None, metavar="RUN_OR_DIR",
                        help="a VAE in the teacher's latent space (same encoder, e.g. an autoencoder "
                             "--decoder-only run) to decode the samples and to ship in OUT/model instead of the teacher's")


def teacher_folder(teacher: Path) -> Path:
    """The teacher's model folder (a run's model/ or the folder itself), checked to be complete."""
    from models.weights.sources import check_local_dir

    folder = run_model_dir(teacher, "unet")
    try:
        return check_local_dir(folder)
    except ValueError as error:
        raise TrainingInputError(f"--teacher {teacher}: {error}") from error


def same_latent_space_vae(path: Path, teacher_vae: AutoencoderKL) -> AutoencoderKL:
    """The --vae, refused unless its encoder and scaling factor equal the teacher's (so the latents
    the generator learns are the ones this VAE decodes)."""
    vae = load_vae(run_model_dir(path, "vae"))
    theirs = teacher_vae.state_dict()
    differing = [name for name, value in vae.state_dict().items()
                 if name.startswith(("encoder.", "quant_conv.")) and not torch.equal(value.cpu(), theirs[name].cpu())]
    if differing or vae.config.scaling_factor != teacher_vae.config.scaling_factor:
        raise TrainingInputError(f"--vae {path}: not the teacher's latent space (encoder tensors differ: "
                                 f"{differing[:3] or 'none'}; scaling factor {vae.config.scaling_factor} vs "
                                 f"{teacher_vae.config.scaling_factor}); train it with autoencoder --init --decoder-only")
    return vae


def settings_from(args: argparse.Namespace) -> UFOGenSettings:
    try:
        return UFOGenSettings(args.final_step_fraction, args.discriminator_gap, args.reconstruction_lambda,
                              args.weighting, args.logit_margin, args.prediction_type)
    except ValueError as error:
        raise TrainingInputError(str(error)) from error


def encode_text(base: SDTurbo, captions: Sequence[str]) -> torch.Tensor:
    """The frozen text encoder's last hidden state, as the app's prompt embeddings are made."""
    token_ids = base.tokenizer(list(captions), padding="max_length", max_length=base.max_prompt_tokens,
                               truncation=True, return_tensors="pt").input_ids.to(base.device)
    with torch.no_grad():
        return base.text_encoder(token_ids)[0].float()


def encode_images(base: SDTurbo, pixels: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> scaled latents (the posterior mean times the VAE's scaling factor)."""
    with torch.no_grad():
        return base.vae.encode(pixels).latent_dist.mode().float() * base.latent_scale


def start_noise(shape: tuple[int, ...], seed: int, device: torch.device) -> torch.Tensor:
    """Seeded unit noise drawn on the CPU (as pipelines/images.seeded_noise draws it)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(device)


def one_step_images(base: SDTurbo, unet: UNet2DConditionModel, text: torch.Tensor, seeds: Sequence[int],
                    latent_side: int, prediction_type: str) -> torch.Tensor:
    """The app's one-step sampler: x_T = sqrt(1 - abar_999) * noise, x0 = G(x_T, 999), decode."""
    images = []
    for seed in seeds:
        noise = start_noise((text.shape[0], unet.config.in_channels, latent_side, latent_side), seed, base.device)
        start = (1 - base.alphas_cumprod[FINAL_TIMESTEP]).sqrt() * noise
        timesteps = torch.full((text.shape[0],), FINAL_TIMESTEP, device=base.device, dtype=torch.long)
        latents = predict_x0(unet, start, timesteps, text, base.alphas_cumprod, prediction_type)
        images.append(base.vae.decode(latents / base.latent_scale).sample)
    return torch.cat(images)


def latent_factor(base: SDTurbo) -> int:
    """Pixels per latent cell: 2 ** (number of VAE blocks - 1), 8 for SD's VAE."""
    return 2 ** (len(base.vae.config.block_out_channels) - 1)


def teacher_references(base: SDTurbo, prompts: Sequence[str], latent_side: int, seed: int,
                       samples: Path) -> dict[Path, torch.Tensor]:
    """The teacher's images of the sample prompts, for the grids not yet written: its one step
    (what the app draws with it) and its own multi-step sampling (Euler with guidance, as the
    latent-diffusion grids), the yardstick one step is held to. Computed before training, while
    the UNet is still the teacher's, on a fresh run and a resumed one alike."""
    wanted = [samples / "teacher_one_step.png", samples / f"teacher_{TEACHER_SAMPLING_STEPS}_steps.png"]
    if all(path.is_file() for path in wanted):
        return {}
    with torch.no_grad():
        text, empty = encode_text(base, prompts), encode_text(base, [""] * len(prompts))
        shape = (len(prompts), base.unet.config.in_channels, latent_side, latent_side)
        multi = [euler_samples(base.unet, text, empty, TEACHER_SAMPLING_STEPS, TEACHER_GUIDANCE,
                               torch.Generator().manual_seed(seed + extra), shape, base.device)
                 for extra in SAMPLE_SEEDS]
        return {wanted[0]: one_step_images(base, base.unet, text, SAMPLE_SEEDS, latent_side, base.prediction_type),
                wanted[1]: base.vae.decode(torch.cat(multi) / base.latent_scale).sample}


PAIRS_FILE = "teacher_pairs.safetensors"
PAIRS_BATCH = 64


def teacher_pairs(base: SDTurbo, captions: Sequence[str], count: int, latent_shape: Sequence[int], seed: int,
                  steps: int, guidance: float) -> dict[str, torch.Tensor]:
    """`count` pairs: unit noise, a training caption (its index) and the teacher's Euler sample from
    that noise and caption (scaled latents, on the CPU); a pure function of its arguments."""
    generator = torch.Generator().manual_seed(seed)
    caption_index = torch.randint(len(captions), (count,), generator=generator)
    noise = torch.randn((count, *latent_shape), generator=generator)
    latents = []
    for start in tqdm(range(0, count, PAIRS_BATCH), desc="teacher pairs", unit="batch"):
        picked = caption_index[start:start + PAIRS_BATCH].tolist()
        text = encode_text(base, [captions[index] for index in picked])
        empty = encode_text(base, [""] * len(picked))
        chunk = noise[start:start + PAIRS_BATCH].to(base.device)
        latents.append(euler_from_noise(base.unet, text, empty, steps, guidance, chunk).float().cpu())
    return {"noise": noise, "caption_index": caption_index, "latents": torch.cat(latents)}


def cached_teacher_pairs(args: argparse.Namespace, base: SDTurbo, captions: Sequence[str],
                         latent_shape: Sequence[int]) -> Path:
    """OUT/cache/teacher_pairs.safetensors, made once by the main process with the teacher's UNet
    (before any checkpoint is restored) and kept while its settings are the same."""
    prepare_out(args.out, RECIPE, args.resume)
    path = args.out / "cache" / PAIRS_FILE
    key = {"count": str(args.distill_pairs), "steps": str(args.distill_steps),
           "guidance": str(args.distill_guidance), "seed": str(args.seed), "captions": str(len(captions))}
    if path.is_file():
        with safe_open(path, "pt") as handle:
            if handle.metadata() == key:
                return path
    tensors = teacher_pairs(base, captions, args.distill_pairs, latent_shape, args.seed,
                            args.distill_steps, args.distill_guidance)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(TMP_PREFIX + path.name)
    save_file(tensors, temp, metadata=key)
    os.replace(temp, path)
    return path


def save_grid_atomic(images: torch.Tensor, path: Path, columns: int) -> None:
    temp = path.with_name(f".tmp-{path.name}")
    save_grid(images, temp, columns=columns)
    os.replace(temp, path)


def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter."""
    with torch.no_grad():
        for ema_parameter, parameter in zip(ema.parameters(), model.parameters(), strict=True):
            ema_parameter.lerp_(parameter.detach(), 1.0 - decay)


def main(args: argparse.Namespace) -> None:
    check_resolution(args.resolution)
    check_out(args.out, RECIPE, args.resume)
    settings = settings_from(args)
    if not 0.0 <= args.ema_decay < 1.0:
        raise TrainingInputError(f"--ema-decay {args.ema_decay} must be in [0, 1)")
    if args.distill_pairs < 0 or args.distill_steps < 1 or args.distill_weight < 0:
        raise TrainingInputError(f"--distill-pairs {args.distill_pairs} and --distill-weight {args.distill_weight} "
                                 f"must be >= 0, --distill-steps {args.distill_steps} >= 1")
    trainer = Trainer(args)
    device = trainer.device
    folder = teacher_folder(args.teacher)
    originals = load_captioned_images(args.dataset, "train", args.resolution)
    data = with_colour_variants(originals) if args.colour_variants else originals
    torch.manual_seed(args.seed)

    base = load_sd_turbo(folder, device, torch.float32)
    if base.prediction_type != "epsilon":
        raise TrainingInputError(f"{folder}: the teacher's scheduler says prediction_type "
                                 f"{base.prediction_type!r}; its multi-step sampling here reads an epsilon UNet "
                                 f"(a latent-diffusion run's model, or SD-Turbo)")
    if args.vae is not None:
        base.vae = same_latent_space_vae(args.vae, base.vae).to(device).eval().requires_grad_(False)
    prompts = sample_prompts(originals.captions)
    latent_side = args.resolution // latent_factor(base)
    pairs = None
    if args.distill_pairs:
        shape = (base.unet.config.in_channels, latent_side, latent_side)
        pairs = load_file(trainer.from_main(lambda: cached_teacher_pairs(args, base, data.captions, shape)))
    teacher_grids = (teacher_references(base, prompts, latent_side, args.seed, args.out / "samples")
                     if trainer.is_main else {})  # only the main process writes samples
    unet = base.unet  # the generator: the teacher's UNet, trained in place
    discriminator = Discriminator(unet)
    ema_unet = copy.deepcopy(unet).eval().requires_grad_(False)
    unet.train().requires_grad_(True)
    discriminator.train()
    prepare_modules({"unet": unet, "discriminator": discriminator}, device, args.gradient_checkpointing)
    modules = {"unet": unet, "discriminator": discriminator, "ema_unet": ema_unet}
    unet_optimizer = trainer.adamw(unet.parameters(), lr=args.lr, weight_decay=0.0)
    discriminator_optimizer = trainer.adamw(discriminator.parameters(), lr=args.discriminator_lr or args.lr,
                                            betas=(0.0, 0.999), weight_decay=0.0)
    latent_shape = (unet.config.in_channels, latent_side, latent_side)

    def step(index: int) -> dict[str, float]:
        picked = trainer.batch_indices(len(data), index)
        latents = encode_images(base, data.batch(picked, device))
        text = encode_text(base, [data.captions[i] for i in picked.tolist()])
        draws = UFOGenDraws.draw(trainer.global_batch, latent_shape, settings, step_generator(args.seed, index))
        with trainer.autocast():
            losses = ufogen_step(unet, discriminator, unet_optimizer, discriminator_optimizer, latents, text,
                                 base.alphas_cumprod, settings, draws.shard(trainer), trainer,
                                 teacher=teacher_targets(index))
        if trainer.updating:
            update_ema(ema_unet, unet, min(args.ema_decay, (1 + index) / (10 + index)))
        shown = {"d": losses.discriminator, "adv": losses.adversarial, "rec": losses.reconstruction}
        return {**shown, "distill": losses.distillation} if pairs is not None else shown

    def teacher_targets(index: int) -> TeacherTargets | None:
        """This process's share of the step's teacher pairs (epochs over the pairs, their own order)."""
        if pairs is None:
            return None
        picked = trainer.batch_indices(len(pairs["noise"]), index, seed=args.seed + 1)
        start = (1 - base.alphas_cumprod[FINAL_TIMESTEP]).sqrt().cpu() * pairs["noise"][picked]
        text = encode_text(base, [data.captions[i] for i in pairs["caption_index"][picked].tolist()])
        return TeacherTargets(start, text, pairs["latents"][picked], args.distill_weight)  # ufogen_step moves them

    def sample(path: Path) -> None:
        for reference, grid in teacher_grids.items():
            if not reference.is_file():
                save_grid_atomic(grid, reference, len(prompts))
        text = encode_text(base, prompts)
        save_grid(one_step_images(base, ema_unet, text, SAMPLE_SEEDS, latent_side, settings.prediction_type), path,
                  len(prompts))

    def finish(model_dir: Path) -> dict[str, Any]:
        vae = base.vae if args.vae is not None else None
        scheduler = {**json.loads((folder / "scheduler" / "scheduler_config.json").read_text()),
                     "prediction_type": settings.prediction_type}
        save_model_folder(model_dir, unet=ema_unet, vae=vae, base_dir=folder, scheduler_config=scheduler)
        return {"teacher": str(folder), "sample_prompts": prompts}

    run_training(args, recipe=RECIPE, modules=modules,
                 optimizers={"unet": unet_optimizer, "discriminator": discriminator_optimizer},
                 step=step, sample=sample, finish=finish,
                 config={**asdict(settings), "teacher": str(folder), "text_encoder": "frozen (the teacher's)",
                         "vae": str(args.vae) if args.vae else "frozen (the teacher's)", "discriminator_lr": args.discriminator_lr or args.lr,
                         "ema_decay": args.ema_decay, "sample_prompts": prompts,
                         "train_images": len(originals), "colour_variants": len(data) - len(originals),
                         "teacher_pairs": {"count": args.distill_pairs, "weight": args.distill_weight,
                                           "steps": args.distill_steps, "guidance": args.distill_guidance}},
                 trainer=trainer)
