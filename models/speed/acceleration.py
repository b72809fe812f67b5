"""Speed settings for the resident networks, applied once at start-up: the attention kernel, the
memory format, torch.compile (with CUDA graphs where shapes are fixed) and merging LoRA adapters
into the base weights.

Each is its own switch so the benchmark (`python -m bench`) can measure it alone. Half precision
is not here: it is the store's dtype, chosen when the store is loaded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
from torch import nn

from models.running.adapters import lora_layers
from models.running.store import ModelStore
from models.running.task_model import TaskModel

AttentionKind = Literal["sdpa", "classic"]
ConvNetwork = Literal["unet", "vae", "preview_decoder"]  # "vae" includes the tasks' skip convs
CONV_NETWORKS: tuple[ConvNetwork, ...] = ("unet", "vae", "preview_decoder")
CompileMode = Literal["off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
COMPILE_MODES: tuple[CompileMode, ...] = ("off", "default", "reduce-overhead", "max-autotune",
                                          "max-autotune-no-cudagraphs")
# Compiled graphs per code object before dynamo gives up and runs it eagerly. The VAE's four up
# blocks share one forward; each adapter setting (none, or one of six tasks) is another graph.
RECOMPILE_LIMIT = 64
# Bases up to this many UNet + VAE parameters run folded LoRA when asked (the mini models: 16 M;
# SD-Turbo: 950 M, where a fold costs seconds on the CPU and saves 7% of a call: bench/RESULTS.md).
FOLD_MAX_PARAMETERS = 100_000_000


@dataclass(frozen=True)
class Acceleration:
    """Which speed settings to apply.

    attention: "sdpa" is torch's fused scaled_dot_product_attention (diffusers' default),
    "classic" the explicit softmax(QK^T)V of diffusers' AttnProcessor.
    channels_last: the networks whose weights (and so activations) are stored NHWC.
    compile_mode: torch.compile's mode; "reduce-overhead" adds CUDA graphs, which pay off only
    where shapes stay fixed (a new image size records new graphs).
    fold_lora: run tasks with their LoRA folded into the weights (models.running.folding) when the
    base is small (at most FOLD_MAX_PARAMETERS in its UNet and VAE): there the adapters' extra
    operations are much of a call and rebuilding the folded weights is cheap.
    """

    attention: AttentionKind = "sdpa"
    channels_last: tuple[ConvNetwork, ...] = ()
    compile_mode: CompileMode = "off"
    fold_lora: bool = False

    @classmethod
    def for_device(cls, device: torch.device) -> Acceleration:
        """The defaults: everything on CUDA; on the CPU SDPA and channels_last for the VAE and the
        preview decoder only (measured on this project's CPU with the calls alternating, two
        runs: VAE decoder 1.07x and 1.42x, encoder 1.05x and 1.21x, TAESD 1.10x and 1.15x, the UNet
        0.97x and 0.93x), and no compile (over a minute per task even for the tiny models): see
        bench/RESULTS.md."""
        if device.type == "cuda":
            return cls(attention="sdpa", channels_last=CONV_NETWORKS, compile_mode="reduce-overhead")
        return cls(attention="sdpa", channels_last=("vae", "preview_decoder"), compile_mode="off", fold_lora=True)

    def describe(self) -> str:
        parts = [f"attention={self.attention}", f"channels_last={'+'.join(self.channels_last) or 'none'}",
                 f"compile={self.compile_mode}", f"fold_lora={'on' if self.fold_lora else 'off'}"]
        return ", ".join(parts)


def set_attention(models: Iterable[UNet2DConditionModel | AutoencoderKL], kind: AttentionKind) -> None:
    """Use one attention kernel in every attention layer of these diffusers models."""
    for model in models:
        model.set_attn_processor(AttnProcessor2_0() if kind == "sdpa" else AttnProcessor())


def set_channels_last(modules: Iterable[nn.Module], channels_last: bool) -> None:
    """Store 4-D weights as NHWC (channels_last) or NCHW; convolutions then produce that layout."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    for module in modules:
        module.to(memory_format=memory_format)


def vae_blocks(vae: AutoencoderKL) -> list[nn.Module]:
    """The VAE's heavy blocks. Compiling these (not vae.decode) also covers the skip-connection
    VAE of img2img-turbo, which calls the blocks one by one."""
    return [*vae.encoder.down_blocks, vae.encoder.mid_block, vae.decoder.mid_block, *vae.decoder.up_blocks]


def parameter_count(*modules: nn.Module) -> int:
    return sum(parameter.numel() for module in modules for parameter in module.parameters())


def compile_in_place(modules: Iterable[nn.Module], mode: CompileMode) -> None:
    """torch.compile each module in place (nn.Module.compile keeps parameter names, so
    swapped parameters and peft keep working). Compilation happens on the first call."""
    if mode == "off":
        return
    # A process-wide dynamo setting: raised so no task silently falls back to eager.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    for module in modules:
        module.compile(mode=mode)


def accelerate(store: ModelStore, acceleration: Acceleration, preview_decoder: AutoencoderTiny | None = None) -> None:
    """Apply the settings to the store's UNet and VAE, its tasks' skip convs and the preview
    decoder. Call once, after the tasks are installed and before serving."""
    base = store.base
    set_attention([base.unet, base.vae], acceleration.attention)
    networks: dict[ConvNetwork, list[nn.Module]] = {
        "unet": [base.unet], "vae": [base.vae, *(task.skips for task in store.tasks.values())],
        "preview_decoder": [preview_decoder] if preview_decoder is not None else []}
    for name, modules in networks.items():
        set_channels_last(modules, name in acceleration.channels_last)
    if acceleration.fold_lora and parameter_count(base.unet, base.vae) <= FOLD_MAX_PARAMETERS:
        store.fold_adapters()
    compiled = [base.unet, *vae_blocks(base.vae)]
    if preview_decoder is not None:
        compiled.append(preview_decoder.decoder)
    compile_in_place(compiled, acceleration.compile_mode)


def merge_adapters(model: nn.Module, scales: Mapping[str, float]) -> int:
    """Fold the named LoRA adapters, at these scales, into the base weights (peft's merge); the
    layers then run as plain layers. Returns how many layers changed. Undo with unmerge_adapters
    before any other adapter setting is used: merged layers ignore set_adapter and set_scale."""
    merged = 0
    for layer in lora_layers(model):
        names = [name for name in scales if name in layer.scaling]
        if not names:
            continue
        for name in names:
            layer.set_scale(name, scales[name])
        layer.merge(adapter_names=names)
        merged += 1
    return merged


def unmerge_adapters(model: nn.Module) -> None:
    """Subtract every merged adapter from the base weights again (exact in fp32; in half precision
    each merge/unmerge round trip leaves rounding error in the base weights)."""
    for layer in lora_layers(model):
        if layer.merged:
            layer.unmerge()


def merge_task(store: ModelStore, task: TaskModel, gamma: float = 1.0) -> None:
    """Fold a task's UNet, VAE and skip-conv LoRA into the weights at this gamma. Pays where the
    same task runs many times at a fixed gamma (edges, translation); see the benchmark for the
    switch cost. The store's model_call does not know about merging: unmerge_task before any
    other task or gamma runs."""
    scales = task.adapter_scales(gamma)
    merge_adapters(store.base.unet, scales.unet)
    merge_adapters(store.base.vae, scales.vae)
    merge_adapters(task.skips, scales.skips)


def unmerge_task(store: ModelStore, task: TaskModel) -> None:
    for model in (store.base.unet, store.base.vae, task.skips):
        unmerge_adapters(model)
