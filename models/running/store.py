"""The model store: SD-Turbo loaded once per (device, dtype), kept resident and shared by every task.

One store is one device and dtype. It owns the task registry, the lock that serialises model calls
(one GPU runs one forward at a time; it also keeps per-call adapter settings from leaking between
threads), the one model-call context every pipeline enters, and the LRU cache of prompt embeddings,
so moving a slider does not re-encode an unchanged prompt.
"""

from __future__ import annotations

import tempfile
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import torch

from models.running.adapters import AdapterSwitch
from models.running.devices import resolve_device, resolve_dtype
from models.running.errors import PromptTruncatedWarning, TaskUnavailableError
from models.running.folding import AdapterFolding, PlainLayers
from models.running.sd_turbo import SDTurbo
from models.running.skip_vae import SkipVAE
from models.running.swapped import swapped_parameters
from models.running.task_model import TaskAdapterScales, TaskModel
from models.running.traced_unet import TracedUNet
from models.running.traced_vae import TracedVAE
from models.weights.base_loading import BaseWeightsError, build_tiny_sd_turbo, load_sd_turbo
from models.weights.sources import SourceInfo, base_weights_fix, resolve_source
from models.weights.specs import SourceName, TaskName

ProgressCallback = Callable[[float, str], None]
PROMPT_CACHE_SIZE = 64
BASE_ONLY = TaskAdapterScales(unet={}, vae={}, skips={})


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0


@dataclass(frozen=True)
class ModelCall:
    """What a model call runs on: the base, the task (None: plain SD-Turbo), its gamma, and the
    traced UNet and VAE where this call may use them (a folded call on a store with tracing on)."""

    base: SDTurbo
    task: TaskModel | None
    gamma: float
    traced_unet: TracedUNet | None = None
    traced_vae: TracedVAE | None = None
    skip_vae: SkipVAE = SkipVAE()
    gamma_tensor: torch.Tensor | None = None  # compiled calls: gamma as a 0-d tensor on the device
    conv_in: tuple[torch.Tensor, torch.Tensor] | None = None  # compiled calls: the task's conv_in, blended here

    def predict_x0(self, noisy_latents: torch.Tensor, t: int, prompt_embeds: torch.Tensor,
                   unet_parameters: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """SDTurbo.predict_x0, through the traced UNet where the call has one."""
        return self.base.predict_x0(noisy_latents, t, prompt_embeds, unet_parameters, traced=self.traced_unet)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """SDTurbo.encode (the base VAE: edit), through the traced VAE where the call has one."""
        return self.base.encode(pixels, traced=self.traced_vae)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """SDTurbo.decode (the base VAE: text to image, edit), through the traced VAE where the call has one."""
        return self.base.decode(latents, traced=self.traced_vae)

    def encode_with_skips(self, pixels: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The task's VAE encoder (models.running.skip_vae), through the traced VAE where the call has
        one and the task swaps no VAE tensors in."""
        task = self.require_task()
        graphs = self._task_vae_graphs(task)
        if graphs is not None:
            return graphs.encode_with_skips(pixels)
        with swapped_parameters(self.base.vae, task.vae_overrides):
            return self.skip_vae.encode_with_skips(self.base.vae, pixels)

    def decode_with_skips(self, latents: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        """The task's VAE decoder with its skip connections at the call's gamma (as encode_with_skips)."""
        task = self.require_task()
        graphs = self._task_vae_graphs(task)
        if graphs is not None:
            return graphs.decode_with_skips(latents, skips, task.spec.task, task.skips, self.gamma)
        gamma = self.gamma if self.gamma_tensor is None else self.gamma_tensor
        with swapped_parameters(self.base.vae, task.vae_overrides):
            return self.skip_vae.decode_with_skips(self.base.vae, latents, skips, task.skips, gamma)

    def _task_vae_graphs(self, task: TaskModel) -> TracedVAE | None:
        """The traced VAE, unless the task swaps VAE tensors in (the graphs would not see them)."""
        return None if task.vae_overrides else self.traced_vae

    def require_task(self) -> TaskModel:
        if self.task is None:
            raise RuntimeError("this model call was opened without a task; use store.model_call(task_name)")
        return self.task


class ModelStore:
    """Resident SD-Turbo components plus the tasks installed on top of them."""

    def __init__(self, base: SDTurbo, source: SourceInfo, prompt_cache_size: int = PROMPT_CACHE_SIZE) -> None:
        self.base = base
        self.source = source
        self.lock = threading.RLock()
        self.prompt_cache_stats = CacheStats()
        self._prompt_cache: OrderedDict[str, tuple[torch.Tensor, bool]] = OrderedDict()
        self._prompt_cache_size = prompt_cache_size
        self._unet_adapters = AdapterSwitch(base.unet)
        self._vae_adapters = AdapterSwitch(base.vae)
        self._tasks: dict[str, TaskModel] = {}
        self._unavailable: dict[str, str] = {}
        self._folding: AdapterFolding | None = None
        self._plain_layers: PlainLayers | None = None  # with folding: wrappers skipped in folded calls
        self._traced_unet: TracedUNet | None = None  # with folding: the UNet of folded calls, traced
        self._traced_vae: TracedVAE | None = None  # with folding: the VAE of folded calls, traced
        self._skip_vae = SkipVAE()  # compile_calls: compiled functions
        self._gamma: torch.Tensor | None = None  # compile_calls: the call's gamma, written in place
        self._conv_in: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # compile_calls: per task

    @classmethod
    def load(cls, source: SourceName = "auto", *, model_dir: Path | str | None = None,
             device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
             progress: ProgressCallback | None = None) -> ModelStore:
        """Resolve the source, then load the base components onto the device in the dtype."""
        report = progress or (lambda fraction, message: None)
        resolved_device = resolve_device(device)
        resolved_dtype = resolve_dtype(dtype, resolved_device)
        variant = "fp16" if resolved_dtype == torch.float16 else None
        report(0.0, f"Finding weights (source: {source})")
        info = resolve_source(source, model_dir, variant)
        report(0.3, f"Loading SD-Turbo from {info.active} onto {resolved_device} ({resolved_dtype})")
        if info.base_dir is None:
            with tempfile.TemporaryDirectory(prefix="tiny-tokenizer-") as tokenizer_dir:
                base = build_tiny_sd_turbo(resolved_device, resolved_dtype, Path(tokenizer_dir))
        else:
            try:
                base = load_sd_turbo(info.base_dir, resolved_device, resolved_dtype)
            except BaseWeightsError as error:
                raise BaseWeightsError(error.path, f"{error.reason}. {base_weights_fix(info, error.path)}") from error
        report(1.0, "SD-Turbo is resident")
        return cls(base, info)

    @property
    def device(self) -> torch.device:
        return self.base.device

    @property
    def dtype(self) -> torch.dtype:
        return self.base.dtype

    # --- the task registry ---------------------------------------------------------------------

    def add_task(self, name: TaskName, task: TaskModel) -> None:
        """Register a task whose adapters were just injected into the base UNet and VAE."""
        with self.lock:
            self._tasks[name] = task
            self._unavailable.pop(name, None)
            self._unet_adapters.refresh()
            self._vae_adapters.refresh()
            if self._plain_layers is not None:
                self._plain_layers.refresh()

    def mark_unavailable(self, name: TaskName, reason: str) -> None:
        with self.lock:
            self._unavailable[name] = reason

    @property
    def tasks(self) -> Mapping[str, TaskModel]:
        """The installed tasks by name (read-only)."""
        return MappingProxyType(self._tasks)

    @property
    def unavailable_tasks(self) -> dict[str, str]:
        """Tasks that could not be loaded, with the reason."""
        return dict(self._unavailable)

    def task(self, name: TaskName) -> TaskModel:
        """The installed task, or TaskUnavailableError saying why it is not loaded."""
        installed = self._tasks.get(name)
        if installed is None:
            reason = self._unavailable.get(name, "it was not asked for when the models were loaded")
            raise TaskUnavailableError(f"The {name} model is not available: {reason}")
        return installed

    def fold_adapters(self) -> None:
        """From now on, run each task with its LoRA folded into the weights (models.running.folding)
        where it can be; small models only (models.speed.acceleration decides)."""
        with self.lock:
            if self._folding is None:
                self._folding = AdapterFolding(self.base.unet, self.base.vae)
                self._plain_layers = PlainLayers(self.base.unet, self.base.vae)
                self._plain_layers.refresh()

    def trace_unet(self) -> None:
        """From now on, run the UNet of folded calls through traced graphs (models.running.traced_unet).
        Needs fold_adapters: only folded calls run every layer plain."""
        with self.lock:
            if self._folding is None:
                raise RuntimeError("trace_unet needs fold_adapters first: only folded calls run plain layers")
            if self._traced_unet is None:
                self._traced_unet = TracedUNet(self.base.unet)

    def trace_vae(self, *, transposed_upsamplers: bool = True) -> None:
        """From now on, run the VAE of folded calls (plain, and the img2img-turbo one with skips)
        through traced graphs (models.running.traced_vae), their decoders upsampling with
        transposed convolutions unless asked not to. Needs fold_adapters, as trace_unet."""
        with self.lock:
            if self._folding is None:
                raise RuntimeError("trace_vae needs fold_adapters first: only folded calls run plain layers")
            if self._traced_vae is None:
                self._traced_vae = TracedVAE(self.base.vae, transposed_upsamplers=transposed_upsamplers)

    def compile_calls(self, compile_function: Callable[[Callable], Callable]) -> None:
        """From now on, run the img2img-turbo VAE through compile_function's compiled encoder and
        decoder functions (models.running.skip_vae.SkipVAE.compiled), and hand gamma to compiled
        code as tensors that keep their address: a 0-d gamma, LoRA scales held as tensors
        (AdapterSwitch.use_tensor_scales) and one conv_in per task that each call blends into.
        A new gamma then neither recompiles nor gives CUDA graphs a new static input. Call after
        the tasks are installed (accelerate does)."""
        with self.lock:
            self._skip_vae = SkipVAE.compiled(compile_function)
            self._gamma = torch.ones((), device=self.device)
            for switch in (self._unet_adapters, self._vae_adapters, *(t.skip_switch for t in self._tasks.values())):
                switch.use_tensor_scales(self.device)
            self._conv_in = {name: (torch.empty_like(task.conv_in[0]), torch.empty_like(task.conv_in[1]))
                             for name, task in self._tasks.items() if task.conv_in is not None}

    # --- the one way to run the networks -------------------------------------------------------

    @contextmanager
    def model_call(self, task: TaskName | None = None, *, gamma: float = 1.0) -> Iterator[ModelCall]:
        """Hold the lock, enter torch.inference_mode and make exactly the task's adapters active at
        scale gamma (no task: the plain SD-Turbo, every adapter off), or, with fold_adapters on, fold
        them into the weights at gamma and leave every adapter off. Every model call runs in here."""
        with self.lock, torch.inference_mode():
            installed = self.task(task) if task is not None else None
            scales = installed.adapter_scales(gamma) if installed is not None else BASE_ONLY
            folded = False
            if self._folding is not None:
                folded = installed is None or self._folding.foldable(installed)
                self._folding.use(installed if folded else None, gamma)
                if folded:
                    scales = BASE_ONLY  # the LoRA layers run their folded base weights
            self._unet_adapters.apply(scales.unet)
            self._vae_adapters.apply(scales.vae)
            if installed is not None:
                installed.skip_switch.apply(scales.skips)
            if self._gamma is not None:
                self._gamma.fill_(gamma)
            with self._plain_layers.running() if folded and self._plain_layers is not None else nullcontext():
                yield ModelCall(self.base, installed, gamma, self._traced_unet if folded else None,
                                self._traced_vae if folded else None, self._skip_vae, self._gamma,
                                self._conv_in.get(task) if task is not None else None)

    # --- prompts --------------------------------------------------------------------------------

    def prompt_embeddings(self, prompt: str) -> torch.Tensor:
        """The text encoder's last hidden state for the prompt, cached (LRU) per exact prompt text."""
        with self.lock:
            cached = self._prompt_cache.get(prompt)
            if cached is None:
                self.prompt_cache_stats.misses += 1
                cached = self._encode_prompt(prompt)
                self._prompt_cache[prompt] = cached
                while len(self._prompt_cache) > self._prompt_cache_size:
                    self._prompt_cache.popitem(last=False)
            else:
                self.prompt_cache_stats.hits += 1
                self._prompt_cache.move_to_end(prompt)
        embeddings, truncated = cached
        if truncated:
            warnings.warn(
                f"The prompt is longer than {self.base.max_prompt_tokens} tokens; the text encoder "
                "sees only its beginning.", PromptTruncatedWarning, stacklevel=3)
        return embeddings

    def _encode_prompt(self, prompt: str) -> tuple[torch.Tensor, bool]:
        tokenizer = self.base.tokenizer
        max_tokens = self.base.max_prompt_tokens
        full_length = len(tokenizer(prompt, truncation=False, verbose=False).input_ids)
        token_ids = tokenizer(prompt, padding="max_length", max_length=max_tokens, truncation=True,
                              return_tensors="pt").input_ids.to(self.device)
        with torch.inference_mode():
            embeddings = self.base.text_encoder(token_ids)[0]
        return embeddings, full_length > max_tokens
