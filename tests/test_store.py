"""The model store: one resident SD-Turbo shared by the tasks, the prompt-embedding LRU cache,
thread safety, the task registry and the one model-call context every pipeline enters."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from PIL import Image
from torch import nn
from transformers import CLIPTextModel

from models.running.adapters import lora_layers
from models.running.errors import TaskUnavailableError
from models.running.store import ModelStore
from models.speed.acceleration import Acceleration
from pipelines import Studio

NETWORK_CLASSES: tuple[type[nn.Module], ...] = (CLIPTextModel, UNet2DConditionModel, AutoencoderKL)


def counting_init(cls: type[nn.Module], built: Counter[str]) -> Callable[..., None]:
    original = cls.__init__

    @functools.wraps(original)  # keeps the signature that from_pretrained inspects
    def init(self: nn.Module, *args: object, **kwargs: object) -> None:
        built[cls.__name__] += 1
        original(self, *args, **kwargs)

    return init


@pytest.fixture
def constructions(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts the text encoders, UNets and VAEs built from now on, by class name."""
    built: Counter[str] = Counter()
    for cls in NETWORK_CLASSES:
        monkeypatch.setattr(cls, "__init__", counting_init(cls, built))
    return built


@dataclass
class CallRecord:
    """Which module objects ran, and the storage of their parameters when they ran."""

    modules: set[int] = field(default_factory=set)
    parameters: dict[str, int] = field(default_factory=dict)


def recording_hook(record: CallRecord, owner: nn.Module) -> Callable[..., None]:
    def hook(module: nn.Module, args: object, output: object) -> None:
        record.modules.add(id(module))
        record.parameters.update({name: p.data_ptr() for name, p in owner.named_parameters()})

    return hook


@pytest.fixture(scope="module")
def studio() -> Studio:
    """The tiny Studio with the UNet and VAE run eagerly: the hooks below see Python module calls,
    which traced networks do not make (tests/test_traced_unet.py and tests/test_traced_vae.py
    check that they read the same tensors)."""
    eager = replace(Acceleration.for_device(torch.device("cpu")), trace_unet=False, trace_vae=False)
    return Studio.load("tiny", device="cpu", acceleration=eager)


@pytest.fixture
def watched(studio: Studio) -> Iterator[dict[str, CallRecord]]:
    """Forward hooks on the store's text encoder, UNet and VAE (its encoder and decoder, since the
    pipelines call vae.encode and vae.decode rather than vae.forward); the hooks are removed after."""
    base = studio.store.base
    targets = {"text_encoder": (base.text_encoder, base.text_encoder), "unet": (base.unet, base.unet),
               "vae.encoder": (base.vae.encoder, base.vae), "vae.decoder": (base.vae.decoder, base.vae)}
    records = {name: CallRecord() for name in targets}
    handles = [hooked.register_forward_hook(recording_hook(records[name], owner))
               for name, (hooked, owner) in targets.items()]
    yield records
    for handle in handles:
        handle.remove()


def snapshot(records: dict[str, CallRecord]) -> dict[str, CallRecord]:
    """A copy of the records; the records are cleared for the next call."""
    result = {name: CallRecord(set(record.modules), dict(record.parameters)) for name, record in records.items()}
    for record in records.values():
        record.modules.clear()
        record.parameters.clear()
    return result


def test_text_to_image_and_edit_share_one_encoder_unet_and_vae(
        studio: Studio, photo: Image.Image, watched: dict[str, CallRecord], constructions: Counter[str]) -> None:
    """Both tasks run the very module objects of the store, with the same parameter tensors (same
    storage), and build no network of their own."""
    studio.text_to_image("shared modules, text to image", seed=0, width=256, height=256)
    by_text_to_image = snapshot(watched)
    studio.edit(photo, "shared modules, edit", strength=0.5, seed=0)
    by_edit = snapshot(watched)

    base = studio.store.base
    expected = {"text_encoder": base.text_encoder, "unet": base.unet, "vae.decoder": base.vae.decoder}
    for name, module in expected.items():
        assert by_text_to_image[name].modules == by_edit[name].modules == {id(module)}, name
        assert by_text_to_image[name].parameters == by_edit[name].parameters, name
        assert by_edit[name].parameters, name
    assert by_edit["vae.encoder"].modules == {id(base.vae.encoder)}
    assert by_text_to_image["vae.encoder"].modules == set()
    # the very tensors of the resident UNet (a folded call runs the layers peft wraps, so the names
    # seen inside the call lack peft's `.base_layer` and the adapters' own weights)
    unet_storage = {p.data_ptr() for p in base.unet.parameters()}
    assert set(by_edit["unet"].parameters.values()) <= unet_storage
    assert not constructions


def test_loading_builds_each_network_once(constructions: Counter[str], photo: Image.Image) -> None:
    """One text encoder, UNet and VAE per store; running the tasks builds no more."""
    studio = Studio.load("tiny", device="cpu", tasks=())
    assert constructions == {cls.__name__: 1 for cls in NETWORK_CLASSES}
    studio.text_to_image("built once", seed=0, width=256, height=256)
    studio.edit(photo.resize((160, 120)), "built once", strength=0.5, seed=0)
    assert constructions == {cls.__name__: 1 for cls in NETWORK_CLASSES}


def test_moving_the_strength_slider_reuses_the_prompt_embeddings(
        studio: Studio, photo: Image.Image, watched: dict[str, CallRecord]) -> None:
    stats = studio.store.prompt_cache_stats
    studio.edit(photo, "a cache test prompt", strength=0.3, seed=0)
    hits, misses = stats.hits, stats.misses
    assert watched["text_encoder"].modules
    snapshot(watched)
    studio.edit(photo, "a cache test prompt", strength=0.6, seed=0)
    assert (stats.hits, stats.misses) == (hits + 1, misses)
    assert not watched["text_encoder"].modules


def test_prompt_cache_evicts_the_least_recently_used(studio: Studio) -> None:
    """A second store on the same resident base (nothing reloaded) with room for two prompts."""
    store = ModelStore(studio.store.base, studio.store.source, prompt_cache_size=2)
    stats = store.prompt_cache_stats
    first = store.prompt_embeddings("first")
    store.prompt_embeddings("second")
    store.prompt_embeddings("first")  # now "second" is the least recently used
    store.prompt_embeddings("third")  # evicts "second"
    assert (stats.hits, stats.misses) == (1, 3)
    assert store.prompt_embeddings("first") is first
    assert (stats.hits, stats.misses) == (2, 3)
    store.prompt_embeddings("second")
    assert (stats.hits, stats.misses) == (2, 4)


Call = Callable[[Studio], Image.Image]


def mixed_calls(photo: Image.Image) -> list[Call]:
    """Six calls, text to image and edit, each with its own prompt and seed."""
    small = photo.resize((160, 120))
    return [
        lambda s: s.text_to_image("thread one", seed=1, width=256, height=256),
        lambda s: s.edit(small, "thread two", strength=0.4, seed=2),
        lambda s: s.text_to_image("thread three", seed=3, width=256, height=256),
        lambda s: s.edit(small, "thread four", strength=0.8, seed=4),
        lambda s: s.text_to_image("thread five", seed=5, width=264, height=256),
        lambda s: s.edit(photo, "thread six", strength=0.6, seed=6),
    ]


def test_concurrent_calls_give_the_images_of_sequential_calls(studio: Studio, photo: Image.Image) -> None:
    """Threads first, with prompts not seen before (so cache misses race too), then one by one;
    the cached embeddings must also equal those a fresh store computes."""
    calls = mixed_calls(photo)
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        concurrent = list(pool.map(lambda call: call(studio), calls))
    sequential = [call(studio) for call in calls]
    for index, (threaded, alone) in enumerate(zip(concurrent, sequential)):
        assert np.array_equal(np.asarray(threaded), np.asarray(alone)), f"call {index}"
    fresh = ModelStore(studio.store.base, studio.store.source)
    for prompt in ("thread one", "thread two", "thread six"):
        assert torch.equal(studio.store.prompt_embeddings(prompt), fresh.prompt_embeddings(prompt)), prompt


# --- the one model-call context ---------------------------------------------------------------------

def lock_is_free(store: ModelStore) -> bool:
    """Whether another thread could take the store's lock right now."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        taken = pool.submit(lambda: store.lock.acquire(blocking=False)).result()
        if taken:
            pool.submit(store.lock.release).result()
    return taken


def test_a_model_call_holds_the_lock_in_inference_mode_with_exactly_the_tasks_adapters() -> None:
    store = Studio.load("tiny", device="cpu", acceleration=Acceleration(fold_lora=False)).store
    task = store.tasks["day_to_night"]
    with store.model_call("day_to_night", gamma=0.3) as call:
        assert call.task is task and call.gamma == 0.3
        assert torch.is_inference_mode_enabled() and not lock_is_free(store)
        active = {name for layer in lora_layers(store.base.unet) for name in layer.active_adapters}
        assert active == set(task.unet_adapters)
        assert {name for layer in lora_layers(store.base.vae) for name in layer.active_adapters} == {task.vae_adapter}
        layer = next(layer for layer in lora_layers(store.base.unet) if task.unet_adapters[0] in layer.scaling)
        adapter = task.unet_adapters[0]
        assert layer.scaling[adapter] == pytest.approx(0.3 * layer.lora_alpha[adapter] / layer.r[adapter])
    assert lock_is_free(store) and not torch.is_inference_mode_enabled()
    with store.model_call() as call:
        assert call.task is None
        assert all(not layer.active_adapters for layer in lora_layers(store.base.unet) + lora_layers(store.base.vae))
        with pytest.raises(RuntimeError, match="without a task"):
            call.require_task()


def test_every_pipeline_runs_in_a_model_call(studio: Studio, photo: Image.Image,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str | None] = []
    original = studio.store.model_call

    def recording(task: str | None = None, **options: float) -> object:
        opened.append(task)
        return original(task, **options)

    monkeypatch.setattr(studio.store, "model_call", recording)
    sketch = np.full((64, 64), 255, np.uint8)
    sketch[10:50, 30] = 0
    studio.text_to_image("x", width=256, height=256)
    studio.edit(photo, "x")
    studio.sketch_to_image(sketch, "x")
    studio.edge_to_image(photo, "x")
    studio.translate(photo, direction="night_to_day")
    assert opened == [None, None, "sketch_to_image", "edge_to_image", "night_to_day"]


def test_a_task_not_installed_is_refused_by_the_registry_with_the_reason(studio: Studio) -> None:
    store = ModelStore(studio.store.base, studio.store.source)
    store.mark_unavailable("day_to_night", "day2night.pkl was not found")
    with pytest.raises(TaskUnavailableError, match="day2night.pkl was not found"):
        with store.model_call("day_to_night"):
            pass
    with pytest.raises(TaskUnavailableError, match="not asked for"):
        store.task("edge_to_image")
