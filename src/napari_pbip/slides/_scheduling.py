"""Running chunk tasks with dask: threads in this process, or a dask.distributed cluster.

Both runners are generators of the tasks' small summaries in completion order; closing the
generator cancels what has not run yet and waits for running tasks to stop at their next batch,
so no chunk is half-written when it returns.
"""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

_END = object()


class _Failed:
    def __init__(self, exc: BaseException):
        self.exc = exc


def run_local(
    func: Callable[..., Any],
    tasks: Sequence[Any],
    extra: tuple[Any, ...],
    num_workers: int,
    synchronous: bool = False,
) -> Iterator[Any]:
    """Run ``func(task, *extra, cancel)`` for each task with dask's threaded (or synchronous) scheduler.

    Results are reported by a dask callback as each task finishes. ``cancel`` is a
    :class:`threading.Event` set when the consumer stops early; ``func`` should check it and
    return promptly.
    """
    import dask
    import dask.threaded
    from dask.callbacks import Callback

    results: queue.Queue = queue.Queue()
    cancel = threading.Event()
    graph = {("pbip-chunk", i): (func, task, *extra, cancel) for i, task in enumerate(tasks)}

    class _Report(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            results.put(result)

    def compute() -> None:
        try:
            with _Report():
                if synchronous:
                    dask.get(graph, list(graph))
                else:
                    dask.threaded.get(graph, list(graph), num_workers=num_workers)
        except BaseException as exc:  # re-raised in the consumer's thread
            results.put(_Failed(exc))
        finally:
            results.put(_END)

    worker = threading.Thread(target=compute, name="pbip-segment", daemon=True)
    worker.start()
    try:
        while (item := results.get()) is not _END:
            if isinstance(item, _Failed):
                raise item.exc
            yield item
    finally:
        cancel.set()
        worker.join()


def run_distributed(func: Callable[..., Any], tasks: Sequence[Any], address: str) -> Iterator[Any]:
    """Submit ``func(task)`` for each task to the dask.distributed scheduler at ``address``.

    Tasks carry only picklable descriptions (slide path, model path, output path); each worker
    opens the slide and loads the model itself, once per process.
    """
    from distributed import Client, as_completed

    from ..errors import SettingsError

    try:
        client = Client(address, set_as_default=False, timeout="20s")
    except OSError as exc:
        raise SettingsError(
            f"scheduler={address!r} cannot be reached ({exc}); start one with `dask scheduler` and workers with "
            f"`dask worker {address}`, or use scheduler='threads'"
        ) from exc
    run = uuid.uuid4().hex[:8]
    futures = [
        client.submit(func, task, key=f"pbip-chunk-{run}-{i}", pure=False) for i, task in enumerate(tasks)
    ]
    try:
        # the client is not the default one (the caller's own default client, if any, is left
        # alone), so as_completed must be told which event loop to wait on
        for future in as_completed(futures, loop=client.loop):
            result = future.result()
            future.release()
            yield result
    finally:
        client.cancel([f for f in futures if not f.done()])
        client.close()
