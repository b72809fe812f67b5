"""Faults a user meets, played through Studio.load, app.py and the HTTP API on tiny weights: a task
file that is missing, truncated, damaged, of the wrong shape or of another task; a damaged file in
the conversion cache; a damaged base file; a taken port; bad uploads; an exception inside a model
call; Ctrl-C while loading; a full disk while the batch command writes. Each test checks the
message the user gets and that nothing was lost."""

from __future__ import annotations

import errno
import io
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from safetensors.torch import load_file, save_file

import models.weights.specs
import pipelines.batch as batch
from models.running.errors import TaskUnavailableError
from models.weights.base_loading import BaseWeightsError
from models.weights.checkpoints import load_task_weights
from models.weights.sources import SHIPPED_MINI_DIR, SourceInfo, base_weights_fix
from models.weights.specs import CHECKPOINTS
from models.weights.task_loading import read_task_weights
from models.weights.tiny import build_tiny_networks, write_tiny_hub_layout
from pipelines import Studio
from pipelines.metadata import read_settings
from tests import reference_img2img as ref
from tests.mini_folder import write_fake_mini
from tests.conftest import free_port, opened, serving
from tests.test_app_cli import APP, STARTUP_TIMEOUT_S, Running, offline_env
from tests.test_checkpoints import file_server  # noqa: F401  (fixture)

BROKEN = "clear_to_rainy"  # the task whose file each case breaks
GOOD = "edge_to_image"  # a task that must keep working beside it
TASKS = (BROKEN, GOOD)
BROKEN_FILE = CHECKPOINTS[BROKEN].converted_filename


@pytest.fixture(scope="module")
def pristine_mini(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A mini folder (the tiny model, random task weights) that no test changes."""
    return write_fake_mini(tmp_path_factory.mktemp("mini") / "mini", tasks=TASKS)


@pytest.fixture
def mini(pristine_mini: Path, tmp_path: Path) -> Path:
    """A copy of the mini folder for one test to break."""
    return Path(shutil.copytree(pristine_mini, tmp_path / "mini"))


@pytest.fixture(scope="module")
def reference(pristine_mini: Path) -> Studio:
    """The mini folder's studio with only the good task: what that task must still give."""
    return Studio.load("mini", model_dir=pristine_mini, device="cpu", tasks=(GOOD,))


def truncate(path: Path) -> str:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return "truncated or not a safetensors file"


def empty(path: Path) -> str:
    path.write_bytes(b"")
    return "truncated or not a safetensors file"


def scramble(path: Path) -> str:
    """Same size, every byte random: not a safetensors file at all."""
    path.write_bytes(np.random.default_rng(0).integers(0, 256, path.stat().st_size, dtype=np.uint8).tobytes())
    return "truncated or not a safetensors file"


def remove(path: Path) -> str:
    path.unlink()
    return f"{BROKEN_FILE} is not in"


def wrong_shape(path: Path) -> str:
    """A VAE LoRA tensor of another rank: found only after the UNet adapters went in."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(path))
    key = next(key for key in sorted(tensors) if key.startswith("vae_lora.") and ".lora_B." in key)
    tensors[key] = torch.zeros(tensors[key].shape[0], tensors[key].shape[1] + 3, *tensors[key].shape[2:])
    save_file(tensors, str(path), metadata=metadata)
    return "do not fit the loaded base model"


def other_task(path: Path) -> str:
    shutil.copyfile(path.with_name(CHECKPOINTS[GOOD].converted_filename), path)
    return f"holds the weights of '{GOOD}', not of {BROKEN}"


FAULTS: dict[str, Callable[[Path], str]] = {"missing": remove, "truncated": truncate, "empty": empty,
                                            "corrupt": scramble, "wrong shape": wrong_shape,
                                            "another task": other_task}


def adapters_on(studio: Studio, task: str) -> list[str]:
    """Names of the task's adapters left anywhere on the shared UNet and VAE."""
    from peft.tuners.lora.layer import LoraLayer

    return sorted({name for network in (studio.store.base.unet, studio.store.base.vae)
                   for layer in network.modules() if isinstance(layer, LoraLayer)
                   for name in layer.scaling if name.startswith(task)})


# --- task weights ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_broken_task_file_makes_only_that_task_unavailable(fault: str, mini: Path, reference: Studio,
                                                             photo: Image.Image) -> None:
    path = mini / "img2img-turbo" / BROKEN_FILE
    expected = FAULTS[fault](path)
    studio = Studio.load("mini", model_dir=mini, device="cpu", tasks=TASKS)
    reason = studio.unavailable_tasks[BROKEN]
    assert expected in reason and BROKEN_FILE in reason
    assert list(studio.unavailable_tasks) == [BROKEN] and adapters_on(studio, BROKEN) == []
    with pytest.raises(TaskUnavailableError, match="clear_to_rainy model is not available") as raised:
        studio.translate(photo, direction="clear_to_rainy")
    assert expected in str(raised.value)
    edges, image = studio.edge_to_image(photo, "a street")
    _, wanted = reference.edge_to_image(photo, "a street")
    assert np.array_equal(np.asarray(image), np.asarray(wanted))  # the good task is untouched


def test_a_damaged_converted_file_in_the_cache_is_rebuilt_from_its_release(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("ONESTEP_CACHE", str(cache))
    model_dir = write_tiny_hub_layout(tmp_path / "sd-turbo")
    _, unet, vae = build_tiny_networks()
    ref.make_pix2pix(unet, vae, False, 1, model_dir / CHECKPOINTS[GOOD].filename)
    Studio.load("local", model_dir=model_dir, device="cpu", tasks=(GOOD,))  # converts it into the cache
    converted = cache / "img2img-turbo" / CHECKPOINTS[GOOD].converted_filename
    whole = {key: tensor.clone() for key, tensor in load_file(str(converted)).items()}
    truncate(converted)
    messages: list[str] = []
    studio = Studio.load("local", model_dir=model_dir, device="cpu", tasks=(GOOD,),
                         progress=lambda fraction, message: messages.append(message))
    assert GOOD in studio.store.tasks and studio.unavailable_tasks == {}
    notice = next(message for message in messages if "is damaged and is not used" in message)
    assert str(converted) in notice and f"rebuilding it from {CHECKPOINTS[GOOD].filename}" in notice
    rebuilt = load_file(str(converted))  # rebuilt as it was
    assert sorted(rebuilt) == sorted(whole) and all(torch.equal(rebuilt[key], whole[key]) for key in whole)
    assert not list(converted.parent.glob("*.part"))


def test_a_damaged_release_in_the_cache_is_downloaded_again(file_server: tuple[str, Path], tmp_path: Path,  # noqa: F811
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    url, served = file_server
    monkeypatch.setattr(models.weights.specs, "CHECKPOINT_BASE_URL", f"{url}/")
    cache = tmp_path / "cache" / "img2img-turbo"
    monkeypatch.setenv("ONESTEP_CACHE", str(cache.parent))
    spec = CHECKPOINTS[GOOD]
    _, unet, vae = build_tiny_networks()
    ref.make_pix2pix(unet, vae, False, 1, served / spec.filename)
    cache.mkdir(parents=True)
    (cache / spec.filename).write_bytes((served / spec.filename).read_bytes()[:1000])  # an interrupted copy
    (cache / spec.converted_filename).write_bytes(b"{}")  # and a broken conversion of it
    store = Studio.load("tiny", device="cpu", tasks=()).store
    messages: list[str] = []
    path, weights = read_task_weights(store, spec, True, messages.append)
    assert path == cache / spec.converted_filename and weights.task == GOOD
    assert "is damaged and is not used" in messages[0]
    assert f"{cache / spec.filename} cannot be read" in messages[1] and "downloading it again" in messages[1]
    assert (cache / spec.filename).read_bytes() == (served / spec.filename).read_bytes()
    assert load_task_weights(path, GOOD).task == GOOD


# --- base weights ---------------------------------------------------------------------------------

def test_a_truncated_base_file_fails_the_load_naming_the_file_and_the_fix(mini: Path) -> None:
    unet_file = next((mini / "unet").glob("diffusion_pytorch_model*.safetensors"))
    truncate(unet_file)
    with pytest.raises(BaseWeightsError) as raised:
        Studio.load("mini", model_dir=mini, device="cpu", tasks=TASKS)
    message = str(raised.value)
    assert message.startswith(f"{unet_file}: truncated or not a safetensors file.")
    assert f"Export the mini models into {mini} again" in message


@pytest.mark.parametrize(("active", "base_dir", "fix"), [
    ("hub", Path("/home/u/.cache/huggingface/hub/models--stabilityai--sd-turbo/snapshots/abc"),
     "Remove the folder /home/u/.cache/huggingface/hub/models--stabilityai--sd-turbo and run "
     "`python app.py --source hub`"),
    ("local", Path("/data/sd-turbo"), "Replace it with a complete copy of the file from the stabilityai/sd-turbo"),
    ("mini", SHIPPED_MINI_DIR, "Restore the shipped file with `git checkout -- assets/mini/unet/"),
])
def test_the_fix_for_a_damaged_base_file_names_the_folder_or_the_command(active: str, base_dir: Path,
                                                                         fix: str) -> None:
    info = SourceInfo(active, active, "test", base_dir, base_dir)  # type: ignore[arg-type]
    assert fix in base_weights_fix(info, base_dir / "unet" / "diffusion_pytorch_model.fp16.safetensors")


# --- app.py start-up ------------------------------------------------------------------------------

def finished(*args: str, env: dict[str, str] | None = None, timeout: float = STARTUP_TIMEOUT_S) -> tuple[int, str]:
    """app.py run to its end: its exit status and its output (stdout and stderr together)."""
    done = subprocess.run([sys.executable, "-u", str(APP), *args], cwd=APP.parent, env=env or offline_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    return done.returncode, done.stdout


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


def test_a_taken_port_is_one_line_before_any_model_loads(taken_port: int) -> None:
    status, output = finished("--source", "tiny", "--device", "cpu", "--port", str(taken_port))
    assert status == 2
    assert output.strip().splitlines() == [output.strip()]  # one line: no progress, no traceback
    assert f"port {taken_port} on 127.0.0.1 cannot be used" in output and "--port" in output


def test_an_unreadable_auth_file_is_one_line_before_any_model_loads(tmp_path: Path) -> None:
    status, output = finished("--source", "tiny", "--device", "cpu", "--port", str(free_port()),
                              "--auth-file", str(tmp_path / "nobody.txt"))
    assert status == 2
    assert output.strip() == f"app.py: error: --auth-file {tmp_path / 'nobody.txt'} cannot be read: No such file or directory"


def test_a_broken_base_file_is_one_message_and_debug_shows_the_traceback(mini: Path) -> None:
    unet_file = next((mini / "unet").glob("diffusion_pytorch_model*.safetensors"))
    truncate(unet_file)
    arguments = ("--source", "mini", "--model-dir", str(mini), "--device", "cpu", "--port", str(free_port()))
    status, output = finished(*arguments)
    assert status == 1 and "Traceback" not in output
    last = output.strip().splitlines()[-1]
    assert last.startswith(f"app.py: could not load the models: {unet_file}: truncated or not a safetensors file.")
    assert f"Export the mini models into {mini} again" in last
    status, output = finished(*arguments, "--debug")
    assert status == 1 and "Traceback" in output and "BaseWeightsError" in output


def test_ctrl_c_while_loading_ends_the_process_and_leaves_no_half_written_file(tmp_path: Path) -> None:
    model_dir = write_tiny_hub_layout(tmp_path / "sd-turbo")
    _, unet, vae = build_tiny_networks()
    for task in ("edge_to_image", "sketch_to_image"):
        ref.make_pix2pix(unet, vae, task == "sketch_to_image", 1, model_dir / CHECKPOINTS[task].filename)
    env = {**offline_env(), "ONESTEP_CACHE": str(tmp_path / "cache")}
    running = Running("--source", "local", "--model-dir", str(model_dir), "--device", "cpu",
                      "--port", str(free_port()), env=env)
    try:
        running.wait_for("[ 50%] Loading edge_to_image", STARTUP_TIMEOUT_S)
        running.process.send_signal(signal.SIGINT)
        status = running.process.wait(timeout=60)
    finally:
        running.stop()
    output = "\n".join([*running.seen, *iter_queue(running)])
    assert status == 130 and "interrupted before serving" in output and "Traceback" not in output, output
    cache = tmp_path / "cache" / "img2img-turbo"
    for converted in cache.glob("*.safetensors"):  # what is there under a real name is whole
        assert load_task_weights(converted).task in ("edge_to_image", "sketch_to_image")


def iter_queue(running: Running) -> list[str]:
    """The output lines the reader has collected and nobody has read yet."""
    lines = []
    while not running.lines.empty():
        lines.append(running.lines.get())
    return lines


# --- uploads --------------------------------------------------------------------------------------

def png_bytes(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, **{"format": "PNG", **options})
    return buffer.getvalue()


def jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def first_half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def palette_with_transparency(photo: Image.Image) -> bytes:
    palette = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return png_bytes(palette, transparency=0)


def sixteen_bit(photo: Image.Image) -> bytes:
    grey = np.asarray(photo.convert("L"), dtype=np.uint16) * 257  # the full 16-bit range
    return png_bytes(Image.fromarray(grey.astype(np.uint16)))


def animated(photo: Image.Image) -> bytes:
    buffer = io.BytesIO()
    photo.save(buffer, format="GIF", save_all=True, append_images=[photo.rotate(90), photo.rotate(180)], duration=80)
    return buffer.getvalue()


REFUSED: dict[str, tuple[str, Callable[[Image.Image], bytes], str]] = {
    "not an image": ("noise.png", lambda photo: np.random.default_rng(1).bytes(5000),
                     "noise.png is not a readable image; upload a PNG, JPEG"),
    "empty": ("empty.png", lambda photo: b"", "empty.png is an empty file"),
    "truncated png": ("cut.png", lambda photo: first_half(png_bytes(photo)), "cut.png is truncated or damaged"),
    "truncated jpeg": ("cut.jpg", lambda photo: first_half(jpeg_bytes(photo)), "cut.jpg is truncated or damaged"),
    "over the size limit": ("wide.png", lambda photo: png_bytes(Image.new("RGB", (5000, 8))),
                            "wide.png is 5000x8; the largest side allowed is 4096 pixels"),
}
USED: dict[str, tuple[str, Callable[[Image.Image], bytes]]] = {
    "cmyk": ("cmyk.jpg", lambda photo: jpeg_bytes(photo.convert("CMYK"))),
    "palette": ("palette.png", palette_with_transparency),
    "16-bit": ("deep.png", sixteen_bit),
    "animated": ("moving.gif", animated),
}


@pytest.fixture(scope="module")
def api(studio: Studio) -> Iterator[tuple[object, Client]]:
    with serving(studio) as served:
        yield served, Client(served.local_url, verbose=False)  # type: ignore[attr-defined]


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_bad_upload_is_refused_by_name_and_the_next_request_works(case: str, api: tuple[object, Client],
                                                                    photo: Image.Image, tmp_path: Path) -> None:
    _, client = api
    name, make, message = REFUSED[case]
    (tmp_path / name).write_bytes(make(photo))
    with pytest.raises(AppError, match=re.escape(message)):
        client.predict(handle_file(tmp_path / name), "day_to_night", api_name="/translate")
    (tmp_path / "good.png").write_bytes(png_bytes(photo))
    result = client.predict(handle_file(tmp_path / "good.png"), "day_to_night", api_name="/translate")
    assert opened(result).size == photo.size


@pytest.mark.parametrize("case", list(USED))
def test_an_unusual_upload_is_used(case: str, api: tuple[object, Client], photo: Image.Image, tmp_path: Path) -> None:
    _, client = api
    name, make = USED[case]
    (tmp_path / name).write_bytes(make(photo))
    result = client.predict(handle_file(tmp_path / name), "day_to_night", api_name="/translate")
    assert opened(result).size == photo.size


@pytest.mark.parametrize(("case", "mode", "check"), [
    ("cmyk", "RGB", lambda pixels, photo: np.abs(pixels.astype(int) - np.asarray(photo, int)).mean() < 8),
    ("palette", "RGBA", lambda pixels, photo: (pixels[..., 3] == 0).any() and (pixels[..., 3] == 255).any()),
    ("16-bit", "L", lambda pixels, photo: np.array_equal(pixels, np.asarray(photo.convert("L")))),
    ("animated", "RGBA", lambda pixels, photo: np.abs(pixels[..., :3].astype(int) - np.asarray(photo, int)).mean() < 20),
])
def test_an_unusual_upload_keeps_its_range_and_transparency(case: str, mode: str, check: Callable[..., bool],
                                                             photo: Image.Image, tmp_path: Path) -> None:
    from gradio.data_classes import ImageData

    from ui.widgets import uploaded_image

    name, make = USED[case]
    (tmp_path / name).write_bytes(make(photo))
    image = uploaded_image().preprocess(ImageData(path=str(tmp_path / name), orig_name=name))
    assert image is not None and image.mode == mode and image.size == photo.size
    assert check(np.asarray(image), photo)


def test_the_page_gets_an_uploaded_images_settings_as_a_plain_images() -> None:
    """The browser draws an upload box from the settings Gradio sends: the same as gr.Image's (a
    subclass whose own __init__ hid them broke every page with a JavaScript error)."""
    import gradio as gr

    from ui.widgets import uploaded_image

    def props(make: Callable[..., gr.Image]) -> dict:
        with gr.Blocks() as demo:
            component = make(label="photo", sources=["upload"], height=120, type="pil", image_mode=None)
        config = demo.get_config_file()
        entry = next(entry for entry in config["components"] if entry["id"] == component._id)
        assert entry["type"] == "image"
        return {key: value for key, value in entry["props"].items() if key not in ("name", "max_side")}

    plain = props(gr.Image)
    ours = props(lambda **arguments: uploaded_image(**{k: v for k, v in arguments.items()
                                                       if k not in ("type", "image_mode")}))
    assert ours == plain and ours["sources"] == ["upload"] and ours["label"] == "photo"


# --- an exception inside a model call -------------------------------------------------------------

@pytest.fixture(scope="module")
def threaded() -> Studio:
    """A studio that runs its calls on a model thread, as the app's does."""
    return Studio.load("tiny", device="cpu", tasks=(GOOD,), model_thread=True)


def fail_once(monkeypatch: pytest.MonkeyPatch, studio: Studio) -> list[str]:
    """The next UNet call raises, as a CUDA error or a bug would, deep inside the model call."""
    failures: list[str] = []
    predict = studio.store.base.predict_x0

    def failing(*args: object, **kwargs: object) -> object:
        if not failures:
            failures.append("raised")
            raise RuntimeError("simulated device failure")
        return predict(*args, **kwargs)

    monkeypatch.setattr(studio.store.base, "predict_x0", failing)
    return failures


def test_an_exception_in_a_model_call_leaves_the_model_thread_serving(threaded: Studio, photo: Image.Image,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    failures = fail_once(monkeypatch, threaded)
    with pytest.raises(RuntimeError, match="simulated device failure"):
        threaded.edge_to_image(photo, "a street")
    assert failures == ["raised"]
    assert threaded.model_thread is not None and threaded.model_thread._thread.is_alive()
    assert threaded.store.lock.acquire(blocking=False)  # the failed call let go of the models
    threaded.store.lock.release()
    _, image = threaded.edge_to_image(photo, "a street")
    assert image.size == photo.size


def test_an_exception_in_a_model_call_fails_only_that_request_over_the_api(
        threaded: Studio, photo: Image.Image, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "photo.png").write_bytes(png_bytes(photo))
    with serving(threaded) as served:
        client = Client(served.local_url, verbose=False)  # type: ignore[attr-defined]
        fail_once(monkeypatch, threaded)
        with pytest.raises(AppError, match="upstream Gradio app has raised an exception"):  # a bug, not shown
            client.predict(handle_file(tmp_path / "photo.png"), "a street", 100, 200, api_name="/edge_to_image")
        _, image = client.predict(handle_file(tmp_path / "photo.png"), "a street", 100, 200, api_name="/edge_to_image")
        assert opened(image).size == photo.size


# --- a full disk while the batch command writes ---------------------------------------------------

def test_a_full_disk_stops_the_batch_with_nothing_half_written_and_a_rerun_resumes(
        photo: Image.Image, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        photo.save(folder / name)
    save_png = batch.save_png
    saved: list[str] = []

    def disk_fills_up(image: Image.Image, path: str, settings: object) -> None:
        if saved:  # the second file: half of it fits
            Path(path).write_bytes(b"\x89PNG half")
            raise OSError(errno.ENOSPC, "No space left on device")
        saved.append(path)
        save_png(image, path, settings)

    monkeypatch.setattr(batch, "save_png", disk_fills_up)
    argv = ["translate", "--input", str(folder), "--output", str(out), "--direction", "day_to_night",
            "--source", "tiny", "--device", "cpu"]
    assert batch.main(argv) == 1
    report = capsys.readouterr().out
    assert "Wrote 1, skipped 0 already done, 0 failed." in report
    assert (f"Stopped early: {out / 'b.png'} could not be written (the disk is full); no half-written file was "
            "left.") in report and "run the same command again" in report
    assert sorted(path.name for path in out.iterdir()) == ["a.png"]  # no part file, no half PNG
    assert read_settings(Image.open(out / "a.png")).settings is not None

    monkeypatch.setattr(batch, "save_png", save_png)  # room again
    assert batch.main(argv) == 0
    assert "Wrote 2, skipped 1 already done, 0 failed." in capsys.readouterr().out
    assert sorted(path.name for path in out.iterdir()) == ["a.png", "b.png", "c.png"]


# --- a broken task file through app.py and the HTTP API -------------------------------------------

def test_the_app_starts_without_the_broken_task_and_says_why_on_the_console_banner_and_api(
        mini: Path, photo: Image.Image, tmp_path: Path) -> None:
    broken = mini / "img2img-turbo" / BROKEN_FILE
    truncate(broken)
    port = free_port()
    running = Running("--source", "mini", "--model-dir", str(mini), "--device", "cpu", "--port", str(port),
                      env=offline_env())
    try:
        running.wait_for("Local:", STARTUP_TIMEOUT_S)
        reason = f"{broken} is truncated or not a safetensors file"
        console = running.wait_for(f"  {BROKEN} is unavailable:", 1)
        assert reason in console and "Traceback" not in "\n".join(running.seen)
        url = f"http://127.0.0.1:{port}"
        assert reason in httpx.get(f"{url}/config", timeout=30).text  # the banner
        client = Client(url, verbose=False)
        (tmp_path / "photo.png").write_bytes(png_bytes(photo))
        with pytest.raises(AppError, match=re.escape(reason)):
            client.predict(handle_file(tmp_path / "photo.png"), BROKEN, api_name="/translate")
        _, image = client.predict(handle_file(tmp_path / "photo.png"), "a street", 100, 200, api_name="/edge_to_image")
        assert opened(image).size == photo.size
        assert running.process.poll() is None
    finally:
        running.stop()
