"""app.py as people run it: the flags, the logins, and --share without a way to the share server."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import app
from pipelines.errors import InputError
from tests.conftest import free_port

APP = Path(app.__file__).resolve()
FLAGS = ("--source", "--model-dir", "--device", "--dtype", "--host", "--port", "--share", "--auth",
         "--auth-file", "--queue-size")
STARTUP_TIMEOUT_S = 240


def test_help_documents_every_flag() -> None:
    text = app.parser().format_help()
    for flag in FLAGS:
        assert flag in text
    for source in ("auto", "hub", "local", "tiny"):
        assert source in text
    assert "0.0.0.0" in text


def test_defaults() -> None:
    args = app.parser().parse_args([])
    assert (args.source, args.host, args.port, args.share, args.dtype) == ("auto", "127.0.0.1", 7860, False, "auto")
    assert app.logins(args) is None


def test_logins_from_flags_and_file(tmp_path: Path) -> None:
    users = tmp_path / "users.txt"
    users.write_text("# team\ncara:pass:with:colons\n\n  dan:x  \n", encoding="utf-8")
    args = app.parser().parse_args(["--auth", "ana:one", "--auth", "ben:two", "--auth-file", str(users)])
    assert app.logins(args) == [("ana", "one"), ("ben", "two"), ("cara", "pass:with:colons"), ("dan", "x")]


@pytest.mark.parametrize("bad", ["nocolon", ":nouser", "nopass:"])
def test_malformed_login_is_a_usage_error(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        app.parser().parse_args(["--auth", bad])
    assert exit_info.value.code == 2
    assert "USER:PASS" in capsys.readouterr().err


def test_queue_size_must_be_positive() -> None:
    with pytest.raises(SystemExit):
        app.parser().parse_args(["--queue-size", "0"])


# --- --share offline (a subprocess, as people run it) ---------------------------------------------

class Running:
    """app.py in a subprocess; its output lines are collected as they come."""

    def __init__(self, *args: str, env: dict[str, str]) -> None:
        self.process = subprocess.Popen([sys.executable, "-u", str(APP), *args], cwd=APP.parent, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, prefix: str, timeout: float) -> str:
        """The first output line starting with prefix, waiting for it up to timeout seconds."""
        for line in self.seen:
            if line.startswith(prefix):
                return line
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            self.seen.append(line)
            if line.startswith(prefix):
                return line
        raise AssertionError(f"no line starting with {prefix!r}; output so far:\n" + "\n".join(self.seen))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def offline_env() -> dict[str, str]:
    """The share server cannot be reached: HTTPS goes to a closed local port (fast and certain even
    on a machine with internet); local addresses bypass the proxy. One torch thread: on a busy
    2-core machine two OpenMP threads in the start-up warm-up wait on each other for minutes."""
    env = dict(os.environ)
    dead = f"http://127.0.0.1:{free_port()}"
    env.update(HTTPS_PROXY=dead, https_proxy=dead, HTTP_PROXY=dead, http_proxy=dead, ALL_PROXY=dead,
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost", HF_HUB_OFFLINE="1",
               GRADIO_ANALYTICS_ENABLED="False", OMP_NUM_THREADS="1")
    return env


@pytest.fixture(scope="module")
def shared_offline() -> Iterator[tuple[Running, int]]:
    port = free_port()
    running = Running("--source", "tiny", "--device", "cpu", "--port", str(port), "--share", env=offline_env())
    try:
        yield running, port
    finally:
        running.stop()


def test_share_offline_says_so_prints_addresses_and_keeps_running(shared_offline: tuple[Running, int]) -> None:
    running, port = shared_offline
    local = running.wait_for("Local:", STARTUP_TIMEOUT_S)
    lan = running.wait_for("LAN:", 10)
    share = running.wait_for("Share:", 10)
    assert local == f"Local:  http://127.0.0.1:{port}"
    assert "LAN:" in lan
    assert "no share link could be made" in share and "keeps running" in share
    assert running.process.poll() is None
    page = httpx.get(f"http://127.0.0.1:{port}/", timeout=30)
    assert page.status_code == 200 and "<html" in page.text.lower()


def test_startup_shows_progress_and_the_live_weights(shared_offline: tuple[Running, int]) -> None:
    running, _ = shared_offline
    running.wait_for("Share:", STARTUP_TIMEOUT_S)
    output = "\n".join(running.seen)
    assert "[  0%]" in output and "[100%]" in output
    assert "Weights: tiny" in output and "python app.py --source hub" in output


def test_live_previews_are_smaller_on_the_cpu_unless_asked(studio: object) -> None:
    assert app.preview_side(studio, None) == 256  # the tiny studio stands in for SD-Turbo, on the CPU
    assert app.preview_side(studio, 512) == 512
    with pytest.raises(InputError, match="--preview-size 100 is not one of 64, 128"):
        app.preview_side(studio, 100)
    with pytest.raises(SystemExit):
        app.parser().parse_args(["--preview-size", "0"])


def test_the_studio_warms_up_at_the_preview_side_it_serves(studio: object, monkeypatch: pytest.MonkeyPatch) -> None:
    warmed: list[int | None] = []
    monkeypatch.setattr(app.Studio, "load", lambda **_: studio)
    monkeypatch.setattr(studio, "warm_up", lambda preview_side=None: warmed.append(preview_side))
    loaded, preview = app.load_studio(app.parser().parse_args(["--source", "tiny", "--preview-size", "512"]))
    assert loaded is studio and preview == 512 and warmed == [512]
    with pytest.raises(InputError, match="--preview-size 100"):
        app.load_studio(app.parser().parse_args(["--source", "tiny", "--preview-size", "100"]))
    assert warmed == [512]  # a bad side is refused before any warm-up work
