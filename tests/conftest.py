"""Shared fixtures and helpers: one tiny random-weight Studio for the whole session (CPU, no
network), a test photo, free ports and a served app, and the opt-in timing checks.

Timing-dependent checks (a wall-clock budget, the stroke latency benchmark) depend on the machine
and its load, so they are off by default: `pytest --timing` runs them. Tests marked `timing` are
skipped without it; a time limit inside a behaviour test goes through the `time_limit` fixture,
which checks it only with --timing.
"""

from __future__ import annotations

import fcntl
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.speed.acceleration import Acceleration
from pipelines import Studio

TIMING_OPTION = "--timing"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(TIMING_OPTION, action="store_true", default=False,
                     help="also run the timing-dependent checks and the latency benchmark")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption(TIMING_OPTION):
        return
    skip = pytest.mark.skip(reason=f"timing-dependent; run with {TIMING_OPTION}")
    for item in items:
        if "timing" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def one_browser_at_a_time(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests marked `browser` take turns across scripts/test.sh's worker processes (an exclusive
    lock on a file their temporary folders share): with two pages driven at once, the webcam
    stream's first frame sometimes never came (2 runs in 5)."""
    if request.node.get_closest_marker("browser") is None:
        yield
        return
    with (tmp_path_factory.getbasetemp().parent / "browser.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# Training flags for tests that compare two runs weight for weight (several processes, gradient
# checkpointing): exact only in float32, where bf16 autocast (the default on CPUs with bf16
# instructions) rounds each variant's sums its own way
FLOAT32_TRAINING = ["--mixed-precision", "no"]


@pytest.fixture(scope="module")
def fresh_accelerate() -> Iterator[None]:
    """accelerate keeps one mixed precision per process and refuses another: a module whose runs
    train with FLOAT32_TRAINING in this process, beside other files' runs at the default, forgets
    that state before and after (as accelerate's own test case does). Name it in the module's
    pytestmark, so that it comes before the module's own fixtures that train."""
    from accelerate.state import AcceleratorState, GradientState

    def reset() -> None:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()

    reset()
    yield
    reset()


@pytest.fixture
def time_limit(request: pytest.FixtureRequest) -> Callable[[float, float, str], None]:
    """check(started, seconds, what): with --timing, assert that no more than `seconds` passed since
    `started` (a time.perf_counter() value); without it, nothing is checked."""
    enabled = request.config.getoption(TIMING_OPTION)

    def check(started: float, seconds: float, what: str) -> None:
        elapsed = time.perf_counter() - started
        if enabled:
            assert elapsed < seconds, f"{what} took {elapsed:.1f} s; the limit is {seconds} s"

    return check


@pytest.fixture(scope="session")
def studio() -> Studio:
    return Studio.load(source="tiny", device="cpu")


@pytest.fixture(scope="session")
def photo() -> Image.Image:
    """A smooth 320x240 test photo: gradients plus a bright disc (not a multiple of 64)."""
    ys, xs = np.mgrid[0:240, 0:320]
    red = xs * 255 // 319
    green = ys * 255 // 239
    blue = np.where((xs - 200) ** 2 + (ys - 110) ** 2 < 60**2, 255, 40)
    return Image.fromarray(np.stack([red, green, blue], axis=-1).astype(np.uint8))


def float32_cpu_defaults() -> Acceleration:
    """Studio.load's CPU settings without bfloat16 networks: for tests that compare images with
    float32 reference code (bf16 against fp32 is tests/test_bfloat16.py's)."""
    return replace(Acceleration.for_device(torch.device("cpu")), bfloat16=())


def model_call_threads(studio: Studio) -> list[int]:
    """From now on, the ident of the thread of each model call the studio's store opens."""
    threads: list[int] = []
    model_call = studio.store.model_call

    def recording_model_call(*args: object, **kwargs: object) -> object:
        threads.append(threading.get_ident())
        return model_call(*args, **kwargs)

    studio.store.model_call = recording_model_call  # type: ignore[method-assign]
    return threads


def line_sketch(side: int = 64) -> np.ndarray:
    """A white square with two dark strokes, as drawn on the sketch canvas."""
    drawing = np.full((side, side), 255, np.uint8)
    drawing[side // 4: side * 3 // 4, side // 3] = drawing[side * 5 // 8, side // 6: side * 5 // 6] = 0
    return drawing


def pixel_distance(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).mean())


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


CHROMIUM = Path("/usr/bin/chromium")  # Debian's; the browser tests and scripts/screenshot.py drive it
BROWSER_WAIT_MS = 90_000  # generous: the CPU is shared with other work


def image_src(page: object, elem_id: str) -> str | None:
    """The src of the loaded image inside the element `elem_id` on a Playwright page, or None."""
    return page.evaluate(  # type: ignore[attr-defined]
        """(id) => { const img = document.querySelector(`#${id} img`);
                     return img && img.complete && img.naturalWidth > 0 ? img.getAttribute('src') : null; }""",
        elem_id)


def wait_for_new_image(page: object, elem_id: str, previous: str | None,
                       timeout_ms: int = BROWSER_WAIT_MS) -> str:
    """Wait until the element shows a loaded image other than `previous`; return its src."""
    page.wait_for_function(  # type: ignore[attr-defined]
        """([id, previous]) => { const img = document.querySelector(`#${id} img`);
               return img && img.complete && img.naturalWidth > 0 && img.getAttribute('src') !== previous; }""",
        arg=[elem_id, previous], timeout=timeout_ms)
    src = image_src(page, elem_id)
    assert src is not None
    return src


@contextmanager
def serving(studio: object, *, queue_size: int = 8, preview_side: int | None = None,
            auth: list[tuple[str, str]] | None = None) -> Iterator[object]:
    """The app as app.py builds and serves it, on a free local port; closed afterwards. Yields
    app.Served. studio may be a Studio or a stand-in with the same methods."""
    import app
    from ui import build_app

    demo = build_app(studio, queue_size=queue_size, preview_side=preview_side)  # type: ignore[arg-type]
    try:
        yield app.serve(demo, host="127.0.0.1", port=free_port(), auth=auth)
    finally:
        demo.close()


def opened(path: str | Path) -> Image.Image:
    """An image file the API returned, as RGB."""
    with Image.open(path) as image:
        return image.convert("RGB")
