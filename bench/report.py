"""The benchmark report as Markdown (for bench/RESULTS.md) and as JSON (raw numbers)."""

from __future__ import annotations

import inspect
import json
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import torch

from bench.measure import Measurement
from bench.run import BenchConfig, BenchReport, TaskResult
from bench.tasks import BenchTask
from models.speed.acceleration import Acceleration

GIB = 2**30
# Issue 4's targets on one H100 at 512x512, batch 1 (images per second).
GPU_TARGETS: dict[BenchTask, float] = {"text_to_image_preview": 150.0, "text_to_image": 60.0, "edit": 40.0,
                                       "edge_to_image": 40.0, "sketch_to_image": 40.0, "translate": 40.0}
TARGET_SPEEDUP = 5.0
TARGET_RESIDENT_BYTES = 7e9  # the 7 GB


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f}"


def _measurement_cells(measurement: Measurement | None, error: str | None) -> list[str]:
    if measurement is None:
        return [f"failed: {error}", "", "", "", ""]
    return [_ms(measurement.median_s), _ms(measurement.p95_s), f"{measurement.images_per_s:.3g}",
            f"{measurement.first_call_s:.2f}", f"{measurement.peak_memory_bytes / GIB:.2f}"]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _ratio(ratio: float) -> str:
    return f"{ratio:.2f}x" if ratio < 1000 else "> 1000x"


def _speedup(result: TaskResult) -> str:
    return _ratio(result.speedup) if result.speedup is not None else "n/a"


def task_rows(report: BenchReport) -> list[list[str]]:
    rows = []
    for result in report.tasks:
        rows.append([f"`{result.task}`", "ours", *_measurement_cells(result.ours, result.errors.get("ours")),
                     _speedup(result)])
        rows.append(["", f"baseline: {result.baseline_label}",
                     *_measurement_cells(result.baseline, result.errors.get("baseline")), ""])
    return rows


def floor_rows(report: BenchReport) -> list[list[str]]:
    """FLOPs over the measured matmul rate in our dtype: the time no implementation can beat."""
    rate = next(r for r in report.matmul if r.dtype == _dtype_name(report.config.dtype))
    rows = []
    for result in report.tasks:
        if result.flops is None:
            continue
        floor_s = result.flops / (rate.tflops * 1e12)
        ours = result.ours.images_per_s if result.ours is not None else None
        rows.append([f"`{result.task}`", f"{result.flops / 1e12:.3f}", _ms(floor_s), f"{1 / floor_s:,.0f}",
                     f"{ours:.3g}" if ours is not None else "n/a",
                     f"{floor_s * ours:.0%}" if ours is not None else "n/a"])
    return rows


def target_rows(report: BenchReport) -> list[list[str]]:
    rows = []
    for result in report.tasks:
        if result.task in GPU_TARGETS:
            ours = result.ours.images_per_s if result.ours is not None else 0.0
            target = GPU_TARGETS[result.task]
            rows.append([f"`{result.task}` images/s", f">= {target:g}", f"{ours:.3g}", _met(ours >= target)])
            speedup = result.speedup or 0.0
            rows.append([f"`{result.task}` speed-up", f">= {TARGET_SPEEDUP:g}x", f"{speedup:.2f}x",
                         _met(speedup >= TARGET_SPEEDUP)])
    if report.ours_phase is not None:
        resident = report.ours_phase.resident_bytes
        rows.append([f"all tasks resident ({report.ours_phase.tasks_installed} img2img-turbo + base + TAESD)",
                     f"<= {TARGET_RESIDENT_BYTES / 1e9:g} GB", f"{resident / 1e9:.2f} GB",
                     _met(resident <= TARGET_RESIDENT_BYTES)])
    return rows


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def ablation_rows(report: BenchReport) -> list[list[str]]:
    return [[ablation.optimisation, ablation.component, _ms(ablation.without.median_s), _ms(ablation.with_.median_s),
             _ratio(ablation.speedup), f"{ablation.with_.first_call_s:.2f}", ablation.note]
            for ablation in report.ablations]


def _weights(config: BenchConfig) -> str:
    if config.source is not None:
        where = f" from {config.model_dir}" if config.model_dir is not None else ""
        return f"{config.source} weights{where}"
    return f"{config.scale}-size architecture, random weights"


def _ours_settings(report: BenchReport) -> str:
    """The settings as applied, and whether they are Studio.load's for the device or a flag's experiment."""
    config = report.config
    chosen = "Studio.load's for this device" if config.acceleration == Acceleration.for_device(config.device) \
        else "changed by a flag, not what Studio.load applies"
    return f"{(report.ours_applied or config.acceleration).describe()}: {chosen}"


def to_markdown(report: BenchReport) -> str:
    config = report.config
    size = f"{config.size}x{config.size}"
    matmul = ", ".join(f"{rate.dtype} {rate.tflops:.3g} TFLOP/s" for rate in report.matmul)
    lines = [
        f"### {config.device.type.upper()}: {size}, batch 1, {_weights(config)}",
        "",
        f"- Date: {report.date}",
        f"- Device: {report.device_name}",
        "- Libraries: " + ", ".join(f"{name} {version}" for name, version in report.versions.items()),
        f"- Command: `{config.command}`",
        *([f"- TF32 switches: {', '.join(f'{k}={v}' for k, v in report.precision_flags.items())}"]
          if report.precision_flags else []),
        f"- Ours: the Studio as the app loads it ({_ours_settings(report)}); {_dtype_name(config.dtype)}, "
        "caption embeddings cached, timesteps prepared; its methods as the UI calls them (translate: its "
        f"run_task call at this size); live previews: text through the preview decoder, sketch at "
        f"{config.preview_side} px",
        "- Baseline: fp32, eager, diffusers' default attention (SDPA), contiguous memory format",
        f"- Each configuration: one first (cold) call, then {config.repeats} timed calls; median and p95 over "
        f"those; images/s = 1 / median. Peak memory: {report.memory_kind} over all of its calls.",
        *(["- Paired: ours and the baseline were resident together and their calls alternated (ours, baseline, "
           "ours, ...), so load from other processes fell on both alike; peak memory and the baseline's resident "
           "figure include both"] if config.paired else []),
        f"- Matmul rate measured here: {matmul}",
    ]
    for name, phase in (("ours", report.ours_phase), ("baseline", report.baseline_phase)):
        if phase is not None:
            warm = f", app warm-up (Studio.warm_up) {phase.warm_up_s:.1f} s" if phase.warm_up_s is not None else ""
            lines.append(f"- Build ({name}): {phase.build_s:.1f} s; resident after build with "
                         f"{phase.tasks_installed} img2img-turbo tasks installed: "
                         f"{phase.resident_bytes / GIB:.2f} GiB{warm}")
    lines += [f"- Total wall time: {report.total_s:.0f} s", "", "#### Tasks", ""]
    lines += _table(["task", "implementation", "median ms", "p95 ms", "images/s", "first call s",
                     "peak memory GiB", "speed-up (baseline / ours)"], task_rows(report))
    floors = floor_rows(report)
    if floors:
        lines += ["", "#### Physical floor (FLOPs / measured matmul rate)", ""]
        lines += _table(["task", "TFLOP per image", "floor ms", "floor images/s", "ours images/s",
                         "ours / floor"], floors)
    if config.device.type == "cuda" and config.size == 512:
        lines += ["", "#### Issue 4 targets (one H100, 512x512, batch 1)", ""]
        lines += _table(["target", "wanted", "measured", "met"], target_rows(report))
    lines += ["", "#### Each optimisation on its own", ""]
    lines += _table(["optimisation", "component", "without ms", "with ms", "speed-up", "first call with (s)",
                     "notes"], ablation_rows(report))
    if report.not_measured:
        lines += ["", "Not measured in this run:"]
        lines += [f"- {item.optimisation}: {item.reason}" for item in report.not_measured]
    return "\n".join(lines) + "\n"


def to_json(report: BenchReport) -> str:
    return json.dumps(plain(report), indent=2)


def plain(value: Any) -> Any:
    """Dataclasses (with their computed properties), lists and dicts as JSON values; torch devices
    and dtypes as their names, paths as text."""
    if is_dataclass(value) and not isinstance(value, type):
        data = {item.name: plain(getattr(value, item.name)) for item in fields(value)}
        properties = inspect.getmembers(type(value), lambda member: isinstance(member, property))
        data.update({name: plain(getattr(value, name)) for name, _ in properties})
        return data
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (torch.device, torch.dtype, Path)):
        return str(value)
    return value
