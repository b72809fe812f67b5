"""What pix2pix-Turbo and CycleGAN-Turbo training share: LoRA on the frozen one-step base, the
skip-connection VAE, the one-step forward with gradients, the discriminator and the losses.

The forward is the app's (models.running.img2img_turbo.run_task) built from the same functions
(encode_with_skips, SDTurbo.predict_x0, decode_with_skips), so what is trained is exactly what the
app runs. gamma may be a per-example tensor here: LoRA outputs, the conv_in blend and the skip
activations are scaled per example, which equals the app's per-call adapter scale for a batch of one.
"""

from __future__ import annotations

import contextlib
import copy
import resource
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora.layer import LoraLayer
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from models.running.sd_turbo import FINAL_TIMESTEP, SDTurbo
from models.running.skip_vae import SkipConnections, decode_with_skips, encode_with_skips, skip_channels
from training.runner import Trainer

SKIP_INIT = 1e-5  # upstream initialises the 1x1 skip convs to this constant
SKIP_TARGETS = ["skip_conv_1", "skip_conv_2", "skip_conv_3", "skip_conv_4"]


class GammaState:
    """The diversity gamma of the current forward: None (1 for all) or one value per example."""

    def __init__(self) -> None:
        self.value: torch.Tensor | None = None

    def broadcast(self, like: torch.Tensor) -> torch.Tensor | None:
        if self.value is None:
            return None
        return self.value.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))

    @contextlib.contextmanager
    def using(self, gamma: torch.Tensor | None) -> Iterator[None]:
        previous, self.value = self.value, gamma
        try:
            yield
        finally:
            self.value = previous

    def checkpoint(self, function: Callable[..., Any], *args: Any) -> Any:
        """Gradient checkpointing (diffusers' gradient_checkpointing_func) that recomputes under
        the gamma of the forward it saved: backward runs after `using` has ended, and the hooks
        would otherwise recompute without gamma (CheckpointError: other tensors saved). The
        value is captured per call and restored only around the recompute (non-reentrant
        torch.utils.checkpoint's context_fn: its second context wraps the recomputation)."""
        captured = self.value
        return torch.utils.checkpoint.checkpoint(
            function, *args, use_reentrant=False,
            context_fn=lambda: (contextlib.nullcontext(), self.using(captured)))


def add_lora(model: nn.Module, adapter: str, rank: int, alpha: float, targets: list[str]) -> list[nn.Parameter]:
    """Inject one peft LoRA adapter (gaussian A, zero B: starts as a no-op); returns its parameters."""
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, init_lora_weights="gaussian")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        inject_adapter_in_model(config, model, adapter_name=adapter)
    return [parameter for name, parameter in model.named_parameters() if ".lora_" in name and f".{adapter}." in name]


def lora_state(model: nn.Module, adapter: str, keep_adapter_name: str | None = None) -> dict[str, torch.Tensor]:
    """An adapter's weights keyed as peft saves them: without the adapter name, or renamed."""
    marker = f".{adapter}."
    replacement = f".{keep_adapter_name}." if keep_adapter_name else "."
    return {name.replace(marker, replacement): parameter.detach().float().cpu().clone()
            for name, parameter in model.named_parameters() if ".lora_" in name and marker in name}


def scale_lora_per_example(models: Sequence[nn.Module], adapters: Sequence[str], gamma: GammaState) -> None:
    """Forward hooks that multiply each lora_B output by the example's gamma (the app's adapter scale)."""
    def hook(_module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        factor = gamma.broadcast(output)
        return output if factor is None else output * factor

    for model in models:
        for layer in (module for module in model.modules() if isinstance(module, LoraLayer)):
            for adapter in adapters:
                if adapter in layer.lora_B:
                    layer.lora_B[adapter].register_forward_hook(hook)


class BlendedConvIn(nn.Module):
    """(1 - gamma) * pretrained(x) + gamma * finetuned(x): the stochastic model's conv_in."""

    def __init__(self, pretrained: nn.Conv2d, gamma: GammaState) -> None:
        super().__init__()
        self.pretrained = pretrained
        self.finetuned = copy.deepcopy(pretrained).requires_grad_(True)
        self.gamma = gamma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tuned = self.finetuned(x)
        factor = self.gamma.broadcast(tuned)
        if factor is None:
            return tuned
        return (1 - factor) * self.pretrained(x) + factor * tuned


def new_skip_connections(base: SDTurbo) -> SkipConnections:
    """The four 1x1 skip convs, initialised to a small constant as upstream does, trainable."""
    skips = SkipConnections(skip_channels(base.vae))
    for conv in skips.convs():
        nn.init.constant_(conv.weight, SKIP_INIT)
    return skips.to(device=base.device, dtype=base.dtype)


def skip_weights(skips: SkipConnections) -> dict[str, torch.Tensor]:
    """skip_conv_i.weight of a SkipConnections whose convs may be wrapped by peft."""
    weights = {}
    for name, conv in zip(SKIP_TARGETS, skips.convs(), strict=True):
        plain = conv.base_layer if hasattr(conv, "base_layer") else conv
        weights[f"{name}.weight"] = plain.weight.detach().float().cpu().clone()
    return weights


def conv_pair(conv: nn.Conv2d) -> dict[str, torch.Tensor]:
    return {"weight": conv.weight.detach().float().cpu().clone(), "bias": conv.bias.detach().float().cpu().clone()}


def one_step(base: SDTurbo, skips: SkipConnections, control: torch.Tensor, embeddings: torch.Tensor,
             gamma: torch.Tensor | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
    """The app's run_task with gradients: encode with skips, (mix with noise), UNet at t=999 to x0,
    decode with skips, clamp to [-1, 1]. The caller has made the right adapters active."""
    mean, activations = encode_with_skips(base.vae, control)
    latents = mean * base.latent_scale
    skip_scale: torch.Tensor | float = 1.0
    if gamma is not None:
        skip_scale = gamma.view(-1, 1, 1, 1).to(latents.dtype)
        if noise is not None:
            latents = skip_scale * latents + (1 - skip_scale) * noise
    denoised = base.predict_x0(latents, FINAL_TIMESTEP, embeddings)
    decoded = decode_with_skips(base.vae, denoised / base.latent_scale, activations, skips, skip_scale)
    return decoded.clamp(-1, 1)


class CaptionEncoder:
    """Prompt embeddings from the frozen text encoder, as the app makes them, cached per caption."""

    def __init__(self, base: SDTurbo) -> None:
        self.base = base
        self._cache: dict[str, torch.Tensor] = {}

    def __call__(self, captions: Sequence[str]) -> torch.Tensor:
        return torch.cat([self._one(caption) for caption in captions])

    def _one(self, caption: str) -> torch.Tensor:
        cached = self._cache.get(caption)
        if cached is None:
            tokenizer = self.base.tokenizer
            ids = tokenizer(caption, padding="max_length", max_length=self.base.max_prompt_tokens, truncation=True,
                            return_tensors="pt").input_ids.to(self.base.device)
            with torch.no_grad():
                cached = self._cache[caption] = self.base.text_encoder(ids)[0]
        return cached


# --- discriminator and losses ----------------------------------------------------------------------

class PatchDiscriminator(nn.Module):
    """A small spectral-normalised PatchGAN of our own (upstream's CLIP vision-aided GAN needs CLIP
    weights that cannot be had here). Input in [-1, 1]; output one logit per patch."""

    def __init__(self, width: int = 32, depth: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for index in range(depth):
            out = width * 2 ** index
            layers += [spectral_norm(nn.Conv2d(channels, out, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            channels = out
        layers.append(spectral_norm(nn.Conv2d(channels, 1, 3, padding=1)))
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


def generator_gan_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating logistic loss: the generator wants its images called real."""
    return F.softplus(-fake_logits).mean()


def discriminator_gan_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


@contextlib.contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Discriminators frozen during the generator's step, so its GAN loss cannot write gradients
    into them (the upstream bug of img2img-turbo #56/#62: those gradients taught the discriminators
    to call fakes real, and the trained CycleGAN returned its input unchanged)."""
    for module in modules:
        module.requires_grad_(False)
    try:
        yield
    finally:
        for module in modules:
            module.requires_grad_(True)


class DiscriminatorGradientLeak(RuntimeError):
    """A discriminator held gradients before its own backward: the generator's loss reached it."""


def discriminator_step(discriminators: Sequence[nn.Module], optimizer: torch.optim.Optimizer,
                       pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], clip: float,
                       trainer: Trainer) -> torch.Tensor:
    """One update of the discriminators (the optimizer holds their parameters, in order) on
    (real, fake) pairs; fakes are detached here.

    Refuses to run if any discriminator already holds a gradient (see `frozen`) on a step's first
    micro-batch (later ones hold the gradients accumulated so far)."""
    leaked = [name for disc in discriminators for name, p in disc.named_parameters() if p.grad is not None]
    if leaked and trainer.micro == 0:
        raise DiscriminatorGradientLeak(f"discriminator parameters {leaked[:3]} hold gradients from the generator step")
    loss = sum(discriminator_gan_loss(disc(real), disc(fake.detach()))
               for disc, (real, fake) in zip(discriminators, pairs, strict=True))
    trainer.backward(loss)
    trainer.step(optimizer, clip)
    return loss.detach()


class PerceptualLoss:
    """Per-example perceptual distance: features of the project's own classifier (where upstream
    uses LPIPS, whose VGG weights cannot be had here), or, without a classifier run, an L1 over
    three scales (full, 1/2, 1/4) as a plain stand-in."""

    def __init__(self, classifier_run: Path | None, device: torch.device) -> None:
        self.extractor = None
        if classifier_run is not None:
            from training.classifier import load_feature_extractor

            self.extractor = load_feature_extractor(classifier_run, device=device)
        self.description = (f"classifier features ({classifier_run})" if classifier_run is not None
                            else "multi-scale L1 (no --perceptual classifier run given)")

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.extractor is not None:
            from training.classifier import perceptual_distance

            return perceptual_distance(self.extractor, a, b)
        total = a.new_zeros(a.shape[0])
        for level in range(3):
            total = total + (a - b).abs().flatten(1).mean(1)
            a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
        return total / 3


def image_batch(arrays: torch.Tensor, indices: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (N, H, W, 3) rows -> float (B, 3, H, W) in [-1, 1] on the device, as the app normalises."""
    return (arrays[indices].permute(0, 3, 1, 2).to(device=device, dtype=torch.float32) / 127.5 - 1.0)


def trainable_parameters(*modules: nn.Module) -> list[nn.Parameter]:
    return [p for module in modules for p in module.parameters() if p.requires_grad]


def check_base_frozen(base: SDTurbo) -> None:
    """Only LoRA, conv_in and skip weights may train; the base must stay exactly SD-Turbo's."""
    for part, module in (("text_encoder", base.text_encoder), ("unet", base.unet), ("vae", base.vae)):
        for name, parameter in module.named_parameters():
            trainable_name = ".lora_" in name or name.startswith("conv_in.finetuned")
            if parameter.requires_grad and not trainable_name:
                raise RuntimeError(f"base parameter {part}.{name} would be trained")



def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)
