"""Sketch to image with the stochastic pix2pix-Turbo and the diversity gamma.

The sketch is binarised as the release does it: per channel, a value below 0.5 (below 128 of 255)
is a line. Dark strokes on a light background are lines in all three channels; a coloured stroke
is a line only in the channels where it is dark, which is what the released model was trained on.
The sketch is first scaled to the model's size (at most the native side on the longer side,
multiples of 8; see pipelines.images) and binarised there, as upstream does. gamma in [0, 1]
scales the LoRA, the conv_in blend and the skip activations and mixes the encoded sketch with
seeded noise: gamma = 1 follows the sketch exactly (the seed has no effect), lower gamma gives more
varied images. The result has the sketch's size.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from PIL import Image

from models.running.img2img_turbo import run_task
from models.running.store import ModelStore
from pipelines.checks import check_fraction, check_prompt, check_seed
from pipelines.errors import InputError
from pipelines.images import LATENT_FACTOR, model_size, resize, seeded_noise, to_pil, to_rgb
from pipelines.limits import DEFAULT_GAMMA, MAX_INPUT_SIDE, limits_of

LINE_BELOW = 128  # a channel value below this (0.5 of 255) is a line
SketchInput = Image.Image | np.ndarray | Mapping[str, object]


def _editor_composite(value: Mapping[str, object]) -> Image.Image | np.ndarray:
    """Gradio's ImageEditor/Sketchpad value: its composite, or background and layers stacked."""
    composite = value.get("composite")
    if composite is not None:
        return composite  # type: ignore[return-value]
    parts = [value.get("background"), *(value.get("layers") or [])]
    images = [to_rgba(part) for part in parts if part is not None]
    if not images:
        raise InputError("sketch is empty: the editor value has no composite, background or layers")
    canvas = Image.new("RGBA", images[0].size, (255, 255, 255, 255))
    for image in images:
        canvas.alpha_composite(resize(image, canvas.size))
    return canvas


def to_rgba(part: object) -> Image.Image:
    if isinstance(part, np.ndarray):
        part = Image.fromarray(part)
    if not isinstance(part, Image.Image):
        raise InputError(f"sketch layers must be PIL images or numpy arrays, not {type(part).__name__}")
    return part.convert("RGBA")


def sketch_image(sketch: object, max_side: int = MAX_INPUT_SIDE) -> Image.Image:
    """The sketch as an RGB image (transparency on white) from a PIL image, an array or an editor value."""
    if isinstance(sketch, Mapping):
        sketch = _editor_composite(sketch)
    return to_rgb(sketch, "sketch", max_side)


def sketch_lines(image: Image.Image) -> np.ndarray:
    """The (H, W, 3) boolean line map of an RGB sketch: True where a channel is below 0.5."""
    lines = np.asarray(image) < LINE_BELOW
    if not lines.any():
        raise InputError("sketch is empty: draw some dark strokes on a light background first")
    return lines


def sketch_to_image(store: ModelStore, sketch: SketchInput, prompt: str, *, gamma: float = DEFAULT_GAMMA,
                    seed: int = 0) -> Image.Image:
    # 1. check inputs
    limits = limits_of(store)
    prompt = check_prompt(prompt)
    gamma = check_fraction(gamma, "gamma", allow_zero=True)
    seed = check_seed(seed, limits)
    picture = sketch_image(sketch, limits.max_input_side)
    # 2. at the model's size, binarised per channel: a {0, 1} three-channel image
    lines = sketch_lines(resize(picture, model_size(*picture.size, limits.native_side)))
    control = torch.from_numpy(lines).permute(2, 0, 1).unsqueeze(0).to(device=store.device, dtype=store.dtype)
    # 3. seeded noise for the latent mix
    noise_shape = (1, 4, control.shape[2] // LATENT_FACTOR, control.shape[3] // LATENT_FACTOR)
    noise = seeded_noise(seed, noise_shape, store.device, store.dtype)
    with store.model_call("sketch_to_image", gamma=gamma) as call:
        embeddings = store.prompt_embeddings(prompt)
        # 4. one step with gamma
        pixels = run_task(call, control, embeddings, noise=noise)
    # 5. back to the sketch's size
    return resize(to_pil(pixels), picture.size)
