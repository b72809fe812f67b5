"""The benchmarked tasks: the same inputs, run by our code and by the baseline.

Ours is the app as users run it: the Studio methods the UI calls, on a Studio prepared as
Studio.load prepares it (the device's speed settings, the preview decoder). `text_to_image_preview`
is the live text preview (Studio.text_to_image(preview=True)); `sketch_to_image_preview` the live
sketch preview (the sketch at the device's live preview side). The one exception is translation,
whose pipeline always resizes to the native side; to measure it at the benchmark's size, the bench
makes the same model call the pipeline makes (run_task with the direction's prepared caption),
without the resizing.

The baseline is a straightforward fp32 implementation of the same forward passes: diffusers'
AutoPipelineForText2Image / AutoPipelineForImage2Image (1 step, guidance 0; strength 0.5 with 2
steps, so steps * strength = 1) for text to image and editing, and for the img2img-turbo tasks
what the released code does: encode the caption on every call, then the unmerged adapters in fp32.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline
from PIL import Image

from models.running.img2img_turbo import run_task
from models.running.sd_turbo import SDTurbo
from models.weights.specs import CHECKPOINTS, TaskName
from models.running.store import ModelStore
from pipelines.edge_to_image import canny_edges
from pipelines.images import LATENT_FACTOR, seeded_noise, to_pil, to_tensor
from pipelines.sketch_to_image import sketch_lines
from pipelines.studio import Studio

BenchTask = Literal["text_to_image", "text_to_image_preview", "edit", "edge_to_image", "sketch_to_image",
                    "sketch_to_image_preview", "translate"]
BENCH_TASKS: tuple[BenchTask, ...] = ("text_to_image", "text_to_image_preview", "edit", "edge_to_image",
                                      "sketch_to_image", "sketch_to_image_preview", "translate")
TRANSLATE_DIRECTION: TaskName = "day_to_night"
CANNY_THRESHOLDS = (100, 200)


@dataclass(frozen=True)
class BenchInputs:
    """One prompt, seed and pair of images at the benchmark size (and a sketch at the live preview
    side), shared by ours and the baseline."""

    size: int
    preview_side: int
    prompt: str = "a red fox in the snow at golden hour, photograph"
    seed: int = 1
    strength: float = 0.5
    gamma: float = 0.4
    photo: Image.Image = field(init=False, repr=False, compare=False)
    sketch: Image.Image = field(init=False, repr=False, compare=False)
    preview_sketch: Image.Image = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "photo", gradient_photo(self.size))
        object.__setattr__(self, "sketch", cross_sketch(self.size))
        object.__setattr__(self, "preview_sketch", cross_sketch(self.preview_side))


def gradient_photo(size: int) -> Image.Image:
    """Smooth colour gradients and a bright disc: edges for Canny, structure for the encoder."""
    ys, xs = np.mgrid[0:size, 0:size]
    red, green = xs * 255 // (size - 1), ys * 255 // (size - 1)
    blue = np.where((xs - 0.6 * size) ** 2 + (ys - 0.4 * size) ** 2 < (0.2 * size) ** 2, 255, 40)
    return Image.fromarray(np.stack([red, green, blue], axis=-1).astype(np.uint8))


def cross_sketch(size: int) -> Image.Image:
    """Dark strokes on white: a cross and a frame."""
    canvas = np.full((size, size), 255, dtype=np.uint8)
    low, high, width = size // 5, 4 * size // 5, max(2, size // 128)
    canvas[low:high, size // 2 - width: size // 2 + width] = 0
    canvas[size // 2 - width: size // 2 + width, low:high] = 0
    canvas[low:high, low:low + width] = 0
    canvas[low:high, high - width:high] = 0
    return Image.fromarray(canvas).convert("RGB")


def store_tasks(tasks: list[BenchTask]) -> list[TaskName]:
    """The img2img-turbo tasks the store needs for these benchmark tasks."""
    needed: dict[BenchTask, TaskName] = {"edge_to_image": "edge_to_image", "sketch_to_image": "sketch_to_image",
                                         "sketch_to_image_preview": "sketch_to_image", "translate": TRANSLATE_DIRECTION}
    return list(dict.fromkeys(needed[task] for task in tasks if task in needed))


# --- ours ---------------------------------------------------------------------------------------------

def ours_call(task: BenchTask, studio: Studio, inputs: BenchInputs) -> Callable[[], Image.Image]:
    """A zero-argument call that runs the task as the app does, on these inputs."""
    size = inputs.size
    calls: dict[BenchTask, Callable[[], Image.Image]] = {
        "text_to_image": lambda: studio.text_to_image(inputs.prompt, seed=inputs.seed, width=size, height=size),
        "text_to_image_preview": lambda: studio.text_to_image(inputs.prompt, seed=inputs.seed, width=size,
                                                              height=size, preview=True),
        "edit": lambda: studio.edit(inputs.photo, inputs.prompt, strength=inputs.strength, seed=inputs.seed),
        "edge_to_image": lambda: studio.edge_to_image(inputs.photo, inputs.prompt)[1],
        "sketch_to_image": lambda: studio.sketch_to_image(inputs.sketch, inputs.prompt, gamma=inputs.gamma,
                                                          seed=inputs.seed),
        "sketch_to_image_preview": lambda: studio.sketch_to_image(inputs.preview_sketch, inputs.prompt,
                                                                  gamma=inputs.gamma, seed=inputs.seed),
        "translate": lambda: translate_at_size(studio.store, inputs.photo),
    }
    if task == "text_to_image_preview" and studio.preview_decoder is None:
        raise ValueError("text_to_image_preview: this source has no preview decoder (live previews use the full VAE)")
    return calls[task]


def translate_at_size(store: ModelStore, photo: Image.Image) -> Image.Image:
    """pipelines.translate's model call on the photo at its own size (the pipeline uses 512x512)."""
    pixels = to_tensor(photo, store.device, store.dtype)
    with store.model_call(TRANSLATE_DIRECTION) as call:
        translated = run_task(call, pixels, call.require_task().caption_embeddings)
    return to_pil(translated)


# --- baseline -----------------------------------------------------------------------------------------

@dataclass
class Baseline:
    """The fp32 store without our settings, and diffusers' pipelines on its modules."""

    store: ModelStore
    text_to_image: StableDiffusionPipeline
    image_to_image: StableDiffusionImg2ImgPipeline


BASELINE_LABELS: dict[BenchTask, str] = {
    "text_to_image": "diffusers AutoPipelineForText2Image, 1 step",
    "text_to_image_preview": "diffusers AutoPipelineForText2Image, 1 step (full VAE)",
    "edit": "diffusers AutoPipelineForImage2Image, 2 steps x strength 0.5",
    "edge_to_image": "plain fp32: Canny, caption encoded per call, unmerged LoRA",
    "sketch_to_image": "plain fp32: binarise, caption encoded per call, unmerged LoRA",
    "sketch_to_image_preview": "plain fp32 at the preview side: binarise, caption encoded per call, unmerged LoRA",
    "translate": "plain fp32: caption encoded per call, unmerged LoRA",
}


def baseline_call(task: BenchTask, baseline: Baseline, inputs: BenchInputs) -> Callable[[], Image.Image]:
    """A zero-argument call that runs the task the straightforward way on these inputs."""
    calls: dict[BenchTask, Callable[[], Image.Image]] = {
        "text_to_image": lambda: diffusers_text_to_image(baseline, inputs),
        "text_to_image_preview": lambda: diffusers_text_to_image(baseline, inputs),
        "edit": lambda: diffusers_edit(baseline, inputs),
        "edge_to_image": lambda: plain_edge_to_image(baseline.store, inputs),
        "sketch_to_image": lambda: plain_sketch_to_image(baseline.store, inputs, inputs.sketch),
        "sketch_to_image_preview": lambda: plain_sketch_to_image(baseline.store, inputs, inputs.preview_sketch),
        "translate": lambda: plain_translate(baseline.store, inputs),
    }
    return calls[task]


def _generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(seed)


def diffusers_text_to_image(baseline: Baseline, inputs: BenchInputs) -> Image.Image:
    with baseline.store.model_call():
        result = baseline.text_to_image(inputs.prompt, num_inference_steps=1, guidance_scale=0.0,
                                        height=inputs.size, width=inputs.size, generator=_generator(inputs.seed))
    return result.images[0]


def diffusers_edit(baseline: Baseline, inputs: BenchInputs) -> Image.Image:
    steps = 2  # diffusers runs int(steps * strength) = 1 step
    with baseline.store.model_call():
        result = baseline.image_to_image(inputs.prompt, image=inputs.photo, strength=inputs.strength,
                                         num_inference_steps=steps, guidance_scale=0.0,
                                         generator=_generator(inputs.seed))
    return result.images[0]


def encode_every_call(base: SDTurbo, text: str) -> torch.Tensor:
    """Tokenise and run the text encoder, as the released img2img-turbo code does on every call."""
    token_ids = base.tokenizer(text, padding="max_length", max_length=base.max_prompt_tokens, truncation=True,
                               return_tensors="pt").input_ids.to(base.device)
    return base.text_encoder(token_ids)[0]


def line_control(lines: np.ndarray, store: ModelStore) -> torch.Tensor:
    """A boolean HxW line map as the (1, 3, H, W) {0, 1} control image of pix2pix-Turbo."""
    return torch.from_numpy(lines).to(store.dtype).expand(1, 3, *lines.shape).to(store.device)


def plain_edge_to_image(store: ModelStore, inputs: BenchInputs) -> Image.Image:
    control = line_control(canny_edges(inputs.photo, *CANNY_THRESHOLDS) > 0, store)
    with store.model_call("edge_to_image") as call:
        embeddings = encode_every_call(store.base, inputs.prompt)
        pixels = run_task(call, control, embeddings)
    return to_pil(pixels)


def plain_sketch_to_image(store: ModelStore, inputs: BenchInputs, sketch: Image.Image) -> Image.Image:
    lines = sketch_lines(sketch)
    control = torch.from_numpy(lines).permute(2, 0, 1).unsqueeze(0).to(device=store.device, dtype=store.dtype)
    latent_side = sketch.width // LATENT_FACTOR
    noise = seeded_noise(inputs.seed, (1, 4, latent_side, latent_side), store.device, store.dtype)
    with store.model_call("sketch_to_image", gamma=inputs.gamma) as call:
        embeddings = encode_every_call(store.base, inputs.prompt)
        pixels = run_task(call, control, embeddings, noise=noise)
    return to_pil(pixels)


def plain_translate(store: ModelStore, inputs: BenchInputs) -> Image.Image:
    pixels = to_tensor(inputs.photo, store.device, store.dtype)
    caption = CHECKPOINTS[TRANSLATE_DIRECTION].caption or ""
    with store.model_call(TRANSLATE_DIRECTION) as call:
        embeddings = encode_every_call(store.base, caption)
        translated = run_task(call, pixels, embeddings)
    return to_pil(translated)
