"""8. The evidence, end to end: computing the ``wd/*`` statistics and logging them through the real logger.

Every shipped recipe is fitted at its shipped length (its own ``max_epochs``) through the recipe runner (as
``lightning-wd fit``), with no logger, with MLflow on a SQLite store and with MLflow on a tracking server on
loopback, at its default statistics interval. A recipe whose shipped fit would take more than ``budget_s``
seconds here is cut: its no-logger fit runs with Lightning's ``max_time`` and the logged fits run as many
steps as it reached (``steps`` of ``shipped_steps``). A 21 M-parameter MLP on MNIST-1D runs ``big_steps``
steps (its 30 shipped epochs would take about 17 min per fit on this 2-core machine).

``share`` is the statistics' cost over the training time. The cost: the training thread's time inside the
callback's ``_log_stats`` (computing, logging) and in the diagnostics' copies of the step before each (both
wrapped with timers here), plus, for a background writer, its thread time in proportion to the ``wd/*`` points
among all points it sent. The training time: the fit's wall time less its start and end work, which happen
once and are reported apart: ``start_s`` (``MLflowRecord``'s params and audit, the logger's hyperparameters and
run), ``end_s`` (``MLflowRecord``'s plots and their upload, the logger's final flush and run status).
``ms_per_call`` is the training thread's cost per statistics call (the end-of-training call included).
``share_cpu`` is the same ratio in CPU time (the training thread's time in the calls and the writer's, over the
process's CPU time in training: all its threads, the writer's included), which a busy machine's preemption
does not inflate.
Run with the code of another checkout to measure it ("before"):
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
BUDGET_S = 30.0  # longest fit measured at its shipped length; longer recipes are cut (see the docstring)
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
        self.cls, self.name, self.seconds, self.cpu, self.calls = cls, name, 0.0, 0.0, 0
        self.original = getattr(cls, name)

    def __enter__(self):
        timer, original = self, self.original

        def timed(*args, **kwargs):
            start, cpu = time.perf_counter(), time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                timer.seconds += time.perf_counter() - start
                timer.cpu += time.thread_time() - cpu
                timer.calls += 1

        setattr(self.cls, self.name, timed)
        return self

    def __exit__(self, *exc) -> None:
        setattr(self.cls, self.name, self.original)


def _fit(recipe: str, extra: list[str], steps: int | None, uri: str | None, budget_s: float | None = None) -> dict:
    import torch

    from lightning_wd import WeightDecay
    from lightning_wd.apps.runner import build_cli
    from lightning_wd.core.diagnostics import Diagnostics
    from lightning_wd.tracking import BufferedMLFlowLogger, MLflowRecord, find_decay_callback

    threads = torch.get_num_threads()
    overrides = ["--trainer.enable_progress_bar", "false", "--trainer.enable_checkpointing", "false",
                 "--trainer.enable_model_summary", "false", "--trainer.callbacks.init_args.print_audit", "false",
                 *extra]
    if steps is not None:
        overrides += ["--trainer.max_steps", str(steps), "--trainer.max_epochs", "-1"]
    elif budget_s is not None:
        seconds = max(1, round(budget_s))
        overrides += ["--trainer.max_time", f"00:{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"]
    kwargs = {"logger": False} if uri is None else {}
    if uri is not None:
        overrides += ["--tracking_uri", uri, "--run_name", f"bench-{recipe}"]
    timers = {"stats": (WeightDecay, "_log_stats"), "copy": (Diagnostics, "snapshot"),
              "end": (MLflowRecord, "on_fit_end"), "start": (MLflowRecord, "on_train_start"),
              "params": (BufferedMLFlowLogger, "log_hyperparams"), "final": (BufferedMLFlowLogger, "finalize")}
    with contextlib.ExitStack() as stack:
        t = {name: stack.enter_context(_Timer(*where)) for name, where in timers.items()}
        cli = build_cli(recipe, overrides, quiet=True, **kwargs)
        trainer = cli.trainer
        begin, begin_cpu = time.perf_counter(), time.process_time()
        trainer.fit(cli.model, datamodule=cli.datamodule)
        wall, process_cpu = time.perf_counter() - begin, time.process_time() - begin_cpu
    torch.set_num_threads(threads)  # the recipe may set its own
    decay = find_decay_callback(trainer)
    computed = sum(len(h["metrics"]) for h in decay.history)
    logger = trainer.logger
    cpu = getattr(logger, "writer_cpu_seconds", 0.0)
    logged = getattr(logger, "points_logged", 0) or 1
    background = cpu * computed / logged
    interval = decay._interval(trainer)
    params = sum(p.numel() for p in cli.model.parameters())
    points = None
    if uri is not None:
        from mlflow import MlflowClient

        client = MlflowClient(logger._tracking_uri)
        run = client.get_run(logger.run_id)
        points = sum(len(client.get_metric_history(logger.run_id, k)) for k in run.data.metrics if k.startswith("wd/"))
    start_s = t["start"].seconds + t["params"].seconds
    end_s = t["end"].seconds + t["final"].seconds
    training = wall - start_s - end_s  # the start and end work (once, off the steps) is accounted apart
    foreground = t["stats"].seconds + t["copy"].seconds
    foreground_cpu = t["stats"].cpu + t["copy"].cpu
    training_cpu = process_cpu - sum(t[k].cpu for k in ("start", "params", "end", "final"))
    calls = max(1, len(decay.history))
    return {"params_M": params / 1e6, "steps": trainer.global_step, "shipped_steps": None,
            "step_ms": training / max(1, trainer.global_step) * 1e3, "interval": interval, "calls": len(decay.history),
            "ms_per_call": foreground / calls * 1e3, "writer_ms": background * 1e3,
            "share": (foreground + background) / training, "share_cpu": (foreground_cpu + background) / training_cpu,
            "training_s": training, "start_s": start_s, "end_s": end_s, "points_computed": computed,
            "points_logged": points}


def _shipped_steps(recipe: str, extra: list[str]) -> int:
    """The optimizer steps of the recipe's shipped fit (its own max_epochs / max_steps)."""
    import torch

    from lightning_wd.apps.runner import build_cli

    threads = torch.get_num_threads()
    cli = build_cli(recipe, ["--trainer.enable_progress_bar", "false", *extra], quiet=True, logger=False)
    torch.set_num_threads(threads)  # the recipe may set its own: not for the next recipes
    trainer = cli.trainer
    cli.datamodule.setup("fit")
    per_epoch = len(cli.datamodule.train_dataloader()) // max(1, trainer.accumulate_grad_batches)
    epochs, steps = trainer.max_epochs, trainer.max_steps
    total = per_epoch * epochs if epochs and epochs > 0 else float("inf")
    return int(min(total, steps) if steps and steps > 0 else total)


def run(recipes: tuple[str, ...] | None = None, steps: int | None = None, backends: tuple[str, ...] = ("none",
        "sqlite", "server"), big: bool = True, big_steps: int = 40, budget_s: float = BUDGET_S) -> list[dict]:
    """The rows; ``steps=None``: each recipe at its shipped length (cut to ``budget_s`` seconds, see above)."""
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
                shipped = _shipped_steps(recipe, extra)
                for backend in backends:
                    uri = {"none": None, "sqlite": f"sqlite:///{folder / 'mlflow.db'}", "server": url}[backend]
                    print(f"   {label} / {backend} ({n or shipped} of {shipped} steps) ...", flush=True)
                    row = _fit(recipe, extra, n, uri, budget_s)
                    if n is None:  # the first fit ran under the time budget: the others run as many steps
                        n = row["steps"]
                    rows.append({"recipe": label, "logger": backend, **row, "shipped_steps": shipped})
        finally:
            os.chdir(previous)
    return rows


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="default: each recipe's shipped length")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S)
    parser.add_argument("--recipes", nargs="*", default=None)
    parser.add_argument("--backends", nargs="*", default=["none", "sqlite", "server"])
    parser.add_argument("--no-big", action="store_true")
    args = parser.parse_args()
    result = run(tuple(args.recipes) if args.recipes else None, args.steps, tuple(args.backends), not args.no_big,
                 budget_s=args.budget_s)
    print(json.dumps(result))
