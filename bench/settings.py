"""One speed setting off and on, in the Studio as the app loads it, the two studios' calls alternating.

    python -m bench.settings --source mini --setting trace_vae --tasks sketch_to_image,translate

On a shared or drifting machine two runs made one after the other can differ by a quarter; with
both studios resident and their calls taking turns (bench.measure.measure_pair), the drift falls
on both alike and the ratio is the setting's own. "off" is Acceleration.for_device with the
setting turned off (False, or no networks), "on" the device's defaults. A setting that holds for
the whole process (PROCESS_WIDE: retain_host_memory) cannot differ between two studios of one
process: there each studio is loaded in a child process of its own (`--serve off|on`) and the
calls alternate between the two processes; each timed call then includes a pipe's round trip
(well under a millisecond) on both sides alike.
"""

from __future__ import annotations

import argparse
import functools
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import fields, replace
from datetime import datetime, timezone
from pathlib import Path

import torch

from bench.hardware import device_description, library_versions
from bench.measure import Measurement, measure_pair
from bench.tasks import BENCH_TASKS, BenchInputs, BenchTask, ours_call
from models.running.devices import resolve_device
from models.speed.acceleration import Acceleration
from pipelines.studio import Studio

SETTINGS = tuple(field.name for field in fields(Acceleration) if field.name not in ("attention", "compile_mode"))
# Settings of the process, not of one studio: measured with each studio in a process of its own.
PROCESS_WIDE = ("retain_host_memory",)
REPLY = "bench.settings> "  # how a serving child's answers start on its stdout


def parser() -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(prog="python -m bench.settings", description=__doc__,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parse.add_argument("--setting", required=True, choices=SETTINGS, help="the Acceleration field to turn off")
    parse.add_argument("--source", default="mini", help="weights to load (default: mini)")
    parse.add_argument("--device", default="cpu")
    parse.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parse.add_argument("--tasks", default="sketch_to_image,translate",
                       help=f"comma-separated, of {', '.join(BENCH_TASKS)}")
    parse.add_argument("--pairs", type=int, default=40, help="calls of each studio after a cold one")
    parse.add_argument("--markdown", type=Path, default=None, help="also write the report here")
    parse.add_argument("--serve", choices=("off", "on"), help=argparse.SUPPRESS)  # a child of a process-wide run
    return parse


def turned_off(defaults: Acceleration, setting: str) -> Acceleration:
    value = getattr(defaults, setting)
    if not value:
        raise SystemExit(f"{setting} is already off on this device ({defaults.describe()}): nothing to compare")
    return replace(defaults, **{setting: () if isinstance(value, tuple) else False})


def load_side(args: argparse.Namespace, side: str) -> Studio:
    device = resolve_device(args.device)
    defaults = Acceleration.for_device(device)
    return Studio.load(args.source, device=device,
                       acceleration=turned_off(defaults, args.setting) if side == "off" else defaults)


def serve_calls(args: argparse.Namespace) -> int:
    """The child of a process-wide run: load one side's studio, say how it is set, then run each
    task named on stdin and answer when it is done."""
    studio = load_side(args, args.serve)
    inputs = BenchInputs(size=studio.limits.native_side,
                         preview_side=studio.limits.default_preview_side(studio.device.type))
    print(REPLY + studio.acceleration.describe(), flush=True)
    calls: dict[str, Callable[[], object]] = {}
    for line in sys.stdin:
        task = line.strip()
        if task not in calls:
            calls[task] = ours_call(task, studio, inputs)  # type: ignore[arg-type]
        calls[task]()
        print(REPLY + "done", flush=True)
    return 0


class ServingChild:
    """One side's studio in a child process (`--serve`), which runs a task each time it is asked."""

    def __init__(self, argv: list[str], side: str) -> None:
        self.side = side
        self.process = subprocess.Popen([sys.executable, "-m", "bench.settings", *argv, "--serve", side],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.description = self._answer()

    def _answer(self) -> str:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(REPLY):
                return line[len(REPLY):].strip()
        raise RuntimeError(f"the {self.side} side's process ended (exit status {self.process.wait()})")

    def call(self, task: BenchTask) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(task + "\n")
        self.process.stdin.flush()
        self._answer()

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=60)


def task_names(text: str) -> list[BenchTask]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(BENCH_TASKS))
    if unknown or not names:
        raise SystemExit(f"--tasks: unknown {unknown or 'none given'}; choose from {', '.join(BENCH_TASKS)}")
    return names  # type: ignore[return-value]


def report(args: argparse.Namespace, command: str, device: torch.device, off: str, on: str,
           results: dict[BenchTask, tuple[Measurement, Measurement]]) -> str:
    """off, on: the two sides' settings as applied."""
    versions = ", ".join(f"{name} {value}" for name, value in library_versions().items())
    lines = [f"### {args.setting} off and on, calls alternating ({args.source})", "",
             f"- Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
             f"- Device: {device_description(device)}", f"- Libraries: {versions}", f"- Command: `{command}`",
             f"- Off: {off}", f"- On: {on}", f"- {args.pairs} calls of each after a cold one; medians"
             + (", each side in a process of its own" if args.setting in PROCESS_WIDE else ""), "",
             "| task | off ms | on ms | speed-up (off / on) |", "|---|---|---|---|"]
    for task, (without, with_) in results.items():
        lines.append(f"| `{task}` | {1000 * without.median_s:.1f} | {1000 * with_.median_s:.1f} | "
                     f"{without.median_s / with_.median_s:.2f}x |")
    return "\n".join(lines) + "\n"


def measure_in_one_process(args: argparse.Namespace, tasks: list[BenchTask], device: torch.device,
                           ) -> tuple[str, str, dict[BenchTask, tuple[Measurement, Measurement]]]:
    off, on = load_side(args, "off"), load_side(args, "on")
    inputs = BenchInputs(size=on.limits.native_side, preview_side=on.limits.default_preview_side(device.type))
    results = {}
    for task in tasks:
        results[task] = measure_pair(ours_call(task, off, inputs), ours_call(task, on, inputs),
                                     repeats=args.pairs, device=device)
        print(f"{task} measured", file=sys.stderr, flush=True)
    return off.acceleration.describe(), on.acceleration.describe(), results


def measure_in_two_processes(args: argparse.Namespace, argv: list[str], tasks: list[BenchTask],
                             device: torch.device) -> tuple[str, str, dict[BenchTask, tuple[Measurement, Measurement]]]:
    off, on = ServingChild(argv, "off"), ServingChild(argv, "on")
    try:
        results = {}
        for task in tasks:
            results[task] = measure_pair(functools.partial(off.call, task), functools.partial(on.call, task),
                                         repeats=args.pairs, device=device)
            print(f"{task} measured", file=sys.stderr, flush=True)
    finally:
        off.close()
        on.close()
    return off.description, on.description, results


def main(argv: list[str] | None = None) -> int:
    arguments = list(argv if argv is not None else sys.argv[1:])
    args = parser().parse_args(arguments)
    tasks = task_names(args.tasks)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.serve is not None:
        return serve_calls(args)
    device = resolve_device(args.device)
    if args.setting in PROCESS_WIDE:
        off, on, results = measure_in_two_processes(args, arguments, tasks, device)
    else:
        off, on, results = measure_in_one_process(args, tasks, device)
    text = report(args, "python -m bench.settings " + shlex.join(arguments), device, off, on, results)
    print(text)
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
