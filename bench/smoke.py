"""`python -m bench --smoke`: does the shipped GPU path work, yes or no, in minutes.

Builds random SD-Turbo (tiny, and full size on CUDA) twice from the same seed: once with the
device's shipped settings (Acceleration.for_device, warmed up as the app warms up) and once eager
in fp32. Runs every task at two sizes (the sketch at three gammas), compares each image with the
eager one, counts graphs compiled after warm-up, and prints per-call times and peak memory.
Exits 1 on any failure. Set TORCH_LOGS=recompiles,cudagraphs to see why a graph was compiled or
a CUDA graph re-recorded.

The inputs are textured (a patterned photo, a sketch with a grid of strokes), not flat. On a flat
input the random VAE's GroupNorm groups are nearly constant (their mean far above their spread),
where float32 statistics decide the image: torch's CPU GroupNorm for channels_last tensors (the
CPU's VAE layout) computes them 2-4 orders of magnitude less precisely than for NCHW ones, and on
a blank 512 px edge map and a one-stroke sketch its images were 19-25 dB from eager fp32, while
eager fp32 was 90 dB from fp64 and the channels_last VAE in fp64 167 dB from NCHW. That measured
the kernel's rounding on a degenerate input, not whether the path computes the right function.
On these inputs a float32 shipped path agrees with eager to 56 dB or more, so it must reach
45 dB; a half-precision one 30 dB. A wrong function still shows: the sketch's conv_in blended at
gamma 1 whatever the slider says gave 28-29 dB (tests/test_bench_smoke.py injects it).
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
# Pass marks against eager fp32. A float32 shipped path (the CPU's) measured 56-85 dB on every call
# and a conv_in blended at the wrong gamma 28-29 dB; fp16 (or bf16) rounding is expected well
# above 30 dB (not yet measured on a GPU).
MIN_PSNR_DB_FLOAT32 = 45.0
MIN_PSNR_DB_HALF = 30.0
SMOKE_TASKS = ["sketch_to_image", "edge_to_image", "day_to_night"]
STROKE_SPACING = 16  # px between the sketch's grid lines


@dataclass(frozen=True)
class SmokeResult:
    name: str
    psnr_db: float
    seconds: float
    min_psnr_db: float  # the pass mark for the shipped store's dtype

    @property
    def passed(self) -> bool:
        return self.psnr_db >= self.min_psnr_db

    def line(self, scale: str) -> str:
        verdict = "" if self.passed else f"  FAILED (under {self.min_psnr_db:.0f} dB)"
        return f"{scale} {self.name}: {self.psnr_db:.1f} dB, {self.seconds * 1000:.0f} ms{verdict}"


def min_psnr_db(dtype: torch.dtype) -> float:
    """The pass mark for a shipped store in this dtype."""
    return MIN_PSNR_DB_FLOAT32 if dtype == torch.float32 else MIN_PSNR_DB_HALF


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


def smoke_photo(side: int) -> Image.Image:
    """A 4:3 photo with texture at every scale: two sinusoids and a 16 px checkerboard."""
    y, x = np.mgrid[0:side * 3 // 4 // 8 * 8, 0:side]
    channels = (128 + 100 * np.sin(x / 9), 128 + 100 * np.sin(y / 7 + x / 23), 48 + 160 * ((x // 16 + y // 16) % 2))
    return Image.fromarray(np.stack(channels, axis=-1).astype(np.uint8))


def smoke_sketch(side: int) -> np.ndarray:
    """Dark 2 px strokes on white in a grid, one every STROKE_SPACING px each way."""
    lines = np.full((side, side), 255, np.uint8)
    for offset in range(2):
        lines[offset::STROKE_SPACING, :] = 0
        lines[:, offset::STROKE_SPACING] = 0
    return lines


def smoke_calls(sides: tuple[int, int]) -> list[tuple[str, Callable[[Studio], Image.Image]]]:
    """Every task at both sides; the sketch at every gamma."""
    calls: list[tuple[str, Callable[[Studio], Image.Image]]] = []
    for side in sides:
        photo, lines = smoke_photo(side), smoke_sketch(side)
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
    pass_mark = min_psnr_db(shipped.store.dtype)
    for name, call in smoke_calls((shipped.limits.min_side, native)):
        image, seconds = timed(call, shipped)
        results.append(SmokeResult(name, psnr_db(image, call(eager)), seconds, pass_mark))
    new_graphs = counters["stats"]["unique_graphs"] - graphs
    for result in results:
        report(result.line(scale))
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    report(f"{scale}: {new_graphs} graphs compiled after warm-up; peak GPU memory {peak:.2f} GiB")
    return new_graphs == 0 and all(result.passed for result in results)


def run_smoke(device: torch.device, scales: tuple[str, ...], report: Callable[[str], None] = print) -> int:
    """The exit status: 0 when every scale passed."""
    passed = [run_scale(scale, device, report) for scale in scales]
    report("smoke: " + ("yes, the shipped settings work" if all(passed) else "NO, see FAILED lines above"))
    return 0 if all(passed) else 1
