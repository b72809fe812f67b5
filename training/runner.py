"""The training core every recipe runs on: flags, checkpoints, resume, records, samples.

A recipe builds its networks (seeded, so a resumed run rebuilds the same frozen parts), its
optimizers and a `step(index) -> losses` function, then hands them to `run_training`:

    parser: add_common_arguments(parser, base=False, default_resolution=128)
            --dataset --out --steps --batch-size --resolution --device --resume --seed --lr
            --checkpoint-every --sample-every --keep-checkpoints --gradient-checkpointing
            --mixed-precision --gradient-accumulation-steps --optimizer [--base {tiny,hub,DIR}]

    out = run_training(args, recipe="autoencoder",
                       modules={"vae": vae, "disc": disc},           # what is trained
                       optimizers={"vae": opt_g, "disc": opt_d},
                       step=train_step,                              # (index) -> {"l1": 0.1, ...}
                       sample=lambda png: save_grid(images, png),    # optional, writes one PNG
                       finish=lambda model_dir: {"metric": 1.0})     # optional, writes OUT/model

What `run_training` does:
- Refuses a non-empty --out unless --resume (`check_out` does the same check early, writing nothing); with --resume it refuses a run of another recipe and
  continues from the last complete checkpoint (a fresh run if there is none yet).
- Calls step(i) for i = start .. --steps - 1. Randomness inside a step must come from
  `step_generator(args.seed, i)` (or `batch_indices`), or from torch's global RNG, which is
  saved and restored; then a resumed run reaches exactly the weights of an uninterrupted one.
- Checkpoints every --checkpoint-every steps and at the end, atomically, into
  OUT/checkpoints/step_NNNNNN/: per module `<name>.safetensors` (its parameters that require grad
  plus its buffers; a module with no trainable parameter, e.g. an EMA copy, is saved whole),
  `optimizers.pt` (torch.save, read back only with torch.load(weights_only=True)), `rng.pt` and
  `state.json` (step, loss history). Written to a `.tmp-` folder, then os.replace; older ones are
  pruned to --keep-checkpoints. Ctrl-C or an exception leaves only complete checkpoints.
- Every --sample-every steps and at the end calls sample(OUT/samples/step_NNNNNN.png) under
  torch.no_grad, with the global RNG forked and the modules' train/eval modes restored after.
- At the end calls finish(model_dir) on a temporary folder that becomes OUT/model/ (the
  stabilityai/sd-turbo layout; `save_model_folder` writes it) and records the metrics it returns.
- OUT/record.json (rewritten atomically at each checkpoint and at the end): recipe, status, every
  session's command line, device, versions, steps and wall time, images/s, loss summary
  (first/last/min/mean of the last 10%), metrics.
- A tqdm bar shows step, the latest losses and images/s.

Several processes (`accelerate launch --multi_gpu --num_processes N -m training RECIPE`, or
`torchrun --nproc_per_node N -m training RECIPE`; on CPUs too, with gloo): a recipe makes a
`Trainer(args)` first (it owns the accelerate.Accelerator: device, --mixed-precision,
--gradient-accumulation-steps) and passes it to run_training. Its step draws its batch with
`trainer.batch_indices`, per-example randomness for the global batch through `trainer.shard`, runs
under `trainer.autocast()` and updates with `trainer.backward(loss)` and `trainer.step(optimizer,
clip)` (gradients averaged over the processes, fp16 unscaled, clipped, stepped only on the last
micro-batch of an accumulated step, `trainer.updating`; an EMA follows only then). Its optimizers
come from `trainer.adamw(parameters, lr=...)`: AdamW, or with --optimizer adamw8bit bitsandbytes'
AdamW8bit (CUDA only; bitsandbytes is imported only then and is not a requirement). --batch-size
is per process and micro-batch, as upstream's accelerate scripts; the global batch (batch x
processes x accumulation) is recorded and sets the data order, so N processes train what one
process with the same global batch trains. Only the main process writes (a recipe's own files,
e.g. a cache in OUT, through `trainer.from_main`); everyone waits at each checkpoint. A process's global RNG is reseeded with its own
recorded seed when there are several, and each one's RNG state is checkpointed; --resume refuses
another process count. With one process and the default flags nothing changes: same draws, same
weights, same checkpoint files as before accelerate.

Helpers: `step_generator`, `batch_indices`, `autocast`, `prepare_modules` (device, gradient
checkpointing as --gradient-checkpointing asks: auto is on CUDA only), `save_grid`,
`save_model_folder`, `base_folder` (--base to a folder), `resolve_device`, `TrainingInputError`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object, reduce
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from models.running.devices import native_bfloat16
from models.running.host_memory import retain_for_training
from models.weights.configs import SCHEDULER_CONFIG

RUN_FILE = "run.json"
RECORD_FILE = "record.json"
CHECKPOINTS = "checkpoints"
TMP_PREFIX = ".tmp-"
VERSIONED_PACKAGES = ("torch", "diffusers", "transformers", "peft", "safetensors", "tokenizers")

StepFn = Callable[[int], Mapping[str, float]]
SampleFn = Callable[[Path], None]
FinishFn = Callable[[Path], Mapping[str, Any] | None]
CheckpointFn = Callable[..., Any]  # diffusers' gradient_checkpointing_func: (module, *args) -> outputs
CHECKPOINTING = ("auto", "on", "off")
MIXED_PRECISION = ("auto", "no", "fp16", "bf16")
OPTIMIZERS = ("adamw", "adamw8bit")
PROCESS_SEED_STRIDE = 1_000_003  # process r's global RNG seed: --seed + r * this, with several processes


class TrainingInputError(ValueError):
    """Bad input found before training starts (flags, dataset, base, --out)."""


# ----------------------------------------------------------------------------------------- flags

def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def add_common_arguments(parser: argparse.ArgumentParser, *, base: bool = False, dataset: bool = True,
                         default_resolution: int = 128, default_steps: int = 1000,
                         default_batch_size: int = 16, default_lr: float = 1e-4) -> None:
    """The flags every recipe shares; `base=True` adds --base {tiny,hub,DIR}."""
    if dataset:
        parser.add_argument("--dataset", type=Path, required=True, help="dataset folder")
    parser.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, samples, record, model/)")
    parser.add_argument("--steps", type=positive_int, default=default_steps, help="total optimizer steps")
    parser.add_argument("--batch-size", type=positive_int, default=default_batch_size)
    parser.add_argument("--resolution", type=positive_int, default=default_resolution, help="training size in pixels")
    parser.add_argument("--device", default=default_device(), help="cpu, cuda, cuda:1 ... (default: %(default)s)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=default_lr, help="learning rate")
    parser.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant",
                        help="cosine: each optimizer's rate falls from its start to a tenth of it at --steps "
                             "(a function of the step, so a resumed run follows the same curve)")
    parser.add_argument("--checkpoint-every", type=positive_int, default=500, metavar="N")
    parser.add_argument("--sample-every", type=positive_int, default=500, metavar="N")
    parser.add_argument("--keep-checkpoints", type=positive_int, default=2, metavar="N",
                        help="complete checkpoints kept (older ones are deleted)")
    parser.add_argument("--gradient-checkpointing", choices=CHECKPOINTING, default="auto",
                        help="recompute the networks' activations in backward instead of keeping them "
                             "(less memory, more time); auto: on CUDA only (default)")
    parser.add_argument("--mixed-precision", choices=MIXED_PRECISION, default="auto",
                        help="autocast through accelerate (weights and optimizer state stay fp32; fp16 adds a "
                             "gradient scaler, CUDA only); auto: bf16 on CUDA and on CPUs with bf16 "
                             "instructions, else no (default)")
    parser.add_argument("--gradient-accumulation-steps", type=positive_int, default=1, metavar="N",
                        help="micro-batches of --batch-size per optimizer step and process")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw",
                        help="adamw: torch's (default); adamw8bit: bitsandbytes' AdamW8bit (optimizer state in "
                             "8 bits, CUDA only; pip install bitsandbytes)")
    if base:
        parser.add_argument("--base", default="tiny", metavar="{tiny,hub,DIR}",
                            help="one-step base: tiny random weights, SD-Turbo from the Hub, or a folder "
                                 "in the stabilityai/sd-turbo layout (e.g. a run's OUT/model)")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is not a whole number of 0 or more")
    return value


def resolve_device(name: str) -> torch.device:
    """torch.device for --device, refusing CUDA where there is none."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingInputError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return device


def check_resolution(resolution: int, multiple: int = 8) -> None:
    if resolution % multiple:
        raise TrainingInputError(
            f"--resolution {resolution} is not a multiple of {multiple} (the autoencoder downsamples by 8); "
            f"try {max(multiple, resolution // multiple * multiple)}")


def base_folder(base: str, scratch: Path) -> Path:
    """A folder in the stabilityai/sd-turbo layout for --base: `tiny` is written into scratch,
    `hub` is downloaded (or taken from the cache), anything else must be such a folder."""
    from models.weights import sources
    from models.weights.tiny import write_tiny_hub_layout

    if base == "tiny":
        return write_tiny_hub_layout(scratch / "tiny-base")
    if base == "hub":
        return sources.download_base(variant=None)
    try:
        return sources.check_local_dir(base)
    except ValueError as error:
        raise TrainingInputError(f"--base {base}: {error}") from error


# ------------------------------------------------------------------------------ randomness, data

def scheduled_lr(initial: float, schedule: str, step: int, total_steps: int) -> float:
    """The learning rate at `step`: constant, or cosine from `initial` down to a tenth of it."""
    if schedule == "constant":
        return initial
    progress = min(1.0, step / max(1, total_steps))
    floor = 0.1 * initial
    return floor + (initial - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def apply_lr_schedule(optimizers: Mapping[str, torch.optim.Optimizer], schedule: str, step: int,
                      total_steps: int) -> None:
    """Set every parameter group's rate for `step` from the rate it started with."""
    for optimizer in optimizers.values():
        for group in optimizer.param_groups:
            initial = group.setdefault("initial_lr", group["lr"])
            group["lr"] = scheduled_lr(initial, schedule, step, total_steps)


def step_generator(seed: int, step: int, stream: int = 0, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator that is a pure function of (seed, step, stream): use it for everything random
    in a step (batch choice, noise, timesteps) and a resumed run repeats the same draws."""
    mixed = (seed * 1_000_003 + step) * 1_009 + stream
    return torch.Generator(device=device).manual_seed(mixed % (2**63 - 1))


def batch_indices(dataset_size: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """Indices of the batch at `step`: consecutive slices of one seeded permutation per epoch,
    so each epoch sees every example once; a pure function of its arguments."""
    if dataset_size < 1:
        raise ValueError("dataset_size must be at least 1")
    position, end = step * batch_size, (step + 1) * batch_size
    picked: list[torch.Tensor] = []
    while position < end:
        epoch, offset = divmod(position, dataset_size)
        permutation = torch.randperm(dataset_size, generator=step_generator(seed, epoch, stream=7))
        chunk = permutation[offset:offset + end - position]
        picked.append(chunk)
        position += len(chunk)
    return torch.cat(picked)


# -------------------------------------------------------------------------------------- devices

@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op thread count set to `count` inside the block, and restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA and on CPUs with bf16 instructions (a training step of mini's VAE and
    UNet at 128 px, batch 4: 1.23 -> 0.86 s on this project's AVX512-BF16 CPU); elsewhere nothing
    (fp32: without those instructions bf16 is emulated and far slower). Weights and optimiser
    state stay fp32 either way."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if native_bfloat16(device):
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def checkpointing_wanted(setting: str, device: torch.device) -> bool:
    """Whether --gradient-checkpointing asks for checkpointing on this device (auto: CUDA only)."""
    return setting == "on" or (setting == "auto" and device.type == "cuda")


def prepare_modules(modules: Mapping[str, nn.Module], device: torch.device, checkpointing: str = "auto",
                    checkpoint_function: CheckpointFn | None = None) -> None:
    """Move to the device; switch gradient checkpointing on where the model offers it and
    `checkpointing` asks for it. checkpoint_function replaces diffusers' own (non-reentrant
    torch.utils.checkpoint) for a model whose forward reads state set outside it."""
    for module in modules.values():
        module.to(device)
        if not checkpointing_wanted(checkpointing, device):
            continue
        if hasattr(module, "enable_gradient_checkpointing") and getattr(module, "_supports_gradient_checkpointing", False):
            module.enable_gradient_checkpointing(checkpoint_function)
        elif hasattr(module, "gradient_checkpointing_enable") and getattr(module, "supports_gradient_checkpointing", False):
            module.gradient_checkpointing_enable()


# ------------------------------------------------------------------------------------- processes

def resolved_precision(setting: str, device: torch.device) -> str:
    """--mixed-precision for accelerate: auto is what `autocast` does (bf16 on CUDA and on CPUs
    with bf16 instructions, else no); fp16 needs CUDA (its gradient scaler)."""
    if setting == "fp16" and device.type != "cuda":
        raise TrainingInputError("--mixed-precision fp16 needs CUDA (its gradient scaler); on a CPU use bf16 or no")
    if setting != "auto":
        return setting
    return "bf16" if device.type == "cuda" or native_bfloat16(device) else "no"


def adamw_class(name: str, device: torch.device) -> type[torch.optim.Optimizer]:
    """The optimizer class --optimizer names: torch's AdamW, or bitsandbytes' AdamW8bit (imported
    only here, with a clear error where it is not installed or the device is not CUDA)."""
    if name == "adamw":
        return torch.optim.AdamW
    if device.type != "cuda":
        raise TrainingInputError(f"--optimizer {name} needs CUDA (bitsandbytes' 8-bit optimizer states); "
                                 f"this run's device is {device}: use --optimizer adamw")
    try:
        import bitsandbytes
    except ImportError as error:
        raise TrainingInputError(f"--optimizer {name} needs bitsandbytes, which is not installed: "
                                 "pip install bitsandbytes (or use --optimizer adamw)") from error
    return bitsandbytes.optim.AdamW8bit


class Trainer:
    """One process's part of a run: the accelerate.Accelerator (processes, device, mixed precision,
    gradient accumulation) and this process's share of every batch.

    A recipe makes it before its networks and optimizers and passes it to run_training. Mixed
    precision and accumulation are accelerate's process-wide state: runs in one process (tests)
    share them, and accelerate refuses a second, different mixed precision there."""

    def __init__(self, args: argparse.Namespace) -> None:
        requested = resolve_device(args.device)
        self.mixed_precision = resolved_precision(args.mixed_precision, requested)
        self.accelerator = Accelerator(cpu=requested.type == "cpu", mixed_precision=self.mixed_precision,
                                       gradient_accumulation_steps=args.gradient_accumulation_steps)
        several = self.accelerator.num_processes > 1
        self.device = self.accelerator.device if several and requested.type != "cpu" else requested
        self.batch_size: int = args.batch_size
        self.seed: int = args.seed
        self.optimizer_class = adamw_class(args.optimizer, self.device)
        self.micro = 0  # the micro-batch of the current step (run_step sets it)

    @property
    def processes(self) -> int:
        return self.accelerator.num_processes

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def accumulation(self) -> int:
        return self.accelerator.gradient_accumulation_steps

    @property
    def updating(self) -> bool:
        """Whether the current micro-batch is its step's last, on which `step` updates the weights
        (always, without accumulation): an EMA of the weights follows only then."""
        return self.accelerator.sync_gradients

    @property
    def global_batch(self) -> int:
        """Examples per optimizer step over all processes and micro-batches."""
        return self.batch_size * self.processes * self.accumulation

    def process_seeds(self) -> list[int]:
        return [self.seed + rank * PROCESS_SEED_STRIDE for rank in range(self.processes)]

    def shard(self, values: torch.Tensor) -> torch.Tensor:
        """This process's rows of the current micro-batch from rows drawn for the global batch
        (micro-batch-major, then process): draw per-example randomness for global_batch rows and
        shard it, and every process count sees the same draws."""
        if self.global_batch == self.batch_size:
            return values
        start = (self.micro * self.processes + self.rank) * self.batch_size
        return values[start:start + self.batch_size]

    def batch_indices(self, dataset_size: int, step: int, seed: int | None = None) -> torch.Tensor:
        """This process's examples of `step`: its shard of the global batch (`batch_indices`)."""
        seed = self.seed if seed is None else seed
        return self.shard(batch_indices(dataset_size, self.global_batch, seed, step))

    def from_main(self, make: Callable[[], Path]) -> Path:
        """make() in the main process only (a download, a folder written once, a cache encoded), on
        every process's threads since the others wait; its result in every process. The caller
        waits (`wait`) before removing what make() wrote."""
        if self.processes == 1:
            return make()
        if not self.is_main:
            return broadcast_object_list([None])[0]
        with torch_threads(torch.get_num_threads() * self.processes):
            made = make()
        return broadcast_object_list([made])[0]

    def mean_over_processes(self, values: torch.Tensor) -> torch.Tensor:
        """values averaged over the processes (itself with one): e.g. a gradient taken with
        torch.autograd.grad, which `step` does not see."""
        return reduce(values, reduction="mean") if self.processes > 1 else values

    def sum_over_processes(self, values: torch.Tensor) -> torch.Tensor:
        """values summed over the processes (itself with one): e.g. the global batch's count of
        something each process counts in its own rows."""
        return reduce(values, reduction="sum") if self.processes > 1 else values

    def adamw(self, parameters: Iterable[Any], **options: Any) -> torch.optim.Optimizer:
        """The --optimizer (AdamW, or bitsandbytes' AdamW8bit) over the parameters, with AdamW's
        options (lr, betas, weight_decay)."""
        return self.optimizer_class(parameters, **options)

    def autocast(self) -> contextlib.AbstractContextManager:
        """accelerate's autocast for --mixed-precision (nothing for no)."""
        return self.accelerator.autocast()

    def backward(self, loss: torch.Tensor) -> None:
        """loss / accumulation steps, scaled for fp16, backward."""
        self.accelerator.backward(loss)

    def step(self, optimizer: torch.optim.Optimizer, clip: float | None = None) -> torch.Tensor | None:
        """On the last micro-batch of a step: average the gradients over the processes, unscale
        them (fp16), clip their norm to `clip`, step and clear them; else nothing (they accumulate).
        Returns the gradient norm before clipping (over the averaged gradients) when it clipped.
        A step whose norm is not finite (a bf16 overflow) is skipped, as fp16's scaler skips one:
        clipping by an infinite norm would zero the gradients or, with one infinite, make NaN."""
        if not self.updating:
            return None
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        if self.processes > 1:
            average_gradients(parameters)
        scaler = self.accelerator.scaler
        if scaler is not None:
            scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(parameters, clip) if clip is not None else None
        if norm is not None and not torch.isfinite(norm):
            optimizer.zero_grad(set_to_none=True)
            return norm
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return norm

    def run_step(self, step: StepFn, index: int) -> dict[str, float]:
        """step(index) once per micro-batch under accelerate's accumulate; each loss averaged over
        the micro-batches that report it (one only reported on the last, e.g. a gradient norm, is
        that one's) and over the processes (with one of each: as step returned them)."""
        losses = []
        for micro in range(self.accumulation):
            self.micro = micro
            with self.accelerator.accumulate():
                losses.append({name: float(value) for name, value in step(index).items()})
        if len(losses) == 1 and self.processes == 1:
            return losses[0]
        names = sorted({name for entry in losses for name in entry})
        means = [float(np.mean([entry[name] for entry in losses if name in entry])) for name in names]
        averaged = reduce(torch.tensor(means, dtype=torch.float64, device=self.device), reduction="mean").cpu()
        return dict(zip(names, averaged.tolist(), strict=True))

    def wait(self) -> None:
        self.accelerator.wait_for_everyone()

    def info(self) -> dict[str, Any]:
        """What the record states about the processes and the batch."""
        return {"processes": self.processes, "batch_size_per_process": self.batch_size,
                "gradient_accumulation_steps": self.accumulation, "global_batch": self.global_batch,
                "mixed_precision": self.mixed_precision, "distributed_type": str(self.accelerator.distributed_type),
                "process_seeds": self.process_seeds() if self.processes > 1 else None}


def average_gradients(parameters: list[nn.Parameter]) -> None:
    """Replace each gradient with its mean over the processes: one all-reduce per dtype (accelerate's
    reduce). The recipes call their networks outside forward (encode/decode, two discriminator passes
    per backward, torch.autograd.grad), which DDP's reducer does not follow."""
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for parameter in parameters:
        if parameter.grad is not None:
            by_dtype.setdefault(parameter.grad.dtype, []).append(parameter.grad)
    for grads in by_dtype.values():
        flat = reduce(torch.cat([grad.reshape(-1) for grad in grads]), reduction="mean")
        for grad, averaged in zip(grads, flat.split([grad.numel() for grad in grads]), strict=True):
            grad.copy_(averaged.view_as(grad))


# ---------------------------------------------------------------------------------------- images

def save_grid(images: torch.Tensor | np.ndarray, path: Path, columns: int | None = None) -> Path:
    """Write images as one PNG grid. Float tensors N,3,H,W in [-1, 1] (or uint8 arrays N,H,W,3)."""
    if isinstance(images, torch.Tensor):
        array = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        array = array.permute(0, 2, 3, 1).numpy()
    else:
        array = np.asarray(images, dtype=np.uint8)
    count, height, width, _ = array.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    grid = np.full((rows * height, columns * width, 3), 255, dtype=np.uint8)
    for index, image in enumerate(array):
        row, column = divmod(index, columns)
        grid[row * height:(row + 1) * height, column * width:(column + 1) * width] = image[..., :3]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
    return path


# ----------------------------------------------------------------------------- model folder (out)

def save_model_folder(model_dir: Path, *, vae: nn.Module | None = None, unet: nn.Module | None = None,
                      text_encoder: nn.Module | None = None, tokenizer_dir: Path | None = None,
                      scheduler_config: Mapping[str, Any] | None = SCHEDULER_CONFIG,
                      base_dir: Path | None = None) -> Path:
    """Write the given parts in the stabilityai/sd-turbo layout (save_pretrained, safetensors; the
    tokenizer folder with vocab.json, merges.txt and tokenizer_config.json is copied); parts not
    given are copied from base_dir when there is one."""
    model_dir.mkdir(parents=True, exist_ok=True)
    for name, part in (("vae", vae), ("unet", unet), ("text_encoder", text_encoder)):
        if part is not None:
            part.save_pretrained(model_dir / name, safe_serialization=True)
        elif base_dir is not None and (base_dir / name).is_dir():
            shutil.copytree(base_dir / name, model_dir / name, dirs_exist_ok=True)
    tokenizer_source = tokenizer_dir or (base_dir / "tokenizer" if base_dir is not None else None)
    if tokenizer_source is not None and tokenizer_source.is_dir():
        shutil.copytree(tokenizer_source, model_dir / "tokenizer", dirs_exist_ok=True)
    if scheduler_config is not None:
        (model_dir / "scheduler").mkdir(exist_ok=True)
        (model_dir / "scheduler" / "scheduler_config.json").write_text(json.dumps(dict(scheduler_config), indent=2))
    elif base_dir is not None and (base_dir / "scheduler").is_dir():
        shutil.copytree(base_dir / "scheduler", model_dir / "scheduler", dirs_exist_ok=True)
    return model_dir


def run_model_dir(path: Path, part: str) -> Path:
    """A run folder (its model/) or a model folder, checked to hold `part` (e.g. "vae")."""
    for candidate in (path / "model", path):
        if (candidate / part / "config.json").is_file():
            return candidate
    raise TrainingInputError(f"{path}: neither it nor {path / 'model'} holds {part}/config.json "
                             f"(give a finished run folder or a model folder)")


# ----------------------------------------------------------------------------------- checkpoints

def checkpoint_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that require grad plus the buffers; a module with nothing trainable whole."""
    parameters = dict(module.named_parameters())
    state = module.state_dict()
    if not any(p.requires_grad for p in parameters.values()):
        keep = state
    else:
        keep = {key: value for key, value in state.items()
                if key not in parameters or parameters[key].requires_grad}
    return {key: value.detach().to("cpu", copy=True).contiguous() for key, value in keep.items()}


def checkpoint_name(step: int) -> str:
    return f"step_{step:06d}"


def complete_checkpoints(out: Path) -> list[Path]:
    """Finished checkpoint folders, oldest first (temp folders are never listed)."""
    folder = out / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [path for path in folder.iterdir()
             if path.is_dir() and path.name.startswith("step_") and (path / "state.json").is_file()]
    return sorted(found, key=lambda path: path.name)


def rng_state() -> dict[str, Any]:
    """torch's global RNG states (recipes draw their randomness from torch only)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class ProcessesDiverged(RuntimeError):
    """The processes of one run hold different weights at a checkpoint."""


def weights_fingerprint(modules: Mapping[str, nn.Module]) -> str:
    """sha256 of everything a checkpoint saves of the modules (names and bytes)."""
    digest = hashlib.sha256()
    for name, module in modules.items():
        for key, tensor in checkpoint_state(module).items():
            digest.update(f"{name}.{key}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def check_same_weights(modules: Mapping[str, nn.Module], trainer: Trainer, step: int) -> None:
    """A collective: raise ProcessesDiverged unless every process holds the same weights and buffers."""
    fingerprints = gather_object([weights_fingerprint(modules)])
    if len(set(fingerprints)) > 1:
        raise ProcessesDiverged(
            f"step {step}: the {trainer.processes} processes hold different weights (sha256 {fingerprints}); "
            "something changed a module outside Trainer.step, e.g. a buffer such as BatchNorm's running "
            "statistics updated from each process's own batch")


def process_rng_state(trainer: Trainer) -> dict[str, Any]:
    """What rng.pt holds (a collective: every process calls it): this process's `rng_state` and
    fp16 gradient scaler; with several processes rank 0's at the top level and everyone's under
    "processes"."""
    state = rng_state()
    if trainer.accelerator.scaler is not None:
        state["scaler"] = trainer.accelerator.scaler.state_dict()
    if trainer.processes == 1:
        return state
    return {**state, "processes": gather_object([state])}


def write_checkpoint(out: Path, step: int, modules: Mapping[str, nn.Module],
                     optimizers: Mapping[str, torch.optim.Optimizer], history: list[dict[str, float]],
                     rng: Mapping[str, Any] | None = None) -> Path:
    """Write everything to a temp folder, then os.replace it into place. rng: `process_rng_state`
    (default: this process's `rng_state`); a run of several processes records their number."""
    final = out / CHECKPOINTS / checkpoint_name(step)
    temp = out / CHECKPOINTS / f"{TMP_PREFIX}{checkpoint_name(step)}"
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    try:
        for name, module in modules.items():
            save_file(checkpoint_state(module), str(temp / f"{name}.safetensors"))
        torch.save({name: optimizer.state_dict() for name, optimizer in optimizers.items()}, temp / "optimizers.pt")
        rng = rng_state() if rng is None else rng
        torch.save(rng, temp / "rng.pt")
        state: dict[str, Any] = {"step": step, "history": history}
        if "processes" in rng:
            state["processes"] = len(rng["processes"])
        (temp / "state.json").write_text(json.dumps(state))
        if final.exists():
            shutil.rmtree(final)
        os.replace(temp, final)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return final


def check_processes(folder: Path, processes: int) -> None:
    """Refuse to resume a checkpoint written by another number of processes (its data order,
    per-process RNG states and batch shards would not continue)."""
    written = int(json.loads((folder / "state.json").read_text()).get("processes", 1))
    if written != processes:
        raise TrainingInputError(
            f"--resume: {folder} was written by a run of {written} process(es) and this run has {processes}; "
            f"resume with {written} (e.g. accelerate launch --num_processes {written}), or start a new --out")


def load_checkpoint(folder: Path, modules: Mapping[str, nn.Module],
                    optimizers: Mapping[str, torch.optim.Optimizer],
                    trainer: Trainer | None = None) -> tuple[int, list[dict[str, float]]]:
    """Load modules, optimizers and RNG (this process's, with several) from a checkpoint; return
    (step, loss history)."""
    check_processes(folder, trainer.processes if trainer is not None else 1)
    for name, module in modules.items():
        path = folder / f"{name}.safetensors"
        if not path.is_file():
            raise TrainingInputError(f"{path} is missing: the checkpoint was written with other modules")
        device = next(module.parameters()).device
        incompatible = module.load_state_dict(load_file(str(path), device=str(device)), strict=False)
        if incompatible.unexpected_keys:
            raise TrainingInputError(f"{path} holds keys the module lacks: {incompatible.unexpected_keys[:5]}")
    saved = torch.load(folder / "optimizers.pt", weights_only=True, map_location="cpu")
    if set(saved) != set(optimizers):
        raise TrainingInputError(f"{folder / 'optimizers.pt'} has optimizers {sorted(saved)}, expected {sorted(optimizers)}")
    for name, optimizer in optimizers.items():
        optimizer.load_state_dict(saved[name])
    rng = torch.load(folder / "rng.pt", weights_only=True)
    own = rng["processes"][trainer.rank] if "processes" in rng and trainer is not None else rng
    restore_rng(own)
    if "scaler" in own and trainer is not None and trainer.accelerator.scaler is not None:
        trainer.accelerator.scaler.load_state_dict(own["scaler"])
    state = json.loads((folder / "state.json").read_text())
    return int(state["step"]), list(state["history"])


# ---------------------------------------------------------------------------------------- record

def write_json_atomic(path: Path, data: Any) -> None:
    temp = path.with_name(f"{TMP_PREFIX}{path.name}")
    temp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(temp, path)


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    precision = "bf16 autocast" if native_bfloat16(device) else "fp32"
    return (f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"{torch.get_num_threads()} threads, {precision})")


def loss_summary(history: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """first / last / min / mean of the last 10% of steps, per loss name."""
    summary: dict[str, dict[str, float]] = {}
    names = sorted({name for entry in history for name in entry})
    for name in names:
        values = [entry[name] for entry in history if name in entry and math.isfinite(entry[name])]
        if not values:
            continue
        tail = values[-max(1, len(values) // 10):]
        summary[name] = {"first": values[0], "last": values[-1], "min": min(values),
                         "last_10pct_mean": sum(tail) / len(tail)}
    return summary


# ------------------------------------------------------------------------------------------- out

def check_out(out: Path, recipe: str, resume: bool) -> None:
    """Refuse a non-empty --out without --resume, or a run of another recipe; writes nothing, so
    recipes call it first, before their slow set-up."""
    if out.exists() and not out.is_dir():
        raise TrainingInputError(f"--out {out} is a file, not a folder")
    if not (out.is_dir() and any(out.iterdir())):
        return
    marker = out / RUN_FILE
    if not marker.is_file():
        raise TrainingInputError(f"--out {out} is not empty and is not a training run; choose an empty folder")
    existing = json.loads(marker.read_text()).get("recipe")
    if existing != recipe:
        raise TrainingInputError(f"--out {out} is a run of recipe {existing!r}, not {recipe!r}")
    started = (out / RECORD_FILE).exists() or bool(complete_checkpoints(out))
    if started and not resume:
        raise TrainingInputError(f"--out {out} already holds a run of {recipe}; pass --resume to continue it "
                                 "or choose another folder")


def prepare_out(out: Path, recipe: str, resume: bool) -> None:
    """check_out, then mark the folder as a run of the recipe and clear stale temp folders.
    A recipe may call it early to keep caches in OUT (a run with no record or checkpoint yet may be
    prepared again without --resume)."""
    check_out(out, recipe, resume)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / RUN_FILE, {"recipe": recipe})
    if (out / CHECKPOINTS).is_dir():
        for stale in (out / CHECKPOINTS).glob(f"{TMP_PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def sampling_mode(modules: Mapping[str, nn.Module]) -> Iterator[None]:
    """no_grad, a forked global RNG, and each module's train/eval mode restored afterwards."""
    modes = {name: [m.training for m in module.modules()] for name, module in modules.items()}
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            yield
    finally:
        for name, module in modules.items():
            for submodule, mode in zip(module.modules(), modes[name], strict=True):
                submodule.training = mode


class _Session:
    """Bookkeeping of one invocation (a resumed run has several sessions)."""

    def __init__(self, args: argparse.Namespace, trainer: Trainer, start_step: int) -> None:
        self.start_step = start_step
        self.started = time.perf_counter()
        self.step_seconds: list[float] = []
        self.info: dict[str, Any] = {
            "command": [sys.executable, "-m", "training", *sys.argv[1:]] if sys.argv[0].endswith("__main__.py")
            else [sys.executable, *sys.argv],
            "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "device": device_description(trainer.device),
            "versions": package_versions(),
            **trainer.info(),
            "arguments": {key: str(value) for key, value in vars(args).items() if key != "run"},
            "start_step": start_step,
            # glibc keeps freed tensor memory for the next step instead of faulting it in again
            "retain_host_memory": retain_for_training(),
        }

    def update(self, step: int, images_per_step: int) -> dict[str, Any]:
        wall = time.perf_counter() - self.started
        done = step - self.start_step
        self.info.update({"end_step": step, "wall_time_s": round(wall, 2),
                          "images_per_s": round(done * images_per_step / wall, 3) if wall > 0 else None,
                          "s_per_step": round(wall / done, 4) if done else None})
        if self.step_seconds:
            median = float(np.median(self.step_seconds))
            self.info.update({"step_s_median": float(f"{median:.4g}"),  # four figures, also for a toy's 0.6 ms
                              "step_images_per_s": round(images_per_step / median, 3) if median > 0 else None})
        return self.info

    def timed_step(self, trainer: Trainer, step: StepFn, index: int) -> dict[str, float]:
        """trainer.run_step(step, index), its duration kept: the training steps' own speed, without
        samples, checkpoints and the final model, is the record's step_s_median."""
        started = time.perf_counter()
        losses = trainer.run_step(step, index)
        self.step_seconds.append(time.perf_counter() - started)
        return losses


def run_training(args: argparse.Namespace, *, recipe: str, modules: Mapping[str, nn.Module],
                 optimizers: Mapping[str, torch.optim.Optimizer], step: StepFn,
                 sample: SampleFn | None = None, finish: FinishFn | None = None,
                 images_per_step: int | None = None, config: Mapping[str, Any] | None = None,
                 trainer: Trainer | None = None) -> Path:
    """Run (or resume) a training loop in args.out; returns OUT. `config` goes into the record.
    images_per_step: per step over all processes (default: the trainer's global batch). Without a
    trainer (a recipe not yet written for it) one process and the default precision and
    accumulation are required."""
    out: Path = args.out
    if trainer is None:
        trainer = Trainer(args)
        check_single_process(trainer, recipe, args)
    if trainer.is_main:
        prepare_out(out, recipe, args.resume)
    trainer.wait()
    images_per_step = images_per_step or trainer.global_batch
    start, history = 0, []
    checkpoints = complete_checkpoints(out)
    if args.resume and checkpoints:
        start, history = load_checkpoint(checkpoints[-1], modules, optimizers, trainer)
    elif trainer.processes > 1:
        torch.manual_seed(trainer.process_seeds()[trainer.rank])
    record_path = out / RECORD_FILE
    record: dict[str, Any] = json.loads(record_path.read_text()) if args.resume and record_path.is_file() else {}
    record.update({"recipe": recipe, "config": dict(config or {}), "total_steps": args.steps})
    session = _Session(args, trainer, start)
    record["sessions"] = [*record.get("sessions", []), session.info]

    def save_record(status: str, at_step: int) -> None:
        session.update(at_step, images_per_step)
        record.update({"status": status, "steps_done": at_step, "loss_summary": loss_summary(history),
                       "wall_time_s": round(sum(s.get("wall_time_s", 0) for s in record["sessions"]), 2)})
        write_json_atomic(record_path, record)

    def checkpoint(at_step: int) -> None:
        if trainer.processes > 1:
            check_same_weights(modules, trainer, at_step)
            record["processes_identical_at_step"] = at_step
        rng = process_rng_state(trainer)
        if trainer.is_main:
            write_checkpoint(out, at_step, modules, optimizers, history, rng)
            for old in complete_checkpoints(out)[:-args.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
            save_record("running", at_step)
        trainer.wait()

    current = start
    status = "interrupted"
    progress = tqdm(total=args.steps, initial=start, desc=recipe, unit="step", dynamic_ncols=True,
                    disable=not trainer.is_main)
    try:
        schedule = getattr(args, "lr_schedule", "constant")
        for index in range(start, args.steps):
            apply_lr_schedule(optimizers, schedule, index, args.steps)
            losses = session.timed_step(trainer, step, index)
            history.append(losses)
            current = index + 1
            elapsed = time.perf_counter() - session.started
            progress.set_postfix({**{k: f"{v:.4g}" for k, v in losses.items()},
                                  "img/s": f"{(current - start) * images_per_step / max(elapsed, 1e-9):.2f}"})
            progress.update(1)
            if trainer.is_main and sample is not None and (current % args.sample_every == 0 or current == args.steps):
                with sampling_mode(modules):
                    sample(out / "samples" / f"{checkpoint_name(current)}.png")
            if current % args.checkpoint_every == 0 or current == args.steps:
                checkpoint(current)
        if finish is not None and trainer.is_main:
            record["metrics"] = dict(finish_model(out, modules, finish) or {})
        status = "finished"
    finally:
        progress.close()
        if trainer.is_main:
            save_record(status, current)
    trainer.wait()
    return out


def check_single_process(trainer: Trainer, recipe: str, args: argparse.Namespace) -> None:
    """Refuse several processes, accumulation or a chosen precision for a recipe whose step does
    not go through a Trainer (it would train each process alone, or ignore the flags)."""
    if trainer.processes > 1 or trainer.accumulation > 1 or args.mixed_precision != "auto":
        raise TrainingInputError(
            f"recipe {recipe} runs as one process with --gradient-accumulation-steps 1 and --mixed-precision auto "
            f"(this run: {trainer.processes} processes, accumulation {trainer.accumulation}, "
            f"--mixed-precision {args.mixed_precision})")


def finish_model(out: Path, modules: Mapping[str, nn.Module], finish: FinishFn) -> Mapping[str, Any] | None:
    """finish(temp folder) under sampling_mode; the folder then replaces OUT/model atomically."""
    temp = out / f"{TMP_PREFIX}model"
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir()
    try:
        with sampling_mode(modules):
            metrics = finish(temp)
        final = out / "model"
        if final.exists():
            shutil.rmtree(final)
        os.replace(temp, final)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return metrics
