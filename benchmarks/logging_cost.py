"""8. The evidence, end to end: computing the ``wd/*`` statistics and logging them through the real logger.

Every shipped recipe (and a 21 M-parameter MLP on MNIST-1D, for ``big_steps``) is fitted for ``steps`` optimizer
steps at its default statistics interval, through the recipe runner (as ``lightning-wd fit``), with no logger, with
MLflow on a SQLite store and with MLflow on a tracking server on loopback, the backends interleaved.
``share`` is the statistics' cost over the training time (the fit's wall time less the record's start and
end work): the training thread's time inside the
callback's ``_log_stats`` (compute + the logger call, wrapped with a timer) plus, for a background writer,
its thread time in proportion to the ``wd/*`` points among all points it sent. ``end_s`` is the
``MLflowRecord`` work made once at the end (plots, their upload), ``start_s`` its params and audit at the
start; neither runs on a step. Run with the code of another checkout to measure it ("before"):
``PYTHONPATH=<checkout> python benchmarks/logging_cost.py`` prints the rows as JSON.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

QUICK = {"recipes": ("mnist1d_mlp",), "steps": 12, "backends": ("none", "sqlite"), "big": False}
BIG = ["--model.init_args.hidden", "[4096, 4096, 1024]"]  # 21.2 M parameters on the MNIST-1D MLP recipe


def _recipes() -> list[str]:
    from lightning_wd.apps.recipes import recipe_names

    return [name for name in recipe_names()]


@contextlib.contextmanager
def _server(folder: Path):
    """An ``mlflow server`` on 127.0.0.1 (SQLite backend, proxied artifacts); yields its URL."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{folder / 'server.db'}", "--serve-artifacts",
               "--artifacts-destination", str(folder / "server-artifacts")]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    process = subprocess.Popen(command, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("mlflow server did not start") from None
                time.sleep(0.25)
        yield url
    finally:
        import signal

        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


class _Timer:
    """Wrap a method of a class with a perf_counter sum (for the benchmark's process only)."""

    def __init__(self, cls, name: str) -> None:
        self.cls, self.name, self.seconds, self.calls = cls, name, 0.0, 0
        self.original = getattr(cls, name)

    def __enter__(self):
        timer, original = self, self.original

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                timer.seconds += time.perf_counter() - start
                timer.calls += 1

        setattr(self.cls, self.name, timed)
        return self

    def __exit__(self, *exc) -> None:
        setattr(self.cls, self.name, self.original)


def _fit(recipe: str, extra: list[str], steps: int, uri: str | None) -> dict:
    import torch

    from lightning_wd import WeightDecay
    from lightning_wd.apps.runner import build_cli
    from lightning_wd.tracking import MLflowRecord, find_decay_callback

    threads = torch.get_num_threads()
    overrides = ["--trainer.max_steps", str(steps), "--trainer.max_epochs", "-1", "--trainer.enable_progress_bar",
                 "false", "--trainer.enable_checkpointing", "false", "--trainer.enable_model_summary", "false",
                 "--trainer.callbacks.init_args.print_audit", "false", *extra]
    kwargs = {"logger": False} if uri is None else {}
    if uri is not None:
        overrides += ["--tracking_uri", uri, "--run_name", f"bench-{recipe}"]
    with _Timer(WeightDecay, "_log_stats") as stats, _Timer(MLflowRecord, "on_fit_end") as end, \
            _Timer(MLflowRecord, "on_train_start") as start:
        cli = build_cli(recipe, overrides, quiet=True, **kwargs)
        trainer = cli.trainer
        begin = time.perf_counter()
        trainer.fit(cli.model, datamodule=cli.datamodule)
        wall = time.perf_counter() - begin
    torch.set_num_threads(threads)  # the recipe may set its own
    decay = find_decay_callback(trainer)
    computed = sum(len(h["metrics"]) for h in decay.history)
    logger = trainer.logger
    cpu = getattr(logger, "writer_cpu_seconds", 0.0)
    logged = getattr(logger, "points_logged", 0) or 1
    background = cpu * computed / logged
    interval = decay._interval(trainer) if hasattr(decay, "_interval") else (decay.log_every_n_steps
                                                                              or trainer.log_every_n_steps)
    params = sum(p.numel() for p in cli.model.parameters())
    points = None
    if uri is not None:
        from mlflow import MlflowClient

        client = MlflowClient(logger._tracking_uri)
        run = client.get_run(logger.run_id)
        points = sum(len(client.get_metric_history(logger.run_id, k)) for k in run.data.metrics if k.startswith("wd/"))
    training = wall - end.seconds - start.seconds  # the record's start and end work is accounted apart
    return {"params_M": params / 1e6, "step_ms": training / max(1, trainer.global_step) * 1e3, "interval": interval,
            "calls": stats.calls, "ms_per_call": stats.seconds / max(1, stats.calls) * 1e3,
            "writer_ms": background * 1e3, "share": (stats.seconds + background) / training,
            "start_s": start.seconds, "end_s": end.seconds, "points_computed": computed, "points_logged": points}


def run(recipes: tuple[str, ...] | None = None, steps: int = 150, backends: tuple[str, ...] = ("none", "sqlite",
        "server"), big: bool = True, big_steps: int = 40) -> list[dict]:
    cases = [(name, name, [], steps) for name in (recipes or _recipes())]
    if big:
        cases.append(("mnist1d_mlp 21M", "mnist1d_mlp", BIG, big_steps))
    rows = []
    with tempfile.TemporaryDirectory(prefix="lightning_wd_bench_logging_") as folder, contextlib.ExitStack() as stack:
        folder = Path(folder)
        url = stack.enter_context(_server(folder)) if "server" in backends else None
        previous = os.getcwd()
        os.chdir(folder)  # checkpoints/, mlruns/ of the runner land here
        try:
            for label, recipe, extra, n in cases:
                for backend in backends:
                    uri = {"none": None, "sqlite": f"sqlite:///{folder / 'mlflow.db'}", "server": url}[backend]
                    print(f"   {label} / {backend} ...", flush=True)
                    rows.append({"recipe": label, "logger": backend, "steps": n, **_fit(recipe, extra, n, uri)})
        finally:
            os.chdir(previous)
    return rows


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--recipes", nargs="*", default=None)
    parser.add_argument("--backends", nargs="*", default=["none", "sqlite", "server"])
    parser.add_argument("--no-big", action="store_true")
    args = parser.parse_args()
    result = run(tuple(args.recipes) if args.recipes else None, args.steps, tuple(args.backends), not args.no_big)
    print(json.dumps(result))
