"""The app in a real browser: Playwright drives Debian's chromium (headless) against the app on
tiny weights. Draw on the sketch canvas and watch the output follow; move gamma; run each tab's
example. The latency benchmark (for several strokes, mouse-up -> model start -> new image shown)
is timing-dependent and runs only with `pytest --timing`.

Screenshots and the latency benchmark go to test-artifacts/ (gitignored).
"""

from __future__ import annotations

import io
import json
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urljoin

import pytest
import torch
from PIL import Image

import app
from models.weights.sources import default_mini_dir
from pipelines import Studio
from tests.conftest import (BROWSER_WAIT_MS, CHROMIUM, free_port, image_src, pixel_distance, serving,
                            wait_for_new_image)

CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
BENCHMARK_STROKES = 8
TASKS = ("text_to_image", "sketch_to_image", "edge_to_image", "translate", "edit")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"Debian's chromium is not installed at {CHROMIUM} "
                                                     "(apt-get install chromium); .ci/run installs it"),
]


@dataclass(frozen=True)
class Call:
    task: str
    start: float  # time.time(), the clock the browser's Date.now() also reads
    end: float
    prompt: object = None  # text_to_image: its prompt, whether it was a preview and what it returned
    preview: bool = False
    result: object = None


def prompt_colour(prompt: str) -> tuple[int, int, int]:
    """A flat colour per prompt length, far apart for different lengths (tiny weights make nearly
    the same image for every prompt, so their output cannot tell prompts apart)."""
    return (len(prompt) * 37 % 256, len(prompt) * 101 % 256, len(prompt) * 211 % 256)


class TimedStudio:
    """The tiny Studio, recording when each task call starts and ends. With text_delay_s set,
    text_to_image is slower than typing and answers with a flat image in the prompt's colour
    (prompt_colour), to show that live input never builds a backlog and which text is shown."""

    def __init__(self, studio: Studio) -> None:
        self.studio = studio
        self.calls: list[Call] = []
        self.text_delay_s = 0.0
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> object:
        method = getattr(self.studio, name)
        if name not in TASKS:
            return method

        def timed(*args: object, **kwargs: object) -> object:
            start = time.time()
            result = None
            try:
                result = method(*args, **kwargs)
                if name == "text_to_image" and self.text_delay_s:
                    time.sleep(self.text_delay_s)
                    result = Image.new("RGB", result.size, prompt_colour(str(args[0])))  # type: ignore[attr-defined]
                return result
            finally:
                with self._lock:
                    self.calls.append(Call(name, start, time.time(), args[0] if args else None,
                                           bool(kwargs.get("preview")), result))

        return timed

    def calls_since(self, moment: float, task: str) -> list[Call]:
        with self._lock:
            return [call for call in self.calls if call.task == task and call.start >= moment]


@pytest.fixture(scope="module")
def timed_studio(studio: Studio) -> TimedStudio:
    return TimedStudio(studio)


@pytest.fixture(scope="module")
def served(timed_studio: TimedStudio) -> Iterator[app.Served]:
    """The app as app.py serves it here: tiny weights on the CPU, so live previews at 256 px."""
    preview_side = app.preview_side(timed_studio, None)  # type: ignore[arg-type]
    with serving(timed_studio, queue_size=16, preview_side=preview_side) as served:
        yield served  # type: ignore[misc]


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 1000})
        try:
            yield context
        finally:
            context.close()


@contextmanager
def opened_page(browser_context: object, url: str, name: str) -> Iterator[object]:
    """A fresh tab on the app; a screenshot when done; JavaScript errors fail the test."""
    page = browser_context.new_page()  # type: ignore[attr-defined]
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    page.wait_for_selector("#banner", timeout=BROWSER_WAIT_MS)
    try:
        yield page
    finally:
        screenshot(page, name)
        page.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def page(browser_context: object, served: app.Served, request: pytest.FixtureRequest) -> Iterator[object]:
    with opened_page(browser_context, served.local_url, request.node.name) as page:
        yield page


def screenshot(page: object, name: str) -> None:
    ARTIFACTS.joinpath("browser").mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser" / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


# --- page helpers ----------------------------------------------------------------------------------

def open_tab(page: object, *names: str) -> None:
    for name in names:
        page.get_by_role("tab", name=name).click()  # type: ignore[attr-defined]


def canvas_box(page: object, selector: str) -> dict[str, float]:
    canvas = page.locator(selector).first  # type: ignore[attr-defined]
    canvas.scroll_into_view_if_needed()
    if "sketch-canvas" in selector:  # the app's canvas says when its script listens
        page.wait_for_selector(f"{selector}[data-ready=true]", timeout=BROWSER_WAIT_MS)  # type: ignore[attr-defined]
    box = canvas.bounding_box()
    assert box is not None
    return box


def draw_stroke(page: object, box: dict[str, float], index: int) -> None:
    """A slanted stroke inside the middle 80% of the drawing area; each index lands elsewhere."""
    side = min(box["width"], box["height"]) * 0.8
    left = box["x"] + (box["width"] - side) / 2
    top = box["y"] + (box["height"] - side) / 2
    x = left + side * (0.08 + 0.1 * (index % 9))
    page.mouse.move(x, top + side * 0.1)  # type: ignore[attr-defined]
    page.mouse.down()  # type: ignore[attr-defined]
    for step in range(1, 9):
        page.mouse.move(x + 3 * step, top + side * (0.1 + 0.09 * step))  # type: ignore[attr-defined]
    page.mouse.up()  # type: ignore[attr-defined]


# --- behaviour -------------------------------------------------------------------------------------

def test_banner_says_the_weights_are_tiny_and_how_to_get_real_ones(page: object) -> None:
    text = page.inner_text("#banner")  # type: ignore[attr-defined]
    assert "tiny" in text and "not meaningful" in text and "python app.py --source hub" in text


def test_sketch_output_follows_strokes_and_gamma(page: object, timed_studio: TimedStudio) -> None:
    open_tab(page, "Sketch to image")
    page.get_by_role("button", name="Brush").click()  # type: ignore[attr-defined]
    box = canvas_box(page, "#sketch-canvas canvas")
    assert image_src(page, "sketch-output") is None

    draw_stroke(page, box, 0)
    first = wait_for_new_image(page, "sketch-output", None)
    draw_stroke(page, box, 4)
    second = wait_for_new_image(page, "sketch-output", first)
    calls = timed_studio.calls_since(0, "sketch_to_image")
    page.locator("#gamma input[type=range]").fill("0.9")  # type: ignore[attr-defined]
    third = wait_for_new_image(page, "sketch-output", second)

    assert len({first, second, third}) == 3
    latest = timed_studio.calls_since(calls[-1].end, "sketch_to_image")
    assert latest, "moving gamma did not run the model"
    box_height, fit, made = page.eval_on_selector(  # type: ignore[attr-defined]
        "#sketch-output img", "image => [image.getBoundingClientRect().height, getComputedStyle(image).objectFit, "
                              "image.naturalHeight]")
    assert made < 400 < box_height and fit == "contain", (  # Gradio's own scale-down would keep it at its size
        f"a {made} px result in a {box_height} px box with object-fit {fit}: small results must be enlarged")


def test_undo_brings_back_the_earlier_image_and_clear_empties_the_output(page: object) -> None:
    open_tab(page, "Sketch to image")
    box = canvas_box(page, "#sketch-canvas canvas")
    draw_stroke(page, box, 1)
    one_stroke = wait_for_new_image(page, "sketch-output", None)
    draw_stroke(page, box, 6)
    two_strokes = wait_for_new_image(page, "sketch-output", one_stroke)

    page.get_by_role("button", name="Undo").click()  # type: ignore[attr-defined]
    assert wait_for_new_image(page, "sketch-output", two_strokes) == one_stroke  # same sketch, same image
    page.get_by_role("button", name="Clear").click()  # type: ignore[attr-defined]
    page.wait_for_function(  # type: ignore[attr-defined]
        "() => !document.querySelector('#sketch-output img')", timeout=BROWSER_WAIT_MS)


def test_oversized_upload_is_refused_with_a_message(page: object, tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + b"\0" * (11 * 1024 * 1024))
    open_tab(page, "Edit")
    page.locator("#edit-photo input[type=file]").set_input_files(str(big))  # type: ignore[attr-defined]
    toast = page.get_by_text("exceed the maximum allowed size of 10.0 Mb")  # type: ignore[attr-defined]
    toast.wait_for(timeout=BROWSER_WAIT_MS)
    assert image_src(page, "edit-photo") is None


EXAMPLE_RUNS = [
    (("Text to image",), "text-examples", "text-output"),
    (("Sketch to image", "Draw a sketch"), "sketch-examples", "sketch-output"),
    (("Sketch to image", "Edges from a photo"), "edge-examples", "edge-output"),
    (("Day ↔ night",), "translate-examples", "translate-output"),
    (("Edit",), "edit-examples", "edit-output"),
]


@pytest.mark.parametrize(("tabs", "examples", "output"), EXAMPLE_RUNS, ids=[run[1] for run in EXAMPLE_RUNS])
def test_each_tab_runs_its_example(page: object, tabs: tuple[str, ...], examples: str, output: str) -> None:
    open_tab(page, *tabs)
    assert image_src(page, output) is None
    page.locator(f"#{examples} tbody tr").first.click()  # type: ignore[attr-defined]
    wait_for_new_image(page, output, None)


def shown_image(page: object, elem_id: str) -> Image.Image:
    """The image the output shows, fetched as the browser fetched it."""
    src = image_src(page, elem_id)
    assert src is not None
    response = page.request.get(urljoin(page.url, src))  # type: ignore[attr-defined]
    return Image.open(io.BytesIO(response.body())).convert("RGB")


def test_typing_fast_never_builds_a_backlog_and_shows_the_last_text(page: object, timed_studio: TimedStudio) -> None:
    """Each key press changes the prompt; with the model slower than the typing (0.5 s a call here)
    only the newest waiting input runs next (latest wins), so the calls stay few and the last one
    is the whole text, and that image is the one on screen. Live calls use the preview decoder."""
    text = "a lighthouse on a cliff at dusk, oil painting"
    open_tab(page, "Text to image")
    prompt = page.locator("#text-prompt textarea")  # type: ignore[attr-defined]
    timed_studio.text_delay_s = 0.5
    try:
        started = time.time()
        prompt.press_sequentially(text, delay=30)
        typed = time.time()
        deadline = typed + BROWSER_WAIT_MS / 1000
        while not [call for call in timed_studio.calls_since(started, "text_to_image") if call.prompt == text]:
            assert time.time() < deadline, "the whole text never ran"
            time.sleep(0.1)
        time.sleep(1.5)  # anything still queued would start by now
    finally:
        timed_studio.text_delay_s = 0.0
    calls = timed_studio.calls_since(started, "text_to_image")
    print(f"{len(text)} key presses in {typed - started:.1f} s ran {len(calls)} previews: "
          f"{[call.prompt for call in calls]}")
    assert calls[-1].prompt == text
    # one call at a time, each >= 0.5 s: the typing time allows at most this many, plus the one
    # running when typing ended and the one waiting behind it
    assert len(calls) <= (typed - started) / 0.5 + 2, [call.prompt for call in calls]
    assert len(calls) < len(text) / 3
    assert all(call.preview for call in calls)
    shown = shown_image(page, "text-output")
    assert pixel_distance(shown, calls[-1].result) < 3, "the image shown is not the last text's"  # type: ignore[arg-type]


# --- latency benchmark (item 8): numbers are reported, not asserted ------------------------------------

RECORDER = """(id) => {
  const record = { ups: [], shown: [] };
  window.__latency = record;
  window.addEventListener('pointerup', () => record.ups.push(Date.now()), true);
  const root = document.querySelector(`#${id}`);
  let last = root.querySelector('img')?.getAttribute('src') ?? null;
  new MutationObserver(() => {
    const img = root.querySelector('img');
    const src = img?.getAttribute('src');
    if (!src || src === last) return;
    last = src;
    const mark = () => requestAnimationFrame(() => record.shown.push(Date.now()));
    if (img.complete && img.naturalWidth) mark(); else img.addEventListener('load', mark, { once: true });
  }).observe(root, { subtree: true, childList: true, attributes: true, attributeFilter: ['src'] });
}"""


@dataclass(frozen=True)
class Stroke:
    up_to_start_ms: float  # mouse-up -> the server function starts
    work_ms: float  # the server function (the model, for the app)
    end_to_shown_ms: float  # function returns -> the new image is on screen
    up_to_shown_ms: float  # mouse-up -> the new image is on screen


def measure_strokes(page: object, canvas: str, output_id: str, strokes: int,
                    calls_since: Callable[[float], list[Call]]) -> list[Stroke]:
    """Draw strokes one at a time; for each, time mouse-up, the server call and the new image."""
    page.evaluate(RECORDER, output_id)  # type: ignore[attr-defined]
    box = canvas_box(page, canvas)
    rows = []
    for index in range(strokes):
        shown_before = page.evaluate("window.__latency.shown.length")  # type: ignore[attr-defined]
        draw_stroke(page, box, index)
        page.wait_for_function(  # type: ignore[attr-defined]
            "(n) => window.__latency.shown.length > n", arg=shown_before, timeout=BROWSER_WAIT_MS)
        up_ms, shown_ms = page.evaluate(  # type: ignore[attr-defined]
            "[window.__latency.ups.at(-1), window.__latency.shown.at(-1)]")
        call = calls_since(up_ms / 1000)[0]
        rows.append(Stroke(call.start * 1000 - up_ms, (call.end - call.start) * 1000, shown_ms - call.end * 1000,
                           shown_ms - up_ms))
        time.sleep(0.3)
    return rows


def report(name: str, rows: list[Stroke], notes: str) -> str:
    """Medians (the first stroke is left out as a warm-up) as markdown, saved with the raw rows."""
    measured = rows[1:]
    medians = {field: statistics.median(getattr(row, field) for row in measured) for field in Stroke.__annotations__}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"latency-{name}.json").write_text(json.dumps(
        {"name": name, "notes": notes, "medians_ms": medians, "strokes": [asdict(row) for row in rows],
         "cpu_count": os.cpu_count(), "load_average": os.getloadavg()}, indent=2), encoding="utf-8")
    lines = [f"### {name}", notes, "",
             "| median of strokes 2..n (ms) | mouse-up -> start | work | end -> shown | mouse-up -> shown |",
             "|---|---|---|---|---|",
             "| | " + " | ".join(f"{medians[field]:.0f}" for field in Stroke.__annotations__) + " |",
             "", f"{len(measured)} strokes; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", ""]
    text = "\n".join(lines)
    (ARTIFACTS / f"latency-{name}.md").write_text(text, encoding="utf-8")
    return text


def stroke_latency(browser_context: object, timed_studio: TimedStudio, name: str, preview_side: int,
                   notes: str) -> str:
    """Serve the app with this preview side, draw BENCHMARK_STROKES strokes, report the medians."""
    with (serving(timed_studio, queue_size=16, preview_side=preview_side) as served,
          opened_page(browser_context, served.local_url, name) as page):
        open_tab(page, "Sketch to image")
        page.get_by_role("button", name="Brush").click()  # type: ignore[attr-defined]
        rows = measure_strokes(page, "#sketch-canvas canvas", "sketch-output", BENCHMARK_STROKES,
                               lambda since: timed_studio.calls_since(since, "sketch_to_image"))
    assert len(rows) == BENCHMARK_STROKES
    assert all(row.up_to_start_ms >= 0 and row.up_to_shown_ms > row.work_ms for row in rows)
    return report(name, rows, notes)


@pytest.mark.timing
@pytest.mark.parametrize("preview_side", [256, 512])
def test_stroke_latency_benchmark(browser_context: object, timed_studio: TimedStudio, preview_side: int,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    notes = (f"The app's sketch tab: the light canvas sends a 512 px PNG data URL per stroke; the live preview "
             f"runs the model on it scaled to {preview_side} px. Tiny weights, CPU.")
    text = stroke_latency(browser_context, timed_studio, f"app-canvas-preview-{preview_side}", preview_side, notes)
    with capsys.disabled():
        print("\n" + text)


@pytest.mark.timing
@pytest.mark.skipif(not default_mini_dir().exists(), reason="no mini models (assets/mini, or $ONESTEP_MINI_DIR)")
@pytest.mark.parametrize("preview_fraction", [2, 1])
def test_mini_stroke_latency_benchmark(browser_context: object, preview_fraction: int,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The shipped mini models loaded as app.py loads them (model thread, warm-up at the preview
    side), at half the native side (the CPU default) and at the native side."""
    studio = Studio.load("mini", device="cpu", model_thread=True)
    preview_side = studio.limits.native_side // preview_fraction
    studio.warm_up(preview_side)
    notes = (f"The app's sketch tab on the mini models ({studio.acceleration.describe()}), loaded as app.py "
             f"loads them; live previews at {preview_side} px. CPU, {torch.get_num_threads()} torch threads.")
    try:
        text = stroke_latency(browser_context, TimedStudio(studio), f"mini-preview-{preview_side}", preview_side,
                              notes)
    finally:
        studio.model_thread.close()  # type: ignore[union-attr]
    with capsys.disabled():
        print("\n" + text)


SKETCHPAD_VARIANTS = {
    "sketchpad-default": ({}, "change"),
    "sketchpad-512-png": ({"canvas_size": (512, 512), "format": "png"}, "change"),
    "sketchpad-256-png-one-layer": ({"canvas_size": (256, 256), "format": "png", "layers": False}, "change"),
    "sketchpad-256-png-one-layer-input": ({"canvas_size": (256, 256), "format": "png", "layers": False}, "input"),
}


@pytest.mark.timing
@pytest.mark.skipif(os.environ.get("STUDIO_LATENCY_BASELINE") != "1",
                    reason="baseline for ui/LATENCY.md; run with --timing and STUDIO_LATENCY_BASELINE=1")
@pytest.mark.parametrize("variant", list(SKETCHPAD_VARIANTS))
def test_sketchpad_baseline_latency(browser_context: object, variant: str, capsys: pytest.CaptureFixture[str]) -> None:
    """What the issue measured: a plain gr.Sketchpad wired to a function that does nothing."""
    import gradio as gr
    from PIL import Image

    options, event = SKETCHPAD_VARIANTS[variant]
    calls: list[Call] = []

    def nothing(_sketch: object) -> Image.Image:
        now = time.time()
        calls.append(Call("nothing", now, now))
        return Image.new("RGB", (64, 64), (len(calls) * 40 % 256, 0, 0))

    with gr.Blocks() as demo:
        gr.HTML("<p>baseline</p>", elem_id="banner")
        sketchpad = gr.Sketchpad(elem_id="baseline-sketchpad", **options)
        output = gr.Image(elem_id="baseline-output")
        getattr(sketchpad, event)(nothing, sketchpad, output, show_progress="hidden", trigger_mode="always_last")
    demo.queue()
    try:
        demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
        with opened_page(browser_context, demo.local_url, variant) as page:
            page.get_by_role("button", name="Brush").first.click()  # type: ignore[attr-defined]
            rows = measure_strokes(page, "#baseline-sketchpad canvas", "baseline-output", 6,
                                   lambda since: [call for call in calls if call.start >= since])
    finally:
        demo.close()
    text = report(variant, rows, f"gr.Sketchpad({options}) .{event} -> a function that does nothing.")
    with capsys.disabled():
        print("\n" + text)
    assert len(rows) == 6
