"""Where the weights come from: tiny, local, auto (offline, Hub unreachable, complete folder), and
the device and dtype choice. No test reaches the network: the Hub endpoint points at a closed port.
Mini and auto's fallback to it: tests/test_mini.py."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.running.devices import resolve_device, resolve_dtype
from models.weights.sources import DOWNLOAD_COMMAND, complete_cached_snapshot
from models.weights.tiny import write_tiny_hub_layout
from pipelines import Studio
from tests.offline_hub import no_hub, set_offline  # noqa: F401  (no_hub is a fixture)

PROMPT = "a lighthouse at dusk"
MISSING_FILE = "unet/diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def tiny_hub_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_hub_layout(tmp_path_factory.mktemp("local") / "sd-turbo")


def load(source: str, **options: object) -> Studio:
    return Studio.load(source, device="cpu", tasks=(), **options)


def same_image(a: Image.Image, b: Image.Image) -> bool:
    return np.array_equal(np.asarray(a), np.asarray(b))


def test_tiny_loads_in_under_five_seconds(time_limit) -> None:
    start = time.perf_counter()
    studio = load("tiny")
    time_limit(start, 5.0, "loading the tiny source")
    assert studio.source.active == "tiny"
    assert not studio.source.meaningful


@pytest.fixture(scope="module")
def local_studio(tiny_hub_dir: Path) -> Studio:
    return load("local", model_dir=tiny_hub_dir)


@pytest.fixture(scope="module")
def round_trip(studio: Studio, local_studio: Studio, photo: Image.Image) -> list[tuple[np.ndarray, np.ndarray]]:
    """(tiny, local) pixels of the same text_to_image and edit calls."""
    calls = [lambda s: s.text_to_image(PROMPT, seed=2, width=256, height=256),
             lambda s: s.edit(photo, PROMPT, strength=0.5, seed=2)]
    return [(np.asarray(call(studio), np.int16), np.asarray(call(local_studio), np.int16)) for call in calls]


def test_local_round_trip_source(local_studio: Studio, tiny_hub_dir: Path) -> None:
    source = local_studio.source
    assert (source.active, source.requested) == ("local", "local")
    assert source.base_dir == tiny_hub_dir
    assert source.meaningful


def test_local_round_trip_gives_identical_images(round_trip: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """Tiny weights saved in the Hub layout and loaded with `local` give exactly tiny's images."""
    for tiny, local in round_trip:
        assert np.array_equal(tiny, local)


def test_local_folder_missing_a_file_is_refused_naming_it(tmp_path: Path) -> None:
    model_dir = write_tiny_hub_layout(tmp_path / "sd-turbo")
    (model_dir / MISSING_FILE).unlink()
    with pytest.raises(ValueError, match="model_dir") as raised:
        load("local", model_dir=model_dir)
    assert MISSING_FILE in str(raised.value)


@pytest.mark.parametrize("model_dir", [None, "does-not-exist"])
def test_local_without_a_folder_is_refused(tmp_path: Path, model_dir: str | None) -> None:
    with pytest.raises(ValueError, match="model_dir"):
        load("local", model_dir=None if model_dir is None else tmp_path / model_dir)


@pytest.mark.parametrize("source", ["cloud", "", "TINY", None])
def test_unknown_source_is_refused(source: object) -> None:
    with pytest.raises(ValueError, match=rf"source={source!r}"):
        load(source)


def test_auto_offline_without_mini_falls_back_to_tiny_and_says_so(monkeypatch: pytest.MonkeyPatch,
                                                                    no_hub: Path) -> None:
    set_offline(monkeypatch, True)
    assert complete_cached_snapshot() is None
    studio = load("auto")
    source = studio.source
    assert (source.active, source.requested) == ("tiny", "auto")
    assert "HF_HUB_OFFLINE" in source.reason
    assert f"the mini models are not at {no_hub}" in source.reason
    assert not source.meaningful
    assert "not meaningful" in source.describe()
    assert DOWNLOAD_COMMAND in source.describe()
    assert studio.text_to_image(PROMPT, seed=0, width=256, height=256).size == (256, 256)


@pytest.mark.usefixtures("no_hub")
def test_auto_with_the_hub_unreachable_falls_back_fast(monkeypatch: pytest.MonkeyPatch, time_limit) -> None:
    set_offline(monkeypatch, False)
    start = time.perf_counter()
    studio = load("auto")
    time_limit(start, 10.0, "falling back from an unreachable Hub")
    assert (studio.source.active, studio.source.requested) == ("tiny", "auto")
    assert "could not be reached" in studio.source.reason
    assert DOWNLOAD_COMMAND in studio.source.describe()


@pytest.mark.usefixtures("no_hub")
def test_auto_prefers_a_complete_model_dir(monkeypatch: pytest.MonkeyPatch, tiny_hub_dir: Path) -> None:
    set_offline(monkeypatch, True)
    studio = load("auto", model_dir=tiny_hub_dir)
    assert (studio.source.active, studio.source.requested) == ("local", "auto")
    assert studio.source.base_dir == tiny_hub_dir
    assert studio.source.meaningful


def test_cpu_defaults_to_float32() -> None:
    cpu = torch.device("cpu")
    assert resolve_dtype(None, cpu) == resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("bf16", cpu) == torch.bfloat16


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available on this machine")
def test_cuda_when_unavailable_is_refused() -> None:
    assert resolve_device(None) == resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="device='cuda'"):
        resolve_device("cuda")


@pytest.mark.parametrize("dtype", ["float8", "half-ish", "int8"])
def test_unknown_dtype_is_refused(dtype: str) -> None:
    with pytest.raises(ValueError, match=rf"dtype={dtype!r}"):
        resolve_dtype(dtype, torch.device("cpu"))


@pytest.mark.parametrize("dtype", ["fp16", "float16", torch.float16])
def test_half_precision_on_cpu_is_refused(dtype: str | torch.dtype) -> None:
    with pytest.raises(ValueError, match="dtype=float16"):
        resolve_dtype(dtype, torch.device("cpu"))
