"""Seeded random task weights in the released layouts, ranks and targets: the tiny source's tasks
and the full-size benchmarks. Their images mean nothing."""

from __future__ import annotations

import torch
from torch import nn

from models.running.sd_turbo import SDTurbo
from models.running.skip_vae import SkipConnections, skip_channels
from models.running.task_model import base_conv_in
from models.weights.checkpoints import LoraGroup, TaskWeights, canonical_name
from models.weights.specs import (CHECKPOINTS, CYCLEGAN_RANKS, CYCLEGAN_UNET_PATTERNS, PIX2PIX_RANKS,
                                  PIX2PIX_UNET_TARGETS, VAE_TARGETS, TaskName)


def cyclegan_unet_target_groups(unet: nn.Module) -> dict[str, list[str]]:
    """CycleGAN-Turbo's UNet LoRA targets by part: down blocks and conv_in, up blocks, the rest
    (weights of modules whose name contains one of the patterns; biases and norms excluded)."""
    groups: dict[str, list[str]] = {"encoder": [], "decoder": [], "others": []}
    for name, _ in unet.named_parameters():
        if "bias" in name or "norm" in name or ".lora_" in name:
            continue
        pattern = next((p for p in CYCLEGAN_UNET_PATTERNS if p in name), None)
        if pattern is None:
            continue
        module = canonical_name(name).removesuffix(".weight")
        if "down_blocks" in name or "conv_in" in name:
            groups["encoder"].append(module)
        elif "up_blocks" in name:
            groups["decoder"].append(module)
        else:
            groups["others"].append(module)
    return groups


def _random_lora(model: nn.Module, targets: list[str], rank: int, alpha: float, generator: torch.Generator,
                 scale: float) -> LoraGroup:
    """LoRA weights of the right shapes for model, drawn from generator (no change to model)."""
    state: dict[str, torch.Tensor] = {}
    for wrapped_name, module in model.named_modules():
        name = canonical_name(wrapped_name)
        if ".lora_" in name or not isinstance(module, (nn.Linear, nn.Conv2d)):
            continue
        if not any(name == target or name.endswith("." + target) for target in targets):
            continue
        if isinstance(module, nn.Linear):
            a_shape, b_shape = (rank, module.in_features), (module.out_features, rank)
        else:
            a_shape = (rank, module.in_channels, *module.kernel_size)
            b_shape = (module.out_channels, rank, 1, 1)
        state[f"{name}.lora_A.weight"] = torch.randn(a_shape, generator=generator) * scale
        state[f"{name}.lora_B.weight"] = torch.randn(b_shape, generator=generator) * scale
    return LoraGroup(rank, alpha, targets, state)


def random_task_weights(base: SDTurbo, task: TaskName, seed: int = 0) -> TaskWeights:
    """Seeded random weights in the task's real layout, ranks and targets (not meaningful images)."""
    spec = CHECKPOINTS[task]
    generator = torch.Generator().manual_seed(seed)
    skips = SkipConnections(skip_channels(base.vae))
    skip_weights = {f"{name}.weight": torch.randn(conv.weight.shape, generator=generator) * 0.05
                    for name, conv in zip(("skip_conv_1", "skip_conv_2", "skip_conv_3", "skip_conv_4"), skips.convs())}
    vae_rank = PIX2PIX_RANKS[1] if spec.layout == "pix2pix" else CYCLEGAN_RANKS[1]
    vae_targets = [t for t in VAE_TARGETS if not t.startswith("skip_conv")]
    vae_lora = _random_lora(base.vae, vae_targets, vae_rank, 8, generator, 0.05)
    skip_targets = [t for t in VAE_TARGETS if t.startswith("skip_conv")]
    skip_lora = _random_lora(skips, skip_targets, vae_rank, 8, generator, 0.05)
    if spec.layout == "cyclegan":
        rank = min(CYCLEGAN_RANKS[0], 8)
        groups = {group: _random_lora(base.unet, targets, rank, rank, generator, 0.05)
                  for group, targets in cyclegan_unet_target_groups(base.unet).items()}
        return TaskWeights(task, groups, vae_lora, skip_weights, skip_lora)
    conv = base_conv_in(base.unet)
    conv_in = {"weight": conv.weight.detach().float().cpu() + torch.randn(conv.weight.shape, generator=generator) * 0.05,
               "bias": conv.bias.detach().float().cpu() + torch.randn(conv.bias.shape, generator=generator) * 0.05}
    main = _random_lora(base.unet, PIX2PIX_UNET_TARGETS, PIX2PIX_RANKS[0], 8, generator, 0.05)
    pretrained = {"weight": conv.weight.detach().float().cpu(), "bias": conv.bias.detach().float().cpu()} if task == "sketch_to_image" else {}
    return TaskWeights(task, {"main": main}, vae_lora, skip_weights, skip_lora, conv_in, pretrained)
