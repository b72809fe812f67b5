"""Export pix2pix-turbo and cyclegan-turbo runs as one folder the app serves.

    python -m training export RUN [RUN ...] --out MODEL_DIR [--dtype float16] [--preview-decoder RUN]
    python app.py --source local --model-dir MODEL_DIR

MODEL_DIR is laid out like the stabilityai/sd-turbo repository (tokenizer/, text_encoder/, unet/,
vae/, scheduler/), copied from the runs' base (`tiny` is rebuilt: its weights are seeded), plus
img2img-turbo/<task>.safetensors under the file names models/specs.py gives (edge_to_image_loras,
sketch_to_image_stochastic_lora, day2night, night2day, clear2rainy, rainy2clear). Those files are
the app's converted layout, made at the end of each run by the app's own converter from the keys
upstream's training scripts save, so the app reads them without converting anything. A CycleGAN
run gives both of its directions (day_to_night and night_to_day from one day/night run).
--dtype float16 writes the base as the repository's fp16 variant and the task tensors in fp16.
EXPORT.json records the runs, the tasks, the base and `native_side`, the image side the base was
trained at (UNet sample size times the VAE's downsampling), which `--source mini` reads.
--preview-decoder adds a preview-decoder run's tiny autoencoder as MODEL_DIR/taesd/ (the app's live
text previews decode with it); it must have been distilled from the same base.
records/ holds the record.json of every run the model came from: the given runs and, through
their --base, --teacher, --vae, --init and --perceptual, the runs those were trained in, back to
the autoencoder; RUNS.md lists them (sessions, exact commands, losses, metrics) for the model card.
All runs must share one base. Nothing is left in MODEL_DIR on failure: it is written beside it
and renamed when complete.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from models.speed.taesd import PREVIEW_FOLDER, PREVIEW_RECORD
from models.weights.sources import EXPORT_RECORD, check_local_dir, configured_native_side, missing_files
from models.weights.specs import CHECKPOINTS, SD_TURBO
from models.weights.tiny import write_tiny_hub_layout
from training.provenance import write_provenance
from training.runner import TMP_PREFIX, TrainingInputError

TASK_FILE = "task.json"
WEIGHT_FILES = {"text_encoder": "model.safetensors", "unet": "diffusion_pytorch_model.safetensors",
                "vae": "diffusion_pytorch_model.safetensors"}
DTYPES = {"float32": torch.float32, "float16": torch.float16}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", type=Path, nargs="+", metavar="RUN",
                        help="finished pix2pix-turbo / cyclegan-turbo run folders (or their model/ folders)")
    parser.add_argument("--out", type=Path, required=True, help="the model folder to write (must not exist or be empty)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                        help="float16 halves the size (the sd-turbo repository's fp16 variant)")
    parser.add_argument("--preview-decoder", type=Path, default=None, metavar="RUN",
                        help="a finished preview-decoder run on the same base: written as MODEL_DIR/taesd/")


def run_task_folder(run: Path) -> tuple[Path, dict]:
    """The run's model folder and its task.json, checked."""
    for folder in (run / "model", run):
        if (folder / TASK_FILE).is_file():
            info = json.loads((folder / TASK_FILE).read_text())
            if not info.get("tasks"):
                raise TrainingInputError(f"{folder / TASK_FILE}: the run serves no app task ({info.get('note', '')})")
            for task in info["tasks"]:
                path = folder / "img2img-turbo" / CHECKPOINTS[task].converted_filename
                if not path.is_file():
                    raise TrainingInputError(f"{path} is missing: the run did not finish writing {task}")
            return folder, info
    raise TrainingInputError(f"{run}: no {TASK_FILE} in it or in {run / 'model'}; give a finished "
                             "pix2pix-turbo or cyclegan-turbo run (its training writes model/ at the end)")


def collect(runs: list[Path]) -> tuple[dict[str, str], dict[str, Path]]:
    """The shared base (base, base_dir) and task name -> weights file over all runs."""
    base: dict[str, str] | None = None
    files: dict[str, Path] = {}
    for run in runs:
        folder, info = run_task_folder(run)
        run_base = {"base": info["base"], "base_dir": info["base_dir"]}
        if base is not None and run_base != base:
            raise TrainingInputError(f"{run} was trained on base {run_base}, the others on {base}; "
                                     "the app serves every task on one base")
        base = run_base
        for task in info["tasks"]:
            if task in files:
                raise TrainingInputError(f"{task} comes from two runs ({files[task].parents[1]} and {folder}); give one")
            files[task] = folder / "img2img-turbo" / CHECKPOINTS[task].converted_filename
    assert base is not None
    return base, files


def base_source(base: dict[str, str], scratch: Path) -> Path:
    if base["base"] == "tiny":
        return write_tiny_hub_layout(scratch / "tiny-base")
    folder = Path(base["base_dir"])
    if not folder.is_dir() or missing_files(folder):
        raise TrainingInputError(f"the runs' base {folder} is gone or incomplete; export needs it to copy the base")
    return folder


def _weights_file(folder: Path, name: str) -> Path:
    """The full-precision weights file of a component, or its fp16 variant where only that exists."""
    full = folder / name
    if full.is_file():
        return full
    stem, suffix = name.rsplit(".", 1)
    return folder / f"{stem}.fp16.{suffix}"


def copy_base(source: Path, target: Path, dtype: torch.dtype) -> None:
    """Tokenizer, scheduler and configs copied; weights copied or cast to the fp16 variant."""
    for extra in ("tokenizer", "scheduler"):
        shutil.copytree(source / extra, target / extra)
    if (source / "model_index.json").is_file():
        shutil.copy2(source / "model_index.json", target / "model_index.json")
    for component, name in WEIGHT_FILES.items():
        (target / component).mkdir()
        shutil.copy2(source / component / "config.json", target / component / "config.json")
        weights = _weights_file(source / component, name)
        if dtype == torch.float16:
            stem, suffix = name.rsplit(".", 1)
            tensors = {key: value.half() if value.is_floating_point() else value
                       for key, value in load_file(str(weights)).items()}
            save_file(tensors, str(target / component / f"{stem}.fp16.{suffix}"), metadata={"format": "pt"})
        else:
            shutil.copy2(weights, target / component / weights.name)


def copy_task(source: Path, target: Path, dtype: torch.dtype) -> None:
    """A task file as it is, or with its floating tensors cast (metadata kept)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if dtype == torch.float32:
        shutil.copy2(source, target)
        return
    with safe_open(str(source), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = {key: value.to(dtype) if value.is_floating_point() else value
               for key, value in load_file(str(source)).items()}
    save_file(tensors, str(target), metadata=metadata)


def preview_folder(run: Path, base: dict[str, str]) -> Path:
    """The run's taesd/ folder, checked to decode the latents of the runs' base."""
    for folder in (run / "model", run):
        if (folder / PREVIEW_RECORD).is_file():
            info = json.loads((folder / PREVIEW_RECORD).read_text())
            if {"base": info.get("base"), "base_dir": info.get("base_dir")} != base:
                distilled_from = info.get("base_dir") or info.get("base")
                raise TrainingInputError(f"--preview-decoder {run} was distilled from base {distilled_from}, "
                                         f"the tasks use {base['base_dir'] or base['base']}")
            return folder / PREVIEW_FOLDER
    raise TrainingInputError(f"--preview-decoder {run}: no {PREVIEW_RECORD} in it or in {run / 'model'}; "
                             "give a finished preview-decoder run")


def copy_preview(source: Path, target: Path, dtype: torch.dtype) -> None:
    """The tiny autoencoder's config and weights (cast to dtype; loading casts back as asked)."""
    target.mkdir(parents=True)
    config = json.loads((source / "config.json").read_text())
    config.pop("block_out_channels", None)  # diffusers writes it for its own use, then warns about it on loading
    (target / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    name = WEIGHT_FILES["vae"]
    tensors = {key: value.to(dtype) if value.is_floating_point() else value
               for key, value in load_file(str(source / name)).items()}
    save_file(tensors, str(target / name), metadata={"format": "pt"})


def export(runs: list[Path], out: Path, dtype: torch.dtype, preview_run: Path | None = None) -> Path:
    base, files = collect(runs)
    preview = preview_folder(preview_run, base) if preview_run is not None else None
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise TrainingInputError(f"--out {out} exists and is not an empty folder; choose a new one")
    temp = out.with_name(f"{TMP_PREFIX}{out.name}")
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    try:
        copy_base(base_source(base, temp / ".scratch"), temp, dtype)
        shutil.rmtree(temp / ".scratch", ignore_errors=True)
        for task, path in files.items():
            copy_task(path, temp / "img2img-turbo" / CHECKPOINTS[task].converted_filename, dtype)
        if preview is not None:
            copy_preview(preview, temp / PREVIEW_FOLDER, dtype)
        records = write_provenance([*runs, *([preview_run] if preview_run is not None else [])], temp)
        (temp / EXPORT_RECORD).write_text(json.dumps({
            "runs": [str(run.resolve()) for run in runs], "tasks": sorted(files), **base,
            "preview_decoder": str(preview_run.resolve()) if preview_run is not None else None,
            "dtype": str(dtype).removeprefix("torch."), "base_repo_layout": SD_TURBO.repo_id,
            "native_side": configured_native_side(temp), "records": records}, indent=2))
        check_local_dir(temp)
        if out.exists():
            out.rmdir()
        os.replace(temp, out)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return out


def main(args: argparse.Namespace) -> None:
    out = export(list(args.runs), args.out, DTYPES[args.dtype], args.preview_decoder)
    print(f"Wrote {out}. Serve it with: python app.py --source mini --model-dir {out}")
