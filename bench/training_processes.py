"""One process of two threads against two processes of one thread, the same global batch: which
trains the mini recipes faster on a two-core CPU (issue 21, item 6).

    python -m bench.training_processes --data /work/data --mini assets/mini --out bench/results/training_processes.json

Each recipe runs a few steps from the shipped mini networks (the commands of bench.training_speed's
"after" column), once as `python -m training` with OMP_NUM_THREADS=2 and once as
`torchrun --nproc_per_node 2` with OMP_NUM_THREADS=1 and half the batch per process; the figure is
the median step time from the run's record (no loading, samples or checkpoints). Only recipes that
accept several processes are measured. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import torch

from bench.hardware import device_description, library_versions
from bench.training_speed import RecipeRun, recipe_runs

MULTI_PROCESS_RECIPES = ("autoencoder", "latent-diffusion", "one-step", "classifier", "pix2pix-turbo",
                         "cyclegan-turbo", "preview-decoder")


def with_batch(flags: tuple[str, ...], batch: int) -> tuple[str, ...]:
    """flags with --batch-size replaced by (or extended with) batch."""
    values = list(flags)
    if "--batch-size" in values:
        values[values.index("--batch-size") + 1] = str(batch)
        return tuple(values)
    return (*values, "--batch-size", str(batch))


def batch_of(flags: tuple[str, ...]) -> int | None:
    return int(flags[flags.index("--batch-size") + 1]) if "--batch-size" in flags else None


def timed(flags: tuple[str, ...], steps: int, processes: int, scratch: Path) -> dict[str, object]:
    """A short run with `processes` processes sharing the cores; its step timing from the record."""
    out = Path(tempfile.mkdtemp(dir=scratch)) / "run"
    launcher = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    command = [*launcher, "-m", "training", *flags, "--out", str(out), "--steps", str(steps),
               "--checkpoint-every", str(10 * steps), "--sample-every", str(10 * steps), "--device", "cpu"]
    threads = max(1, (os.cpu_count() or 2) // processes)
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run(command, check=True, env=environment, stdout=subprocess.DEVNULL)
    session = json.loads((out / "record.json").read_text())["sessions"][-1]
    global_batch = int(session.get("global_batch", session["arguments"]["batch_size"]))
    return {"processes": processes, "threads_per_process": threads, "global_batch": global_batch,
            "step_s_median": session["step_s_median"], "images_per_s": global_batch / session["step_s_median"],
            "command": f"OMP_NUM_THREADS={threads} " + " ".join(command)}


def compare(run: RecipeRun, steps: int, scratch: Path) -> dict[str, object]:
    flags = (*run.common, *run.after)
    batch = batch_of(flags) or 8
    one = timed(with_batch(flags, batch), steps, processes=1, scratch=scratch)
    two = timed(with_batch(flags, max(1, batch // 2)), steps, processes=2, scratch=scratch)
    return {"recipe": run.name, "one_process": one, "two_processes": two,
            "ratio": two["images_per_s"] / one["images_per_s"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.training_processes", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="datasets folder (emoji/, scenes/)")
    parser.add_argument("--mini", type=Path, default=Path("assets/mini"), help="the mini folder runs start from")
    parser.add_argument("--steps", type=int, default=8, help="steps a run; the median discounts the first")
    parser.add_argument("--only", nargs="+", default=None, metavar="RECIPE")
    parser.add_argument("--out", type=Path, required=True, help="results .json")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="training-processes-") as scratch:
        for run in recipe_runs(args.data, args.mini, classifier=None):
            if run.name not in MULTI_PROCESS_RECIPES or (args.only and run.name not in args.only):
                continue
            row = compare(run, args.steps, Path(scratch))
            rows.append(row)
            print(f"{run.name}: {row['one_process']['images_per_s']:.1f} (1x2 threads) vs "
                  f"{row['two_processes']['images_per_s']:.1f} (2x1 thread) images/s", flush=True)
    results = {"command": " ".join(["python", "-m", "bench.training_processes", *(argv or sys.argv[1:])]),
               "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "device": device_description(torch.device("cpu")), "versions": library_versions(), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print("| recipe | global batch | images/s, 1 process x 2 threads | images/s, 2 processes x 1 thread | ratio |")
    print("|---|---|---|---|---|")
    for row in rows:
        one, two = row["one_process"], row["two_processes"]
        print(f"| {row['recipe']} | {one['global_batch']} | {one['images_per_s']:.1f} | {two['images_per_s']:.1f} | "
              f"{row['ratio']:.2f}x |")


if __name__ == "__main__":
    main()
