"""Where the search's simulations run: one interface, three ways.

An executor maps a picklable function over picklable items and yields the results as they
finish (not in order), so a caller can show progress and draw results as they come:

* :class:`SerialExecutor`: in this process, one after another (tests, tiny searches);
* :class:`LocalExecutor`: a ``concurrent.futures.ProcessPoolExecutor`` with one worker per
  core by default (the forkserver start method, so it is safe in threaded hosts such as
  Streamlit; the workers import the simulator once and keep it);
* :class:`RayExecutor`: one Ray task per item, on the cluster ``ray.init(address=...)``
  connects to (a local Ray instance when no address is given). Ray schedules the tasks;
  there is no scheduler of ours.

Items go out in chunks (``chunksize``) so that a task is worth its overhead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from sim.errors import ConfigError


class Executor(Protocol):
    name: str
    workers: int

    def map_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]: ...

    def close(self) -> None: ...


def _apply_chunk(fn_and_chunk):
    fn, chunk = fn_and_chunk
    return [fn(item) for item in chunk]


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


class SerialExecutor:
    name = "serial"
    workers = 1

    def map_unordered(self, fn, items):
        for item in items:
            yield fn(item)

    def close(self) -> None:
        pass


class LocalExecutor:
    """Processes on this machine; ``workers`` defaults to every core (``os.cpu_count()``)."""

    name = "local"

    def __init__(self, workers: int | None = None, chunksize: int = 1,
                 preload: tuple[str, ...] = ("sim.tune.evaluate",), spawn: bool = False) -> None:
        """``spawn``: start each worker as a fresh interpreter instead of forking it from the
        forkserver, which keeps the modules it preloaded when it started, for the life of this
        process (a host whose source code changed since then needs fresh workers: OnePool)."""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.workers = workers or os.cpu_count() or 1
        self.chunksize = chunksize
        if not spawn and "forkserver" in multiprocessing.get_all_start_methods():
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(list(preload))  # imported once, in the server workers fork from
        else:  # Windows: each worker starts a fresh interpreter
            context = multiprocessing.get_context("spawn")
        self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=context)

    def warm_up(self, fn=os.getpid, *args) -> None:
        """Start the worker processes now, in the background, rather than at the first task; with
        ``fn``, each worker (most likely) runs ``fn(*args)`` once, to fill its caches."""
        for _ in range(self.workers):
            self._pool.submit(fn, *args)

    def map_unordered(self, fn, items):
        from concurrent.futures import as_completed

        futures = [self._pool.submit(_apply_chunk, (fn, chunk)) for chunk in _chunks(list(items), self.chunksize)]
        try:
            for future in as_completed(futures):
                yield from future.result()
        finally:
            for future in futures:
                future.cancel()

    def close(self, wait: bool = True) -> None:
        """Stop the workers: now, cancelling what has not started (``wait``); or, without
        ``wait``, once they have finished what they were given, without blocking (a pool being
        replaced while another search may still be reading from it)."""
        if wait:
            self._pool.shutdown(wait=True, cancel_futures=True)
        else:
            self._pool.shutdown(wait=False)


def source_version(roots) -> tuple[int, int]:
    """The Python sources under the folders ``roots`` as they are on disk now: how many, and the
    newest modification time (ns). Two readings differ once a file is edited, added or removed."""
    count = newest = 0
    for root in roots:
        for path in Path(root).rglob("*.py"):
            count += 1
            newest = max(newest, path.stat().st_mtime_ns)
    return count, newest


class OnePool:
    """One :class:`LocalExecutor` at a time, for a host that lives long (the lab's server).

    ``get(workers)`` hands back the pool it holds while the worker count stays the same, and
    replaces it when the count changes: the old pool is shut down without waiting (its workers
    finish what they were given, then exit), so that trying several counts does not leave a
    pool of idle processes behind for each. ``drop()`` forgets a broken pool. Thread-safe.

    ``watch``: source folders (the simulator's). A worker keeps the code it imported, while the
    lab reloads what a student edits; so when the files under ``watch`` change, the pool is
    replaced too, by one whose workers start afresh (``make(workers, fresh=True)``): otherwise
    a sweep would run the old scheduler, or fail on an import the new code no longer matches.
    """

    def __init__(self, make=None, watch=()) -> None:
        import threading

        self._make = make or (lambda workers, fresh: LocalExecutor(workers or None, spawn=fresh))
        self._lock = threading.Lock()
        self._workers: int | None = None
        self._watch = tuple(watch)
        self._version = source_version(self._watch)
        self._fresh = False  # the code changed once: every later pool starts afresh
        self.executor: LocalExecutor | None = None

    def get(self, workers: int) -> LocalExecutor:
        with self._lock:
            version = source_version(self._watch)
            changed = version != self._version
            if changed:
                self._version, self._fresh = version, True
            if self.executor is None or self._workers != workers or changed:
                if self.executor is not None:
                    self.executor.close(wait=False)
                self.executor, self._workers = self._make(workers, self._fresh), workers
            return self.executor

    @property
    def version(self) -> tuple[int, int]:
        """The reading of the ``watch`` folders the current pool's workers started from
        (:func:`source_version`), as of the last :meth:`get`."""
        return self._version

    def drop(self) -> None:
        with self._lock:
            if self.executor is not None:
                self.executor.close(wait=False)
            self.executor = self._workers = None


class RayExecutor:
    """Ray tasks. ``address``: a running cluster (``ray://HOST:10001`` or ``HOST:6379``, as
    ``ray.init`` takes it); None starts (or joins) a local instance."""

    name = "ray"

    def __init__(self, address: str | None = None, chunksize: int = 1, **init_kwargs) -> None:
        _check_reachable(address)
        try:
            import ray
        except ImportError:
            raise ConfigError("--executor ray: Ray is not installed; pip install 'ray>=2.40' "
                              "(the same version as the cluster's)") from None
        self._ray = ray
        self.chunksize = chunksize
        self._started_here = False
        if not ray.is_initialized():
            if address is not None and "runtime_env" not in init_kwargs:
                # A remote cluster gets the simulator's code with the job (Ray uploads the
                # package); its Python needs numpy, scipy, simpy and pyyaml (docs/tune.md).
                import sim

                init_kwargs["runtime_env"] = {"py_modules": [sim]}
            try:
                ray.init(address=address, **init_kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ConfigError(f"--ray-address {address}: cannot connect to a Ray cluster there ({exc})") from None
            self._started_here = True
        self.workers = int(ray.cluster_resources().get("CPU", 1))
        self._task = ray.remote(_apply_chunk)

    def map_unordered(self, fn, items):
        ray = self._ray
        pending = [self._task.remote((fn, chunk)) for chunk in _chunks(list(items), self.chunksize)]
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                yield from ray.get(done[0])
        finally:
            for ref in pending:
                ray.cancel(ref)

    def close(self) -> None:
        if self._started_here:
            self._ray.shutdown()


def _check_reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """Fail in seconds on a HOST:PORT nothing listens on (Ray itself retries for minutes)."""
    if not address or address == "auto":
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray-address {address}: expected HOST:PORT, ray://HOST:PORT or auto")
    import socket

    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(f"--ray-address {address}: nothing answers at {host}:{port} ({exc.strerror or exc}); "
                          f"start the cluster's head (ray start --head) or fix the address") from None


def make_executor(name: str, *, workers: int | None = None, ray_address: str | None = None,
                  chunksize: int = 1) -> Executor:
    if name == "local":
        return LocalExecutor(workers, chunksize)
    if name == "ray":
        return RayExecutor(ray_address, chunksize)
    if name == "serial":
        return SerialExecutor()
    raise ConfigError(f"--executor: expected local, ray or serial, got {name!r}")
