"""One benchmark run: matmul rates, ours (the Studio as the app loads it), then the baseline and the
ablations on the same inputs, each phase on its own freshly built models (freed before the next
phase). The models are random weights of SD-Turbo's architecture (full size or tiny), or with
`source` the weights of a model source (e.g. mini), loaded the way the app loads them."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from diffusers import AutoencoderTiny
from torch.utils.flop_counter import FlopCounterMode

from bench.ablations import (Ablation, AblationName, NotMeasured, ablation_store_tasks, not_measured_reasons,
                             run_ablations)
from bench.build import Scale, build_preview_decoder, build_store, diffusers_pipelines
from bench.hardware import MatmulRate, device_description, library_versions, matmul_rate, precision_flags
from bench.measure import Measurement, current_memory, measure, measure_pair, memory_kind, timed
from bench.tasks import (BASELINE_LABELS, Baseline, BenchInputs, BenchTask, baseline_call, ours_call,
                         store_tasks)
from models.running.store import ModelStore
from models.speed.acceleration import Acceleration
from models.speed.taesd import preview_decoder_for
from models.weights.specs import CHECKPOINTS, SourceName, TaskName
from models.weights.task_loading import load_tasks
from pipelines.studio import Studio

Progress = Callable[[str], None]
MAX_MATMUL_SIZES = {"cuda": 16384, "cpu": 4096}
TINY_MAX_MATMUL_SIZE = 512


@dataclass(frozen=True)
class BenchConfig:
    device: torch.device
    dtype: torch.dtype  # ours; the baseline is always fp32
    size: int
    repeats: int
    tasks: list[BenchTask]
    ablations: list[AblationName]
    acceleration: Acceleration  # Acceleration.for_device (what Studio.load applies) unless a flag changed it
    scale: Scale = "full"
    preview_side: int = 256  # the live sketch preview side (the app's default for the device)
    source: SourceName | None = None  # real weights from this source instead of random ones
    model_dir: Path | None = None
    paired: bool = False  # ours and the baseline resident together, their calls alternating
    count_flops: bool = False
    warm_up: bool = False
    command: str = ""

    @property
    def half(self) -> torch.dtype:
        """The reduced precision the precision ablation measures on this device."""
        return torch.float16 if self.device.type == "cuda" else torch.bfloat16


@dataclass
class TaskResult:
    task: BenchTask
    baseline_label: str
    ours: Measurement | None = None
    baseline: Measurement | None = None
    errors: dict[str, str] = field(default_factory=dict)  # "ours" / "baseline" -> message
    flops: float | None = None

    @property
    def speedup(self) -> float | None:
        """Baseline time over ours (median): how many times faster ours is."""
        if self.ours is None or self.baseline is None:
            return None
        return self.baseline.median_s / self.ours.median_s


@dataclass
class PhaseInfo:
    build_s: float
    resident_bytes: int  # right after the build, with `tasks_installed` img2img-turbo tasks on the base
    tasks_installed: int
    warm_up_s: float | None = None


@dataclass
class BenchReport:
    config: BenchConfig
    date: str
    device_name: str
    versions: dict[str, str]
    precision_flags: dict[str, bool]
    memory_kind: str
    matmul: list[MatmulRate]
    ours_phase: PhaseInfo | None = None
    ours_applied: Acceleration | None = None  # the settings as Studio.prepare applied them
    baseline_phase: PhaseInfo | None = None
    tasks: list[TaskResult] = field(default_factory=list)
    ablations: list[Ablation] = field(default_factory=list)
    not_measured: list[NotMeasured] = field(default_factory=list)
    total_s: float = 0.0

    def task(self, name: BenchTask) -> TaskResult:
        return next(result for result in self.tasks if result.task == name)


def run_benchmark(config: BenchConfig, progress: Progress = lambda message: None) -> BenchReport:
    """Run every phase; progress receives one line per finished step. Without `paired`, ours is
    measured and freed before the baseline is built; with it, both stay resident and their calls
    alternate. FLOPs and the ablations run on the baseline's store last."""
    start = time.perf_counter()
    report = BenchReport(
        config=config, date=datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        device_name=device_description(config.device), versions=library_versions(),
        precision_flags=precision_flags(config.device),
        memory_kind=memory_kind(config.device), matmul=matmul_rates(config),
        tasks=[TaskResult(task, BASELINE_LABELS[task]) for task in config.tasks],
        not_measured=not_measured_reasons(config.ablations, config.device))
    inputs = BenchInputs(config.size, config.preview_side)
    progress(", ".join(f"matmul {rate.dtype} {rate.tflops:.3g} TFLOP/s" for rate in report.matmul))
    studio: Studio | None
    studio, report.ours_phase = build_ours_phase(config, progress)
    report.ours_applied = studio.acceleration
    if not config.paired:
        for result in report.tasks:
            result.ours = _measured(lambda: ours_call(result.task, studio, inputs), config, result, "ours")
            progress(_summary("ours", result.task, result.ours, result.errors.get("ours")))
        studio = None
        release_memory(config.device)
    baseline, preview_decoder, report.baseline_phase = build_baseline_phase(config, progress)
    for result in report.tasks:
        if studio is None:
            result.baseline = _measured(lambda: baseline_call(result.task, baseline, inputs), config, result,
                                        "baseline")
        else:
            _measured_pair(studio, baseline, inputs, config, result)
            progress(_summary("ours", result.task, result.ours, result.errors.get("ours")))
        progress(_summary("baseline", result.task, result.baseline, result.errors.get("baseline")))
    studio = None
    release_memory(config.device)
    run_extras(config, report, baseline.store, preview_decoder, inputs, progress)
    release_memory(config.device)
    report.total_s = time.perf_counter() - start
    return report


def matmul_rates(config: BenchConfig) -> list[MatmulRate]:
    max_size = TINY_MAX_MATMUL_SIZE if config.scale == "tiny" else MAX_MATMUL_SIZES.get(config.device.type, 4096)
    dtypes = [torch.float32, torch.bfloat16]
    if config.device.type == "cuda":
        dtypes.append(torch.float16)
    return [matmul_rate(config.device, dtype, max_size) for dtype in dtypes]


def release_memory(device: torch.device) -> None:
    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def build_ours(config: BenchConfig) -> Studio:
    """The Studio as the app loads it: every task resident, the preview decoder, the device's speed
    settings applied by Studio.prepare (Studio.load with a source)."""
    if config.source is not None:
        return Studio.load(config.source, model_dir=config.model_dir, device=config.device, dtype=config.dtype,
                           acceleration=config.acceleration)
    store = build_store(config.scale, config.device, config.dtype, list(CHECKPOINTS))
    preview_decoder = build_preview_decoder(config.scale, config.device, config.dtype)
    return Studio.prepare(store, preview_decoder=preview_decoder, acceleration=config.acceleration)


def build_plain(config: BenchConfig, tasks: list[TaskName]) -> tuple[ModelStore, AutoencoderTiny | None]:
    """The fp32 store with these tasks and no speed settings, and an fp32 preview decoder."""
    if config.source is None:
        store = build_store(config.scale, config.device, torch.float32, tasks)
        return store, build_preview_decoder(config.scale, config.device, torch.float32)
    store = ModelStore.load(config.source, model_dir=config.model_dir, device=config.device, dtype=torch.float32)
    load_tasks(store, tasks, allow_download=False)
    latent_channels = store.base.unet.config.out_channels
    return store, preview_decoder_for(store.source, latent_channels, config.device, torch.float32).decoder


def build_ours_phase(config: BenchConfig, progress: Progress) -> tuple[Studio, PhaseInfo]:
    """Load the Studio as the app does (all six img2img-turbo tasks resident), warm it up if asked."""
    build_start = time.perf_counter()
    studio = build_ours(config)
    phase = PhaseInfo(time.perf_counter() - build_start, current_memory(config.device), len(studio.store.tasks))
    progress(f"ours: built in {phase.build_s:.1f} s ({studio.acceleration.describe()})")
    if config.warm_up:
        phase.warm_up_s = timed(lambda: studio.warm_up(config.preview_side), config.device)
        progress(f"ours: Studio.warm_up {phase.warm_up_s:.1f} s")
    return studio, phase


def build_baseline_phase(config: BenchConfig,
                         progress: Progress) -> tuple[Baseline, AutoencoderTiny | None, PhaseInfo]:
    """The plain fp32 store with the tasks the baseline and the ablations need, and diffusers'
    pipelines on it."""
    build_start = time.perf_counter()
    needed = store_tasks(config.tasks)
    needed += [task for task in ablation_store_tasks(config.ablations) if task not in needed]
    store, preview_decoder = build_plain(config, needed)
    text_to_image, image_to_image = diffusers_pipelines(store.base)
    phase = PhaseInfo(time.perf_counter() - build_start, current_memory(config.device), len(store.tasks))
    progress(f"baseline: built in {phase.build_s:.1f} s")
    return Baseline(store, text_to_image, image_to_image), preview_decoder, phase


def run_extras(config: BenchConfig, report: BenchReport, store: ModelStore, preview_decoder: AutoencoderTiny | None,
               inputs: BenchInputs, progress: Progress) -> None:
    """FLOPs per task (our code on the baseline's store) and the ablations."""
    if config.count_flops:
        store.prompt_embeddings(inputs.prompt)  # cached, as in our runs
        plain = Studio(store, preview_decoder=preview_decoder)
        for result in report.tasks:
            if result.ours is not None:
                result.flops = count_flops(ours_call(result.task, plain, inputs))
        progress("FLOPs counted")
    if preview_decoder is None and "taesd" in config.ablations:
        report.not_measured.append(NotMeasured("taesd", "this source has no preview decoder"))
    names = [name for name in config.ablations if name != "taesd" or preview_decoder is not None]
    report.ablations = run_ablations(store, preview_decoder, inputs, names, repeats=config.repeats,
                                     half=config.half, progress=progress)


def _summary(side: str, task: BenchTask, measurement: Measurement | None, error: str | None) -> str:
    if measurement is None:
        return f"{side} {task}: failed: {error}"
    return (f"{side} {task}: median {measurement.median_s * 1e3:,.1f} ms, "
            f"first call {measurement.first_call_s:.2f} s")


def _measured(make_call: Callable[[], Callable[[], object]], config: BenchConfig, result: TaskResult,
              side: str) -> Measurement | None:
    """Measure one side of one task; a failure (making the call or running it) is recorded in the
    report, not raised, so one broken configuration does not lose the rest of a long GPU run."""
    try:
        return measure(make_call(), repeats=config.repeats, device=config.device)
    except Exception as error:  # reported in the results table with its type and message
        result.errors[side] = f"{type(error).__name__}: {error}"
        return None


def _measured_pair(studio: Studio, baseline: Baseline, inputs: BenchInputs, config: BenchConfig,
                   result: TaskResult) -> None:
    """Ours and the baseline of one task, their calls alternating; a failure is recorded."""
    try:
        result.ours, result.baseline = measure_pair(ours_call(result.task, studio, inputs),
                                                    baseline_call(result.task, baseline, inputs),
                                                    repeats=config.repeats, device=config.device)
    except Exception as error:  # reported in the results table with its type and message
        result.errors["ours"] = result.errors["baseline"] = f"{type(error).__name__}: {error}"


def count_flops(call: Callable[[], object]) -> float:
    """FLOPs of one call, counted by torch's FlopCounterMode (matmuls, convolutions, attention)."""
    with FlopCounterMode(display=False) as counter:
        call()
    return float(counter.get_total_flops())
