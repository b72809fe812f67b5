"""The models the benchmark runs: SD-Turbo with random weights at full size (the real
architecture, so real timings and memory) or tiny (the CI smoke), a store with the img2img-turbo
tasks installed on it, the TAESD preview decoder, and diffusers' pipelines on the same components.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

import torch
from diffusers import (AutoencoderKL, AutoencoderTiny, AutoPipelineForImage2Image, AutoPipelineForText2Image,
                       DDPMScheduler, EulerDiscreteScheduler, StableDiffusionImg2ImgPipeline, StableDiffusionPipeline,
                       UNet2DConditionModel)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from models.running.sd_turbo import SDTurbo
from models.running.store import ModelStore
from models.speed.taesd import TAESD_CONFIG, TINY_TAESD_CONFIG, build_taesd
from models.weights.base_loading import assemble_sd_turbo, build_tiny_sd_turbo
from models.weights.configs import FULL_TEXT_ENCODER_CONFIG, FULL_UNET_CONFIG, FULL_VAE_CONFIG, SCHEDULER_CONFIG
from models.weights.sources import SourceInfo
from models.weights.specs import TaskName
from models.weights.task_loading import load_tasks
from models.weights.tiny import write_tiny_tokenizer

Scale = Literal["full", "tiny"]
FULL_SEED = 20261122
RANDOM_SOURCE_REASON = "Random weights of the chosen architecture, built for benchmarking."


def build_full_base(device: torch.device, dtype: torch.dtype, tokenizer_dir: Path) -> SDTurbo:
    """SD-Turbo's full-size text encoder, UNet and VAE with seeded random weights, built directly
    on the device. The tokenizer is the tiny byte-level one; its ids fit the full vocabulary."""
    write_tiny_tokenizer(tokenizer_dir)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    devices = [] if device.type == "cpu" else [device]
    with torch.random.fork_rng(devices=devices, device_type=device.type), torch.device(device):
        torch.manual_seed(FULL_SEED)
        text_encoder = CLIPTextModel(CLIPTextConfig(**FULL_TEXT_ENCODER_CONFIG))
        unet = UNet2DConditionModel(**FULL_UNET_CONFIG)
        vae = AutoencoderKL(**FULL_VAE_CONFIG)
    return assemble_sd_turbo(tokenizer, text_encoder, unet, vae, DDPMScheduler.from_config(SCHEDULER_CONFIG),
                             device, dtype)


def build_store(scale: Scale, device: torch.device, dtype: torch.dtype, tasks: list[TaskName]) -> ModelStore:
    """A store on random weights with the given img2img-turbo tasks installed (random LoRA and
    skip weights in the released layouts)."""
    with tempfile.TemporaryDirectory(prefix="bench-tokenizer-") as folder:
        if scale == "full":
            base = build_full_base(device, dtype, Path(folder))
        else:
            base = build_tiny_sd_turbo(device, dtype, Path(folder))
    store = ModelStore(base, SourceInfo("tiny", "tiny", RANDOM_SOURCE_REASON))
    load_tasks(store, tasks, allow_download=False)
    if store.unavailable_tasks:
        raise RuntimeError(f"tasks could not be installed on random weights: {store.unavailable_tasks}")
    return store


def build_preview_decoder(scale: Scale, device: torch.device, dtype: torch.dtype) -> AutoencoderTiny:
    return build_taesd(TAESD_CONFIG if scale == "full" else TINY_TAESD_CONFIG, device, dtype)


def diffusers_pipelines(base: SDTurbo) -> tuple[StableDiffusionPipeline, StableDiffusionImg2ImgPipeline]:
    """diffusers' AutoPipelineForText2Image and AutoPipelineForImage2Image on the very same modules,
    with SD-Turbo's Euler scheduler, no safety checker and no progress bars."""
    pipeline = StableDiffusionPipeline(
        vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=base.unet,
        scheduler=EulerDiscreteScheduler.from_config(SCHEDULER_CONFIG), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    text_to_image = AutoPipelineForText2Image.from_pipe(pipeline)
    image_to_image = AutoPipelineForImage2Image.from_pipe(pipeline)
    for each in (text_to_image, image_to_image):
        each.set_progress_bar_config(disable=True)
    return text_to_image, image_to_image
