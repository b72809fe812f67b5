"""Released img2img-turbo checkpoints: safe reading, conversion to safetensors, download.

The released files are torch.save'd pickles. They are read only with torch.load(weights_only=True),
which refuses any pickle that would build arbitrary Python objects (and so could run code). Each
file is converted once into a safetensors file holding only what sits on top of SD-Turbo (LoRA,
conv_in, skip convs, and VAE tensors that differ from the base), in a canonical layout:

    unet_lora.<group>.<module>.lora_{A,B}.weight   group: main | encoder | decoder | others
    vae_lora.<module>.lora_{A,B}.weight            skip_lora.skip_conv_<i>.lora_{A,B}.weight
    skip.skip_conv_<i>.weight                      conv_in.{weight,bias}
    conv_in_pretrained.{weight,bias}               vae_override.<parameter>
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from models.weights.downloads import file_sha256, recorded_sha256
from models.weights.specs import TaskCheckpointSpec, TaskName, VaeSide

FORMAT_VERSION = "1"
PEFT_DEFAULT_ALPHA = 8  # peft's LoraConfig default, used by the pix2pix LoRAs and every VAE LoRA
SKIP_NAMES = tuple(f"skip_conv_{index}" for index in range(1, 5))
PIX2PIX_KEYS = ("unet_lora_target_modules", "vae_lora_target_modules", "rank_unet", "rank_vae",
                "state_dict_unet", "state_dict_vae")
CYCLEGAN_KEYS = ("l_target_modules_encoder", "l_target_modules_decoder", "l_modules_others", "rank_unet",
                 "sd_encoder", "sd_decoder", "sd_other", "rank_vae", "vae_lora_target_modules",
                 "sd_vae_enc", "sd_vae_dec")
CYCLEGAN_GROUPS = {"encoder": ("l_target_modules_encoder", "sd_encoder"),
                   "decoder": ("l_target_modules_decoder", "sd_decoder"),
                   "others": ("l_modules_others", "sd_other")}
VAE_ENCODER_PARTS = ("encoder.", "quant_conv.")
VAE_DECODER_PARTS = ("decoder.", "post_quant_conv.")


class CheckpointError(ValueError):
    """A checkpoint file is unsafe, malformed, or does not fit the model."""


@dataclass
class LoraGroup:
    """One LoRA adapter: its rank, alpha, target modules and peft-style weights (no adapter name)."""

    rank: int
    alpha: float
    target_modules: list[str]
    state: dict[str, torch.Tensor]


@dataclass
class TaskWeights:
    """Everything a task adds on top of the shared SD-Turbo."""

    task: TaskName
    unet_lora: dict[str, LoraGroup]
    vae_lora: LoraGroup
    skip_weights: dict[str, torch.Tensor]
    skip_lora: LoraGroup | None = None
    conv_in: dict[str, torch.Tensor] = field(default_factory=dict)
    conv_in_pretrained: dict[str, torch.Tensor] = field(default_factory=dict)
    vae_overrides: dict[str, torch.Tensor] = field(default_factory=dict)
    source_sha256: str | None = None


def canonical_name(parameter_name: str) -> str:
    """A parameter's name as in the plain model, without peft's `.base_layer`."""
    return parameter_name.replace(".base_layer", "")


def read_released_checkpoint(path: Path) -> dict[str, Any]:
    """torch.load with weights_only=True; a pickle that would run code is refused."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"Refusing to load {path}: it contains Python objects beyond tensors and plain containers, "
            f"which could run code when unpickled ({error.__class__.__name__}: {str(error).splitlines()[0]})"
        ) from error
    except (EOFError, RuntimeError, OSError, ValueError) as error:  # a cut-off or damaged file
        raise CheckpointError(f"{path} is truncated or damaged; torch.load could not read it "
                              f"({type(error).__name__}: {error})") from error
    if not isinstance(loaded, dict):
        raise CheckpointError(f"{path} holds a {type(loaded).__name__}, not the dict of a released checkpoint")
    return loaded


def _require_keys(raw: Mapping[str, Any], keys: tuple[str, ...], layout: str) -> None:
    missing = [key for key in keys if key not in raw]
    if missing:
        raise CheckpointError(f"not a {layout} checkpoint: missing keys {', '.join(missing)}")


def _strip_adapter(key: str, adapter: str) -> str:
    return key.replace(f".{adapter}.", ".")


def _is_lora_key(key: str) -> bool:
    return ".lora_A." in key or ".lora_B." in key


def _split_vae_state(state: Mapping[str, torch.Tensor], adapter: str) -> tuple[
        dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split a VAE state (keys from the VAE root) into VAE LoRA, skip LoRA, skip weights and base."""
    vae_lora, skip_lora, skip_weights, base = {}, {}, {}, {}
    for key, tensor in state.items():
        skip = re.match(r"decoder\.(skip_conv_\d)\.(.*)$", key)
        if skip:
            name, rest = skip.groups()
            if _is_lora_key("." + rest):
                skip_lora[f"{name}.{_strip_adapter(rest, adapter)}"] = tensor
            else:
                skip_weights[f"{name}.{rest.removeprefix('base_layer.')}"] = tensor
        elif _is_lora_key(key):
            vae_lora[_strip_adapter(key, adapter)] = tensor
        else:
            base[canonical_name(key)] = tensor
    return vae_lora, skip_lora, skip_weights, base


def _vae_groups(targets: list[str], rank: int, vae_lora: dict[str, torch.Tensor],
                skip_lora: dict[str, torch.Tensor]) -> tuple[LoraGroup, LoraGroup | None]:
    vae_targets = [target for target in targets if target not in SKIP_NAMES]
    skip_targets = [target for target in targets if target in SKIP_NAMES]
    vae_group = LoraGroup(rank, PEFT_DEFAULT_ALPHA, vae_targets, vae_lora)
    skip_group = LoraGroup(rank, PEFT_DEFAULT_ALPHA, skip_targets, skip_lora) if skip_targets else None
    return vae_group, skip_group


def _check_skip_weights(skip_weights: Mapping[str, torch.Tensor], origin: str) -> None:
    missing = [f"{name}.weight" for name in SKIP_NAMES if f"{name}.weight" not in skip_weights]
    if missing:
        raise CheckpointError(f"{origin}: missing skip-connection weights {', '.join(missing)}")


def convert_pix2pix(raw: Mapping[str, Any], task: TaskName) -> TaskWeights:
    """pix2pix-Turbo layout: one UNet LoRA ("default") + conv_in, one VAE LoRA ("vae_skip") + skips."""
    _require_keys(raw, PIX2PIX_KEYS, "pix2pix-Turbo")
    unet_lora: dict[str, torch.Tensor] = {}
    conv_in: dict[str, torch.Tensor] = {}
    conv_in_pretrained: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for key, tensor in raw["state_dict_unet"].items():
        if _is_lora_key(key):
            unet_lora[_strip_adapter(key, "default")] = tensor
        elif key in ("conv_in.weight", "conv_in.bias", "conv_in.conv_in_curr.weight", "conv_in.conv_in_curr.bias"):
            conv_in[key.rsplit(".", 1)[1]] = tensor
        elif key in ("conv_in.conv_in_pretrained.weight", "conv_in.conv_in_pretrained.bias"):
            conv_in_pretrained[key.rsplit(".", 1)[1]] = tensor
        else:
            unexpected.append(key)
    vae_lora, skip_lora, skip_weights, vae_base = _split_vae_state(raw["state_dict_vae"], "vae_skip")
    unexpected += [f"state_dict_vae.{key}" for key in vae_base]
    if unexpected:
        raise CheckpointError(f"unexpected keys in the pix2pix-Turbo checkpoint: {', '.join(sorted(unexpected))}")
    if set(conv_in) != {"weight", "bias"}:
        raise CheckpointError("the pix2pix-Turbo checkpoint lacks conv_in.weight / conv_in.bias")
    _check_skip_weights(skip_weights, "pix2pix-Turbo checkpoint")
    vae_group, skip_group = _vae_groups(list(raw["vae_lora_target_modules"]), int(raw["rank_vae"]), vae_lora, skip_lora)
    unet_group = LoraGroup(int(raw["rank_unet"]), PEFT_DEFAULT_ALPHA, list(raw["unet_lora_target_modules"]), unet_lora)
    return TaskWeights(task, {"main": unet_group}, vae_group, skip_weights, skip_group, conv_in, conv_in_pretrained)


def _cyclegan_vae_state(raw: Mapping[str, Any], side: VaeSide) -> dict[str, torch.Tensor]:
    """One side's VAE: encoder parts from sd_vae_enc, decoder parts from sd_vae_dec."""
    prefix = "vae." if side == "a2b" else "vae_b2a."
    state: dict[str, torch.Tensor] = {}
    for source, parts in (("sd_vae_enc", VAE_ENCODER_PARTS), ("sd_vae_dec", VAE_DECODER_PARTS)):
        for key, tensor in raw[source].items():
            if key.startswith(prefix) and key[len(prefix):].startswith(parts):
                state[key[len(prefix):]] = tensor
    if not state:
        raise CheckpointError(f"the CycleGAN-Turbo checkpoint has no `{prefix}` VAE weights for direction {side}")
    return state


def _differing_tensors(candidate: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor],
                       precision: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The candidate tensors that differ from the base's once both are in `precision` (fp32, or fp16
    where the base is only known in fp16); compare with the base as stored, never a rounded copy."""
    unexpected = sorted(key for key in candidate if key not in base)
    if unexpected:
        raise CheckpointError(f"unexpected VAE keys in the CycleGAN-Turbo checkpoint: {', '.join(unexpected)}")
    return {key: tensor for key, tensor in candidate.items()
            if tensor.shape != base[key].shape
            or not torch.equal(tensor.to(precision).float(), base[key].cpu().to(precision).float())}


def convert_cyclegan(raw: Mapping[str, Any], task: TaskName, side: VaeSide,
                     base_vae_state: Mapping[str, torch.Tensor], precision: torch.dtype = torch.float32) -> TaskWeights:
    """CycleGAN-Turbo layout: three UNet LoRAs (alpha = rank) and two full VAEs with LoRA and skips.

    Only this direction's VAE is kept; its base tensors are compared with SD-Turbo's VAE
    (base_vae_state, plain parameter names, as stored on disk) in `precision`, and only those that
    differ are stored.
    """
    _require_keys(raw, CYCLEGAN_KEYS, "CycleGAN-Turbo")
    rank = int(raw["rank_unet"])
    unet_groups = {
        group: LoraGroup(rank, rank, list(raw[targets_key]), dict(raw[state_key]))
        for group, (targets_key, state_key) in CYCLEGAN_GROUPS.items()
    }
    vae_lora, skip_lora, skip_weights, vae_base = _split_vae_state(_cyclegan_vae_state(raw, side), "vae_skip")
    _check_skip_weights(skip_weights, f"CycleGAN-Turbo checkpoint ({side})")
    vae_group, skip_group = _vae_groups(list(raw["vae_lora_target_modules"]), int(raw["rank_vae"]), vae_lora, skip_lora)
    overrides = _differing_tensors(vae_base, base_vae_state, precision)
    return TaskWeights(task, unet_groups, vae_group, skip_weights, skip_group, vae_overrides=overrides)


def convert_released(path: Path, spec: TaskCheckpointSpec, base_vae_state: Mapping[str, torch.Tensor],
                     precision: torch.dtype = torch.float32) -> TaskWeights:
    raw = read_released_checkpoint(path)
    try:
        if spec.layout == "pix2pix":
            weights = convert_pix2pix(raw, spec.task)
        else:
            weights = convert_cyclegan(raw, spec.task, spec.vae_side, base_vae_state, precision)
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from error
    weights.source_sha256 = recorded_sha256(path) or file_sha256(path)  # a download has it already
    return weights


def _group_metadata(group: LoraGroup) -> dict[str, Any]:
    return {"rank": group.rank, "alpha": group.alpha, "target_modules": group.target_modules}


def save_task_weights(weights: TaskWeights, path: Path) -> None:
    """Write the canonical safetensors file atomically (a .part file renamed when complete)."""
    tensors: dict[str, torch.Tensor] = {}
    for group_name, group in weights.unet_lora.items():
        tensors.update({f"unet_lora.{group_name}.{key}": value for key, value in group.state.items()})
    tensors.update({f"vae_lora.{key}": value for key, value in weights.vae_lora.state.items()})
    if weights.skip_lora is not None:
        tensors.update({f"skip_lora.{key}": value for key, value in weights.skip_lora.state.items()})
    for prefix, part in (("skip", weights.skip_weights), ("conv_in", weights.conv_in),
                         ("conv_in_pretrained", weights.conv_in_pretrained), ("vae_override", weights.vae_overrides)):
        tensors.update({f"{prefix}.{key}": value for key, value in part.items()})
    metadata = {
        "format_version": FORMAT_VERSION,
        "task": weights.task,
        "unet_lora": json.dumps({name: _group_metadata(group) for name, group in weights.unet_lora.items()}),
        "vae_lora": json.dumps(_group_metadata(weights.vae_lora)),
        "skip_lora": json.dumps(_group_metadata(weights.skip_lora) if weights.skip_lora else None),
        "source_sha256": weights.source_sha256 or "",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    try:
        save_file({key: value.contiguous() for key, value in tensors.items()}, str(partial), metadata=metadata)
        partial.replace(path)
    except BaseException:  # a full disk, Ctrl-C: no half-written file stays behind
        partial.unlink(missing_ok=True)
        raise


def _take(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}


def _group_from(metadata: Mapping[str, Any], state: dict[str, torch.Tensor]) -> LoraGroup:
    return LoraGroup(int(metadata["rank"]), float(metadata["alpha"]), list(metadata["target_modules"]), state)


def check_safetensors(path: Path) -> dict[str, str]:
    """The metadata of a safetensors file, once safetensors has checked that its header is whole and
    its tensors fill the file exactly; CheckpointError naming the file when not (truncated, empty, not
    safetensors at all)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return handle.metadata() or {}
    except SafetensorError as error:
        raise CheckpointError(f"{path} is truncated or not a safetensors file ({error})") from error


def load_task_weights(path: Path, task: TaskName | None = None) -> TaskWeights:
    """Read a file written by save_task_weights; with `task`, a file of another task is refused.
    A damaged file is a CheckpointError that names it."""
    metadata = check_safetensors(path)
    if metadata.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not a converted task-weights file (format {metadata.get('format_version')!r})")
    if task is not None and metadata.get("task") != task:
        raise CheckpointError(f"{path} holds the weights of {metadata.get('task')!r}, not of {task}")
    try:
        tensors = load_file(str(path))
        unet_meta = json.loads(metadata["unet_lora"])
        skip_meta = json.loads(metadata["skip_lora"])
        return TaskWeights(
            task=metadata["task"],  # type: ignore[arg-type]
            unet_lora={name: _group_from(meta, _take(tensors, f"unet_lora.{name}.")) for name, meta in unet_meta.items()},
            vae_lora=_group_from(json.loads(metadata["vae_lora"]), _take(tensors, "vae_lora.")),
            skip_weights=_take(tensors, "skip."),
            skip_lora=_group_from(skip_meta, _take(tensors, "skip_lora.")) if skip_meta else None,
            conv_in=_take(tensors, "conv_in."),
            conv_in_pretrained=_take(tensors, "conv_in_pretrained."),
            vae_overrides=_take(tensors, "vae_override."),
            source_sha256=metadata.get("source_sha256") or None,
        )
    except (SafetensorError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path} has malformed task metadata or tensors ({type(error).__name__}: {error})") from error
