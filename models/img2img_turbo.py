"""pix2pix-Turbo and CycleGAN-Turbo on the one shared SD-Turbo.

A task adds, on top of the resident UNet and VAE: peft LoRA adapters named after the task, its own
SkipConnections, and tensors that replace base parameters for its calls only (pix2pix's conv_in,
CycleGAN VAE tensors that differ from SD-Turbo's). Replacements go through torch.func.functional_call,
so the shared modules are never modified; adapters and their scales are stated on every call.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
from torch import nn
from torch.func import functional_call

from models.adapters import AdapterSwitch
from models.checkpoints import (CheckpointError, LoraGroup, TaskWeights, canonical_name, convert_released,
                                load_task_weights, save_task_weights)
from models.downloads import download_file
from models.sd_turbo import FINAL_TIMESTEP, SDTurbo
from models.skip_vae import SkipConnections, decode_with_skips, encode_with_skips, skip_channels
from models.specs import CHECKPOINTS, TaskCheckpointSpec, TaskName
from models.store import ModelStore, ProgressCallback

SKIP_ADAPTER = "skip"
PIX2PIX_UNET_TARGETS = ["to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_shortcut",
                        "conv_out", "proj_in", "proj_out", "ff.net.2", "ff.net.0.proj"]
VAE_TARGETS = ["conv1", "conv2", "conv_in", "conv_shortcut", "conv", "conv_out", "skip_conv_1", "skip_conv_2",
               "skip_conv_3", "skip_conv_4", "to_k", "to_q", "to_v", "to_out.0"]
CYCLEGAN_UNET_PATTERNS = ["to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_in",
                          "conv_shortcut", "conv_out", "proj_out", "proj_in", "ff.net.2", "ff.net.0.proj"]
PIX2PIX_RANKS = (8, 4)  # UNet, VAE
CYCLEGAN_RANKS = (128, 4)


def checkpoint_cache_dir() -> Path:
    """Where downloaded and converted img2img-turbo files are kept ($ONESTEP_CACHE overrides)."""
    root = os.environ.get("ONESTEP_CACHE") or Path.home() / ".cache" / "onestep-studio"
    return Path(root) / "img2img-turbo"


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


def _lora_config(group: LoraGroup) -> LoraConfig:
    return LoraConfig(r=group.rank, lora_alpha=group.alpha, target_modules=group.target_modules)


def _inject(model: nn.Module, group: LoraGroup, adapter: str, origin: str) -> None:
    """Add one peft LoRA adapter and load its weights; keys that do not fit are reported by name."""
    with warnings.catch_warnings():  # several adapters on one model is the design here
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        inject_adapter_in_model(_lora_config(group), model, adapter_name=adapter)
    result = set_peft_model_state_dict(model, group.state, adapter_name=adapter)
    unexpected = sorted(result.unexpected_keys)
    missing = sorted(key for key in result.missing_keys if f".{adapter}." in key and ".lora_" in key)
    if unexpected or missing:
        raise CheckpointError(f"{origin}: LoRA weights do not fit the model; "
                              f"missing {missing[:10] or 'none'}, unexpected {unexpected[:10] or 'none'}")


def _same_as(tensor_pair: tuple[torch.Tensor, torch.Tensor], conv: nn.Conv2d) -> bool:
    weight, bias = tensor_pair
    return torch.equal(weight.float().cpu(), conv.weight.float().cpu()) and torch.equal(bias.float().cpu(), conv.bias.float().cpu())


def base_conv_in(unet: nn.Module) -> nn.Conv2d:
    conv_in = unet.conv_in
    return conv_in.base_layer if hasattr(conv_in, "base_layer") else conv_in


def install_task(base: SDTurbo, weights: TaskWeights, caption_embeddings: torch.Tensor | None) -> TaskModel:
    """Put a task's weights on the shared UNet and VAE (as named peft adapters) and beside them."""
    spec = CHECKPOINTS[weights.task]
    unet_adapters = []
    for group_name, group in weights.unet_lora.items():
        adapter = f"{spec.task}_{group_name}"
        _inject(base.unet, group, adapter, f"{spec.filename} (UNet, {group_name})")
        unet_adapters.append(adapter)
    vae_adapter = f"{spec.task}_vae"
    _inject(base.vae, weights.vae_lora, vae_adapter, f"{spec.filename} (VAE)")
    skips = SkipConnections(skip_channels(base.vae))
    missing, unexpected = skips.load_state_dict(weights.skip_weights, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{spec.filename}: skip convs: missing {missing}, unexpected {unexpected}")
    if weights.skip_lora is not None:
        _inject(skips, weights.skip_lora, SKIP_ADAPTER, f"{spec.filename} (skip convs)")
    skips.eval().requires_grad_(False).to(device=base.device, dtype=base.dtype)
    skip_switch = AdapterSwitch(skips)
    skip_switch.refresh()
    return TaskModel(
        spec=spec,
        unet_adapters=unet_adapters,
        vae_adapter=vae_adapter,
        skips=skips,
        skip_switch=skip_switch,
        conv_in=_conv_pair(weights.conv_in, base),
        conv_in_pretrained=_shared_or_own(weights.conv_in_pretrained, base),
        vae_overrides={key: value.to(base.device, base.dtype) for key, value in weights.vae_overrides.items()},
        caption_embeddings=caption_embeddings,
    )


def _conv_pair(state: Mapping[str, torch.Tensor], base: SDTurbo) -> tuple[torch.Tensor, torch.Tensor] | None:
    if not state:
        return None
    return state["weight"].to(base.device, base.dtype), state["bias"].to(base.device, base.dtype)


def _shared_or_own(state: Mapping[str, torch.Tensor], base: SDTurbo) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The pretrained conv_in of the sketch model: None (use the base's) where it equals SD-Turbo's."""
    pair = _conv_pair(state, base)
    if pair is None or _same_as(pair, base_conv_in(base.unet)):
        return None
    return pair


def base_vae_state(base: SDTurbo) -> dict[str, torch.Tensor]:
    """The VAE's parameters under their plain names (without peft's base_layer)."""
    return {canonical_name(name): tensor for name, tensor in base.vae.state_dict().items() if ".lora_" not in name}


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


def run_task(store: ModelStore, task: TaskModel, control: torch.Tensor, embeddings: torch.Tensor, *,
             gamma: float = 1.0, noise: torch.Tensor | None = None) -> torch.Tensor:
    """One forward: encode with skips, (mix with noise), UNet at t=999 to x0, decode with skips.

    gamma scales the LoRA adapters, the conv_in blend and the skip activations; with noise given,
    the UNet input is gamma * latents + (1 - gamma) * noise. Returns pixels in [-1, 1].
    """
    base = store.base
    store.use_adapters(unet={name: gamma for name in task.unet_adapters}, vae={task.vae_adapter: gamma})
    task.skip_switch.apply({SKIP_ADAPTER: gamma})
    mean, skips = _vae_call(base, task.vae_overrides, encode_with_skips, control)
    latents = mean * base.latent_scale
    if noise is not None:
        latents = gamma * latents + (1 - gamma) * noise
    denoised = base.predict_x0(latents, FINAL_TIMESTEP, embeddings,
                               unet_parameters=_conv_in_override(task, base, gamma))
    decoded = _vae_call(base, task.vae_overrides, decode_with_skips, denoised / base.latent_scale, skips,
                        task.skips, gamma)
    return decoded.clamp(-1, 1)


# --- random task weights (tiny source and full-size benchmarks) -------------------------------------

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


# --- finding, converting and installing the weights -------------------------------------------------

class TaskUnavailableError(RuntimeError):
    """A task's weights could not be found or fetched; the message says where they were looked for."""


def _search_dirs(model_dir: Path | None) -> list[Path]:
    return [model_dir / "img2img-turbo", model_dir] if model_dir is not None else []


def locate_task_weights(base: SDTurbo, spec: TaskCheckpointSpec, model_dir: Path | None,
                        allow_download: bool) -> Path:
    """The converted safetensors file for a task, converting or downloading the release when needed."""
    cache = checkpoint_cache_dir()
    for folder in [*_search_dirs(model_dir), cache]:
        if (folder / spec.converted_filename).is_file():
            return folder / spec.converted_filename
    released = next((folder / spec.filename for folder in [*_search_dirs(model_dir), cache]
                     if (folder / spec.filename).is_file()), None)
    if released is None and not allow_download:
        looked = ", ".join(str(folder) for folder in [*_search_dirs(model_dir), cache])
        raise TaskUnavailableError(f"{spec.filename} was not found (looked in {looked}) and downloads are off "
                                   "for this source; run `python app.py --source hub` once to fetch it")
    if released is None:
        released = download_file(spec.url, cache / spec.filename, spec.sha256)
    converted = cache / spec.converted_filename
    save_task_weights(convert_released(released, spec, base_vae_state(base)), converted)
    return converted


def load_tasks(store: ModelStore, tasks: list[TaskName], *, allow_download: bool,
               progress: ProgressCallback | None = None) -> dict[TaskName, str]:
    """Install each task on the store; returns the tasks that could not be loaded, with the reason."""
    report = progress or (lambda fraction, message: None)
    unavailable: dict[TaskName, str] = {}
    base = store.base
    for index, task in enumerate(tasks):
        spec = CHECKPOINTS[task]
        report(index / max(len(tasks), 1), f"Loading {task}")
        try:
            if store.source.active == "tiny":
                weights = random_task_weights(base, task, seed=list(CHECKPOINTS).index(task))
            else:
                weights = load_task_weights(locate_task_weights(base, spec, store.source.model_dir, allow_download))
        except (TaskUnavailableError, CheckpointError, OSError, RuntimeError) as error:
            unavailable[task] = str(error)
            continue
        caption = store.prompt_embeddings(spec.caption) if spec.caption is not None else None
        store.tasks[task] = install_task(base, weights, caption)
    store.adapters_changed()
    return unavailable


def get_task(store: ModelStore, task: TaskName) -> TaskModel:
    """The installed task, or TaskUnavailableError saying why it is not loaded."""
    installed = store.tasks.get(task)
    if installed is None:
        reason = store.unavailable_tasks.get(task, "it was not asked for when the models were loaded")
        raise TaskUnavailableError(f"The {task} model is not available: {reason}")
    return installed
