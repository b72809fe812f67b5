"""Loading SD-Turbo: from a folder in the stabilityai/sd-turbo layout, or the tiny random-weight
stand-in; either way frozen, in eval mode, on one device and dtype."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from safetensors import SafetensorError
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from models.running.sd_turbo import PREDICTION_TYPES, SDTurbo
from models.weights.checkpoints import CheckpointError, check_safetensors
from models.weights.configs import SCHEDULER_CONFIG
from models.weights.tiny import build_tiny_networks, write_tiny_tokenizer


Loaded = TypeVar("Loaded")
# what a component's from_pretrained raises for a damaged or mismatched file or config
COMPONENT_ERRORS: tuple[type[Exception], ...] = (OSError, ValueError, RuntimeError, KeyError, SafetensorError)


class BaseWeightsError(RuntimeError):
    """A file of the base model is damaged or does not fit; `path` names it (or its folder)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def _component(path: Path, load: Callable[[], Loaded]) -> Loaded:
    """Check a component's weights file (path; a folder for the tokenizer and scheduler) with
    safetensors before loading it, so a truncated file is named instead of failing deep in a loader."""
    try:
        if path.suffix == ".safetensors":
            check_safetensors(path)
        return load()
    except CheckpointError as error:
        raise BaseWeightsError(path, "truncated or not a safetensors file") from error
    except COMPONENT_ERRORS as error:
        raise BaseWeightsError(path, f"could not be loaded ({type(error).__name__}: "
                                     f"{' '.join(str(error).split())[:300]})") from error


def _alphas_cumprod(scheduler: DDPMScheduler, device: torch.device) -> torch.Tensor:
    return scheduler.alphas_cumprod.to(device=device, dtype=torch.float32)


def _own_memory(module: torch.nn.Module) -> None:
    """Copy weights out of the memory-mapped file into fresh, aligned memory: CPU matrix products
    round differently on unaligned data, and the file may change after loading."""
    for parameter in module.parameters():
        parameter.data = parameter.data.clone()


def assemble_sd_turbo(tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, unet: UNet2DConditionModel,
                      vae: AutoencoderKL, scheduler: DDPMScheduler, device: torch.device, dtype: torch.dtype) -> SDTurbo:
    """Frozen, in eval mode, on the device and in the dtype, with the scheduler's noise schedule."""
    modules = (text_encoder, unet, vae)
    for module in modules:
        if device.type == "cpu":
            _own_memory(module)
        module.eval().requires_grad_(False).to(device)
        if next(module.parameters()).dtype != dtype:
            module.to(dtype=dtype)
    return SDTurbo(tokenizer, text_encoder, unet, vae, _alphas_cumprod(scheduler, device), device, dtype,
                   prediction_type=str(scheduler.config.get("prediction_type", "epsilon")))


def _weights_variant(directory: Path, subfolder: str, filename: str, dtype: torch.dtype) -> str | None:
    """Prefer the fp16 files for half precision and the full ones otherwise, using what exists."""
    has_full = (directory / subfolder / filename).is_file()
    stem, suffix = filename.rsplit(".", 1)
    has_fp16 = (directory / subfolder / f"{stem}.fp16.{suffix}").is_file()
    if has_fp16 and (dtype == torch.float16 or not has_full):
        return "fp16"
    return None


def weights_file(directory: Path, subfolder: str, filename: str = "diffusion_pytorch_model.safetensors",
                 dtype: torch.dtype = torch.float32) -> Path:
    """The weights file a component's loader reads: the full file, or the fp16 variant where that
    is all there is (an export such as assets/mini)."""
    variant = _weights_variant(directory, subfolder, filename, dtype)
    if variant is None:
        return directory / subfolder / filename
    stem, suffix = filename.rsplit(".", 1)
    return directory / subfolder / f"{stem}.{variant}.{suffix}"


def load_vae(directory: Path, subfolder: str = "vae", dtype: torch.dtype = torch.float32) -> AutoencoderKL:
    """An AutoencoderKL from a model folder (`subfolder="vae"`) or a VAE folder (`subfolder=""`),
    in `dtype`, from its full or its fp16 weights, whichever the folder holds."""
    variant = _weights_variant(directory, subfolder, "diffusion_pytorch_model.safetensors", dtype)
    return AutoencoderKL.from_pretrained(directory, subfolder=subfolder or None, torch_dtype=dtype,
                                         use_safetensors=True, variant=variant)


def load_sd_turbo(directory: Path, device: torch.device, dtype: torch.dtype) -> SDTurbo:
    """Load every component from a folder laid out like the stabilityai/sd-turbo repository; a
    damaged or mismatched file is a BaseWeightsError naming it."""
    tokenizer = _component(directory / "tokenizer", lambda: CLIPTokenizer.from_pretrained(directory / "tokenizer"))
    text_encoder = _component(
        weights_file(directory, "text_encoder", "model.safetensors", dtype),
        lambda: CLIPTextModel.from_pretrained(
            directory / "text_encoder", dtype=dtype,
            variant=_weights_variant(directory, "text_encoder", "model.safetensors", dtype), use_safetensors=True))
    unet = _component(
        weights_file(directory, "unet", dtype=dtype),
        lambda: UNet2DConditionModel.from_pretrained(
            directory, subfolder="unet", torch_dtype=dtype, use_safetensors=True,
            variant=_weights_variant(directory, "unet", "diffusion_pytorch_model.safetensors", dtype)))
    vae = _component(weights_file(directory, "vae", dtype=dtype), lambda: load_vae(directory, "vae", dtype))
    scheduler = _component(directory / "scheduler",
                           lambda: DDPMScheduler.from_pretrained(directory, subfolder="scheduler"))
    prediction_type = scheduler.config.get("prediction_type", "epsilon")
    if prediction_type not in PREDICTION_TYPES:
        raise BaseWeightsError(directory / "scheduler", f"prediction_type {prediction_type!r} is not one of "
                                                        f"{', '.join(PREDICTION_TYPES)}")
    return assemble_sd_turbo(tokenizer, text_encoder, unet, vae, scheduler, device, dtype)


def build_tiny_sd_turbo(device: torch.device, dtype: torch.dtype, tokenizer_dir: Path) -> SDTurbo:
    """The tiny random-weight stand-in; its tokenizer files are written to tokenizer_dir."""
    write_tiny_tokenizer(tokenizer_dir)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    text_encoder, unet, vae = build_tiny_networks()
    scheduler = DDPMScheduler.from_config(SCHEDULER_CONFIG)
    return assemble_sd_turbo(tokenizer, text_encoder, unet, vae, scheduler, device, dtype)
