"""Loaders every recipe uses, with validation before any training starts.

Layouts (img2img-turbo's, so existing datasets load as they are; png/jpg/webp/bmp of any size):
- paired:    ROOT/{split}_A/NAME, ROOT/{split}_B/NAME (same names), ROOT/{split}_prompts.json {NAME: caption}
- unpaired:  ROOT/{split}_A/*, ROOT/{split}_B/*, ROOT/fixed_prompt_a.txt, ROOT/fixed_prompt_b.txt
- captioned: ROOT/{split}/*.png + ROOT/{split}/metadata.jsonl, one {"file_name": ..., "text": ...} a line
  (Hugging Face imagefolder); other string fields (concept, style, condition, ...) become labels.
Images are centre-cropped to a square, resized to the resolution and returned as uint8 (N, H, W, 3)
RGB; transparent images are composited on white. Anything wrong raises `DatasetError` naming the
file or field. Hidden files (".name") are ignored.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})
SPLITS = ("train", "test")


class DatasetError(ValueError):
    """A dataset that cannot be trained on; the message names the file or field."""


def check_resolution(resolution: int) -> int:
    """The autoencoder downsamples by 8, so images must be a positive multiple of 8 pixels."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution <= 0 or resolution % 8:
        raise DatasetError(f"resolution={resolution!r} must be a positive multiple of 8 "
                           "(the autoencoder downsamples by 8), e.g. 64, 128, 256 or 512")
    return resolution


@dataclass
class PairedDataset:
    """Aligned pairs: sources[i] (A, the condition) -> targets[i] (B), with captions[i]."""

    root: Path
    split: str
    names: list[str]
    sources: np.ndarray
    targets: np.ndarray
    captions: list[str]

    def __len__(self) -> int:
        return len(self.names)


@dataclass
class UnpairedDataset:
    """Two unaligned domains with one fixed caption each."""

    root: Path
    split: str
    names_a: list[str]
    images_a: np.ndarray
    names_b: list[str]
    images_b: np.ndarray
    prompt_a: str
    prompt_b: str


@dataclass
class CaptionedDataset:
    """Images with captions, plus per-image labels from metadata.jsonl (field -> one value per image)."""

    root: Path
    split: str
    names: list[str]
    images: np.ndarray
    captions: list[str]
    labels: dict[str, list[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.names)


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise DatasetError(f"split={split!r} must be one of {SPLITS}")
    return split


def _folder(path: Path) -> Path:
    if not path.is_dir():
        raise DatasetError(f"missing folder {path}")
    return path


def _image_names(folder: Path, also_allowed: frozenset[str] = frozenset()) -> list[str]:
    """Sorted image file names in a folder; refuses other files (but `also_allowed`) and an empty folder."""
    names = []
    for path in sorted(_folder(folder).iterdir()):
        if path.name.startswith(".") or path.name in also_allowed:
            continue
        if path.is_dir() or path.suffix.lower() not in IMAGE_SUFFIXES:
            raise DatasetError(f"{path} is not an image (expected one of {sorted(IMAGE_SUFFIXES)})")
        names.append(path.name)
    if not names:
        raise DatasetError(f"{folder} has no images")
    return names


def _caption(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(f"{where}: caption must be a non-empty string, got {value!r}")
    return value.strip()


def _read_text_prompt(path: Path) -> str:
    if not path.is_file():
        raise DatasetError(f"missing caption file {path}")
    return _caption(path.read_text(encoding="utf-8"), str(path))


def read_image(path: Path, resolution: int) -> np.ndarray:
    """An image file as (resolution, resolution, 3) uint8 RGB: white under transparency, centre-cropped square."""
    try:
        with Image.open(path) as opened:
            opened.load()
            image = opened
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                rgba = image.convert("RGBA")
                image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
            pixels = np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise DatasetError(f"{path} is not a readable image: {error}") from error
    height, width = pixels.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = pixels[top:top + side, left:left + side]
    if side == resolution:
        return np.ascontiguousarray(square)
    interpolation = cv2.INTER_AREA if side > resolution else cv2.INTER_CUBIC
    return cv2.resize(square, (resolution, resolution), interpolation=interpolation)


def _read_images(folder: Path, names: list[str], resolution: int) -> np.ndarray:
    images = np.empty((len(names), resolution, resolution, 3), np.uint8)
    for index, name in enumerate(names):
        images[index] = read_image(folder / name, resolution)
    return images


def _read_json(path: Path) -> object:
    if not path.is_file():
        raise DatasetError(f"missing caption file {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path} is not valid JSON: {error}") from error


def _limit(names: list[str], limit: int | None) -> list[str]:
    if limit is not None and limit <= 0:
        raise DatasetError(f"limit={limit} must be a positive number of images")
    return names[:limit] if limit else names


def load_paired(root: str | Path, split: str = "train", resolution: int = 128, limit: int | None = None) -> PairedDataset:
    """Read ROOT/{split}_A, ROOT/{split}_B and ROOT/{split}_prompts.json; names must pair and have captions."""
    root, split, resolution = Path(root), _check_split(split), check_resolution(resolution)
    folder_a, folder_b = root / f"{split}_A", root / f"{split}_B"
    names_a, names_b = _image_names(folder_a), _image_names(folder_b)
    only_a, only_b = sorted(set(names_a) - set(names_b)), sorted(set(names_b) - set(names_a))
    if only_a or only_b:
        raise DatasetError(f"{folder_a} and {folder_b} must hold the same file names: "
                           f"only in {split}_A: {only_a[:5]}, only in {split}_B: {only_b[:5]}")
    prompts_path = root / f"{split}_prompts.json"
    prompts = _read_json(prompts_path)
    if not isinstance(prompts, dict):
        raise DatasetError(f"{prompts_path} must be a JSON object mapping file name -> caption")
    unknown = sorted(set(prompts) - set(names_a))
    if unknown:
        raise DatasetError(f"{prompts_path} names images that are not in {split}_A/{split}_B: {unknown[:5]}")
    uncaptioned = [name for name in names_a if name not in prompts]
    if uncaptioned:
        raise DatasetError(f"{prompts_path} has no caption for {uncaptioned[:5]}")
    names = _limit(names_a, limit)
    captions = [_caption(prompts[name], f"{prompts_path} [{name!r}]") for name in names]
    return PairedDataset(root, split, names, _read_images(folder_a, names, resolution),
                         _read_images(folder_b, names, resolution), captions)


def load_unpaired(root: str | Path, split: str = "train", resolution: int = 128,
                  limit: int | None = None) -> UnpairedDataset:
    """Read ROOT/{split}_A, ROOT/{split}_B (any names) and the fixed captions fixed_prompt_a/b.txt."""
    root, split, resolution = Path(root), _check_split(split), check_resolution(resolution)
    folder_a, folder_b = root / f"{split}_A", root / f"{split}_B"
    names_a, names_b = _limit(_image_names(folder_a), limit), _limit(_image_names(folder_b), limit)
    prompt_a = _read_text_prompt(root / "fixed_prompt_a.txt")
    prompt_b = _read_text_prompt(root / "fixed_prompt_b.txt")
    return UnpairedDataset(root, split, names_a, _read_images(folder_a, names_a, resolution),
                           names_b, _read_images(folder_b, names_b, resolution), prompt_a, prompt_b)


def _metadata_rows(folder: Path) -> list[dict]:
    path = folder / "metadata.jsonl"
    if not path.is_file():
        raise DatasetError(f"missing caption file {path}")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DatasetError(f"{path} line {number} is not valid JSON: {error}") from error
        if not isinstance(row, dict) or not isinstance(row.get("file_name"), str) or not row["file_name"]:
            raise DatasetError(f"{path} line {number}: field 'file_name' must be a non-empty string")
        row["text"] = _caption(row.get("text"), f"{path} line {number} field 'text'")
        rows.append(row)
    if not rows:
        raise DatasetError(f"{path} lists no images")
    return rows


def load_captioned(root: str | Path, split: str = "train", resolution: int = 128,
                   limit: int | None = None) -> CaptionedDataset:
    """Read ROOT/{split}/metadata.jsonl and its images; every image needs a line with a non-empty 'text'."""
    root, split, resolution = Path(root), _check_split(split), check_resolution(resolution)
    folder = root / split
    on_disk = set(_image_names(folder, also_allowed=frozenset({"metadata.jsonl"})))
    rows = _metadata_rows(folder)
    listed = [row["file_name"] for row in rows]
    duplicates = sorted(name for name, count in Counter(listed).items() if count > 1)
    if duplicates:
        raise DatasetError(f"{folder / 'metadata.jsonl'} lists {duplicates[:5]} more than once")
    missing, unlisted = sorted(set(listed) - on_disk), sorted(on_disk - set(listed))
    if missing:
        raise DatasetError(f"{folder / 'metadata.jsonl'} names files that are not in {folder}: {missing[:5]}")
    if unlisted:
        raise DatasetError(f"{folder} has images without a line in metadata.jsonl: {unlisted[:5]}")
    rows = rows[:len(_limit(listed, limit))]
    label_fields = sorted({key for row in rows for key, value in row.items()
                           if key not in ("file_name", "text") and isinstance(value, str)})
    labels = {key: [str(row.get(key, "")) for row in rows] for key in label_fields}
    names = [row["file_name"] for row in rows]
    return CaptionedDataset(root, split, names, _read_images(folder, names, resolution),
                            [row["text"] for row in rows], labels)
