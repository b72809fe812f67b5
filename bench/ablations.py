"""Each optimisation measured on its own: one network call with the optimisation off and on, all
else equal (fp32 eager modules of the baseline store, the benchmark size, batch 1).

Names: attention (classic vs SDPA, UNet), channels_last (UNet; VAE decode), precision (fp32 vs
fp16 on CUDA / bf16 on the CPU, UNet; VAE decode), compile (torch.compile, UNet; VAE decode), cuda_graphs
(torch.compile with CUDA graphs, UNet; VAE decode), prepared_inputs (caption embedding and
timestep made per call vs prepared once), taesd (full VAE decode vs TAESD preview decode),
merged_lora (a task's forward with its LoRA unmerged vs merged, and the cost of switching tasks).
"""

from __future__ import annotations

import statistics
from functools import cache
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from diffusers import AutoencoderTiny

from bench.measure import Measurement, measure, timed
from bench.tasks import BenchInputs, encode_every_call, line_control
from models.running.devices import native_bfloat16
from models.running.img2img_turbo import run_task
from models.running.sd_turbo import FINAL_TIMESTEP
from models.running.store import ModelStore
from models.running.task_model import TaskModel
from models.speed.acceleration import merge_task, set_attention, set_channels_last, unmerge_task
from models.speed.taesd import preview_decode
from models.weights.specs import TaskName
from pipelines.edge_to_image import canny_edges
from pipelines.images import LATENT_FACTOR, seeded_noise

AblationName = Literal["attention", "channels_last", "precision", "compile", "cuda_graphs", "prepared_inputs",
                       "taesd", "merged_lora"]
ABLATIONS: tuple[AblationName, ...] = ("attention", "channels_last", "precision", "compile", "cuda_graphs",
                                       "prepared_inputs", "taesd", "merged_lora")
CUDA_ONLY: tuple[AblationName, ...] = ("cuda_graphs",)
NOT_ON_CPU_BY_DEFAULT: tuple[AblationName, ...] = ("compile", "precision")
MERGE_TASKS: tuple[TaskName, TaskName] = ("edge_to_image", "day_to_night")  # merged and switched between


@dataclass(frozen=True)
class Ablation:
    """One optimisation on one component: a measurement without and with it."""

    optimisation: str
    component: str
    without: Measurement
    with_: Measurement
    note: str = ""

    @property
    def speedup(self) -> float:
        return self.without.median_s / self.with_.median_s


@dataclass(frozen=True)
class NotMeasured:
    optimisation: str
    reason: str


@dataclass
class Parts:
    """Fixed inputs for single network calls on the baseline store (the calls are pure tensor code;
    run_ablations runs them under inference_mode with the adapters off)."""

    store: ModelStore
    noise: torch.Tensor
    embeddings: torch.Tensor
    prompt: str

    @classmethod
    def prepare(cls, store: ModelStore, inputs: BenchInputs) -> Parts:
        side = inputs.size // LATENT_FACTOR
        noise = seeded_noise(inputs.seed, (1, 4, side, side), store.device, store.dtype)
        return cls(store, noise, store.prompt_embeddings(inputs.prompt), inputs.prompt)

    def unet(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """predict_x0 at t = 999, inputs cast to dtype (default: the store's)."""
        dtype = dtype or self.store.dtype
        return self.store.base.predict_x0(self.noise.to(dtype), FINAL_TIMESTEP, self.embeddings.to(dtype))

    def decode(self) -> torch.Tensor:
        """The full VAE decode of the noise latents (cast to the VAE's dtype)."""
        return self.store.base.decode(self.noise)

    def per_call_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        base = self.store.base
        embeddings = encode_every_call(base, self.prompt)
        return embeddings, torch.tensor([FINAL_TIMESTEP], device=base.device, dtype=torch.long)

    def prepared_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.store.prompt_embeddings(self.prompt), self.store.base.timestep(FINAL_TIMESTEP)


def ablation_store_tasks(names: list[AblationName]) -> list[TaskName]:
    """The img2img-turbo tasks the ablations need installed."""
    return list(MERGE_TASKS) if "merged_lora" in names else []


def default_ablations(device: torch.device) -> list[AblationName]:
    skipped = CUDA_ONLY + NOT_ON_CPU_BY_DEFAULT if device.type != "cuda" else ()
    if native_bfloat16(device):
        skipped = tuple(name for name in skipped if name != "precision")
    return [name for name in ABLATIONS if name not in skipped]


CPU_DEFAULT_REASONS: dict[AblationName, str] = {
    "compile": "left out of CPU runs by default, to keep the full-size CPU run short on shared cores "
               "(ask for it with --ablations compile)",
    "precision": "left out of CPU runs by default on this CPU: without bf16 instructions it multiplies bf16 "
                 "matrices far slower than fp32 (see the matmul rates), so a full-size bf16 UNet call takes "
                 "minutes (ask for it with --ablations precision)",
}


def not_measured_reasons(names: list[AblationName], device: torch.device) -> list[NotMeasured]:
    """Rows for the optimisations this run leaves out, with the reason."""
    chose_defaults = names == default_ablations(device)

    def reason(name: AblationName) -> str:
        if name in CUDA_ONLY and device.type != "cuda":
            return "CUDA graphs need a CUDA device"
        if chose_defaults and name in CPU_DEFAULT_REASONS:
            return CPU_DEFAULT_REASONS[name]
        return "not asked for (--ablations)"

    return [NotMeasured(name, reason(name)) for name in ABLATIONS if name not in names]


def run_ablations(store: ModelStore, preview_decoder: AutoencoderTiny | None, inputs: BenchInputs,
                  names: list[AblationName], *, repeats: int, half: torch.dtype,
                  progress: Callable[[str], None] = lambda message: None) -> list[Ablation]:
    """Measure the named optimisations on the (fp32, eager) baseline store, restoring every setting."""
    if "cuda_graphs" in names and store.device.type != "cuda":
        raise ValueError("the cuda_graphs ablation needs a CUDA device")
    parts = Parts.prepare(store, inputs)
    device = store.device

    def run(call: Callable[[], object]) -> Measurement:
        with store.model_call():  # the plain networks; task calls open their own model call
            pass

        def inference() -> object:
            with torch.inference_mode():
                return call()

        return measure(inference, repeats=repeats, device=device)

    @cache
    def plain_unet() -> Measurement:
        return run(parts.unet)

    @cache
    def plain_decode() -> Measurement:
        return run(parts.decode)

    results: list[Ablation] = []
    for name in names:
        if name == "attention":
            with classic_attention(store):
                classic = run(parts.unet)
            results.append(Ablation("SDPA attention", "UNet", classic, plain_unet(),
                                    "without: diffusers AttnProcessor (explicit softmax); with: AttnProcessor2_0"))
        elif name == "channels_last":
            results += channels_last_ablations(parts, plain_unet(), plain_decode(), run)
        elif name == "precision":
            label = f"{str(half).removeprefix('torch.')} weights"
            with network_dtype(store, "unet", half):
                halved = run(lambda: parts.unet(half))
            results.append(Ablation(label, "UNet", plain_unet(), halved))
            with network_dtype(store, "vae", half):
                halved = run(parts.decode)
            results.append(Ablation(label, "VAE decode", plain_decode(), halved))
        elif name in ("compile", "cuda_graphs"):
            results += compile_ablations(parts, plain_unet(), plain_decode(), run, name)
        elif name == "prepared_inputs":
            results.append(Ablation("caption embedding and timestep prepared once", "per-call inputs",
                                    run(parts.per_call_inputs), run(parts.prepared_inputs),
                                    "without: tokenise + text encoder + new timestep tensor every call"))
        elif name == "taesd":
            preview = run(lambda: preview_decode(preview_decoder, parts.noise))
            results.append(Ablation("TAESD preview decode", "decode", plain_decode(), preview,
                                    "without: the full VAE decoder (used for every final image)"))
        elif name == "merged_lora":
            results += merged_lora_ablations(store, inputs, parts, run, repeats)
        progress(f"ablation {name} measured")
    return results


@contextmanager
def classic_attention(store: ModelStore) -> Iterator[None]:
    set_attention([store.base.unet], "classic")
    try:
        yield
    finally:
        set_attention([store.base.unet], "sdpa")


@contextmanager
def network_dtype(store: ModelStore, network: Literal["unet", "vae"], dtype: torch.dtype) -> Iterator[None]:
    """The UNet or the VAE in this dtype (the base casts at its edges), restored afterwards."""
    base = store.base
    module = base.unet if network == "unet" else base.vae
    attribute = f"{network}_dtype"
    before = getattr(base, attribute)
    torch.nn.Module.to(module, dtype=dtype)
    setattr(base, attribute, dtype)
    try:
        yield
    finally:
        torch.nn.Module.to(module, dtype=before)
        setattr(base, attribute, before)


@contextmanager
def channels_last(module: torch.nn.Module) -> Iterator[None]:
    set_channels_last([module], True)
    try:
        yield
    finally:
        set_channels_last([module], False)


def channels_last_ablations(parts: Parts, plain_unet: Measurement, plain_decode: Measurement,
                            run: Callable[[Callable[[], object]], Measurement]) -> list[Ablation]:
    base = parts.store.base
    with channels_last(base.unet):
        unet = run(parts.unet)
    with channels_last(base.vae):
        decode = run(parts.decode)
    return [Ablation("channels_last", "UNet", plain_unet, unet),
            Ablation("channels_last", "VAE decode", plain_decode, decode)]


def compile_ablations(parts: Parts, plain_unet: Measurement, plain_decode: Measurement,
                      run: Callable[[Callable[[], object]], Measurement], name: AblationName) -> list[Ablation]:
    """torch.compile of the UNet call and of the decode call (first call = compile time)."""
    mode = "reduce-overhead" if name == "cuda_graphs" else "default"
    label = "torch.compile + CUDA graphs" if name == "cuda_graphs" else "torch.compile"
    try:
        unet = run(torch.compile(parts.unet, mode=mode))
        decode = run(torch.compile(parts.decode, mode=mode))
    finally:
        torch._dynamo.reset()
    note = f"mode={mode}; its first call includes compilation"
    return [Ablation(label, "UNet", plain_unet, unet, note), Ablation(label, "VAE decode", plain_decode, decode, note)]


def merged_lora_ablations(store: ModelStore, inputs: BenchInputs, parts: Parts,
                          run: Callable[[Callable[[], object]], Measurement], repeats: int) -> list[Ablation]:
    """The edge task's forward unmerged vs merged, and what a task switch costs either way."""
    device = store.device
    first, second = (store.task(name) for name in MERGE_TASKS)
    control = line_control(canny_edges(inputs.photo, 100, 200) > 0, store)

    def forward() -> torch.Tensor:
        with store.model_call(MERGE_TASKS[0]) as call:
            return run_task(call, control, parts.embeddings)

    unmerged = run(forward)
    switches = ([(first, second), (second, first)] * repeats)[:repeats]  # alternate, `repeats` switches
    switch_unmerged = [timed(lambda: switch_adapters(store, new), device) for _, new in switches]
    with torch.inference_mode():
        merge_task(store, first)
        try:
            merged = run(forward)
            switch_merged = [timed(lambda: swap_merged(store, old, new), device) for old, new in switches]
        finally:
            for task in (first, second):
                unmerge_task(store, task)
    unmerged_switch, merged_switch = statistics.median(switch_unmerged), statistics.median(switch_merged)
    note = (f"task switch: {unmerged_switch * 1e3:.1f} ms unmerged (set adapters and scales), "
            f"{merged_switch * 1e3:.1f} ms merged (unmerge one task, merge the other)")
    saving = unmerged.median_s - merged.median_s
    if saving > 0:
        note += f"; merging pays after {(merged_switch - unmerged_switch) / saving:.1f} calls per switch"
    else:
        note += "; merging saved no time per call here"
    return [Ablation("merged LoRA", f"{MERGE_TASKS[0]} forward", unmerged, merged, note)]


def switch_adapters(store: ModelStore, task: TaskModel) -> None:
    """The unmerged switch a task call makes: the model call states the task's adapters and scales."""
    with store.model_call(task.spec.task):
        pass


def swap_merged(store: ModelStore, old: TaskModel, new: TaskModel) -> None:
    unmerge_task(store, old)
    merge_task(store, new)

