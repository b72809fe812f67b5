"""One thread for loading and every model call (models.running.model_thread), as the app loads the
Studio: calls from any thread run there, in order, with their results and exceptions handed back."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from models.running.model_thread import ModelThread
from pipelines import Studio
from pipelines.errors import InputError
from tests.conftest import model_call_threads, pixel_distance


def test_calls_from_many_threads_run_on_one_thread_in_turn() -> None:
    thread = ModelThread()
    ran_on: list[int] = []
    active = threading.Semaphore(1)

    def work(value: int) -> int:
        assert active.acquire(blocking=False), "two calls ran at once"
        try:
            ran_on.append(threading.get_ident())
            return value * 2
        finally:
            active.release()

    with ThreadPoolExecutor(8) as callers:
        results = list(callers.map(lambda value: thread.run(work, value), range(40)))
    thread.close()
    assert results == [value * 2 for value in range(40)]
    assert len(set(ran_on)) == 1 and ran_on[0] != threading.get_ident()


def test_exceptions_reach_the_caller_and_calls_on_the_thread_run_at_once() -> None:
    thread = ModelThread()

    def fails() -> None:
        raise InputError("seed=-1 must be a whole number")

    with pytest.raises(InputError, match="seed=-1"):
        thread.run(fails)
    # a call made on the model thread runs there directly instead of waiting for itself
    assert thread.run(lambda: thread.run(lambda: threading.get_ident())) == thread.run(threading.get_ident)
    assert thread.run(lambda: thread.current) and not thread.current
    thread.close()
    with pytest.raises(RuntimeError):
        thread.run(threading.get_ident)


def test_the_studio_loads_and_runs_every_call_on_its_model_thread(photo: Image.Image) -> None:
    loaded_on: set[int] = set()
    studio = Studio.load("tiny", device="cpu", model_thread=True,
                         progress=lambda fraction, message: loaded_on.add(threading.get_ident()))
    assert studio.model_thread is not None
    model_ident = studio.model_thread.run(threading.get_ident)
    assert loaded_on == {model_ident} != {threading.get_ident()}
    called_on = model_call_threads(studio)
    studio.warm_up()
    with ThreadPoolExecutor(4) as callers:
        images = list(callers.map(lambda seed: studio.text_to_image("a boat", seed=seed), (1, 1, 2)))
        callers.submit(studio.translate, photo, direction="day_to_night").result()
        with pytest.raises(InputError, match="seed"):
            callers.submit(studio.sketch_to_image, photo, "a house", seed=-1).result()
    assert called_on and set(called_on) == {model_ident}
    assert pixel_distance(images[0], images[1]) == 0.0 < pixel_distance(images[0], images[2])
    # the same studio without the thread gives the same image
    studio.model_thread.close()
    studio.model_thread = None
    assert pixel_distance(studio.text_to_image("a boat", seed=1), images[0]) == 0.0


def test_a_long_call_does_not_keep_the_program_from_exiting() -> None:
    """Ctrl-C during a long load (a first download) ends the app: the model thread is a daemon."""
    script = ("import threading, time\n"
              "from models.running.model_thread import ModelThread\n"
              "thread = ModelThread()\n"
              "threading.Thread(target=thread.run, args=(time.sleep, 60), daemon=True).start()\n"
              "time.sleep(0.2)\n")
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[1], check=True, timeout=30)
    assert time.monotonic() - started < 20


def test_ctrl_c_that_lands_on_the_model_thread_still_interrupts_the_waiting_main_thread() -> None:
    """CPython runs signal handlers on the main thread only. A SIGINT the kernel hands to the model
    thread (here raised there, once the main thread waits) must still end the main thread's wait
    within a moment, not when the call returns a minute later."""
    script = ("import signal, sys, time\n"
              "from models.running.model_thread import ModelThread\n"
              "def load():\n"
              "    time.sleep(0.5)\n"  # the main thread is waiting by now
              "    signal.raise_signal(signal.SIGINT)\n"
              "    time.sleep(60)\n"
              "try:\n"
              "    ModelThread().run(load)\n"
              "except KeyboardInterrupt:\n"
              "    sys.exit(130)\n")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[1], timeout=45)
    assert done.returncode == 130 and time.monotonic() - started < 30
