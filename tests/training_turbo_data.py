"""Tiny datasets in img2img-turbo's layouts for the pix2pix-/cyclegan-turbo training tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 32


def _square(rng: np.random.Generator) -> tuple[int, int, int, int]:
    left, top = (int(v) for v in rng.integers(2, SIZE // 2, size=2))
    return left, top, left + int(rng.integers(8, SIZE // 2)), top + int(rng.integers(8, SIZE // 2))


def write_paired(root: Path, count: int = 6, seed: int = 0, with_sources: bool = True) -> Path:
    """Line art (dark outline on white) -> the same square filled with a colour, captioned by colour."""
    rng = np.random.default_rng(seed)
    colours = {"a red square": (220, 40, 40), "a blue square": (40, 60, 220), "a green square": (40, 180, 60)}
    prompts = {}
    for folder in ("train_A", "train_B"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        caption = list(colours)[index % len(colours)]
        left, top, right, bottom = _square(rng)
        sketch = np.full((SIZE, SIZE, 3), 255, np.uint8)
        sketch[top:bottom, left:left + 1] = sketch[top:bottom, right - 1:right] = 0
        sketch[top:top + 1, left:right] = sketch[bottom - 1:bottom, left:right] = 0
        colour = np.full((SIZE, SIZE, 3), 245, np.uint8)
        colour[top:bottom, left:right] = colours[caption]
        name = f"{index:03d}.png"
        if with_sources:
            Image.fromarray(sketch).save(root / "train_A" / name)
        Image.fromarray(colour).save(root / "train_B" / name)
        prompts[name] = caption
    (root / "train_prompts.json").write_text(json.dumps(prompts))
    if not with_sources:
        (root / "train_A").rmdir()
    return root


def domain_images(low: int, high: int, count: int, seed: int) -> np.ndarray:
    """Smooth random textures whose mean brightness is drawn from [low, high] (0..255)."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((count, 4, 4, 3))
    images = np.stack([np.asarray(Image.fromarray((c * 255).astype(np.uint8)).resize((SIZE, SIZE), Image.BILINEAR))
                       for c in coarse]).astype(np.float32)
    levels = rng.uniform(low, high, size=(count, 1, 1, 1))
    return np.clip(levels + 0.4 * (images - 127.5), 0, 255).astype(np.uint8)


def write_unpaired(root: Path, prompt_a: str = "driving in the day", prompt_b: str = "driving in the night",
                   count: int = 6, seed: int = 0) -> Path:
    """Domain A bright, domain B dark; fixed prompts as the app's day/night captions by default."""
    for folder, (low, high), offset in (("train_A", (140, 230), 0), ("train_B", (25, 115), 1)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for index, image in enumerate(domain_images(low, high, count, seed + offset)):
            Image.fromarray(image).save(root / folder / f"{folder[-1].lower()}{index:03d}.png")
    (root / "fixed_prompt_a.txt").write_text(prompt_a)
    (root / "fixed_prompt_b.txt").write_text(prompt_b)
    return root
