"""Test-side reference for img2img-turbo: models assembled the way the release assembles them and
checkpoints written in the released layouts, plus the reference forward pass written out from the
formulas. Independent of the production code in models/img2img_turbo.py and models/skip_vae.py.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import DDPMScheduler
from peft import LoraConfig
from peft.tuners.lora.layer import LoraLayer
from torch import nn

from models.weights.configs import SCHEDULER_CONFIG

UNET_TARGETS = ["to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_shortcut", "conv_out",
                "proj_in", "proj_out", "ff.net.2", "ff.net.0.proj"]
VAE_TARGETS = ["conv1", "conv2", "conv_in", "conv_shortcut", "conv", "conv_out", "skip_conv_1", "skip_conv_2",
               "skip_conv_3", "skip_conv_4", "to_k", "to_q", "to_v", "to_out.0"]
CYCLEGAN_PATTERNS = ["to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_in", "conv_shortcut",
                     "conv_out", "proj_out", "proj_in", "ff.net.2", "ff.net.0.proj"]


class TwinConvIn(nn.Module):
    """conv_in of the stochastic sketch model: a pretrained and a fine-tuned conv, blended by r."""

    def __init__(self, pretrained: nn.Conv2d, finetuned: nn.Conv2d) -> None:
        super().__init__()
        self.conv_in_pretrained = copy.deepcopy(pretrained)
        self.conv_in_curr = copy.deepcopy(finetuned)
        self.r = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_in_pretrained(x) * (1 - self.r) + self.conv_in_curr(x) * self.r


def _randomise(parameters, generator: torch.Generator, scale: float = 0.05) -> None:
    with torch.no_grad():
        for parameter in parameters:
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)


def _widths(vae) -> list[int]:
    return list(vae.config.block_out_channels)


def add_skip_convs(vae, generator: torch.Generator) -> None:
    """skip_conv_1..4 on the decoder, sized for the VAE: (c2->c3), (c1->c3), (c0->c2), (c0->c1)."""
    c = _widths(vae)
    shapes = [(c[2], c[3]), (c[1], c[3]), (c[0], c[2]), (c[0], c[1])]
    for index, (cin, cout) in enumerate(shapes, start=1):
        conv = nn.Conv2d(cin, cout, kernel_size=1, bias=False)
        _randomise([conv.weight], generator)
        setattr(vae.decoder, f"skip_conv_{index}", conv)


def lora_parameters(model: nn.Module, adapter: str):
    return [p for n, p in model.named_parameters() if ".lora_" in n and f".{adapter}." in n]


@dataclass
class ReferencePix2Pix:
    unet: nn.Module
    vae: nn.Module
    stochastic: bool


def make_pix2pix(unet, vae, stochastic: bool, seed: int, path: Path) -> ReferencePix2Pix:
    """A pix2pix-Turbo model with random LoRA/conv_in/skips, saved in the released pkl layout."""
    generator = torch.Generator().manual_seed(seed)
    unet, vae = copy.deepcopy(unet), copy.deepcopy(vae)
    finetuned = copy.deepcopy(unet.conv_in)
    _randomise(finetuned.parameters(), generator)
    unet.conv_in = TwinConvIn(unet.conv_in, finetuned) if stochastic else finetuned
    add_skip_convs(vae, generator)
    vae.add_adapter(LoraConfig(r=4, init_lora_weights="gaussian", target_modules=VAE_TARGETS), adapter_name="vae_skip")
    unet.add_adapter(LoraConfig(r=8, init_lora_weights="gaussian", target_modules=UNET_TARGETS))
    _randomise(lora_parameters(unet, "default"), generator)
    _randomise(lora_parameters(vae, "vae_skip"), generator)
    checkpoint = {
        "unet_lora_target_modules": UNET_TARGETS,
        "vae_lora_target_modules": VAE_TARGETS,
        "rank_unet": 8,
        "rank_vae": 4,
        "state_dict_unet": {k: v for k, v in unet.state_dict().items() if "lora" in k or "conv_in" in k},
        "state_dict_vae": {k: v for k, v in vae.state_dict().items() if "lora" in k or "skip" in k},
    }
    torch.save(checkpoint, path)
    return ReferencePix2Pix(unet.eval(), vae.eval(), stochastic)


class _TwoVaes(nn.Module):
    def __init__(self, vae_a2b, vae_b2a) -> None:
        super().__init__()
        self.vae = vae_a2b
        self.vae_b2a = vae_b2a


def cyclegan_targets(unet) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {"encoder": [], "decoder": [], "others": []}
    for name, _ in unet.named_parameters():
        if "bias" in name or "norm" in name:
            continue
        for pattern in CYCLEGAN_PATTERNS:
            if pattern in name:
                module = name.replace(".weight", "")
                part = "encoder" if ("down_blocks" in name or "conv_in" in name) else (
                    "decoder" if "up_blocks" in name else "others")
                groups[part].append(module)
                break
    return groups


@dataclass
class ReferenceCycleGAN:
    unet: nn.Module
    vae_a2b: nn.Module
    vae_b2a: nn.Module


def make_cyclegan(unet, vae, seed: int, path: Path, rank: int = 4, perturb_b2a: str | None = None) -> ReferenceCycleGAN:
    """A CycleGAN-Turbo model (three UNet LoRAs, two VAEs) saved in the released pkl layout.

    perturb_b2a names a base parameter of the b2a VAE to change, so that it differs from SD-Turbo."""
    generator = torch.Generator().manual_seed(seed)
    unet, vae = copy.deepcopy(unet), copy.deepcopy(vae)
    targets = cyclegan_targets(unet)
    for part in ("encoder", "decoder", "others"):
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                    target_modules=targets[part]), adapter_name=f"default_{part}")
        _randomise(lora_parameters(unet, f"default_{part}"), generator)
    unet.set_adapters(["default_encoder", "default_decoder", "default_others"])
    add_skip_convs(vae, generator)
    vae.add_adapter(LoraConfig(r=4, init_lora_weights="gaussian", target_modules=VAE_TARGETS), adapter_name="vae_skip")
    vae_b2a = copy.deepcopy(vae)
    _randomise(lora_parameters(vae, "vae_skip"), generator)
    _randomise(lora_parameters(vae_b2a, "vae_skip"), generator)
    for model in (vae, vae_b2a):
        _randomise([getattr(model.decoder, f"skip_conv_{i}").base_layer.weight for i in range(1, 5)], generator)
    if perturb_b2a is not None:
        with torch.no_grad():
            dict(vae_b2a.named_parameters())[perturb_b2a].add_(0.1)
    both = _TwoVaes(vae, vae_b2a)
    checkpoint = {
        "l_target_modules_encoder": targets["encoder"],
        "l_target_modules_decoder": targets["decoder"],
        "l_modules_others": targets["others"],
        "rank_unet": rank,
        "rank_vae": 4,
        "vae_lora_target_modules": VAE_TARGETS,
        "sd_vae_enc": both.state_dict(),
        "sd_vae_dec": both.state_dict(),
    }
    for part, key in (("encoder", "sd_encoder"), ("decoder", "sd_decoder"), ("others", "sd_other")):
        checkpoint[key] = {n.replace(f".default_{part}.weight", ".weight"): p.detach().clone()
                           for n, p in unet.named_parameters() if "lora" in n and f"default_{part}" in n}
    torch.save(checkpoint, path)
    return ReferenceCycleGAN(unet.eval(), vae.eval(), vae_b2a.eval())


def _scale_lora(model: nn.Module, scale: float) -> None:
    for module in model.modules():
        if isinstance(module, LoraLayer):
            for adapter in module.active_adapters:
                module.set_scale(adapter, scale)


def _encode(vae, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    encoder = vae.encoder
    h = encoder.conv_in(x)
    activations = []
    for block in encoder.down_blocks:
        activations.append(h)
        h = block(h)
    h = encoder.conv_out(encoder.conv_act(encoder.conv_norm_out(encoder.mid_block(h))))
    moments = vae.quant_conv(h)
    return moments[:, : moments.shape[1] // 2], activations


def _decode(vae, z: torch.Tensor, activations: list[torch.Tensor], gamma: float) -> torch.Tensor:
    decoder = vae.decoder
    h = decoder.mid_block(decoder.conv_in(vae.post_quant_conv(z)), None)
    skip_convs = [getattr(decoder, f"skip_conv_{i}") for i in range(1, 5)]
    for index, block in enumerate(decoder.up_blocks):
        h = block(h + skip_convs[index](activations[::-1][index] * gamma), None)
    return decoder.conv_out(decoder.conv_act(decoder.conv_norm_out(h)))


def _one_step_x0(eps: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
    """The release's one-step DDPM scheduler at t = 999 (its variance term is ~1e-10 here)."""
    scheduler = DDPMScheduler.from_config(SCHEDULER_CONFIG)
    scheduler.set_timesteps(1)
    generator = torch.Generator().manual_seed(0)
    return scheduler.step(eps, 999, sample, generator=generator).prev_sample


@torch.no_grad()
def reference_forward(unet, vae, control: torch.Tensor, embeddings: torch.Tensor, *, gamma: float = 1.0,
                      noise: torch.Tensor | None = None) -> torch.Tensor:
    """encode (posterior mean) -> [mix with noise] -> UNet at 999 -> DDPM step -> decode with skips."""
    _scale_lora(unet, gamma)
    _scale_lora(vae, gamma)
    if hasattr(unet.conv_in, "r"):
        unet.conv_in.r = gamma
    scale = vae.config.scaling_factor
    mean, activations = _encode(vae, control)
    latents = mean * scale
    if noise is not None:
        latents = latents * gamma + noise * (1 - gamma)
    eps = unet(latents, torch.tensor([999]), encoder_hidden_states=embeddings).sample
    x0 = _one_step_x0(eps, latents)
    return _decode(vae, x0 / scale, activations, gamma).clamp(-1, 1)
