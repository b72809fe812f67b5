"""Speed settings for the resident networks, applied once at start-up: the attention kernel, the
memory format, bfloat16 networks on a float32 store (CPUs with bf16 instructions), torch.compile
(whole calls, any size, gamma as a tensor input; with CUDA graphs), LoRA folded into the weights,
traced networks (with the decoder's upsamplers as transposed convolutions) and, for the whole
process, TF32 for fp32 matmuls on CUDA and freed host memory kept for reuse.

Each is its own switch so the benchmark (`python -m bench`) can measure it alone. The store's own
dtype (fp16 on CUDA) is not here: it is chosen when the store is loaded.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal

import torch
from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
from torch import nn

from models.running.adapters import lora_layers
from models.running.devices import native_bfloat16
from models.running.host_memory import retain_freed_memory
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
# A UNet runs in bfloat16 on the CPU only from this many parameters. Measured on this project's
# CPU (AVX512-BF16): SD-Turbo's UNet at 256 px 2.5x faster in bf16 (2,206 -> 895 ms), mini's
# (5.9 M, 16x16 latents) 1.9x slower (22 -> 41 ms): its many small matmuls pay bf16's reorders.
BFLOAT16_UNET_MIN_PARAMETERS = 100_000_000


@dataclass(frozen=True)
class Acceleration:
    """Which speed settings to apply.

    attention: "sdpa" is torch's fused scaled_dot_product_attention (diffusers' default),
    "classic" the explicit softmax(QK^T)V of diffusers' AttnProcessor.
    channels_last: the networks whose weights (and so activations) are stored NHWC.
    compile_mode: torch.compile's mode; "reduce-overhead" adds CUDA graphs, which pay off only
    where shapes stay fixed (a new image size records new graphs).
    bfloat16: the networks to run in bfloat16 when the store is float32 (its text encoder, the
    latents and the images stay float32); the UNet only when it has at least
    BFLOAT16_UNET_MIN_PARAMETERS. Pays on CPUs with bf16 instructions (devices.native_bfloat16):
    the mini VAE 1.5-2.2x faster (bench/RESULTS.md), its images within about 40 dB PSNR of fp32.
    Call accelerate after every task is installed: a task added later would stay fp32.
    fold_lora: run tasks with their LoRA folded into the weights (models.running.folding) when the
    base is small (at most FOLD_MAX_PARAMETERS in its UNet and VAE): there the adapters' extra
    operations are much of a call and rebuilding the folded weights is cheap.
    trace_unet: with fold_lora applied, run the UNet of folded calls through TorchScript graphs
    (models.running.traced_unet): a small UNet's call is mostly Python, which the graphs skip.
    trace_vae: likewise the VAE of folded calls, plain and with img2img-turbo's skips
    (models.running.traced_vae).
    transposed_upsamplers: with trace_vae applied, the traced decoders upsample with one
    transposed convolution each instead of nearest 2x and a 3x3 conv (models.running.upsampling):
    the same function to float rounding.
    tf32: fp32 matmuls and convolutions on TensorFloat-32 (CUDA only; process-wide).
    retain_host_memory: keep freed tensor memory in the process for the next call instead of
    returning it to the kernel (models.running.host_memory; glibc only). Process-wide: once a
    studio applies it, it holds for every studio in the process.
    """

    attention: AttentionKind = "sdpa"
    channels_last: tuple[ConvNetwork, ...] = ()
    compile_mode: CompileMode = "off"
    fold_lora: bool = False
    bfloat16: tuple[ConvNetwork, ...] = ()
    trace_unet: bool = False
    trace_vae: bool = False
    transposed_upsamplers: bool = False
    retain_host_memory: bool = False
    tf32: bool = False

    @classmethod
    def for_device(cls, device: torch.device) -> Acceleration:
        """The defaults: everything on CUDA; on the CPU SDPA and channels_last for the VAE and the
        preview decoder only (measured on this project's CPU with the calls alternating, two
        runs: VAE decoder 1.07x and 1.42x, encoder 1.05x and 1.21x, TAESD 1.10x and 1.15x, the UNet
        0.97x and 0.93x), no compile (over a minute per task even for the tiny models), and
        bfloat16 networks where the CPU has bf16 instructions, and freed memory kept for reuse (on
        the CPU every call's activations are host memory): see bench/RESULTS.md."""
        if device.type == "cuda":
            return cls(attention="sdpa", channels_last=CONV_NETWORKS, compile_mode="reduce-overhead", tf32=True)
        return cls(attention="sdpa", channels_last=("vae", "preview_decoder"), compile_mode="off", fold_lora=True,
                   bfloat16=CONV_NETWORKS if native_bfloat16(device) else (), trace_unet=True, trace_vae=True,
                   transposed_upsamplers=True, retain_host_memory=True)

    def describe(self) -> str:
        parts = [f"attention={self.attention}", f"channels_last={'+'.join(self.channels_last) or 'none'}",
                 f"compile={self.compile_mode}", f"fold_lora={'on' if self.fold_lora else 'off'}",
                 f"bfloat16={'+'.join(self.bfloat16) or 'none'}", f"trace_unet={'on' if self.trace_unet else 'off'}",
                 f"trace_vae={'on' if self.trace_vae else 'off'}",
                 f"transposed_upsamplers={'on' if self.transposed_upsamplers else 'off'}",
                 f"retain_host_memory={'on' if self.retain_host_memory else 'off'}"]
        if self.tf32:  # CUDA only: CPU lines stay as they were
            parts.append("tf32=on")
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


def parameter_count(*modules: nn.Module) -> int:
    return sum(parameter.numel() for module in modules for parameter in module.parameters())


def compiled_modules(store: ModelStore, preview_decoder: AutoencoderTiny | None) -> list[nn.Module]:
    """What compiles in place: whole networks (the UNet, the VAE's encoder and decoder, the preview
    decoder), never blocks whose outputs feed one another (see compile_calls)."""
    vae = store.base.vae
    return [store.base.unet, vae.encoder, vae.decoder, *([preview_decoder.decoder] if preview_decoder else [])]


def compile_calls(store: ModelStore, preview_decoder: AutoencoderTiny | None, mode: CompileMode) -> None:
    """torch.compile one graph per call: the modules of compiled_modules in place (nn.Module.compile
    keeps parameter names, so swapped parameters and peft keep working) and the img2img-turbo
    VAE's encode and decode functions (ModelStore.compile_calls, which also makes gamma a tensor
    input). Under CUDA-graph trees each compiled call in inference starts a new step that may
    overwrite the previous graphs' outputs (torch/_inductor/cudagraph_trees.py): graphs per
    block, which read one another's outputs, would fail; whole calls hand eager code their
    outputs, and the one output read across a call, the encoder's skip activations, is cloned.
    dynamic=True: one graph for every image size. Compilation happens on the first call."""
    if mode == "off":
        return
    # Process-wide dynamo settings: the limit raised so no task silently falls back to eager, and
    # no duck sizing, which would guard height == width after a square warm-up (a non-square
    # image then compiled again).
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    torch.fx.experimental._config.use_duck_shape = False
    for module in compiled_modules(store, preview_decoder):
        module.compile(mode=mode, dynamic=True)
    store.compile_calls(functools.partial(torch.compile, mode=mode, dynamic=True))


def bfloat16_networks(store: ModelStore, wanted: Iterable[ConvNetwork]) -> tuple[ConvNetwork, ...]:
    """Which of the wanted networks to run in bfloat16: none unless the store is float32, and the
    UNet only from BFLOAT16_UNET_MIN_PARAMETERS."""
    if store.dtype != torch.float32:
        return ()
    large_unet = parameter_count(store.base.unet) >= BFLOAT16_UNET_MIN_PARAMETERS
    return tuple(name for name in wanted if name != "unet" or large_unet)


def cast_to_bfloat16(store: ModelStore, networks: tuple[ConvNetwork, ...],
                     preview_decoder: AutoencoderTiny | None) -> None:
    """Cast the networks (with their adapters, and the tasks' tensors that run inside them) to
    bfloat16; the base then casts at their edges (SDTurbo.unet_dtype, vae_dtype)."""
    base, half = store.base, torch.bfloat16
    if "unet" in networks:
        _cast(base.unet, half)
        base.unet_dtype = half
        for task in store.tasks.values():
            task.conv_in = _cast_pair(task.conv_in, half)
            task.conv_in_pretrained = _cast_pair(task.conv_in_pretrained, half)
    if "vae" in networks:
        _cast(base.vae, half)
        base.vae_dtype = half
        for task in store.tasks.values():
            _cast(task.skips, half)
            task.vae_overrides = {name: tensor.to(half) for name, tensor in task.vae_overrides.items()}
    if "preview_decoder" in networks and preview_decoder is not None:
        _cast(preview_decoder, half)


def _cast(module: nn.Module, dtype: torch.dtype) -> None:
    """Module.to(dtype) without diffusers' warning about modules kept in float32, which these
    models have none of (the warning is printed even for an empty list)."""
    nn.Module.to(module, dtype=dtype)


def _cast_pair(pair: tuple[torch.Tensor, torch.Tensor] | None,
               dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor] | None:
    return None if pair is None else (pair[0].to(dtype), pair[1].to(dtype))


def accelerate(store: ModelStore, acceleration: Acceleration,
               preview_decoder: AutoencoderTiny | None = None) -> Acceleration:
    """Apply the settings to the store's UNet and VAE, its tasks' skip convs and the preview
    decoder. Call once, after the tasks are installed and before serving. Returns the settings
    as applied (bfloat16 and fold_lora depend on the store's dtype and size)."""
    base = store.base
    applied = replace(acceleration, bfloat16=bfloat16_networks(store, acceleration.bfloat16))
    cast_to_bfloat16(store, applied.bfloat16, preview_decoder)
    set_attention([base.unet, base.vae], acceleration.attention)
    networks: dict[ConvNetwork, list[nn.Module]] = {
        "unet": [base.unet], "vae": [base.vae, *(task.skips for task in store.tasks.values())],
        "preview_decoder": [preview_decoder] if preview_decoder is not None else []}
    for name, modules in networks.items():
        set_channels_last(modules, name in acceleration.channels_last)
    fold = acceleration.fold_lora and parameter_count(base.unet, base.vae) <= FOLD_MAX_PARAMETERS
    traceable = fold and acceleration.compile_mode == "off"
    applied = replace(applied, fold_lora=fold, trace_unet=acceleration.trace_unet and traceable,
                      trace_vae=acceleration.trace_vae and traceable,
                      transposed_upsamplers=acceleration.transposed_upsamplers and acceleration.trace_vae and traceable,
                      retain_host_memory=acceleration.retain_host_memory and retain_freed_memory(),
                      tf32=acceleration.tf32 and store.device.type == "cuda")
    if applied.fold_lora:
        store.fold_adapters()
    if applied.trace_unet:
        store.trace_unet()
    if applied.trace_vae:
        store.trace_vae(transposed_upsamplers=applied.transposed_upsamplers)
    if applied.tf32:
        use_tf32()
    compile_calls(store, preview_decoder, acceleration.compile_mode)
    return applied


def use_tf32() -> None:
    """fp32 matmuls and convolutions on TensorFloat-32 (Ampere and later; process-wide, as torch's
    own switches are): the fp32 parts of an fp16 store, the text encoder's and the x0 formula's."""
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    torch.backends.cudnn.conv.fp32_precision = "tf32"


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
