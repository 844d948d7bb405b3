"""The background metric writer: batches, keeps points while the store fails, sends them when it returns,
drops beyond its bound with a count, spills the rest to a file that ``replay`` sends, strict mode."""

from __future__ import annotations

import json
import threading
import time
import warnings

import pytest

from lightning_wd.tracking.writer import BATCH, MetricWriter, TrackingWriteError, replay


class Store:
    """A stand-in MlflowClient: records batches; fails while ``down`` is set."""

    def __init__(self, status: int | None = None) -> None:
        self.batches: list[list] = []
        self.down = threading.Event()
        self.status = status  # an HTTP status to fail with (4xx: refused)
        self.attempts = 0
        self.terminated: dict[str, str] = {}

    def log_batch(self, run_id, metrics=()):
        self.attempts += 1
        if self.down.is_set():
            error = ConnectionError("connection refused")
            if self.status is not None:
                error.get_http_status_code = lambda: self.status
            raise error
        self.batches.append(list(metrics))

    def set_terminated(self, run_id, status):
        self.terminated[run_id] = status

    @property
    def points(self) -> list:
        return [m for batch in self.batches for m in batch]


def _points(n: int, start: int = 0) -> list[tuple]:
    return [("wd/x", float(i), 0, i) for i in range(start, start + n)]


def test_points_are_batched_at_most_1000_per_call():
    store = Store()
    writer = MetricWriter(store, "r", period=0.05)
    writer.put(_points(2500))
    writer.close()
    assert [len(b) for b in store.batches] == [1000, 1000, 500]
    assert [m.step for m in store.points] == list(range(2500))
    assert writer.sent == writer.put_count == 2500 and writer.cpu_seconds > 0


def test_many_small_puts_become_few_writes():
    store = Store()
    writer = MetricWriter(store, "r", period=0.2)
    for i in range(200):  # 200 statistics calls of 10 points each
        writer.put(_points(10, 10 * i))
    writer.close()
    assert len(store.points) == 2000 and len(store.batches) <= 4


def test_the_first_send_comes_early_then_one_per_period():
    store = Store()
    writer = MetricWriter(store, "r", period=30.0, first_period=0.05)
    assert writer.period == 30.0 and writer.seconds_per_point is None
    writer.put(_points(10))
    deadline = time.monotonic() + 20
    while not store.batches and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [len(b) for b in store.batches] == [10]  # after first_period, not period
    assert writer.seconds_per_point == pytest.approx(writer.cpu_seconds / 10) and writer.seconds_per_point > 0
    for i in range(50):  # 50 more statistics calls within the period: buffered, then one write at close
        writer.put(_points(10, 10 + 10 * i))
    time.sleep(0.2)
    assert len(store.batches) == 1 and writer.pending == 500
    writer.close()
    assert [len(b) for b in store.batches] == [10, 500] and writer.sent == writer.put_count == 510
    assert [m.step for m in store.points] == list(range(510))


def test_periods_are_validated():
    for name in ("period", "first_period"):
        with pytest.raises(ValueError, match=rf"`{name}` must be a number of seconds > 0, got 0"):
            MetricWriter(Store(), "r", **{name: 0})


def test_points_are_kept_while_the_store_is_down_and_sent_when_it_returns():
    store = Store()
    store.down.set()
    writer = MetricWriter(store, "r", period=0.01, max_backoff=0.05)
    with pytest.warns(UserWarning, match=r"cannot write metrics of run r to the tracking store .*training goes on"):
        writer.put(_points(300))
        deadline = time.monotonic() + 5
        while store.attempts < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert store.attempts >= 3 and not store.points and writer.pending == 300 and writer.failure
    store.down.clear()
    assert writer.flush(5)
    writer.close()
    assert [m.step for m in store.points] == list(range(300)) and writer.failure is None
    assert writer.outage_seconds > 0


def test_one_warning_per_outage_interval():
    store = Store()
    store.down.set()
    writer = MetricWriter(store, "r", period=0.01, max_backoff=0.02)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        writer.put(_points(5))
        deadline = time.monotonic() + 5
        while store.attempts < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        store.down.clear()
        writer.close()
    outage = [w for w in caught if "cannot write metrics" in str(w.message)]
    assert store.attempts >= 10 and len(outage) == 1


def test_beyond_capacity_the_oldest_are_dropped_and_the_rest_spilled_then_replayed(tmp_path):
    store = Store()
    store.down.set()
    writer = MetricWriter(store, "run-7", period=0.01, max_backoff=0.02, capacity=1000, spill_dir=tmp_path)
    with pytest.warns(UserWarning) as caught:
        writer.put(_points(1500))
        path = writer.close(timeout=0.2)
    assert writer.dropped == 500 and writer.pending == 1000 and writer.sent == 0
    final = str(caught[-1].message)
    assert "1000 metric points of run run-7 could not be sent" in final and str(path) in final
    assert "500 metric points of run run-7 were dropped (500 beyond the buffer of 1000" in final
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [p["step"] for p in lines] == list(range(500, 1500))
    store.down.clear()
    assert replay(path, store) == 1000 and not path.exists()
    assert [m.step for m in store.points] == list(range(500, 1500))


def test_refused_points_are_not_retried():
    store = Store(status=400)
    store.down.set()
    writer = MetricWriter(store, "r", period=0.01)
    with pytest.warns(UserWarning, match="refused 3 metric points of run r"):
        writer.put(_points(3))
        writer.close()
    assert store.attempts == 1 and writer.rejected == 3


def test_strict_raises_on_the_training_thread():
    store = Store()
    store.down.set()
    writer = MetricWriter(store, "r", period=0.01, max_backoff=0.02, strict=True)
    writer.put(_points(3))
    deadline = time.monotonic() + 5
    while writer.failure is None and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(TrackingWriteError, match="failed \\(strict\\): ConnectionError: connection refused"):
        writer.put(_points(1))
    with pytest.raises(TrackingWriteError):
        writer.close(timeout=0.1)


def test_capacity_is_validated():
    with pytest.raises(ValueError, match=f"`capacity` must be >= {BATCH}"):
        MetricWriter(Store(), "r", capacity=10)
