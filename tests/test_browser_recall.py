"""Issue 12 in a real browser: Playwright drives Debian's chromium (headless, with its fake camera)
against the app on tiny weights. Clicking a history image restores its settings; dropping a PNG
made by the app restores them too, a malformed one gives a notice; the webcam streams frames
through Day <-> night, one at a time, and nothing queued runs after it stops (frames per second
go to test-artifacts/webcam-fps.json)."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

import app
from pipelines import Studio
from pipelines.metadata import Settings, save_png
from tests.conftest import BROWSER_WAIT_MS, CHROMIUM, serving

CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
PHOTO = Path(__file__).resolve().parent.parent / "assets" / "examples" / "photo_day_street.png"
STREAM_SECONDS = 10

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"Debian's chromium is not installed at {CHROMIUM} "
                                                     "(apt-get install chromium); .ci/run installs it"),
]


class CountingStudio:
    """The tiny Studio, recording when each translate call starts and ends, and each edit's mask."""

    def __init__(self, studio: Studio) -> None:
        self.studio = studio
        self.translations: list[tuple[float, float]] = []
        self.edit_masks: list[Image.Image | None] = []
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> object:
        return getattr(self.studio, name)

    def edit(self, *args: object, **kwargs: object) -> Image.Image:
        self.edit_masks.append(kwargs.get("mask"))  # type: ignore[arg-type]
        return self.studio.edit(*args, **kwargs)  # type: ignore[arg-type]

    def translate(self, *args: object, **kwargs: object) -> Image.Image:
        start = time.monotonic()
        try:
            return self.studio.translate(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            with self._lock:
                self.translations.append((start, time.monotonic()))

    def calls_between(self, start: float, end: float) -> list[tuple[float, float]]:
        with self._lock:
            return [call for call in self.translations if start <= call[0] < end]


@pytest.fixture(scope="module")
def counting(studio: Studio) -> CountingStudio:
    return CountingStudio(studio)


@pytest.fixture(scope="module")
def served(counting: CountingStudio) -> Iterator[app.Served]:
    with serving(counting) as served:
        yield served


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 1000}, permissions=["camera"])
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser_context: object, served: app.Served, request: pytest.FixtureRequest) -> Iterator[object]:
    page = browser_context.new_page()  # type: ignore[attr-defined]
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(served.local_url)
    page.wait_for_selector("#banner", timeout=BROWSER_WAIT_MS)
    try:
        yield page
    finally:
        ARTIFACTS.joinpath("browser").mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser" / f"{request.node.name}.png"), full_page=True)
        page.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def history_count(page: object, elem_id: str) -> int:
    return page.locator(f"#{elem_id} .gallery-item img").count()  # type: ignore[attr-defined]


def wait_for_history(page: object, elem_id: str, count: int) -> None:
    page.wait_for_function(  # type: ignore[attr-defined]
        "([id, n]) => document.querySelectorAll(`#${id} .gallery-item img`).length >= n", arg=[elem_id, count],
        timeout=BROWSER_WAIT_MS)


def test_history_click_restores_the_settings(page: object, browser_context: object, served: app.Served) -> None:
    page.get_by_role("tab", name="Edit").click()  # type: ignore[attr-defined]
    prompt = page.locator("#edit-prompt textarea")  # type: ignore[attr-defined]
    prompt.fill("first")
    page.locator("#edit-photo input[type=file]").set_input_files(str(PHOTO))  # type: ignore[attr-defined]
    wait_for_history(page, "edit-history", 1)
    prompt.fill("second")
    prompt.press("Enter")
    wait_for_history(page, "edit-history", 2)
    page.locator("#edit-history .gallery-item img").nth(1).click()  # the older one: made with "first"
    page.wait_for_function(  # type: ignore[attr-defined]
        "() => document.querySelector('#edit-prompt textarea').value === 'first'", timeout=BROWSER_WAIT_MS)
    assert history_count(page, "edit-history") == 2  # restoring runs nothing
    other = browser_context.new_page()  # type: ignore[attr-defined]
    other.goto(served.local_url)
    other.wait_for_selector("#banner", timeout=BROWSER_WAIT_MS)
    other.get_by_role("tab", name="Edit").click()
    other.locator("#edit-photo input[type=file]").set_input_files(str(PHOTO))
    wait_for_history(other, "edit-history", 1)
    assert history_count(other, "edit-history") == 1  # another browser session has only its own result
    other.close()


def test_brushed_mask_limits_the_edit(page: object, counting: CountingStudio, served: app.Served) -> None:
    """A stroke on the mask editor reaches Studio.edit as a mask of the photo's size, and the result
    (the history's PNG, lossless) equals the photo outside it."""
    page.get_by_role("tab", name="Edit").click()  # type: ignore[attr-defined]
    page.locator("#edit-photo input[type=file]").set_input_files(str(PHOTO))  # type: ignore[attr-defined]
    wait_for_history(page, "edit-history", 1)
    page.get_by_text("Edit only part of the photo").click()  # type: ignore[attr-defined]
    canvas = page.locator("#edit-mask canvas").first  # type: ignore[attr-defined]
    canvas.wait_for(timeout=BROWSER_WAIT_MS)
    box = canvas.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x - 40, y)  # type: ignore[attr-defined]
    page.mouse.down()  # type: ignore[attr-defined]
    for step in range(1, 11):
        page.mouse.move(x - 40 + 8 * step, y + 2 * step)  # type: ignore[attr-defined]
    page.mouse.up()  # type: ignore[attr-defined]
    masks_before = len(counting.edit_masks)
    page.locator("#edit-run").click()  # type: ignore[attr-defined]
    wait_for_history(page, "edit-history", 2)
    mask = counting.edit_masks[masks_before]
    photo = np.asarray(Image.open(PHOTO).convert("RGB"))
    assert mask is not None and mask.size == (photo.shape[1], photo.shape[0])
    inside = np.asarray(mask) > 0
    assert 0 < inside.mean() < 0.2  # the stroke, not the whole photo
    newest = page.locator("#edit-history .gallery-item img").first.get_attribute("src")  # type: ignore[attr-defined]
    result = np.asarray(Image.open(io.BytesIO(httpx.get(newest, timeout=60).content)).convert("RGB"))
    assert np.array_equal(result[~inside], photo[~inside])
    assert not np.array_equal(result[inside], photo[inside])


def test_dropped_png_restores_the_settings(page: object, tmp_path: Path) -> None:
    made = tmp_path / "made.png"
    save_png(Image.new("RGB", (64, 48)), made, Settings("edit", (64, 48), "m", prompt="dropped", strength=0.3,
                                                        seed=77))
    page.get_by_role("tab", name="Edit").click()  # type: ignore[attr-defined]
    page.locator("#edit-settings-drop input[type=file]").set_input_files(str(made))  # type: ignore[attr-defined]
    page.wait_for_function(  # type: ignore[attr-defined]
        "() => document.querySelector('#edit-prompt textarea').value === 'dropped'", timeout=BROWSER_WAIT_MS)
    assert page.locator("#edit-seed input").input_value() == "77"  # type: ignore[attr-defined]
    assert page.locator("#edit-strength input[type=number]").input_value() == "0.3"  # type: ignore[attr-defined]


def test_malformed_png_gives_a_notice(page: object, tmp_path: Path) -> None:
    info = PngInfo()
    info.add_text("parameters", "snow\nSteps: 1, Seed: lots")
    Image.new("RGB", (64, 48)).save(tmp_path / "broken.png", pnginfo=info)
    page.get_by_role("tab", name="Edit").click()  # type: ignore[attr-defined]
    page.locator("#edit-settings-drop input[type=file]").set_input_files(  # type: ignore[attr-defined]
        str(tmp_path / "broken.png"))
    page.get_by_text("it is used as a plain image").wait_for(timeout=BROWSER_WAIT_MS)  # type: ignore[attr-defined]
    assert page.locator("#edit-prompt textarea").input_value() == ""  # type: ignore[attr-defined]


def test_webcam_frames_are_translated_one_at_a_time(page: object, counting: CountingStudio) -> None:
    page.get_by_role("tab", name="Day ↔ night").click()  # type: ignore[attr-defined]
    page.get_by_role("tab", name="Webcam").click()  # type: ignore[attr-defined]
    page.get_by_text("Click to Access Webcam").click()  # type: ignore[attr-defined]
    record = page.locator("#translate-webcam button:has-text('Record')")  # type: ignore[attr-defined]
    record.wait_for(timeout=BROWSER_WAIT_MS)
    record.click()
    started = time.monotonic()
    page.wait_for_function(  # type: ignore[attr-defined]
        "() => { const img = document.querySelector('#translate-output img'); return img && img.naturalWidth > 0; }",
        timeout=BROWSER_WAIT_MS)
    time.sleep(STREAM_SECONDS)
    page.locator("#translate-webcam button:has-text('Stop')").click()  # type: ignore[attr-defined]
    stopped = time.monotonic()
    time.sleep(3)
    calls = counting.calls_between(started, time.monotonic())
    after_stop = [call for call in calls if call[0] > stopped + 0.5]
    assert len(calls) >= 3, calls
    assert all(earlier[1] <= later[0] for earlier, later in zip(calls, calls[1:])), "frames overlapped"
    assert after_stop == [], "frames queued during the stream still ran after it stopped"
    seconds = calls[-1][1] - calls[0][0]
    work = sum(end - start for start, end in calls)
    result = {"frames": len(calls), "seconds": round(seconds, 2), "fps": round((len(calls) - 1) / seconds, 2),
              "model_seconds_per_frame": round(work / len(calls), 3), "weights": "tiny", "device": "cpu"}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "webcam-fps.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"webcam translate: {result}")
