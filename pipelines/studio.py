"""Studio: the one public API the UI and users call. It owns a ModelStore, hands it to the task
pipelines (one method per task) and publishes the limits and defaults of the loaded source."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

import numpy as np
import torch
from PIL import Image

from diffusers import AutoencoderTiny

from models.running.model_thread import ModelThread
from models.running.store import ModelStore, ProgressCallback
from models.speed.acceleration import Acceleration, accelerate
from models.speed.taesd import preview_decoder_for
from models.weights.sources import SourceInfo, hub_offline
from models.weights.specs import CHECKPOINTS, Direction, SourceName, TaskName
from models.weights.task_loading import load_tasks
from pipelines.edge_to_image import edge_to_image
from pipelines.edit import edit
from pipelines.images import ImageInput, to_rgb
from pipelines.limits import DEFAULT_FEATHER, DEFAULT_GAMMA, DEFAULT_STRENGTH, DEFAULT_THRESHOLDS, Limits, limits_of
from pipelines.masking import MaskInput, check_feather, composite, mask_inside
from pipelines.sketch_to_image import SketchInput, sketch_to_image
from pipelines.text_to_image import text_to_image
from pipelines.translate import translate
from pipelines.warm_up import WarmUpCall, warm_up_plan

ALL_TASKS: tuple[TaskName, ...] = tuple(CHECKPOINTS)
Params = ParamSpec("Params")
Result = TypeVar("Result")


def on_model_thread(method: Callable[Concatenate[Studio, Params], Result]) -> Callable[Concatenate[Studio, Params], Result]:
    """Run the method on the studio's model thread when it has one (Studio.load(model_thread=True))."""

    @functools.wraps(method)
    def run(self: Studio, *args: Params.args, **kwargs: Params.kwargs) -> Result:
        if self.model_thread is None:
            return method(self, *args, **kwargs)
        return self.model_thread.run(method, self, *args, **kwargs)

    return run


class Studio:
    """One-step generation and translation on one resident SD-Turbo.

    >>> studio = Studio.load(source="tiny", device="cpu")
    >>> image = studio.text_to_image("a red fox in snow", seed=1)

    Bad arguments raise pipelines.errors.InputError (a ValueError) naming the argument, its value
    and what `studio.limits` allows.
    """

    def __init__(self, store: ModelStore, *, preview_decoder: AutoencoderTiny | None = None,
                 acceleration: Acceleration | None = None) -> None:
        """Use Studio.load or Studio.prepare: they apply the speed settings; this does not."""
        self.store = store
        self.preview_decoder = preview_decoder
        self.acceleration = acceleration or Acceleration()
        self.model_thread: ModelThread | None = None  # set by Studio.load(model_thread=True)

    @classmethod
    def prepare(cls, store: ModelStore, *, preview_decoder: AutoencoderTiny | None = None,
                acceleration: Acceleration | None = None) -> Studio:
        """Apply the device's speed settings (Acceleration.for_device unless given) once to the
        store's networks, its tasks and the preview decoder, and wrap them. Call after the tasks
        are installed; with torch.compile the graphs are made on the first calls (warm_up)."""
        chosen = acceleration or Acceleration.for_device(store.device)
        applied = accelerate(store, chosen, preview_decoder)
        return cls(store, preview_decoder=preview_decoder, acceleration=applied)

    @classmethod
    def load(cls, source: SourceName = "auto", *, model_dir: Path | str | None = None,
             device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
             tasks: tuple[TaskName, ...] = ALL_TASKS, progress: ProgressCallback | None = None,
             acceleration: Acceleration | None = None, model_thread: bool = False) -> Studio:
        """Load SD-Turbo from source ("auto", "hub", "local", "mini" or "tiny"), then the
        img2img-turbo tasks and the preview decoder on top of it, and apply the device's speed
        settings (Studio.prepare; `acceleration` replaces them, for the benchmark's experiments);
        everything stays resident. dtype None or "auto" is float16 on CUDA and float32 on the CPU,
        with the VAE in bfloat16 where the CPU has bf16 instructions; a dtype named is used for every
        network. A task whose weights cannot be had
        is listed in `unavailable_tasks` with the reason, and its method raises with that reason.

        model_thread: load on a dedicated thread and run every later call of the studio's methods
        there, whichever thread makes it (models.running.model_thread: on the CPU, calls from
        several threads are 2-3x slower). For servers, like the app; a script that calls from one
        thread needs none."""
        load = functools.partial(cls._load, source, model_dir=model_dir, device=device, dtype=dtype, tasks=tasks,
                                 progress=progress, acceleration=acceleration)
        if not model_thread:
            return load()
        thread = ModelThread()
        studio = thread.run(load)
        studio.model_thread = thread
        return studio

    @classmethod
    def _load(cls, source: SourceName, *, model_dir: Path | str | None, device: str | torch.device | None,
              dtype: str | torch.dtype | None, tasks: tuple[TaskName, ...], progress: ProgressCallback | None,
              acceleration: Acceleration | None) -> Studio:
        report = progress or (lambda fraction, message: None)
        store = ModelStore.load(source, model_dir=model_dir, device=device, dtype=dtype,
                                progress=lambda fraction, message: report(0.5 * fraction, message))
        allow_download = store.source.active == "hub" and not hub_offline()
        load_tasks(store, list(tasks), allow_download=allow_download,
                   progress=lambda fraction, message: report(0.5 + 0.45 * fraction, message))
        preview = preview_decoder_for(store.source, store.base.unet.config.out_channels, store.device, store.dtype)
        report(0.95, f"Live text previews: {preview.origin}" if preview.decoder is not None else
               f"Live text previews use the full VAE: {preview.origin}")
        if acceleration is None and dtype not in (None, "auto"):
            # a dtype asked for is the dtype of every network: no bfloat16 VAE on a float32 store
            acceleration = replace(Acceleration.for_device(store.device), bfloat16=())
        studio = cls.prepare(store, preview_decoder=preview.decoder, acceleration=acceleration)
        report(1.0, f"Models are resident ({studio.acceleration.describe()})")
        return studio

    @property
    def source(self) -> SourceInfo:
        return self.store.source

    @property
    def limits(self) -> Limits:
        """Sizes, seed range, largest input, defaults and directions of the loaded source."""
        return limits_of(self.store)

    @property
    def device(self) -> torch.device:
        return self.store.device

    @property
    def unavailable_tasks(self) -> dict[str, str]:
        return self.store.unavailable_tasks

    @on_model_thread
    def text_to_image(self, prompt: str, *, seed: int = 0, width: int | None = None,
                      height: int | None = None, preview: bool = False) -> Image.Image:
        """One-step SD-Turbo image; width and height from limits.min_side to limits.max_side
        (default: the native side). preview: decode with the preview decoder where the source has
        one (live previews); the final image (Generate, the API) always uses the full VAE."""
        decoder = self.preview_decoder if preview else None
        return text_to_image(self.store, prompt, seed=seed, width=width, height=height, preview_decoder=decoder)

    @on_model_thread
    def edit(self, image: ImageInput, prompt: str, *, strength: float = DEFAULT_STRENGTH, seed: int = 0,
             mask: MaskInput | None = None, feather: float = DEFAULT_FEATHER) -> Image.Image:
        """SDEdit in one step; strength in (0, 1]; the result has the input's size. With a mask (the
        photo's size; non-zero, or non-transparent, pixels are inside) the edit applies only inside
        it, fading in over `feather` pixels inside its edge, and outside it the photo comes back
        unchanged (see pipelines.masking)."""
        if mask is None:
            return edit(self.store, image, prompt, strength=strength, seed=seed)
        photo = to_rgb(image, "image", self.limits.max_input_side)
        inside = mask_inside(mask, photo.size)  # a bad mask is refused before the model runs
        check_feather(feather)
        edited = edit(self.store, photo, prompt, strength=strength, seed=seed)
        return composite(photo, edited, inside, feather=feather)

    @on_model_thread
    def sketch_to_image(self, sketch: SketchInput, prompt: str, *, gamma: float = DEFAULT_GAMMA,
                        seed: int = 0) -> Image.Image:
        """pix2pix-Turbo from a sketch; gamma in [0, 1] trades sketch fidelity (1) for variety (0)."""
        return sketch_to_image(self.store, sketch, prompt, gamma=gamma, seed=seed)

    @on_model_thread
    def edge_to_image(self, image: ImageInput, prompt: str, *, low_threshold: int = DEFAULT_THRESHOLDS[0],
                      high_threshold: int = DEFAULT_THRESHOLDS[1]) -> tuple[Image.Image, Image.Image]:
        """Canny edges of the photo, then pix2pix-Turbo; returns (edge map, image). Deterministic:
        the same photo, prompt and thresholds give the same image, so there is no seed."""
        return edge_to_image(self.store, image, prompt, low_threshold=low_threshold, high_threshold=high_threshold)

    @on_model_thread
    def translate(self, image: ImageInput, *, direction: Direction) -> Image.Image:
        """CycleGAN-Turbo: one of limits.directions (day_to_night, night_to_day, clear_to_rainy,
        rainy_to_clear)."""
        return translate(self.store, image, direction=direction)

    @on_model_thread
    def warm_up(self, preview_side: int | None = None) -> None:
        """Run every loaded task before serving so the first user action is fast: compiled (CUDA)
        or with a traced UNet and VAE (small bases on the CPU), at the shapes the app serves (preview_side:
        the live sketch side, default the device's), else once each at the smallest size (see
        pipelines.warm_up)."""
        limits = self.limits
        per_shape = (self.acceleration.compile_mode != "off" or self.acceleration.trace_unet
                     or self.acceleration.trace_vae)
        plan = warm_up_plan(limits, self.store.tasks, per_shape=per_shape,
                            preview_side=preview_side or limits.default_preview_side(self.device.type),
                            has_preview_decoder=self.preview_decoder is not None)
        for call in plan:
            self._warm_up_call(call)

    def _warm_up_call(self, call: WarmUpCall) -> None:
        side = call.side
        photo = Image.new("RGB", (side, side), (128, 128, 128))
        if call.task == "text_to_image":
            self.text_to_image("warm up", width=side, height=side, preview=call.preview)
        elif call.task == "edit":
            self.edit(photo, "warm up")
        elif call.task == "sketch_to_image":
            sketch = np.full((side, side), 255, dtype=np.uint8)
            sketch[side * 3 // 8: side * 5 // 8, side // 2] = 0
            self.sketch_to_image(sketch, "warm up", gamma=call.gamma if call.gamma is not None else DEFAULT_GAMMA)
        elif call.task == "edge_to_image":
            self.edge_to_image(photo, "warm up")
        elif call.direction is not None:
            self.translate(photo, direction=call.direction)
