"""A stand-in for the shipped mini folder: the tiny model in the sd-turbo layout, seeded random
task weights in the app's converted layout under img2img-turbo/, and EXPORT.json recording a
native side, as `python -m training export` writes it."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from models.weights.base_loading import build_tiny_sd_turbo
from models.weights.checkpoints import save_task_weights
from models.weights.random_tasks import random_task_weights
from models.weights.sources import EXPORT_RECORD
from models.weights.specs import CHECKPOINTS, TaskName
from models.weights.tiny import write_tiny_hub_layout

ALL_TASKS: tuple[TaskName, ...] = tuple(CHECKPOINTS)


def write_fake_mini(directory: Path, *, native_side: int | None = 128,
                    tasks: tuple[TaskName, ...] = ALL_TASKS) -> Path:
    """The folder; native_side None leaves it out of EXPORT.json (the configs then give it)."""
    write_tiny_hub_layout(directory)
    with tempfile.TemporaryDirectory(prefix="tiny-tokenizer-") as tokenizer_dir:
        base = build_tiny_sd_turbo(torch.device("cpu"), torch.float32, Path(tokenizer_dir))
    for task in tasks:
        weights = random_task_weights(base, task, seed=list(CHECKPOINTS).index(task))
        save_task_weights(weights, directory / "img2img-turbo" / CHECKPOINTS[task].converted_filename)
    record: dict[str, object] = {"tasks": sorted(tasks), "base": "tiny", "dtype": "float32"}
    if native_side is not None:
        record["native_side"] = native_side
    (directory / EXPORT_RECORD).write_text(json.dumps(record, indent=2), encoding="utf-8")
    return directory
