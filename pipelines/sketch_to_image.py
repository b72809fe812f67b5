"""Sketch to image with the stochastic pix2pix-Turbo and the diversity gamma.

The sketch is binarised (line = 1) whatever its polarity: the background is the sketch's median
grey level and a pixel is a line where it differs from it by more than LINE_CONTRAST. gamma in
[0, 1] scales the LoRA, the conv_in blend and the skip activations and mixes the encoded sketch
with seeded noise: gamma = 1 follows the sketch exactly (the seed has no effect), lower gamma
gives more varied images. The model runs at the sketch's size, scaled down to at most 512 px on
the longer side (see pipelines.images), and the result has the sketch's size.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from PIL import Image

from models.img2img_turbo import get_task, run_task
from models.store import ModelStore
from pipelines.checks import check_fraction, check_prompt, check_seed
from pipelines.images import LATENT_FACTOR, model_size, resize, seeded_noise, to_pil, to_rgb

LINE_CONTRAST = 64
SketchInput = Image.Image | np.ndarray | Mapping[str, object]


def _editor_composite(value: Mapping[str, object]) -> Image.Image | np.ndarray:
    """Gradio's ImageEditor/Sketchpad value: its composite, or background and layers stacked."""
    composite = value.get("composite")
    if composite is not None:
        return composite  # type: ignore[return-value]
    parts = [value.get("background"), *(value.get("layers") or [])]
    images = [to_rgba(part) for part in parts if part is not None]
    if not images:
        raise ValueError("sketch is empty: the editor value has no composite, background or layers")
    canvas = Image.new("RGBA", images[0].size, (255, 255, 255, 255))
    for image in images:
        canvas.alpha_composite(resize(image, canvas.size))
    return canvas


def to_rgba(part: object) -> Image.Image:
    if isinstance(part, np.ndarray):
        part = Image.fromarray(part)
    if not isinstance(part, Image.Image):
        raise ValueError(f"sketch layers must be PIL images or numpy arrays, not {type(part).__name__}")
    return part.convert("RGBA")


def sketch_lines(sketch: object) -> np.ndarray:
    """A boolean line map (True = stroke) from a PIL image, an array or an editor value."""
    if isinstance(sketch, Mapping):
        sketch = _editor_composite(sketch)
    grey = np.asarray(to_rgb(sketch, "sketch").convert("L"), dtype=np.int16)
    background = int(np.median(grey))
    lines = np.abs(grey - background) > LINE_CONTRAST
    if not lines.any():
        raise ValueError("sketch is empty: draw some strokes (dark on light or light on dark) first")
    return lines


def sketch_to_image(store: ModelStore, sketch: SketchInput, prompt: str, *, gamma: float = 0.4,
                    seed: int = 0) -> Image.Image:
    # 1. check inputs
    prompt = check_prompt(prompt)
    gamma = check_fraction(gamma, "gamma", allow_zero=True)
    seed = check_seed(seed)
    lines = sketch_lines(sketch)
    size = (lines.shape[1], lines.shape[0])
    # 2. the line map at the model's size, as a {0, 1} three-channel image
    line_image = resize(Image.fromarray(lines.astype(np.uint8) * 255), model_size(*size))
    control = torch.from_numpy(np.asarray(line_image) > 127).to(store.dtype)
    control = control.expand(1, 3, *control.shape).to(store.device)
    # 3. seeded noise for the latent mix
    noise_shape = (1, 4, control.shape[2] // LATENT_FACTOR, control.shape[3] // LATENT_FACTOR)
    noise = seeded_noise(seed, noise_shape, store.device, store.dtype)
    with store.lock, torch.inference_mode():
        task = get_task(store, "sketch_to_image")
        embeddings = store.prompt_embeddings(prompt)
        # 4. one step with gamma
        pixels = run_task(store, task, control, embeddings, gamma=gamma, noise=noise)
    # 5. back to the sketch's size
    return resize(to_pil(pixels), size)
