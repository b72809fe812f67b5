"""A pix2pix-Turbo or CycleGAN-Turbo task as installed on the shared SD-Turbo, and the adapter
scales it runs at.

A task adds, on top of the resident UNet and VAE: peft LoRA adapters named after the task, its own
SkipConnections, and tensors that replace base parameters for its calls only (pix2pix's conv_in,
CycleGAN VAE tensors that differ from SD-Turbo's).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.running.adapters import AdapterScales, AdapterSwitch
from models.running.skip_vae import SkipConnections
from models.weights.specs import TaskCheckpointSpec

SKIP_ADAPTER = "skip"


@dataclass(frozen=True)
class TaskAdapterScales:
    """The full adapter setting of one task call, per model."""

    unet: AdapterScales
    vae: AdapterScales
    skips: AdapterScales


@dataclass
class TaskModel:
    """A task's weights installed on the shared base, ready to run."""

    spec: TaskCheckpointSpec
    unet_adapters: list[str]
    vae_adapter: str
    skips: SkipConnections
    skip_switch: AdapterSwitch
    conv_in: tuple[torch.Tensor, torch.Tensor] | None  # fine-tuned (weight, bias); None: the base conv_in
    conv_in_pretrained: tuple[torch.Tensor, torch.Tensor] | None  # blend partner; None: the base conv_in
    vae_overrides: dict[str, torch.Tensor]  # plain VAE parameter name -> tensor
    caption_embeddings: torch.Tensor | None  # prepared once for fixed-caption tasks

    def adapter_scales(self, gamma: float) -> TaskAdapterScales:
        """Every adapter of the task at scale gamma (the release scales LoRA and skips alike)."""
        return TaskAdapterScales(unet={name: gamma for name in self.unet_adapters}, vae={self.vae_adapter: gamma},
                                 skips={SKIP_ADAPTER: gamma})


def base_conv_in(unet: nn.Module) -> nn.Conv2d:
    """The UNet's own conv_in, under peft's wrapper when one targets it."""
    conv_in = unet.conv_in
    return conv_in.base_layer if hasattr(conv_in, "base_layer") else conv_in
