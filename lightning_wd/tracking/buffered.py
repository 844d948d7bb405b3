"""``BufferedMLFlowLogger``: Lightning's ``MLFlowLogger`` with metrics written off the training thread, and a
tracking store that may go away mid-fit without taking the training with it.

``log_metrics`` only buffers the points (a :class:`~lightning_wd.tracking.writer.MetricWriter` sends them in
batches from a background thread); ``finalize`` (Lightning calls it at the end of fit, and on an exception)
flushes them, then ends the run with its status. If the store is unavailable then, the unsent points and
the final status go to a JSON-lines file (``<save folder>/unsent/<run_id>.jsonl``) named in one warning,
and :func:`~lightning_wd.tracking.writer.replay` sends them later; the run's tag
``lightning_wd.tracking.unsent`` says how many points it misses. Checkpoint uploads (``log_model``) and
hyperparameters that fail only warn. ``strict=True`` turns every such failure into an error on the
training thread instead (at its next ``log_metrics``, or at the end).
"""

from __future__ import annotations

import contextlib
import re
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.logger import _add_prefix
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from typing_extensions import override

from lightning_wd.core.messages import one_line
from lightning_wd.tracking.uris import redact
from lightning_wd.tracking.writer import MetricWriter, TrackingWriteError, append_records

__all__ = ["UNSENT_TAG", "BufferedMLFlowLogger"]

UNSENT_TAG = "lightning_wd.tracking.unsent"
_NAME = re.compile("[^a-zA-Z0-9_/. -]+")


class BufferedMLFlowLogger(MLFlowLogger):
    """An ``MLFlowLogger`` whose metric writes are buffered, batched and sent by a background thread.

    Args:
        strict: fail the fit at the first failed write instead of buffering and warning.
        flush_timeout: seconds ``finalize`` waits for the buffer to drain before spilling it to a file.
        spill_dir: folder of the files of unsent points (default ``mlruns/unsent`` of the working directory).
        writer_options: more arguments of :class:`~lightning_wd.tracking.writer.MetricWriter` (``capacity``,
            ``period``, ``max_backoff``, ``warn_every``).
        args, kwargs: those of ``MLFlowLogger``.

    Attributes:
        points_logged: points given to ``log_metrics`` (all fits of this logger).
        points_sent / points_unsent: of those, sent to the store / not sent (spilled or dropped).
        writer_cpu_seconds: thread time the background writer spent (its cost, off the training thread).

    The writer starts with the run (at ``log_hyperparams``, which Lightning calls at fit start), not on the
    first metrics; metric names are cleaned of the characters MLflow refuses once per name (one warning).
    """

    def __init__(self, *args: Any, strict: bool = False, flush_timeout: float = 10.0,
                 spill_dir: str | Path | None = None, writer_options: Mapping[str, Any] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.strict = strict
        self.flush_timeout = flush_timeout
        self.spill_dir = Path(spill_dir) if spill_dir is not None else Path.cwd() / "mlruns" / "unsent"
        self.writer_options = dict(writer_options or {})
        self._writer: MetricWriter | None = None
        self.points_logged = self.points_sent = self.points_unsent = 0
        self.writer_cpu_seconds = 0.0
        self.unsent_file: Path | None = None
        self._keys: dict[str, str] = {}  # a logged name -> its MLflow name (prefixed, cleaned)

    @property
    def where(self) -> str:
        return redact(self._tracking_uri)

    @override
    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        writer = self._writer or self._start_writer()
        now, step, keys = int(time.time() * 1000), step or 0, self._keys
        points = [(keys.get(k) or self._key(k), float(v), now, step) for k, v in metrics.items()
                  if not isinstance(v, str)]
        self.points_logged += len(points)
        writer.put(points)

    def _key(self, name: str) -> str:
        """``name``'s MLflow name (prefixed as Lightning does, the refused characters removed), cached."""
        (full,) = _add_prefix({name: 0}, self._prefix, self.LOGGER_JOIN_CHAR)
        clean = _NAME.sub("", full)
        if clean != full:
            rank_zero_warn(f"MLflow allows only '_', '/', '.', ' ' and '-' besides letters and digits in a metric "
                           f"name: {full!r} is logged as {clean!r}", category=RuntimeWarning)
        self._keys[name] = clean
        return clean

    def _start_writer(self) -> MetricWriter:
        self._writer = MetricWriter(self.experiment, self.run_id, where=self.where, strict=self.strict,
                                    spill_dir=self.spill_dir, **self.writer_options)
        return self._writer

    @property
    def background_seconds_per_point(self) -> float | None:
        """The background writer's thread time per point sent in this fit so far (None before its first batch):
        what the ``WeightDecay`` callback adds to a statistics call's cost when it picks its interval."""
        return self._writer.seconds_per_point if self._writer is not None else None

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every metric logged so far is in the store (up to ``timeout`` s); whether it is."""
        return self._writer is None or self._writer.flush(self.flush_timeout if timeout is None else timeout)

    @override
    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        self._tolerate("log the hyperparameters", super().log_hyperparams, params)
        if self._writer is None:  # at fit start: the thread's start is not paid by the first metrics
            with contextlib.suppress(Exception):  # the store is unavailable: log_metrics tries again (and says so)
                self._start_writer()

    @override
    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        self._tolerate("log the checkpoint", super().after_save_checkpoint, checkpoint_callback)

    @override
    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        if not self._initialized:
            return
        status = {"success": "FINISHED", "failed": "FAILED", "finished": "FINISHED"}.get(status, status)
        writer, self._writer = self._writer, None
        spilled, unsent = None, 0
        if writer is not None:
            try:
                spilled = writer.close(self.flush_timeout)
            finally:
                unsent = writer.put_count - writer.sent
                self.points_sent += writer.sent
                self.points_unsent += unsent
                self.writer_cpu_seconds += writer.cpu_seconds
        if self.strict and unsent:
            status = "FAILED"
        client = self._mlflow_client
        try:
            if self._checkpoint_callback:
                self._scan_and_log_checkpoints(self._checkpoint_callback)
            if unsent:
                client.set_tag(self.run_id, UNSENT_TAG, f"{unsent} metric points" +
                               (f", in {spilled}" if spilled else " (dropped)"))
            client.set_terminated(self.run_id, status)
        except Exception as error:
            spilled = append_records(spilled or self.spill_dir / f"{self.run_id}.jsonl", self.run_id,
                                     [{"terminate": status}])
            self.unsent_file = spilled
            message = (f"lightning_wd: could not end MLflow run {self.run_id} as {status} at {self.where} "
                       f"({one_line(error, 200)}); it shows RUNNING there until "
                       f"lightning_wd.tracking.writer.replay({str(spilled)!r}, client) sets it")
            if self.strict:
                raise TrackingWriteError(message) from None
            warnings.warn(message, UserWarning, stacklevel=2)
        else:
            self.unsent_file = spilled
        if self.strict and unsent:
            raise TrackingWriteError(f"{unsent} metric points of run {self.run_id} were not written to {self.where} "
                                     "(strict)")

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_writer"] = None  # a thread and a lock (spawned processes make their own writer)
        return state

    def _tolerate(self, what: str, function: Any, *args: Any) -> None:
        try:
            function(*args)
        except Exception as error:
            if self.strict:
                raise
            warnings.warn(f"lightning_wd: could not {what} to MLflow run {self._run_id} at {self.where}: "
                          f"{one_line(error, 300)}; training goes on", UserWarning, stacklevel=3)

