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
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

Params = ParamSpec("Params")
Result = TypeVar("Result")


class ModelThread:
    """Runs functions on one dedicated thread, in the order they are submitted; the caller waits
    for the result, and an exception is raised in the caller. A call made on the thread itself
    runs at once (so a model call may make others)."""

    def __init__(self, name: str = "model-calls") -> None:
        self._ident: int | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name, initializer=self._remember)

    def _remember(self) -> None:
        self._ident = threading.get_ident()

    @property
    def current(self) -> bool:
        """Whether the calling thread is the model thread."""
        return threading.get_ident() == self._ident

    def run(self, function: Callable[Params, Result], *args: Params.args, **kwargs: Params.kwargs) -> Result:
        if self.current:
            return function(*args, **kwargs)
        return self._executor.submit(function, *args, **kwargs).result()

    def close(self) -> None:
        """Finish the call in progress and stop the thread; later calls raise RuntimeError."""
        self._executor.shutdown(wait=True)
