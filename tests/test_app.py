"""The launched app on tiny weights, through gradio_client and plain HTTP: the five named
endpoints and their plumbing (parameter names and order, images in and out, a user error's
message), login, upload limit, file serving and the queue limit. What the Studio itself checks
(seeds, directions, each bad argument) is tested at the Studio level, not again over HTTP."""

from __future__ import annotations

import inspect
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import app
from pipelines import Studio
from tests.conftest import model_call_threads, opened, serving

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "examples"
SKETCH = ASSETS / "sketch_house.png"
PHOTO = ASSETS / "photo_day_street.png"  # 512x384
ENDPOINTS = ("text_to_image", "sketch_to_image", "edge_to_image", "translate", "edit")


@pytest.fixture(scope="module")
def served(studio: Studio) -> Iterator[app.Served]:
    with serving(studio) as running:
        yield running  # type: ignore[misc]


@pytest.fixture(scope="module")
def client(served: app.Served) -> Client:
    return Client(served.local_url, verbose=False)


# --- every endpoint, named as in the Studio API ------------------------------------------------

def test_named_endpoints_take_the_studio_parameter_names(client: Client, studio: Studio) -> None:
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert sorted(endpoints) == sorted(f"/{name}" for name in ENDPOINTS)
    ui_only = {"text_to_image": {"preview"}}  # the live preview's decoder; the API always uses the full VAE
    for name in ENDPOINTS:
        studio_names = [parameter for parameter in inspect.signature(getattr(studio, name)).parameters
                        if parameter not in ui_only.get(name, set())]
        api_names = [parameter["parameter_name"] for parameter in endpoints[f"/{name}"]["parameters"]]
        assert api_names == studio_names, name


def test_text_to_image_returns_an_image_of_the_requested_size(client: Client) -> None:
    result = client.predict("a lighthouse at dusk", 3, 320, 256, api_name="/text_to_image")
    assert opened(result).size == (320, 256)


def test_sketch_to_image_returns_an_image_at_the_sketch_size(client: Client) -> None:
    result = client.predict(handle_file(SKETCH), "a cottage", 0.4, 1, api_name="/sketch_to_image")
    assert opened(result).size == Image.open(SKETCH).size


def test_edge_to_image_returns_the_edge_map_and_the_image(client: Client) -> None:
    edges, image = client.predict(handle_file(PHOTO), "a street", 100, 200, api_name="/edge_to_image")
    edge_map = np.asarray(opened(edges))
    assert opened(image).size == edge_map.shape[1::-1] == Image.open(PHOTO).size
    assert set(np.unique(edge_map)) <= {0, 255} and edge_map.max() == 255  # a binary Canny map with edges


def test_edit_returns_an_image_at_the_photo_size(client: Client) -> None:
    result = client.predict(handle_file(PHOTO), "the street in snow", 0.5, 2, api_name="/edit")
    assert opened(result).size == Image.open(PHOTO).size


def test_readme_api_example_runs(served: app.Served, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    readme = (ASSETS.parent.parent / "README.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)  # type: ignore[union-attr]
    assert '"http://127.0.0.1:7860"' in code
    monkeypatch.chdir(ASSETS.parent.parent)
    exec(code.replace("http://127.0.0.1:7860", served.local_url), {})
    paths = capsys.readouterr().out.split()[-3:]
    assert [opened(path).size for path in paths] == [(512, 512), Image.open(PHOTO).size, Image.open(SKETCH).size]


# --- bad input comes back with the pipeline's message ------------------------------------------

@pytest.mark.parametrize(("endpoint", "arguments", "message"), [
    ("/text_to_image", ("a cat", -1, 512, 512), "seed=-1 must be a whole number from 0 to 4294967295"),
    ("/edit", (None, "snow", 0.5, 0), "image is missing"),  # an empty image input reaches the Studio as None
])
def test_bad_input_is_refused_with_the_pipeline_message(client: Client, endpoint: str, arguments: tuple,
                                                        message: str) -> None:
    with pytest.raises(AppError, match=message):
        client.predict(*arguments, api_name=endpoint)


# --- serving limits ------------------------------------------------------------------------------

def test_upload_over_the_limit_is_refused_with_a_clear_message(served: app.Served, tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * (11 * 1024 * 1024))
    with big.open("rb") as file:
        response = httpx.post(f"{served.local_url}/gradio_api/upload", files={"files": file}, timeout=60)
    assert response.status_code == 413
    assert "maximum" in response.text.lower() and "size" in response.text.lower()


@pytest.mark.parametrize("path", [Path(app.__file__), Path("/etc/passwd"), ASSETS.parent / "make_examples.py"])
def test_files_outside_the_app_folders_are_not_served(served: app.Served, path: Path) -> None:
    response = httpx.get(f"{served.local_url}/gradio_api/file={path}")
    assert response.status_code in (403, 404)


def test_example_files_are_served(served: app.Served) -> None:
    response = httpx.get(f"{served.local_url}/gradio_api/file={SKETCH}")
    assert response.status_code == 200 and response.content == SKETCH.read_bytes()


# --- login ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def served_with_login(studio: Studio) -> Iterator[app.Served]:
    with serving(studio, auth=[("ana", "right-horse"), ("ben", "battery:staple")]) as running:
        yield running  # type: ignore[misc]


def test_wrong_password_is_refused(served_with_login: app.Served) -> None:
    with pytest.raises(ValueError, match="(?i)login|credential|auth"):
        Client(served_with_login.local_url, auth=("ana", "wrong"), verbose=False)


def test_no_login_no_api_and_no_page_config(served_with_login: app.Served) -> None:
    assert httpx.get(f"{served_with_login.local_url}/config").status_code == 401
    assert httpx.get(f"{served_with_login.local_url}/gradio_api/info").status_code == 401
    response = httpx.post(f"{served_with_login.local_url}/gradio_api/queue/join",
                          json={"data": ["a cat", 0, 256, 256], "fn_index": 0, "session_hash": "x"})
    assert response.status_code in (401, 403)


def test_right_password_opens_the_api(served_with_login: app.Served) -> None:
    client = Client(served_with_login.local_url, auth=("ben", "battery:staple"), verbose=False)
    assert opened(client.predict("a cat", 0, 256, 256, api_name="/text_to_image")).size == (256, 256)


# --- the queue has a size limit and says so --------------------------------------------------------

class HeldStudio:
    """The tiny Studio, but text_to_image waits until released, so the queue can be filled."""

    def __init__(self, studio: Studio) -> None:
        self.studio = studio
        self.entered = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self.studio, name)

    def text_to_image(self, prompt: str, *, seed: int = 0, width: int | None = None,
                      height: int | None = None) -> Image.Image:
        self.entered.set()
        assert self.release.wait(timeout=120)
        return self.studio.text_to_image(prompt, seed=seed, width=width, height=height)


def test_full_queue_refuses_with_a_message(studio: Studio) -> None:
    held = HeldStudio(studio)
    with serving(held, queue_size=1) as served:
        client = Client(served.local_url, verbose=False)
        running = client.submit("one", 0, 256, 256, api_name="/text_to_image")
        assert held.entered.wait(timeout=60)
        waiting = client.submit("two", 0, 256, 256, api_name="/text_to_image")
        wait_until_queued(waiting)
        refused = client.submit("three", 0, 256, 256, api_name="/text_to_image")
        with pytest.raises(Exception, match="(?i)queue is full"):
            refused.result(timeout=60)
        held.release.set()
        assert opened(running.result(timeout=120)).size == (256, 256)
        assert opened(waiting.result(timeout=120)).size == (256, 256)


def wait_until_queued(job: object, timeout: float = 60) -> None:
    event = threading.Event()
    deadline = threading.Timer(timeout, event.set)
    deadline.start()
    try:
        while not event.is_set():
            if job.status().code.value in ("IN_QUEUE", "QUEUE"):  # type: ignore[attr-defined]
                return
            event.wait(0.05)
        raise AssertionError("the second request never reached the queue")
    finally:
        deadline.cancel()


# --- the app as app.py loads it: one model thread -------------------------------------------------

def test_the_app_runs_every_model_call_on_its_model_thread() -> None:
    """app.load_studio loads on a model thread; API calls (Gradio worker threads) run there, and a
    pipeline's error still reaches the client with its message."""
    studio, preview_side = app.load_studio(app.parser().parse_args(["--source", "tiny", "--device", "cpu"]))
    assert studio.model_thread is not None
    model_ident = studio.model_thread.run(threading.get_ident)
    called_on = model_call_threads(studio)
    try:
        with serving(studio, preview_side=preview_side) as running:
            client = Client(running.local_url, verbose=False)  # type: ignore[attr-defined]
            result = client.predict(handle_file(SKETCH), "a cottage", 0.4, 1, api_name="/sketch_to_image")
            with pytest.raises(AppError, match="seed=-1 must be a whole number"):
                client.predict("a cat", -1, 512, 512, api_name="/text_to_image")
    finally:
        studio.model_thread.close()
    assert opened(result).size == Image.open(SKETCH).size
    assert called_on and set(called_on) == {model_ident} != {threading.get_ident()}
