"""Worker processes that end with their parent: a spawn-context process pool that neither a signal
nor a killed parent leaves behind.

:func:`run_in_workers` runs the benchmark's episodes in such a pool, each worker with its own
:class:`~unlearn_gym.bench.episodes.EpisodeRunner`.

:func:`worker_pool` is the pool of ``unlearn-gym bench --workers W``. Three ways its parent can go,
and what ends the workers each time:

- the parent's ``with`` block raises (``KeyboardInterrupt`` from SIGINT / Ctrl-C, SIGTERM, which the
  pool turns into ``SystemExit(128 + SIGTERM)`` while it runs, or any error): the pending tasks are
  cancelled and the workers terminated (SIGTERM, then SIGKILL after a grace period);
- the parent is SIGKILLed (no Python code runs): each worker was told by the kernel to receive
  SIGTERM when its parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``), and on every platform a daemon
  thread in each worker polls ``os.getppid()`` and exits once the parent is gone;
- a Ctrl-C in a terminal reaches the whole process group: the workers ignore SIGINT, so that only
  the parent handles it (and terminates them).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from .config import BenchConfig, Unit
from .episodes import EpisodeRunner
from .record import EpisodeOutcome

__all__ = ["die_with_parent", "run_in_workers", "worker_pool"]

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent_pid: int, *, poll_s: float = 0.5) -> None:
    """End this process when the process ``parent_pid`` (its parent) dies.

    On Linux the kernel sends this process SIGTERM when the parent thread that started it exits
    (``prctl(PR_SET_PDEATHSIG, SIGTERM)``); on every platform a daemon thread also checks
    ``os.getppid()`` every ``poll_s`` seconds and ends the process (``os._exit(1)``) once it is no
    longer ``parent_pid`` (the orphan was adopted by another process). A parent that died before
    this call ends the process at once.

    Args:
        parent_pid: the parent's process id, as the parent saw it (``os.getpid()`` there).
        poll_s: seconds between two checks of the watchdog thread.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - a libc without prctl: the watchdog remains
            pass
    if os.getppid() != parent_pid:  # the parent died before the kernel could be told
        os._exit(1)

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(poll_s)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def _init_worker(parent_pid: int, initializer: Callable[..., None] | None, initargs: tuple) -> None:
    """A worker's first act: ignore SIGINT (the parent handles Ctrl-C), die with the parent, then
    the caller's initializer."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent_pid)
    if initializer is not None:
        initializer(*initargs)


def _on_sigterm(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def worker_pool(
    workers: int,
    *,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
    grace_s: float = 5.0,
) -> Iterator[Any]:
    """A spawn-context :class:`~concurrent.futures.ProcessPoolExecutor` whose workers end with it.

    On a normal exit of the ``with`` block the pool shuts down as usual (waiting for its tasks). On
    an exception (``KeyboardInterrupt``, or SIGTERM, which raises ``SystemExit(128 + 15)`` in the
    main thread while the block runs), the pending tasks are cancelled and the workers are
    terminated: SIGTERM, then SIGKILL for any still alive after ``grace_s`` seconds. Each worker
    also ends on its own when this process dies (:func:`die_with_parent`), and ignores SIGINT.

    Args:
        workers: the number of worker processes.
        initializer: called in each worker with ``initargs`` (after the set-up above).
        initargs: its arguments (pickled into each worker).
        grace_s: seconds a terminated worker has to exit before it is killed.

    Yields:
        The executor.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")  # CUDA-safe, and no torch state forked
    pool = ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(os.getpid(), initializer, tuple(initargs))
    )
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main else None
    try:
        yield pool
    except BaseException:
        _terminate(pool, grace_s)
        raise
    else:
        pool.shutdown(wait=True)
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _terminate(pool: Any, grace_s: float) -> None:
    """Cancel ``pool``'s pending tasks and end its workers (SIGTERM, then SIGKILL after ``grace_s``)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for p in processes:
        if p.is_alive():
            p.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        p.join(grace_s)
        if p.is_alive():
            p.kill()
            p.join(grace_s)


# -- the benchmark's episodes in the pool ---------------------------------------------------------

_WORKER: EpisodeRunner | None = None
"""The worker process's episode runner (made once, by :func:`_worker_init`)."""


def _worker_init(policies: Mapping[str, Any], config: BenchConfig, record: bool) -> None:
    import torch

    global _WORKER
    torch.set_num_threads(1)
    _WORKER = EpisodeRunner(policies, config, record=record)


def _worker_units(units: list[Unit]) -> list[EpisodeOutcome]:
    return _WORKER.remote_units(units)


def run_in_workers(
    policies: Mapping[str, Any],
    config: BenchConfig,
    runs: Sequence[Unit],
    batches: list[list[int]],
    record: bool = False,
) -> Iterator[tuple[int, EpisodeOutcome]]:
    """Run the batches of ``runs`` (each a list of indices k: :meth:`EpisodeRunner.run_units` of
    ``runs[k]``) in ``config.workers`` spawned processes; yields (k, (record, evaluation, steps)) as
    each batch finishes. The workers end with this generator: an exception (Ctrl-C, SIGTERM) or
    closing it terminates them, and a killed parent is noticed by each (:func:`worker_pool`)."""
    from concurrent.futures import as_completed

    with worker_pool(
        min(config.workers, len(batches)), initializer=_worker_init, initargs=(dict(policies), config, record)
    ) as pool:
        futures = {pool.submit(_worker_units, [runs[k] for k in batch]): batch for batch in batches}
        for future in as_completed(futures):
            yield from zip(futures[future], future.result())
