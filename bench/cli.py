"""Command line of the benchmark: `python -m bench --help`."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

from bench.ablations import ABLATIONS, AblationName, default_ablations
from bench.report import to_json, to_markdown
from bench.run import BenchConfig, run_benchmark
from bench.tasks import BENCH_TASKS, BenchTask
from models.speed.acceleration import COMPILE_MODES, Acceleration
from models.running.devices import resolve_device, resolve_dtype

DEFAULT_SIZES = {"cuda": 512, "cpu": 256}
DEFAULT_REPEATS = {"cuda": 30, "cpu": 2}
TINY_SIZE = 256


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
        "Speed and memory of every task on SD-Turbo's full-size architecture with random weights: ours "
        "against a plain fp32 baseline, plus each optimisation on its own."))
    parse.add_argument("--device", default="auto", help="cuda, cpu or auto (default: cuda when available)")
    parse.add_argument("--dtype", default="auto", help="our dtype (default: float16 on CUDA, float32 on CPU)")
    parse.add_argument("--size", type=int, help="image side in pixels (default: 512 on CUDA, 256 on CPU)")
    parse.add_argument("--repeats", type=int, help="timed calls after the first (default: 30 CUDA, 2 CPU)")
    parse.add_argument("--tasks", default="all", help=f"comma-separated from {', '.join(BENCH_TASKS)} (default: all)")
    parse.add_argument("--ablations", default=None,
                       help=f"comma-separated from {', '.join(ABLATIONS)}, or all / none "
                            "(default: all that apply; CPU: without compile and cuda_graphs)")
    parse.add_argument("--compile-mode", choices=COMPILE_MODES, default=None,
                       help="torch.compile mode for ours (default: reduce-overhead on CUDA, off on CPU)")
    parse.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                       help="channels_last for ours (default: on for CUDA, off on CPU)")
    parse.add_argument("--flops", action=argparse.BooleanOptionalAction, default=None,
                       help="count FLOPs per task for the physical floor (default: on for CUDA and --tiny)")
    parse.add_argument("--warm-up", action="store_true", help="run Studio.warm_up() before our first calls")
    parse.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    parse.add_argument("--tiny", action="store_true", help="tiny random models (the CI smoke; seconds)")
    parse.add_argument("--markdown", type=Path, help="also write the Markdown report here")
    parse.add_argument("--json", type=Path, help="also write the raw numbers here as JSON")
    return parse


def config_from_args(args: argparse.Namespace, command: str) -> BenchConfig:
    """Fill the device-dependent defaults."""
    device = resolve_device(args.device)
    kind = device.type
    defaults = Acceleration.for_device(device)
    acceleration = Acceleration(
        attention=defaults.attention,
        channels_last=defaults.channels_last if args.channels_last is None else args.channels_last,
        compile_mode=args.compile_mode or defaults.compile_mode)
    ablations: list[AblationName] = (default_ablations(device) if args.ablations is None
                                     else _names(args.ablations, ABLATIONS, "--ablations"))  # type: ignore[assignment]
    if "cuda_graphs" in ablations and kind != "cuda":
        raise argparse.ArgumentTypeError("--ablations cuda_graphs needs a CUDA device")
    tasks: list[BenchTask] = _names(args.tasks, BENCH_TASKS, "--tasks")  # type: ignore[assignment]
    size = args.size if args.size is not None else (TINY_SIZE if args.tiny else DEFAULT_SIZES.get(kind, 256))
    if size % 8 or not 256 <= size <= 1024:
        raise argparse.ArgumentTypeError(f"--size {size}: use a multiple of 8 from 256 to 1024")
    repeats = args.repeats if args.repeats is not None else DEFAULT_REPEATS.get(kind, 2)
    if repeats < 1:
        raise argparse.ArgumentTypeError(f"--repeats {repeats}: at least 1")
    count_flops = args.flops if args.flops is not None else (kind == "cuda" or args.tiny)
    return BenchConfig(device=device, dtype=resolve_dtype(args.dtype, device), size=size, repeats=repeats,
                       tasks=tasks, ablations=ablations, acceleration=acceleration,
                       scale="tiny" if args.tiny else "full", count_flops=count_flops, warm_up=args.warm_up,
                       command=command)


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
