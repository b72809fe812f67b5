"""`python -m bench --smoke`: does the shipped GPU path work, yes or no, in minutes.

Builds random SD-Turbo (tiny, and full size on CUDA) twice from the same seed: once with the
device's shipped settings (Acceleration.for_device, warmed up as the app warms up) and once eager
in fp32. Runs every task at two sizes (the sketch at three gammas), compares each image with the
eager one, counts graphs compiled after warm-up, and prints per-call times and peak memory.
Exits 1 on any failure. Set TORCH_LOGS=recompiles,cudagraphs to see why a graph was compiled or
a CUDA graph re-recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image
from torch._dynamo.utils import counters

from bench.build import build_preview_decoder, build_store
from models.speed.acceleration import Acceleration
from models.weights.specs import DIRECTIONS
from pipelines import Studio

SMOKE_GAMMAS = (0.0, 0.4, 1.0)
MIN_PSNR_DB = 30.0  # against eager fp32: fp16 (or bf16) rounding stays well above this
SMOKE_TASKS = ["sketch_to_image", "edge_to_image", "day_to_night"]


@dataclass(frozen=True)
class SmokeResult:
    name: str
    psnr_db: float
    seconds: float

    @property
    def passed(self) -> bool:
        return self.psnr_db >= MIN_PSNR_DB


def psnr_db(a: Image.Image, b: Image.Image) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def shipped_settings(device: torch.device) -> Acceleration:
    """The device's settings; on the CPU without bfloat16 networks, whose rounding random tiny
    weights amplify past an fp16 tolerance (tests/test_bfloat16.py measures them on real shapes)."""
    settings = Acceleration.for_device(device)
    return settings if device.type == "cuda" else replace(settings, bfloat16=())


def studios(scale: str, device: torch.device) -> tuple[Studio, Studio]:
    """(shipped settings, eager fp32) on the same random weights."""
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    shipped = Studio.prepare(build_store(scale, device, dtype, SMOKE_TASKS),
                             preview_decoder=build_preview_decoder(scale, device, dtype),
                             acceleration=shipped_settings(device))
    torch.manual_seed(0)
    eager = Studio.prepare(build_store(scale, device, torch.float32, SMOKE_TASKS), acceleration=Acceleration())
    return shipped, eager


def smoke_calls(sides: tuple[int, int]) -> list[tuple[str, Callable[[Studio], Image.Image]]]:
    """Every task at both sides; the sketch at every gamma."""
    calls: list[tuple[str, Callable[[Studio], Image.Image]]] = []
    for side in sides:
        photo = Image.new("RGB", (side, side * 3 // 4 // 8 * 8), (120, 90, 60))
        lines = np.full((side, side), 255, np.uint8)
        lines[side // 4: side * 3 // 4, side // 2] = 0
        calls.append((f"text_to_image {side}", lambda s, side=side: s.text_to_image("a boat", width=side, height=side)))
        calls.append((f"edit {side}", lambda s, photo=photo: s.edit(photo, "a boat")))
        calls.append((f"edge_to_image {side}", lambda s, photo=photo: s.edge_to_image(photo, "a boat")))
        calls.append((f"translate {side}", lambda s, photo=photo: s.translate(photo, direction=DIRECTIONS[0])))
        calls += [(f"sketch_to_image {side} gamma {gamma}",
                   lambda s, lines=lines, gamma=gamma: s.sketch_to_image(lines, "a boat", gamma=gamma))
                  for gamma in SMOKE_GAMMAS]
    return calls


def timed(call: Callable[[Studio], Image.Image], studio: Studio) -> tuple[Image.Image, float]:
    if studio.device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    image = call(studio)
    if studio.device.type == "cuda":
        torch.cuda.synchronize()
    return image, time.perf_counter() - started


def run_scale(scale: str, device: torch.device, report: Callable[[str], None]) -> bool:
    """One scale's smoke: True when every image matches and nothing compiled after warm-up."""
    shipped, eager = studios(scale, device)
    native = shipped.limits.native_side
    shipped.warm_up()
    graphs = counters["stats"]["unique_graphs"]
    results = []
    for name, call in smoke_calls((shipped.limits.min_side, native)):
        image, seconds = timed(call, shipped)
        results.append(SmokeResult(name, psnr_db(image, call(eager)), seconds))
    new_graphs = counters["stats"]["unique_graphs"] - graphs
    for result in results:
        report(f"{scale} {result.name}: {result.psnr_db:.1f} dB, {result.seconds * 1000:.0f} ms"
               f"{'' if result.passed else '  FAILED'}")
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    report(f"{scale}: {new_graphs} graphs compiled after warm-up; peak GPU memory {peak:.2f} GiB")
    return new_graphs == 0 and all(result.passed for result in results)


def run_smoke(device: torch.device, scales: tuple[str, ...], report: Callable[[str], None] = print) -> int:
    """The exit status: 0 when every scale passed."""
    passed = [run_scale(scale, device, report) for scale in scales]
    report("smoke: " + ("yes, the shipped settings work" if all(passed) else "NO, see FAILED lines above"))
    return 0 if all(passed) else 1
