"""Finding, converting and installing the img2img-turbo task weights on the shared SD-Turbo.

Released checkpoints are looked for in --model-dir and the cache, downloaded when allowed, converted
once to safetensors, then installed: LoRA as named peft adapters on the shared UNet and VAE, the
skip convs beside them, conv_in and VAE tensors kept to swap in for the task's calls.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.lora.layer import LoraLayer
from peft.tuners.tuners_utils import delete_adapter
from torch import nn

from models.running.adapters import AdapterSwitch
from models.running.errors import TaskUnavailableError
from models.running.sd_turbo import SDTurbo
from models.running.skip_vae import SkipConnections, skip_channels
from models.running.store import ModelStore, ProgressCallback
from models.running.task_model import SKIP_ADAPTER, TaskModel, base_conv_in
from models.weights.checkpoints import (CheckpointError, LoraGroup, TaskWeights, canonical_name, convert_released,
                                        load_task_weights, save_task_weights)
from models.weights.downloads import DownloadError, download_file
from models.weights.random_tasks import random_task_weights
from models.weights.specs import CHECKPOINTS, TaskCheckpointSpec, TaskName

FULL_VAE_FILE = "vae/diffusion_pytorch_model.safetensors"
Notice = Callable[[str], None]
# what reading, converting or installing one task may raise: it makes only that task unavailable
TASK_ERRORS: tuple[type[Exception], ...] = (TaskUnavailableError, CheckpointError, DownloadError, OSError,
                                            RuntimeError, ValueError)


def checkpoint_cache_dir() -> Path:
    """Where downloaded and converted img2img-turbo files are kept ($ONESTEP_CACHE overrides)."""
    root = os.environ.get("ONESTEP_CACHE") or Path.home() / ".cache" / "onestep-studio"
    return Path(root) / "img2img-turbo"


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


def install_task(base: SDTurbo, weights: TaskWeights, caption_embeddings: torch.Tensor | None,
                 origin: str | None = None) -> TaskModel:
    """Put a task's weights on the shared UNet and VAE (as named peft adapters) and beside them.
    Register the result with store.add_task. Weights that do not fit raise CheckpointError naming
    `origin` (default: the file name), and then none of the task's adapters stays on the shared
    networks."""
    spec = CHECKPOINTS[weights.task]
    adapters = [(base.unet, f"{spec.task}_{group_name}") for group_name in weights.unet_lora]
    adapters.append((base.vae, f"{spec.task}_vae"))
    try:
        return _install(base, weights, caption_embeddings)
    except (RuntimeError, ValueError, KeyError) as error:  # torch's size mismatches are RuntimeErrors
        for model, adapter in adapters:
            remove_adapter(model, adapter)
        reason = str(error) if isinstance(error, CheckpointError) else (
            f"{type(error).__name__}: {' '.join(str(error).split())[:300]}")
        raise CheckpointError(f"{origin or spec.converted_filename}: the weights do not fit the loaded base model "
                              f"({reason})") from error


def remove_adapter(model: nn.Module, adapter: str) -> None:
    """Take a named peft adapter (possibly half injected) off every layer of the model."""
    if any(adapter in layer.scaling for layer in model.modules() if isinstance(layer, LoraLayer)):
        delete_adapter(model, adapter, prefix="lora_", layer_cls=LoraLayer)
    config = getattr(model, "peft_config", None)
    if isinstance(config, dict):
        config.pop(adapter, None)


def _check_fits(base: SDTurbo, weights: TaskWeights, spec: TaskCheckpointSpec) -> None:
    """conv_in and the VAE tensors a task swaps in must have the base's shapes (they are used only
    at call time, where a mismatch would fail every call)."""
    conv_in = base_conv_in(base.unet)
    for name, state in (("conv_in", weights.conv_in), ("conv_in_pretrained", weights.conv_in_pretrained)):
        if state and (state.get("weight") is None or state.get("bias") is None
                      or state["weight"].shape != conv_in.weight.shape or state["bias"].shape != conv_in.bias.shape):
            raise CheckpointError(f"{spec.converted_filename}: {name} has shapes "
                                  f"{[tuple(tensor.shape) for tensor in state.values()]}; the base's conv_in has "
                                  f"{tuple(conv_in.weight.shape)} and {tuple(conv_in.bias.shape)}")
    vae = base_vae_state(base)
    wrong = [name for name, tensor in weights.vae_overrides.items()
             if name not in vae or vae[name].shape != tensor.shape]
    if wrong:
        raise CheckpointError(f"{spec.converted_filename}: VAE tensors that do not fit the base VAE: {', '.join(wrong[:5])}")


def _install(base: SDTurbo, weights: TaskWeights, caption_embeddings: torch.Tensor | None) -> TaskModel:
    spec = CHECKPOINTS[weights.task]
    _check_fits(base, weights, spec)
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
    """The resident VAE's parameters under their plain names (without peft's base_layer)."""
    return {canonical_name(name): tensor for name, tensor in base.vae.state_dict().items() if ".lora_" not in name}


def reference_vae_state(store: ModelStore) -> tuple[dict[str, torch.Tensor], torch.dtype]:
    """SD-Turbo's VAE as stored on disk, and the precision to compare checkpoint tensors in.

    The resident VAE serves when it is fp32. In half precision its rounded values would make tensors
    that equal SD-Turbo's look different (108 of 180 CycleGAN VAE tensors under bf16), so the VAE is
    read again in fp32: from the full files where they exist, else from the fp16 files, and then
    checkpoint tensors are compared after rounding to fp16 as well."""
    directory = store.source.base_dir
    if store.dtype == torch.float32 or directory is None:
        return base_vae_state(store.base), torch.float32
    full = (directory / FULL_VAE_FILE).is_file()
    vae = AutoencoderKL.from_pretrained(directory, subfolder="vae", variant=None if full else "fp16",
                                        torch_dtype=torch.float32, use_safetensors=True)
    return dict(vae.state_dict()), torch.float32 if full else torch.float16


def _search_dirs(model_dir: Path | None) -> list[Path]:
    return [model_dir / "img2img-turbo", model_dir] if model_dir is not None else []


def locate_task_weights(store: ModelStore, spec: TaskCheckpointSpec, allow_download: bool,
                        notice: Notice | None = None) -> Path:
    """The converted safetensors file for a task, converting or downloading the release when needed.
    Mini's tasks come only from its own folder: the cache holds the release's, made for SD-Turbo.
    A released file in the cache that cannot be read is downloaded again (when allowed), with a notice."""
    if store.source.active == "mini":
        return _mini_task_file(store.source.model_dir, spec)
    cache = checkpoint_cache_dir()
    folders = [*_search_dirs(store.source.model_dir), cache]
    for folder in folders:
        if (folder / spec.converted_filename).is_file():
            return folder / spec.converted_filename
    released = next((folder / spec.filename for folder in folders if (folder / spec.filename).is_file()), None)
    if released is None and not allow_download:
        looked = ", ".join(str(folder) for folder in folders)
        raise TaskUnavailableError(f"{spec.filename} was not found (looked in {looked}) and downloads are off "
                                   "for this source; run `python app.py --source hub` once to fetch it")
    if released is None:
        released = download_file(spec.url, cache / spec.filename, spec.sha256)
    converted = cache / spec.converted_filename
    reference, precision = reference_vae_state(store)
    try:
        weights = convert_released(released, spec, reference, precision)
    except CheckpointError as error:
        if released.parent != cache or not allow_download:
            raise
        (notice or _silent)(f"{released} cannot be read ({error}); downloading it again")
        released.unlink()
        weights = convert_released(download_file(spec.url, released, spec.sha256), spec, reference, precision)
    save_task_weights(weights, converted)
    return converted


def _silent(message: str) -> None:
    """A notice nobody asked to see."""


def _mini_task_file(mini_dir: Path | None, spec: TaskCheckpointSpec) -> Path:
    path = next((folder / spec.converted_filename for folder in _search_dirs(mini_dir)
                 if (folder / spec.converted_filename).is_file()), None)
    if path is None:
        raise TaskUnavailableError(f"the mini models have no {spec.task} ({spec.converted_filename} is not in "
                                   f"{mini_dir}/img2img-turbo)")
    return path


def read_task_weights(store: ModelStore, spec: TaskCheckpointSpec, allow_download: bool,
                      notice: Notice | None = None) -> tuple[Path, TaskWeights]:
    """The task's converted weights, checked. A converted file in the cache that is damaged or of
    another task is never used: it is removed and rebuilt from its release (downloaded again where
    that is gone), with a notice. A damaged file elsewhere (a mini or --model-dir folder) is the
    user's: CheckpointError naming it."""
    path = locate_task_weights(store, spec, allow_download, notice)
    try:
        return path, load_task_weights(path, spec.task)
    except CheckpointError as error:
        if store.source.active == "mini" or path.parent != checkpoint_cache_dir():
            raise CheckpointError(f"{error}; replace it with a complete copy (or remove it)") from error
        (notice or _silent)(f"{path} is damaged and is not used ({error}); rebuilding it from {spec.filename}")
        path.unlink()
    path = locate_task_weights(store, spec, allow_download, notice)
    return path, load_task_weights(path, spec.task)


def load_tasks(store: ModelStore, tasks: list[TaskName], *, allow_download: bool,
               progress: ProgressCallback | None = None) -> None:
    """Install each task on the store. A task that cannot be loaded (its file missing, truncated,
    damaged, of another task or not fitting the base) is marked unavailable with the file and the
    reason, leaves nothing on the shared networks, and the other tasks load as usual."""
    report = progress or (lambda fraction, message: None)
    for index, task in enumerate(tasks):
        spec = CHECKPOINTS[task]
        fraction = index / max(len(tasks), 1)
        report(fraction, f"Loading {task}")
        try:
            installed = _load_task(store, spec, allow_download, lambda message: report(fraction, message))
        except TASK_ERRORS as error:
            store.mark_unavailable(task, str(error))
            continue
        store.add_task(task, installed)


def _load_task(store: ModelStore, spec: TaskCheckpointSpec, allow_download: bool, notice: Notice) -> TaskModel:
    path: Path | None = None
    if store.source.active == "tiny":
        weights = random_task_weights(store.base, spec.task, seed=list(CHECKPOINTS).index(spec.task))
    else:
        path, weights = read_task_weights(store, spec, allow_download, notice)
    caption = store.prompt_embeddings(spec.caption) if spec.caption is not None else None
    return install_task(store.base, weights, caption, str(path) if path is not None else None)
