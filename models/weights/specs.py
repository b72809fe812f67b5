"""Typed names for every model the app can load: one frozen dataclass per model, one table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SourceName = Literal["auto", "hub", "local", "mini", "tiny"]
SOURCE_NAMES: tuple[SourceName, ...] = ("auto", "hub", "local", "mini", "tiny")

TaskName = Literal["edge_to_image", "sketch_to_image", "day_to_night", "night_to_day",
                   "clear_to_rainy", "rainy_to_clear"]
Direction = Literal["day_to_night", "night_to_day", "clear_to_rainy", "rainy_to_clear"]
DIRECTIONS: tuple[Direction, ...] = ("day_to_night", "night_to_day", "clear_to_rainy", "rainy_to_clear")
CheckpointLayout = Literal["pix2pix", "cyclegan"]
VaeSide = Literal["a2b", "b2a"]


@dataclass(frozen=True)
class BaseModelSpec:
    """The base model every task is built on: SD-Turbo, or a model laid out like its repository."""

    repo_id: str = "stabilityai/sd-turbo"  # the Hub repository (or, for mini, the layout it follows)
    revision: str = "main"
    native_side: int = 512  # the image side the model was trained at
    name: str = "stabilityai/sd-turbo"  # what the settings of an image name as its model
    subfolders: tuple[str, ...] = ("tokenizer", "text_encoder", "unet", "vae", "scheduler")

    def required_files(self, variant: str | None) -> tuple[str, ...]:
        """Paths (relative to the repo root) that make a complete copy for this variant."""
        suffix = f".{variant}" if variant else ""
        return (
            "tokenizer/vocab.json",
            "tokenizer/merges.txt",
            "tokenizer/tokenizer_config.json",
            "text_encoder/config.json",
            f"text_encoder/model{suffix}.safetensors",
            "unet/config.json",
            f"unet/diffusion_pytorch_model{suffix}.safetensors",
            "vae/config.json",
            f"vae/diffusion_pytorch_model{suffix}.safetensors",
            "scheduler/scheduler_config.json",
        )

    def allow_patterns(self, variant: str | None) -> list[str]:
        """What to download: the required files plus the tokenizer's small extras."""
        return [*self.required_files(variant), "tokenizer/special_tokens_map.json", "model_index.json"]


SD_TURBO = BaseModelSpec()
MINI_NAME = "onestep-studio mini"


def mini_spec(native_side: int) -> BaseModelSpec:
    """The mini models this project trains (training/, shipped in assets/mini): SD-Turbo's classes
    and folder layout at a smaller native side, read from the folder."""
    return BaseModelSpec(native_side=native_side, name=MINI_NAME)


CHECKPOINT_BASE_URL = "https://www.cs.cmu.edu/~img2img-turbo/models/"


@dataclass(frozen=True)
class TaskCheckpointSpec:
    """One released img2img-turbo checkpoint and how it is used."""

    task: TaskName
    filename: str
    layout: CheckpointLayout
    caption: str | None = None  # fixed caption of a translation model; None: the user's prompt
    vae_side: VaeSide = "a2b"
    sha256: str | None = None  # none is published; recorded on first download

    @property
    def url(self) -> str:
        return CHECKPOINT_BASE_URL + self.filename

    @property
    def converted_filename(self) -> str:
        return self.filename.rsplit(".", 1)[0] + ".safetensors"


CHECKPOINTS: dict[TaskName, TaskCheckpointSpec] = {
    spec.task: spec
    for spec in (
        TaskCheckpointSpec("edge_to_image", "edge_to_image_loras.pkl", "pix2pix"),
        TaskCheckpointSpec("sketch_to_image", "sketch_to_image_stochastic_lora.pkl", "pix2pix"),
        TaskCheckpointSpec("day_to_night", "day2night.pkl", "cyclegan", "driving in the night", "a2b"),
        TaskCheckpointSpec("night_to_day", "night2day.pkl", "cyclegan", "driving in the day", "b2a"),
        TaskCheckpointSpec("clear_to_rainy", "clear2rainy.pkl", "cyclegan", "driving in heavy rain", "a2b"),
        TaskCheckpointSpec("rainy_to_clear", "rainy2clear.pkl", "cyclegan", "driving in the day", "b2a"),
    )
}


# LoRA targets and ranks of the released layouts (pix2pix-Turbo's and CycleGAN-Turbo's training code).
PIX2PIX_UNET_TARGETS = ["to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_shortcut",
                        "conv_out", "proj_in", "proj_out", "ff.net.2", "ff.net.0.proj"]
VAE_TARGETS = ["conv1", "conv2", "conv_in", "conv_shortcut", "conv", "conv_out", "skip_conv_1", "skip_conv_2",
               "skip_conv_3", "skip_conv_4", "to_k", "to_q", "to_v", "to_out.0"]
CYCLEGAN_UNET_PATTERNS = ["to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_in",
                          "conv_shortcut", "conv_out", "proj_out", "proj_in", "ff.net.2", "ff.net.0.proj"]
PIX2PIX_RANKS = (8, 4)  # UNet, VAE
CYCLEGAN_RANKS = (128, 4)
