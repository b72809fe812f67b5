"""The model store: SD-Turbo loaded once per (device, dtype), kept resident and shared by every task.

One store is one device and dtype. It owns the lock that serialises model calls (one GPU runs one
forward at a time; it also keeps per-call adapter settings from leaking between threads) and the
LRU cache of prompt embeddings, so moving a slider does not re-encode an unchanged prompt.
"""

from __future__ import annotations

import tempfile
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from models.adapters import AdapterScales, AdapterSwitch
from models.devices import resolve_device, resolve_dtype
from models.sd_turbo import SDTurbo, build_tiny_sd_turbo, load_sd_turbo
from models.sources import SourceInfo, resolve_source
from models.specs import SourceName

if TYPE_CHECKING:
    from models.img2img_turbo import TaskModel

ProgressCallback = Callable[[float, str], None]
PROMPT_CACHE_SIZE = 64


class PromptTruncatedWarning(UserWarning):
    """A prompt was longer than the text encoder's 77 tokens and was cut."""


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0


class ModelStore:
    """Resident SD-Turbo components plus what tasks add on top of them."""

    def __init__(self, base: SDTurbo, source: SourceInfo, prompt_cache_size: int = PROMPT_CACHE_SIZE) -> None:
        self.base = base
        self.source = source
        self.lock = threading.RLock()
        self.prompt_cache_stats = CacheStats()
        self._prompt_cache: OrderedDict[str, tuple[torch.Tensor, bool]] = OrderedDict()
        self._prompt_cache_size = prompt_cache_size
        self._unet_adapters = AdapterSwitch(base.unet)
        self._vae_adapters = AdapterSwitch(base.vae)
        self.tasks: dict[str, TaskModel] = {}
        self.unavailable_tasks: dict[str, str] = {}

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
            base = load_sd_turbo(info.base_dir, resolved_device, resolved_dtype)
        report(1.0, "SD-Turbo is resident")
        return cls(base, info)

    @property
    def device(self) -> torch.device:
        return self.base.device

    @property
    def dtype(self) -> torch.dtype:
        return self.base.dtype

    def use_adapters(self, unet: AdapterScales | None = None, vae: AdapterScales | None = None) -> None:
        """Make exactly these LoRA adapters active (none: the plain SD-Turbo). Call under the lock."""
        self._unet_adapters.apply(unet or {})
        self._vae_adapters.apply(vae or {})

    def adapters_changed(self) -> None:
        """Call after injecting adapters into the base UNet or VAE."""
        self._unet_adapters.refresh()
        self._vae_adapters.refresh()

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
