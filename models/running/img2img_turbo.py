"""The img2img-turbo forward on the shared SD-Turbo: encode with skips, (mix with noise), one UNet
step to x0, decode with skips.

Tensors a task replaces (pix2pix's conv_in, CycleGAN VAE tensors) are swapped in for its call only
(models.running.swapped, through ModelCall), so the shared modules read as the base again
afterwards. Adapters and their scales are set by the store's model_call context, which every call
runs in.
"""

from __future__ import annotations

import torch

from models.running.sd_turbo import FINAL_TIMESTEP, SDTurbo
from models.running.store import ModelCall
from models.running.task_model import TaskModel, base_conv_in


def _conv_in_override(task: TaskModel, base: SDTurbo, gamma: float) -> dict[str, torch.Tensor]:
    """conv_in parameters for this call: the fine-tuned ones, blended with the pretrained by gamma.

    (1 - g) * conv_pre(x) + g * conv_ft(x) equals one conv with the blended weight and bias."""
    if task.conv_in is None:
        return {}
    weight, bias = task.conv_in
    if gamma != 1.0:
        pre_weight, pre_bias = _pretrained_conv_in(task, base)
        weight = (1 - gamma) * pre_weight + gamma * weight
        bias = (1 - gamma) * pre_bias + gamma * bias
    return {"conv_in.weight": weight, "conv_in.bias": bias}


def _pretrained_conv_in(task: TaskModel, base: SDTurbo) -> tuple[torch.Tensor, torch.Tensor]:
    conv = base_conv_in(base.unet)
    return task.conv_in_pretrained or (conv.weight, conv.bias)


def _conv_in_for_call(call: ModelCall, task: TaskModel) -> dict[str, torch.Tensor]:
    """_conv_in_override, or for compiled calls: blended at the gamma tensor into the call's own conv_in
    tensors, so the compiled UNet sees the same tensors (addresses) at every gamma."""
    if call.conv_in is None or call.gamma_tensor is None or task.conv_in is None:
        return _conv_in_override(task, call.base, call.gamma)
    pretrained = _pretrained_conv_in(task, call.base)
    for start, end, out in zip(pretrained, task.conv_in, call.conv_in, strict=True):
        torch.lerp(start, end, call.gamma_tensor.to(out.dtype), out=out)
    weight, bias = call.conv_in
    return {"conv_in.weight": weight, "conv_in.bias": bias}


def run_task(call: ModelCall, control: torch.Tensor, embeddings: torch.Tensor, *,
             noise: torch.Tensor | None = None) -> torch.Tensor:
    """One forward of the call's task at the call's gamma (open the call with store.model_call).

    gamma scales the LoRA adapters (set by the call), the conv_in blend and the skip activations;
    with noise given, the UNet input is gamma * latents + (1 - gamma) * noise. Returns pixels in [-1, 1].
    """
    base, task, gamma = call.base, call.require_task(), call.gamma
    mean, skips = call.encode_with_skips(control.to(base.vae_dtype))
    latents = (mean * base.latent_scale).to(base.dtype)
    if noise is not None:
        latents = gamma * latents + (1 - gamma) * noise
    denoised = call.predict_x0(latents, FINAL_TIMESTEP, embeddings,
                               unet_parameters=_conv_in_for_call(call, task))
    decoded = call.decode_with_skips((denoised / base.latent_scale).to(base.vae_dtype), skips)
    return decoded.to(base.dtype).clamp(-1, 1)
