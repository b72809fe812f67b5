"""Command line of the benchmark: `python -m bench --help`."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from bench.ablations import ABLATIONS, AblationName, default_ablations
from bench.report import to_json, to_markdown
from bench.run import BenchConfig, run_benchmark
from bench.smoke import run_smoke
from bench.tasks import BENCH_TASKS, BenchTask
from models.running.devices import resolve_device, resolve_dtype
from models.speed.acceleration import COMPILE_MODES, CONV_NETWORKS, Acceleration
from models.weights.sources import resolve_source
from models.weights.specs import SOURCE_NAMES
from pipelines.limits import Limits

DEFAULT_SIZES = {"cuda": 512, "cpu": 256}
DEFAULT_REPEATS = {"cuda": 30, "cpu": 2}
TINY_SIZE = 256
MIN_SIZE, MAX_SIZE = 64, 1024


def _names(text: str, allowed: tuple[str, ...], flag: str) -> list[str]:
    """A comma-separated list of names from `allowed`; "all" and "none" are accepted."""
    if text == "all":
        return list(allowed)
    if text == "none":
        return []
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in allowed]
    if unknown:
        raise argparse.ArgumentTypeError(f"{flag}: unknown {', '.join(unknown)}; choose from {', '.join(allowed)}")
    return names


def parser() -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(prog="python -m bench", description=(
        "Speed and memory of every task on SD-Turbo's full-size architecture with random weights (or the "
        "weights of --source): ours, the Studio as the app loads it, against a plain fp32 baseline, plus each "
        "optimisation on its own."))
    parse.add_argument("--device", default="auto", help="cuda, cpu or auto (default: cuda when available)")
    parse.add_argument("--dtype", default="auto", help="our dtype (default: float16 on CUDA, float32 on CPU)")
    parse.add_argument("--size", type=int, help="image side in pixels (default: 512 on CUDA, 256 on CPU; with "
                                                "--source, the source's native side)")
    parse.add_argument("--source", choices=[name for name in SOURCE_NAMES if name != "auto"],
                       help="benchmark these weights (e.g. mini), loaded as the app loads them, instead of random ones")
    parse.add_argument("--model-dir", type=Path, help="folder of the weights for --source local or mini")
    parse.add_argument("--repeats", type=int, help="timed calls after the first (default: 30 CUDA, 2 CPU)")
    parse.add_argument("--tasks", default="all", help=f"comma-separated from {', '.join(BENCH_TASKS)} (default: all)")
    parse.add_argument("--ablations", default=None,
                       help=f"comma-separated from {', '.join(ABLATIONS)}, or all / none "
                            "(default: all that apply; CPU: without compile and cuda_graphs)")
    parse.add_argument("--compile-mode", choices=COMPILE_MODES, default=None,
                       help="torch.compile mode for ours, an experiment (default: what Studio.load applies on the "
                            "device: reduce-overhead on CUDA, off on CPU)")
    parse.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                       help="channels_last for all of ours' networks or none, an experiment (default: what "
                            "Studio.load applies on the device)")
    parse.add_argument("--flops", action=argparse.BooleanOptionalAction, default=None,
                       help="count FLOPs per task for the physical floor (default: on for CUDA and --tiny)")
    parse.add_argument("--warm-up", action="store_true", help="run Studio.warm_up() before our first calls")
    parse.add_argument("--paired", action="store_true",
                       help="keep ours and the baseline resident together and alternate their calls, so load from "
                            "other processes falls on both alike (a shared CPU); needs memory for both")
    parse.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    parse.add_argument("--tiny", action="store_true", help="tiny random models (the CI smoke; seconds)")
    parse.add_argument("--smoke", action="store_true",
                       help="yes or no: the shipped settings against eager fp32 on every task, two sizes, three "
                            "gammas, no compile after warm-up (tiny, and full size on CUDA unless --tiny); "
                            "exits 1 on any failure (bench.smoke)")
    parse.add_argument("--preview-side", type=int,
                       help="side of the live sketch preview (default: the app's for the device and source)")
    parse.add_argument("--markdown", type=Path, help="also write the Markdown report here")
    parse.add_argument("--json", type=Path, help="also write the raw numbers here as JSON")
    return parse


def config_from_args(args: argparse.Namespace, command: str) -> BenchConfig:
    """Fill the device-dependent defaults."""
    device = resolve_device(args.device)
    kind = device.type
    defaults = Acceleration.for_device(device)
    acceleration = replace(
        defaults, channels_last=(defaults.channels_last if args.channels_last is None
                                 else CONV_NETWORKS if args.channels_last else ()),
        compile_mode=args.compile_mode or defaults.compile_mode)
    ablations: list[AblationName] = (default_ablations(device) if args.ablations is None
                                     else _names(args.ablations, ABLATIONS, "--ablations"))  # type: ignore[assignment]
    if "cuda_graphs" in ablations and kind != "cuda":
        raise argparse.ArgumentTypeError("--ablations cuda_graphs needs a CUDA device")
    tasks: list[BenchTask] = _names(args.tasks, BENCH_TASKS, "--tasks")  # type: ignore[assignment]
    if args.source is not None and args.tiny:
        raise argparse.ArgumentTypeError("--tiny and --source exclude each other")
    native = resolve_source(args.source, args.model_dir).native_side if args.source is not None else 512
    default_size = native if args.source is not None else TINY_SIZE if args.tiny else DEFAULT_SIZES.get(kind, 256)
    size = args.size if args.size is not None else default_size
    if size % 8 or not MIN_SIZE <= size <= MAX_SIZE:
        raise argparse.ArgumentTypeError(f"--size {size}: use a multiple of 8 from {MIN_SIZE} to {MAX_SIZE}")
    limits = Limits.for_native_side(native)
    preview_side = args.preview_side or limits.default_preview_side(kind)
    if preview_side not in limits.preview_sides:
        raise argparse.ArgumentTypeError(f"--preview-side {preview_side}: use one of "
                                         f"{', '.join(map(str, limits.preview_sides))}")
    repeats = args.repeats if args.repeats is not None else DEFAULT_REPEATS.get(kind, 2)
    if repeats < 1:
        raise argparse.ArgumentTypeError(f"--repeats {repeats}: at least 1")
    count_flops = args.flops if args.flops is not None else (kind == "cuda" or args.tiny)
    return BenchConfig(device=device, dtype=resolve_dtype(args.dtype, device), size=size, repeats=repeats,
                       tasks=tasks, ablations=ablations, acceleration=acceleration,
                       scale="tiny" if args.tiny else "full", count_flops=count_flops, warm_up=args.warm_up,
                       command=command, preview_side=preview_side, source=args.source, model_dir=args.model_dir,
                       paired=args.paired)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    arguments = parser()
    args = arguments.parse_args(argv)
    try:
        config = config_from_args(args, shlex.join(["python", "-m", "bench", *argv]))
    except (argparse.ArgumentTypeError, ValueError) as error:
        arguments.error(str(error))
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.smoke:
        device = resolve_device(args.device)
        return run_smoke(device, ("tiny",) if args.tiny or device.type != "cuda" else ("tiny", "full"))
    started = time.perf_counter()
    report = run_benchmark(config, lambda message: print(f"[{time.perf_counter() - started:6.0f} s] {message}",
                                                         file=sys.stderr, flush=True))
    markdown = to_markdown(report)
    print(markdown)
    if args.markdown:
        args.markdown.write_text(markdown, encoding="utf-8")
    if args.json:
        args.json.write_text(to_json(report), encoding="utf-8")
    return 0
