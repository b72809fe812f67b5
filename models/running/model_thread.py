"""One long-lived thread that loads the models and runs every model call of a threaded server.

torch's CPU kernels split their work over an OpenMP team, and libgomp gives every thread that
starts parallel work a team of its own, kept for the thread's life. Once more team threads exist
than there are cores, libgomp cuts its spin-waiting short (GOMP_SPINCOUNT's throttled count), so
each of the thousands of small parallel regions in a call waits for sleeping threads to wake. A web
server calls the models from many worker threads (Gradio's), which creates exactly that: measured
on this project's 2-core CPU, the mini sketch model at 64 px took 35 ms from the one thread that
had loaded it and 80-130 ms once a second thread had run it, from either thread. Loading the
models and making every call on one thread keeps one team: 44 ms when called from 8 threads in
turn through ModelThread.run.

Ctrl-C: CPython runs signal handlers only on the main thread, between bytecodes. A main thread
that waits for a call (the app's load and warm-up) therefore waits in short timed waits, so it
raises KeyboardInterrupt within WAKE_S of the signal wherever the signal landed: on the model thread,
in the instant before the wait began, or on a platform whose lock waits ignore signals (Windows).
Other threads wait without waking (they never get KeyboardInterrupt, and on a 2-core CPU every
wake-up would take the interpreter lock from the model thread).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, wait
from typing import Any, ParamSpec, TypeVar

Params = ParamSpec("Params")
Result = TypeVar("Result")
Call = tuple[Future, Callable[..., Any], tuple[Any, ...], dict[str, Any]]
WAKE_S = 0.1  # how often a waiting main thread wakes to run pending signal handlers (Ctrl-C)


class ModelThread:
    """Runs functions on one dedicated thread, in the order they are submitted; the caller waits
    for the result, and an exception is raised in the caller. A call made on the thread itself
    runs at once (so a model call may make others). The thread is a daemon: Ctrl-C during a long
    load (a first download) ends the program instead of waiting for the load to finish."""

    def __init__(self, name: str = "model-calls") -> None:
        self._calls: queue.SimpleQueue[Call | None] = queue.SimpleQueue()
        self._closing = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            future, function, args, kwargs = call
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(function(*args, **kwargs))
            except BaseException as error:  # handed to the caller, whatever it is
                future.set_exception(error)

    @property
    def current(self) -> bool:
        """Whether the calling thread is the model thread."""
        return threading.current_thread() is self._thread

    def run(self, function: Callable[Params, Result], *args: Params.args, **kwargs: Params.kwargs) -> Result:
        if self.current:
            return function(*args, **kwargs)
        future: Future[Result] = Future()
        with self._closing:
            if self._closed:
                raise RuntimeError("the model thread was closed")
            self._calls.put((future, function, args, kwargs))
        return _result_of(future)

    def close(self) -> None:
        """Finish the calls already submitted and stop the thread; later calls raise RuntimeError."""
        with self._closing:
            self._closed = True
            self._calls.put(None)
        self._thread.join()


def _result_of(future: Future[Result]) -> Result:
    """The future's result, or its exception raised here. On the main thread the wait wakes every
    WAKE_S, so a Ctrl-C raises KeyboardInterrupt here promptly (see the module's docstring)."""
    if threading.current_thread() is threading.main_thread():
        while not future.done():
            wait((future,), timeout=WAKE_S)
    return future.result()
