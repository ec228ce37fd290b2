"""One warehouse writer at a time across processes, and waiting instead of failing on
DuckDB's own file lock.

DuckDB lets one process open the file for writing and then no other process may open it at
all, not even read-only; a second opener gets ``IO Error: Could not set lock on file``.
Dagster's ``duckdb_writer`` pool serialises runs launched through one Dagster instance, but
not two ``aiq-sync run`` processes (or a CLI run next to the daemon). So:

- ``writer_lock(warehouse)``: an exclusive ``flock`` on ``<warehouse>.lock``, held for a
  whole load step. A second writer waits (saying which pid holds it) up to a timeout, then
  fails with a message naming the lock file. The kernel drops the lock when its holder dies,
  SIGKILL included: there is no stale lock to clean up.
- ``retry_locked(open_fn)``: what ``warehouse.connect`` does with DuckDB's own lock error
  (a short read-only query, or a writer that does not take ``writer_lock``): retry with
  growing pauses until the timeout. Read-only analyst connections never take the writer
  lock; they only wait for DuckDB's.

Timeouts come from ``AIQ_SYNC_WRITER_LOCK_TIMEOUT`` and ``AIQ_SYNC_OPEN_TIMEOUT`` (seconds).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import duckdb

log = logging.getLogger("aiq_sync.writer_lock")

T = TypeVar("T")

WRITER_TIMEOUT_ENV = "AIQ_SYNC_WRITER_LOCK_TIMEOUT"
OPEN_TIMEOUT_ENV = "AIQ_SYNC_OPEN_TIMEOUT"
# A nightly load takes minutes; an hour of waiting means something is stuck.
DEFAULT_WRITER_TIMEOUT_S = 3600.0
# Opening the file waits for another process's connection to close (a query, a summary).
DEFAULT_OPEN_TIMEOUT_S = 120.0


class WarehouseLockTimeout(TimeoutError):
    """Waited too long for another process to release the warehouse."""


def lock_path(warehouse: str | Path) -> Path:
    return Path(f"{warehouse}.lock")


def _timeout(env: str, default: float) -> float:
    raw = os.environ.get(env, "").strip()
    if not raw:
        return default
    try:
        return max(0.0, float(raw))
    except ValueError:
        raise ValueError(f"{env}={raw!r} is not a number of seconds") from None


# Per-process reentrancy: flock locks belong to an open file description, so a second
# `writer_lock` in the same process on its own descriptor would wait for itself.
_held: dict[Path, int] = {}
_held_lock = threading.Lock()


def _holder(path: Path) -> str:
    with contextlib.suppress(OSError, ValueError):
        return str(int(path.read_text(encoding="ascii").strip()))
    return "unknown"


@contextlib.contextmanager
def writer_lock(
    warehouse: str | Path,
    *,
    timeout: float | None = None,
    poll: float = 0.2,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[Path]:
    """Hold the warehouse's writer lock for the block; yields the lock file's path."""
    if str(warehouse) == ":memory:":
        yield Path(":memory:")
        return
    path = lock_path(Path(warehouse).resolve())
    with _held_lock:
        if path in _held:
            _held[path] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield path
        finally:
            with _held_lock:
                _held[path] -= 1
        return
    limit = _timeout(WRITER_TIMEOUT_ENV, DEFAULT_WRITER_TIMEOUT_S) if timeout is None else timeout
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _acquire(fd, path, limit, poll, on_wait or log.warning)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        with _held_lock:
            _held[path] = 1
        try:
            yield path
        finally:
            with _held_lock:
                _held.pop(path, None)
    finally:
        os.close(fd)  # releases the flock


def _acquire(
    fd: int, path: Path, limit: float, poll: float, on_wait: Callable[[str], None]
) -> None:
    started = time.monotonic()
    announced = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if announced:
                on_wait(f"got the warehouse writer lock after {time.monotonic() - started:.1f}s")
            return
        except BlockingIOError:
            pass
        waited = time.monotonic() - started
        if waited >= limit:
            raise WarehouseLockTimeout(
                f"gave up after {waited:.0f}s waiting for the warehouse writer lock {path} "
                f"held by pid {_holder(path)} (another load is running; raise "
                f"{WRITER_TIMEOUT_ENV} to wait longer)"
            )
        if not announced:
            on_wait(f"waiting for the warehouse writer lock held by pid {_holder(path)} ({path})")
            announced = True
        time.sleep(min(poll, max(0.0, limit - waited)))


def is_lock_conflict(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.IOException) and "Could not set lock on file" in str(exc)


def retry_locked(open_fn: Callable[[], T], what: str, *, timeout: float | None = None) -> T:
    """Call `open_fn` until DuckDB stops reporting another process's lock, or time is up
    (then DuckDB's own error is raised: it names the file and the holder's pid)."""
    limit = _timeout(OPEN_TIMEOUT_ENV, DEFAULT_OPEN_TIMEOUT_S) if timeout is None else timeout
    started = time.monotonic()
    pause = 0.05
    announced = False
    while True:
        try:
            return open_fn()
        except duckdb.IOException as exc:
            waited = time.monotonic() - started
            if not is_lock_conflict(exc) or waited >= limit:
                raise
            if not announced:
                log.warning(
                    "%s is open in another process; waiting up to %.0fs (%s)",
                    what,
                    limit,
                    str(exc).splitlines()[0],
                )
                announced = True
            time.sleep(min(pause, max(0.0, limit - waited)))
            pause = min(pause * 2, 2.0)
