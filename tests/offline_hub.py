"""No network for the source tests: an empty Hugging Face cache, an endpoint that refuses
connections, HF_HUB_OFFLINE on or off, and no mini folder unless a test names one."""

from __future__ import annotations

import socket
from pathlib import Path

import huggingface_hub.constants
import pytest

from models.weights.sources import MINI_DIR_VARIABLE


def closed_port() -> int:
    """A local port nothing listens on: connections to it are refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def no_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty Hugging Face cache and an endpoint that refuses connections. huggingface_hub reads
    its environment once at import, so its constants are patched as well as the variables. The
    mini folder points at a folder that does not exist (returned), so `auto` ends at tiny unless
    a test sets ONESTEP_MINI_DIR itself."""
    home, cache = tmp_path / "hf-home", tmp_path / "hf-home" / "hub"
    cache.mkdir(parents=True)
    endpoint = f"http://127.0.0.1:{closed_port()}"
    no_mini = tmp_path / "no-mini"
    for variable, value in {"HF_HOME": home, "HF_HUB_CACHE": cache, "HF_ENDPOINT": endpoint,
                            MINI_DIR_VARIABLE: no_mini}.items():
        monkeypatch.setenv(variable, str(value))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HOME", str(home))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)
    return no_mini


def set_offline(monkeypatch: pytest.MonkeyPatch, offline: bool) -> None:
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", offline)
