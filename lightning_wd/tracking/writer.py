"""A bounded background writer of MLflow metrics: cheap for the training thread, tolerant of a store that goes away.

The training thread only appends points to a bounded buffer (:meth:`MetricWriter.put`, microseconds); one
daemon thread sends what is buffered every ``period`` seconds (default 10) as ``log_batch`` calls of at most
1000 metrics (MLflow's limit; a full batch goes at once), so many statistics intervals cost one batched write,
not one write per metric or per call. The first send comes sooner (``first_period``, default 1 s), so that
what a point costs the writer (:attr:`MetricWriter.seconds_per_point`) is known early in a fit: the
``WeightDecay`` callback counts it when it picks its statistics interval. The period is long because a
write's fixed cost dominates: on MLflow's SQLite store one ``log_batch`` of 29 points took 10 ms of CPU, of
290 points 27 ms (0.09 ms a point), of 870 points 58 ms (measured on this project's 2-core machine, MLflow
3.17). A store shows the points at most
``period`` seconds late; :meth:`MetricWriter.flush` and :meth:`MetricWriter.close` send everything at once.

When the store fails (a tracking server killed, a locked SQLite file), the points stay buffered and the
thread retries with a backoff of at most ``max_backoff`` seconds; the first failure gives one warning
naming the store and what is kept, further ones at most every ``warn_every`` seconds. Beyond ``capacity``
points the oldest are dropped and counted. :meth:`MetricWriter.close` waits up to ``timeout`` seconds for
the buffer to drain; what could not be sent is written to a JSON-lines file (one line per point) and named
in one warning; :func:`replay` sends such a file once the store is back. With ``strict=True`` the first
failure is raised on the training thread at its next :meth:`put`/:meth:`flush` instead.

A rejected batch (an HTTP 4xx other than 429: the store refuses these values) is not retried: its points
are counted as dropped.

Example:
    >>> class Store:
    ...     def __init__(self): self.points = []
    ...     def log_batch(self, run_id, metrics=()): self.points += metrics
    >>> store = Store()
    >>> writer = MetricWriter(store, "run-1", period=0.01)
    >>> writer.put([("loss", 0.5, 0, 1)]); writer.close()
    >>> len(store.points), writer.sent
    (1, 1)
"""

from __future__ import annotations

import collections
import json
import threading
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lightning_wd.core.messages import one_line

__all__ = ["MetricWriter", "TrackingWriteError", "append_records", "replay"]

BATCH = 1000  # MLflow's maximum number of metrics in one log_batch
PERIOD = 10.0  # seconds between two sends (see the module docstring)


class TrackingWriteError(RuntimeError):
    """The tracking store refused or failed a write and the writer is strict."""


def _permanent(error: BaseException) -> bool:
    """Whether retrying cannot help: the store answered and refused the values (HTTP 4xx but 429)."""
    code = getattr(error, "get_http_status_code", None)
    try:
        status = int(code()) if callable(code) else 0
    except Exception:  # noqa: BLE001 - an exception type without a usable status: treat as transient
        return False
    return 400 <= status < 500 and status != 429


class MetricWriter:
    """Send metric points to ``client.log_batch(run_id, metrics=...)`` from a background thread.

    Args:
        client: an ``MlflowClient`` (anything with ``log_batch(run_id, metrics=[...])``).
        run_id: the run the points belong to.
        where: how the store is named in messages (a redacted URI).
        capacity: most points kept while the store is unavailable; the oldest go first beyond it.
        period: seconds between two sends while points arrive.
        first_period: seconds before the first send, so that the first cost is measured early (default: 1 s,
            or ``period`` if shorter).
        max_backoff: longest wait between two attempts while the store fails.
        strict: raise :class:`TrackingWriteError` on the training thread after the first failure.
        spill_dir: folder of the file of the points still unsent at :meth:`close` (default ``./mlruns/unsent``).
        warn_every: seconds between two warnings about the same outage.

    Points are tuples ``(key, value, timestamp_ms, step)``.
    """

    def __init__(self, client: Any, run_id: str, where: str = "the tracking store", capacity: int = 200_000,
                 period: float = PERIOD, max_backoff: float = 10.0, strict: bool = False,
                 spill_dir: str | Path | None = None, warn_every: float = 300.0,
                 first_period: float | None = None) -> None:
        if capacity < BATCH:
            raise ValueError(f"`capacity` must be >= {BATCH}, got {capacity}")
        first_period = min(1.0, period) if first_period is None else first_period
        for name, value in (("period", period), ("first_period", first_period)):
            if not value > 0:
                raise ValueError(f"`{name}` must be a number of seconds > 0, got {value!r}")
        self.client, self.run_id, self.where = client, run_id, where
        self.capacity, self.period, self.max_backoff, self.strict = capacity, period, max_backoff, strict
        self.first_period = first_period
        self.spill_dir = Path(spill_dir) if spill_dir is not None else Path("mlruns") / "unsent"
        self.warn_every = warn_every
        self.put_count = self.sent = self.dropped = self.rejected = self.batches = 0
        self.cpu_seconds = 0.0  # thread time of the writer (its share of the process's CPU)
        self.failure: str | None = None  # the last error while the store is unavailable
        self.outage_seconds = 0.0
        self._buffer: collections.deque = collections.deque()
        self._lock = threading.Condition()
        self._closing = False
        self._busy = False
        self._last_warning = -float("inf")
        self._outage_start = 0.0
        self._thread = threading.Thread(target=self._loop, name=f"lightning_wd-metrics-{run_id[:8]}", daemon=True)
        self._thread.start()

    # -- training thread ---------------------------------------------------------------------------------------
    def put(self, points: Iterable[tuple[str, float, int, int]]) -> None:
        """Buffer ``points`` for sending (never blocks on the store)."""
        self._raise_if_strict()
        with self._lock:
            before = len(self._buffer)
            self._buffer.extend(points)
            self.put_count += len(self._buffer) - before
            over = len(self._buffer) - self.capacity
            for _ in range(max(over, 0)):
                self._buffer.popleft()
            if over > 0:
                self.dropped += over
            if len(self._buffer) >= BATCH and self.failure is None:
                self._lock.notify()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait up to ``timeout`` seconds until every buffered point is sent; whether it was."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._lock.notify()
            while (self._buffer or self._busy) and self._thread.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._lock.wait(min(left, 0.05))
            done = not self._buffer and not self._busy
        self._raise_if_strict()
        return done

    def close(self, timeout: float = 10.0) -> Path | None:
        """Flush (up to ``timeout`` s), stop the thread, spill what is left; the spill file, if any."""
        try:
            self.flush(timeout)
        finally:
            with self._lock:
                self._closing = True
                self._lock.notify()
            self._thread.join(timeout=max(self.max_backoff, 1.0) + 5.0)
        spilled = self._spill()
        lost = self.dropped + self.rejected
        if spilled is not None or lost:
            parts = []
            if spilled is not None:
                parts.append(f"{self.pending} metric points of run {self.run_id} could not be sent to {self.where}; "
                             f"they are in {spilled} (send them later with lightning_wd.tracking.writer.replay)")
            if lost:
                parts.append(f"{lost} metric points of run {self.run_id} were dropped ({self.dropped} beyond the "
                             f"buffer of {self.capacity}, {self.rejected} refused by {self.where})")
            warnings.warn(f"lightning_wd: {'; '.join(parts)}", UserWarning, stacklevel=2)
        return spilled

    @property
    def pending(self) -> int:
        """Points buffered and not yet sent."""
        return len(self._buffer)

    @property
    def seconds_per_point(self) -> float | None:
        """The writer's thread time per point sent so far (None before its first batch)."""
        return self.cpu_seconds / self.sent if self.sent else None

    def _raise_if_strict(self) -> None:
        if self.strict and self.failure is not None:
            raise TrackingWriteError(f"tracking store {self.where} failed (strict): {self.failure}")

    # -- writer thread -----------------------------------------------------------------------------------------
    def _loop(self) -> None:
        from mlflow.entities import Metric

        start_cpu = time.thread_time()
        backoff = 0.0
        while True:
            with self._lock:
                if not self._closing:
                    self._lock.wait(backoff or (self.period if self.batches else self.first_period))
                if self._closing and (not self._buffer or self.failure is not None):
                    break
                batch = [self._buffer.popleft() for _ in range(min(BATCH, len(self._buffer)))]
                self._busy = bool(batch)
            if not batch:
                continue
            try:
                self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), t, s) for k, v, t, s in batch])
            except Exception as error:  # noqa: BLE001 - every failure is kept and reported, never raised here
                backoff = self._failed(batch, error, backoff)
            else:
                self._recovered()
                backoff = 0.0
                self.sent += len(batch)
                self.batches += 1
            finally:
                with self._lock:
                    self._busy = False
                    self._lock.notify_all()
                self.cpu_seconds = time.thread_time() - start_cpu
        self.cpu_seconds = time.thread_time() - start_cpu

    def _failed(self, batch: list, error: BaseException, backoff: float) -> float:
        message = one_line(f"{type(error).__name__}: {getattr(error, 'message', None) or error}", 300)
        if _permanent(error):
            self.rejected += len(batch)
            warnings.warn(f"lightning_wd: {self.where} refused {len(batch)} metric points of run {self.run_id} "
                          f"(dropped): {message}", UserWarning, stacklevel=1)
            return backoff
        with self._lock:
            self._buffer.extendleft(reversed(batch))  # kept, in order, for the next attempt
            over = len(self._buffer) - self.capacity
            for _ in range(max(over, 0)):
                self._buffer.popleft()
            self.dropped += max(over, 0)
        first = self.failure is None
        self.failure = message
        now = time.monotonic()
        if first:
            self._outage_start = now
        if not self.strict and now - self._last_warning >= self.warn_every:
            self._last_warning = now
            warnings.warn(
                f"lightning_wd: cannot write metrics of run {self.run_id} to {self.where} ({message}); training "
                f"goes on, {self.pending} points kept in memory (at most {self.capacity}, the oldest dropped "
                "beyond) and sent when it answers again, else written to a file at the end",
                UserWarning, stacklevel=1,
            )
        return min(self.max_backoff, max(0.5, 2 * backoff))

    def _recovered(self) -> None:
        if self.failure is None:
            return
        self.outage_seconds += time.monotonic() - self._outage_start
        self.failure = None

    def _spill(self) -> Path | None:
        with self._lock:
            left = list(self._buffer)
        if not left:
            return None
        return append_records(self.spill_dir / f"{self.run_id}.jsonl", self.run_id,
                              [{"key": k, "value": v, "timestamp": t, "step": s} for k, v, t, s in left])


def append_records(path: Path, run_id: str, records: Iterable[dict]) -> Path | None:
    """Append ``records`` of run ``run_id`` to the JSON-lines spill file ``path`` (one line each, the format
    :func:`replay` reads); the file's resolved path, or None (with one warning) if it cannot be written.

    Example:
        >>> import tempfile
        >>> path = append_records(Path(tempfile.mkdtemp()) / "r.jsonl", "r", [{"terminate": "FAILED"}])
        >>> path.read_text()
        '{"run_id": "r", "terminate": "FAILED"}\\n'
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as file:
            for record in records:
                file.write(json.dumps({"run_id": run_id, **record}) + "\n")
        return path.resolve()
    except OSError as error:
        warnings.warn(f"lightning_wd: could not write the unsent metrics to {path}: {one_line(error)}",
                      UserWarning, stacklevel=2)
        return None


def replay(path: str | Path, client: Any) -> int:
    """Send the points of a spill file written by :meth:`MetricWriter.close` (and end the runs whose final
    status it holds); the number of points sent. The file is removed once everything is in the store.

    Example:
        .. code-block:: python

            from mlflow import MlflowClient
            replay("mlruns/unsent/<run_id>.jsonl", MlflowClient("http://127.0.0.1:5000"))
    """
    from mlflow.entities import Metric

    path = Path(path)
    by_run: dict[str, list] = collections.defaultdict(list)
    statuses: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        point = json.loads(line)
        if "terminate" in point:
            statuses[point["run_id"]] = point["terminate"]
            continue
        by_run[point["run_id"]].append(Metric(point["key"], float(point["value"]), int(point["timestamp"]),
                                              int(point["step"])))
    sent = 0
    for run_id, metrics in by_run.items():
        for start in range(0, len(metrics), BATCH):
            client.log_batch(run_id, metrics=metrics[start:start + BATCH])
            sent += len(metrics[start:start + BATCH])
    for run_id, status in statuses.items():
        client.set_terminated(run_id, status)
    path.unlink()
    return sent
