"""Training speed of every mini recipe, before and after: the shipped mini's recorded commands on
glibc's default memory thresholds against scripts/train_mini.sh's commands with freed memory kept in
the process, a few steps each, the two taking turns recipe by recipe.

    python -m bench.training_speed --data /work/data --mini assets/mini --steps 8 --out bench/results/training_speed.json

Each run starts from the shipped mini networks (assets/mini: --init, --vae, --teacher, --base), so
no earlier stage's run is needed; the figure is the median time of the training steps, which
discounts the slow first steps (the record's step timing: no model loading, latent caching, samples or checkpoints).
Prints a Markdown table: recipe, images/s before, images/s after, the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from bench.hardware import device_description, library_versions
from models.running.host_memory import TRAINING_VARIABLE


@dataclass(frozen=True)
class RecipeRun:
    """One recipe with the flags of its run before and after (besides --out, --steps)."""

    name: str
    common: tuple[str, ...]
    before: tuple[str, ...]
    after: tuple[str, ...]


def recipe_runs(data: Path, mini: Path, classifier: Path | None) -> list[RecipeRun]:
    perceptual = ("--perceptual", str(classifier)) if classifier else ()
    emoji, scenes = data / "emoji", data / "scenes"
    return [
        RecipeRun("autoencoder", ("autoencoder", "--dataset", f"{emoji}/captioned", "--also", f"{scenes}/captioned",
                                  "--init", f"{mini}/vae", "--disc-start", "1000000"),
                  ("--crop", "64", "--batch-size", "8"), ("--crop", "32", "--batch-size", "32")),
        RecipeRun("latent-diffusion", ("latent-diffusion", "--vae", str(mini), "--dataset", f"{emoji}/captioned",
                                       "--max-images", "512", "--unet-channels", "32,64,128,128", "--norm-groups", "16",
                                       "--text-layers", "2"),
                  ("--batch-size", "16"), ("--batch-size", "64")),
        RecipeRun("one-step", ("one-step", "--teacher", str(mini), "--dataset", f"{emoji}/captioned"),
                  ("--batch-size", "16"), ("--batch-size", "16")),
        RecipeRun("classifier", ("classifier", "--dataset", str(emoji), f"{scenes}:900"),
                  ("--resolution", "32", "--widths", "16,32,64,128", "--batch-size", "64"),
                  ("--resolution", "64", "--widths", "32,64,128,256", "--batch-size", "64")),
        RecipeRun("pix2pix-turbo", ("pix2pix-turbo", "--base", str(mini), "--task", "sketch", "--dataset",
                                    f"{emoji}/sketch", *perceptual), ("--batch-size", "4"), ("--batch-size", "4")),
        RecipeRun("cyclegan-turbo", ("cyclegan-turbo", "--base", str(mini), "--dataset", f"{scenes}/day_night",
                                     "--rank-unet", "16", *perceptual), ("--batch-size", "2"), ("--batch-size", "2")),
        RecipeRun("preview-decoder", ("preview-decoder", "--base", str(mini), "--dataset", f"{emoji}/captioned"),
                  ("--batch-size", "8"), ("--batch-size", "8")),
    ]


def timed_run(flags: tuple[str, ...], steps: int, retain: bool, scratch: Path) -> dict[str, float]:
    """One short run in a process of its own; its step timing from the record."""
    out = Path(tempfile.mkdtemp(dir=scratch))
    command = [sys.executable, "-m", "training", *flags, "--out", str(out / "run"), "--steps", str(steps),
               "--checkpoint-every", str(10 * steps), "--sample-every", str(10 * steps), "--device", "cpu"]
    environment = {**os.environ, TRAINING_VARIABLE: "1" if retain else "0"}
    subprocess.run(command, check=True, env=environment, stdout=subprocess.DEVNULL)
    session = json.loads((out / "run" / "record.json").read_text())["sessions"][-1]
    batch = int(session["arguments"]["batch_size"])
    return {"step_s_median": session["step_s_median"], "images_per_s": batch / session["step_s_median"],
            "batch_size": batch, "retain_host_memory": session["retain_host_memory"], "command": " ".join(command)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.training_speed", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="datasets folder (emoji/, scenes/)")
    parser.add_argument("--mini", type=Path, default=Path("assets/mini"), help="the mini folder runs start from")
    parser.add_argument("--classifier", type=Path, default=None, help="a classifier run for the perceptual losses")
    parser.add_argument("--steps", type=int, default=8,
                        help="steps a run; the median step time discounts the slow first steps")
    parser.add_argument("--only", nargs="+", default=None, metavar="RECIPE")
    parser.add_argument("--out", type=Path, required=True, help="results .json")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="training-speed-") as scratch:
        for run in recipe_runs(args.data, args.mini, args.classifier):
            if args.only and run.name not in args.only:
                continue
            before = timed_run((*run.common, *run.before), args.steps, retain=False, scratch=Path(scratch))
            after = timed_run((*run.common, *run.after), args.steps, retain=True, scratch=Path(scratch))
            rows.append({"recipe": run.name, "before": before, "after": after,
                         "ratio": after["images_per_s"] / before["images_per_s"]})
            print(f"{run.name}: {before['images_per_s']:.1f} -> {after['images_per_s']:.1f} images/s", flush=True)
    results = {"command": " ".join(["python", "-m", "bench.training_speed", *(argv or sys.argv[1:])]),
               "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "device": device_description(torch.device("cpu")), "versions": library_versions(),
               "torch_threads": torch.get_num_threads(), "rows": rows,
               "ratio_median": float(np.median([row["ratio"] for row in rows])) if rows else None}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print("| recipe | batch before | images/s before | batch after | images/s after | after / before |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['recipe']} | {row['before']['batch_size']} | {row['before']['images_per_s']:.1f} | "
              f"{row['after']['batch_size']} | {row['after']['images_per_s']:.1f} | {row['ratio']:.2f}x |")


if __name__ == "__main__":
    main()
