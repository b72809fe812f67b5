"""One speed setting off and on, in the Studio as the app loads it, the two studios' calls alternating.

    python -m bench.settings --source mini --setting trace_vae --tasks sketch_to_image,translate

On a shared or drifting machine two runs made one after the other can differ by a quarter; with
both studios resident and their calls taking turns (bench.measure.measure_pair), the drift falls
on both alike and the ratio is the setting's own. "off" is Acceleration.for_device with the
setting turned off (False, or no networks), "on" the device's defaults.
"""

from __future__ import annotations

import argparse
import shlex
import sys
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
    return parse


def turned_off(defaults: Acceleration, setting: str) -> Acceleration:
    value = getattr(defaults, setting)
    if not value:
        raise SystemExit(f"{setting} is already off on this device ({defaults.describe()}): nothing to compare")
    return replace(defaults, **{setting: () if isinstance(value, tuple) else False})


def task_names(text: str) -> list[BenchTask]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(BENCH_TASKS))
    if unknown or not names:
        raise SystemExit(f"--tasks: unknown {unknown or 'none given'}; choose from {', '.join(BENCH_TASKS)}")
    return names  # type: ignore[return-value]


def report(args: argparse.Namespace, command: str, off: Studio, on: Studio,
           results: dict[BenchTask, tuple[Measurement, Measurement]]) -> str:
    versions = ", ".join(f"{name} {value}" for name, value in library_versions().items())
    lines = [f"### {args.setting} off and on, calls alternating ({args.source})", "",
             f"- Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
             f"- Device: {device_description(on.device)}", f"- Libraries: {versions}", f"- Command: `{command}`",
             f"- Off: {off.acceleration.describe()}", f"- On: {on.acceleration.describe()}",
             f"- {args.pairs} calls of each after a cold one; medians", "",
             "| task | off ms | on ms | speed-up (off / on) |", "|---|---|---|---|"]
    for task, (without, with_) in results.items():
        lines.append(f"| `{task}` | {1000 * without.median_s:.1f} | {1000 * with_.median_s:.1f} | "
                     f"{without.median_s / with_.median_s:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    tasks = task_names(args.tasks)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    defaults = Acceleration.for_device(device)
    off = Studio.load(args.source, device=device, acceleration=turned_off(defaults, args.setting))
    on = Studio.load(args.source, device=device, acceleration=defaults)
    inputs = BenchInputs(size=on.limits.native_side, preview_side=on.limits.default_preview_side(device.type))
    results = {}
    for task in tasks:
        results[task] = measure_pair(ours_call(task, off, inputs), ours_call(task, on, inputs),
                                     repeats=args.pairs, device=device)
        print(f"{task} measured", file=sys.stderr, flush=True)
    command = "python -m bench.settings " + shlex.join(argv if argv is not None else sys.argv[1:])
    text = report(args, command, off, on, results)
    print(text)
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
