"""The img2img-turbo forward on the shared SD-Turbo: encode with skips, (mix with noise), one UNet
step to x0, decode with skips.

Tensors a task replaces (pix2pix's conv_in, CycleGAN VAE tensors) go through
torch.func.functional_call, so the shared modules are never modified. Adapters and their scales are
set by the store's model_call context, which every call runs in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from models.running.sd_turbo import FINAL_TIMESTEP, SDTurbo
from models.running.skip_vae import decode_with_skips, encode_with_skips
from models.running.store import ModelCall
from models.running.task_model import TaskModel, base_conv_in
from models.weights.checkpoints import canonical_name


def _conv_in_override(task: TaskModel, base: SDTurbo, gamma: float) -> dict[str, torch.Tensor]:
    """conv_in parameters for this call: the fine-tuned ones, blended with the pretrained by gamma.

    (1 - g) * conv_pre(x) + g * conv_ft(x) equals one conv with the blended weight and bias."""
    if task.conv_in is None:
        return {}
    conv = base_conv_in(base.unet)
    prefix = "conv_in.base_layer." if conv is not base.unet.conv_in else "conv_in."
    weight, bias = task.conv_in
    if gamma != 1.0:
        pre_weight, pre_bias = task.conv_in_pretrained or (conv.weight, conv.bias)
        weight = (1 - gamma) * pre_weight + gamma * weight
        bias = (1 - gamma) * pre_bias + gamma * bias
    return {prefix + "weight": weight, prefix + "bias": bias}


class _VaeCall(nn.Module):
    """Lets functional_call run a function of the VAE with some parameters replaced."""

    def __init__(self, vae: nn.Module, function: Callable[..., Any]) -> None:
        super().__init__()
        self.vae = vae
        self.function = function

    def forward(self, *args: Any) -> Any:
        return self.function(self.vae, *args)


def _vae_call(base: SDTurbo, overrides: Mapping[str, torch.Tensor], function: Callable[..., Any], *args: Any) -> Any:
    """function(vae, *args), with the task's VAE tensors in place of the base ones where it has any."""
    if not overrides:
        return function(base.vae, *args)
    resident = {canonical_name(name): name for name, _ in base.vae.named_parameters()}
    parameters = {f"vae.{resident[name]}": tensor for name, tensor in overrides.items()}
    return functional_call(_VaeCall(base.vae, function), parameters, args, strict=False)


def run_task(call: ModelCall, control: torch.Tensor, embeddings: torch.Tensor, *,
             noise: torch.Tensor | None = None) -> torch.Tensor:
    """One forward of the call's task at the call's gamma (open the call with store.model_call).

    gamma scales the LoRA adapters (set by the call), the conv_in blend and the skip activations;
    with noise given, the UNet input is gamma * latents + (1 - gamma) * noise. Returns pixels in [-1, 1].
    """
    base, task, gamma = call.base, call.require_task(), call.gamma
    mean, skips = _vae_call(base, task.vae_overrides, encode_with_skips, control)
    latents = mean * base.latent_scale
    if noise is not None:
        latents = gamma * latents + (1 - gamma) * noise
    denoised = base.predict_x0(latents, FINAL_TIMESTEP, embeddings,
                               unet_parameters=_conv_in_override(task, base, gamma))
    decoded = _vae_call(base, task.vae_overrides, decode_with_skips, denoised / base.latent_scale, skips,
                        task.skips, gamma)
    return decoded.clamp(-1, 1)
