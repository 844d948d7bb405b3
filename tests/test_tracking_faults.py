"""Faults of the tracking side never stop the training: a tracking server killed mid-fit, a store failing
under a strict logger, an artifact store that is full or corrupt, four fits on a fresh SQLite store, and the
parent run of a killed study. Every test is bounded in time and uses loopback only. Also: every statistics
point computed is a point logged, at the end of fit and when the fit fails."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from pathlib import Path

import lightning.pytorch as pl
import pytest
from fixtures_mlflow import free_port
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lit_net import Net, make_loader

from lightning_wd import WeightDecay
from lightning_wd.tracking import MLflowRecord, mlflow_logger
from lightning_wd.tracking.writer import TrackingWriteError, replay

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_env_uri(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("LIGHTNING_WD_TRACKING_STRICT", raising=False)


class Failing(Net):
    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.fail_at = fail_at

    def training_step(self, batch, batch_idx):
        if self.global_step == self.fail_at:
            raise RuntimeError("boom at step")
        return super().training_step(batch, batch_idx)


def _fit(tmp_path, logger, model=None, epochs: int = 4, callbacks=(), every: int = 2, **kwargs):
    decay = WeightDecay(strength=0.1, log_every_n_steps=every, print_audit=False)
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=epochs, logger=logger, log_every_n_steps=1,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        default_root_dir=tmp_path, callbacks=[decay, MLflowRecord(), *callbacks],
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks), **kwargs,
    )
    trainer.fit(model or Net(), make_loader())
    return decay, trainer


def _wd_points(client, run_id: str) -> int:
    metrics = client.get_run(run_id).data.metrics
    return sum(len(client.get_metric_history(run_id, key)) for key in metrics if key.startswith("wd/"))


def _computed(decay) -> int:
    return sum(len(entry["metrics"]) for entry in decay.history)


# -- nothing lost --------------------------------------------------------------------------------------------
def test_points_logged_equal_points_computed(tmp_path, mlflow_sqlite):
    from mlflow import MlflowClient

    logger = mlflow_logger("points", tracking_uri=mlflow_sqlite)
    decay, _ = _fit(tmp_path, logger, epochs=5)  # 30 steps: 15 statistics calls and the final one
    client = MlflowClient(mlflow_sqlite)
    assert len(decay.history) == 15 and _computed(decay) == _wd_points(client, logger.run_id) > 60
    assert logger.points_unsent == 0 and logger.points_sent == logger.points_logged
    assert client.get_run(logger.run_id).info.status == "FINISHED"


def test_points_are_flushed_when_the_fit_fails(tmp_path, mlflow_sqlite):
    from mlflow import MlflowClient

    logger = mlflow_logger("points", tracking_uri=mlflow_sqlite)
    decay = WeightDecay(strength=0.1, log_every_n_steps=2, print_audit=False)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=5, logger=logger, enable_progress_bar=False,
                         enable_checkpointing=False, enable_model_summary=False, callbacks=[decay])
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(Failing(fail_at=21), make_loader())
    client = MlflowClient(mlflow_sqlite)
    assert len(decay.history) == 10 and _computed(decay) == _wd_points(client, logger.run_id)
    assert client.get_run(logger.run_id).info.status == "FAILED"


# -- the store fails -----------------------------------------------------------------------------------------
class Server:
    """An ``mlflow server`` on 127.0.0.1 that can be killed (SIGKILL) and started again on its port and store."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port, self.process = folder, free_port(), None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 600.0) -> Server:  # a busy 2-core machine boots it in minutes
        command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
                   "--workers", "1", "--backend-store-uri", f"sqlite:///{self.folder / 'server.db'}",
                   "--serve-artifacts", "--artifacts-destination", str(self.folder / "artifacts")]
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        with (self.folder / "server.log").open("ab") as log:
            self.process = subprocess.Popen(command, cwd=self.folder, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.folder / "server.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2):
                    return self
            except OSError:
                time.sleep(0.25)
        self.kill()  # not left running behind a failed test
        raise RuntimeError("mlflow server did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


class KillAt(Callback):
    def __init__(self, server: Server, step: int) -> None:
        self.server, self.step, self.killed_at = server, step, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step and self.killed_at is None:
            self.server.kill()
            self.killed_at = time.monotonic()


@pytest.mark.server
@pytest.mark.slow
def test_server_killed_mid_fit_training_goes_on_and_nothing_is_lost(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    folder = Path(tempfile.mkdtemp(prefix="lightning_wd_kill_"))
    server = Server(folder).start()
    try:
        logger = mlflow_logger("faults", tracking_uri=server.url, run_name="killed")
        kill = KillAt(server, step=12)
        checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_epochs=1, save_top_k=-1)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            decay, trainer = _fit(tmp_path, logger, epochs=8, callbacks=[kill, checkpoints])
        after_kill = time.monotonic() - kill.killed_at
        assert trainer.global_step == 48 and trainer.state.finished  # training and checkpointing went on
        assert len(list((tmp_path / "ckpt").glob("*.ckpt"))) == 8
        assert after_kill < 120, after_kill  # seconds, not MLflow's minutes of retries
        texts = [str(w.message) for w in caught if "lightning_wd" in str(w.message)]
        assert sum("cannot write metrics of run" in t for t in texts) == 1, texts  # one warning per outage
        spilled = [t for t in texts if "could not be sent to" in t]
        assert len(spilled) == 1 and str(logger.unsent_file) in spilled[0]
        assert any("could not end MLflow run" in t and "RUNNING" in t for t in texts)
        assert logger.points_unsent > 0 and logger.points_sent + logger.points_unsent == logger.points_logged

        server.start()  # the server comes back: the spilled points and the final status go in
        client = MlflowClient(server.url)
        assert client.get_run(logger.run_id).info.status == "RUNNING"
        assert replay(logger.unsent_file, client) == logger.points_unsent
        run = client.get_run(logger.run_id)
        assert run.info.status == "FINISHED"
        assert _wd_points(client, logger.run_id) == _computed(decay)
        steps = [m.step for m in client.get_metric_history(logger.run_id, "wd/nonzero_fraction")]
        assert steps == [entry["step"] for entry in decay.history]
    finally:
        server.kill()


def test_strict_logger_fails_the_fit_at_the_first_failed_write(tmp_path, mlflow_sqlite):
    logger = mlflow_logger("strict", tracking_uri=mlflow_sqlite, strict=True)
    logger.writer_options = {"period": 0.01, "max_backoff": 0.05}

    class Broken(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 4:
                def refuse(*args, **kwargs):
                    raise OSError(errno.EIO, "the store went away")
                logger.experiment.log_batch = refuse
                time.sleep(0.2)  # the writer meets the failure

    with pytest.raises(TrackingWriteError, match=r"failed \(strict\): OSError: \[Errno 5\] the store went away"):
        _fit(tmp_path, logger, epochs=3, callbacks=[Broken()])


@pytest.mark.parametrize("fault", ["corrupt", "full"])
def test_artifact_store_full_or_corrupt_only_warns(tmp_path, mlflow_sqlite, monkeypatch, fault):
    from mlflow import MlflowClient
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    if fault == "corrupt":  # the artifact folder is a file
        (Path(mlflow_sqlite.split(":///", 1)[1]).parent / "artifacts").write_text("not a folder")
    else:
        def full(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(LocalArtifactRepository, "log_artifact", full)
        monkeypatch.setattr(LocalArtifactRepository, "log_artifacts", full)
    logger = mlflow_logger("artifacts", tracking_uri=mlflow_sqlite)
    with pytest.warns(UserWarning, match="could not log the grouping audit to MLflow run .*training goes on") as got:
        decay, trainer = _fit(tmp_path, logger, epochs=2)
    assert any("could not log the weight-decay plots" in str(w.message) for w in got)
    assert trainer.global_step == 12
    client = MlflowClient(mlflow_sqlite)
    assert client.get_run(logger.run_id).info.status == "FINISHED"
    assert _wd_points(client, logger.run_id) == _computed(decay)


# -- several processes on one fresh SQLite store ----------------------------------------------------------
@pytest.mark.slow
def test_four_concurrent_fits_on_a_fresh_sqlite_store(tmp_path):
    from mlflow import MlflowClient

    quick = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "5", "--trainer.limit_val_batches", "2",
             "--trainer.enable_progress_bar", "false", "--trainer.enable_checkpointing", "false"]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    processes = [subprocess.Popen([sys.executable, "-m", "lightning_wd", "fit", "--config",
                                   str(ROOT / "recipes" / "mnist1d_mlp.yaml"), *quick, "--run-name", f"fit-{i}"],
                                  cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                 for i in range(4)]
    outputs = [p.communicate(timeout=600)[0].decode(errors="replace") for p in processes]
    assert [p.returncode for p in processes] == [0] * 4, [o[-1500:] for o in outputs]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert sorted(r.info.run_name for r in runs) == [f"fit-{i}" for i in range(4)]
    assert {r.info.status for r in runs} == {"FINISHED"} and all("wd/strength" in r.data.metrics for r in runs)


# -- a killed study ---------------------------------------------------------------------------------------------
def test_stale_parent_run_of_a_killed_study_is_closed_by_the_next_invocation(mlflow_sqlite):
    from mlflow import MlflowClient

    from lightning_wd.apps.tuning.record import StudyRecord

    script = ("import os, signal, sys\nfrom lightning_wd.apps.tuning.record import StudyRecord\n"
              "record = StudyRecord(sys.argv[1], 'tune', sys.argv[2])\n"
              "print(record.start({'n_trials': 3}), flush=True)\nos.kill(os.getpid(), signal.SIGKILL)\n")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}

    def killed(study: str) -> str:
        done = subprocess.run([sys.executable, "-c", script, mlflow_sqlite, study], capture_output=True, text=True,
                              env=env, timeout=300)
        assert done.returncode == -signal.SIGKILL, done.stderr[-1500:]
        return done.stdout.strip()

    stale, other = killed("study-a"), killed("study-b")
    client = MlflowClient(mlflow_sqlite)
    assert client.get_run(stale).info.status == "RUNNING"
    alive = StudyRecord(mlflow_sqlite, "tune", "study-a")
    alive.start({"n_trials": 3})
    again = StudyRecord(mlflow_sqlite, "tune", "study-a")
    assert again.end_stale_parents() == []  # the running invocation's parent is not stale
    run = client.get_run(stale)
    assert run.info.status == "KILLED"
    assert "ended without closing it (killed)" in run.data.tags["lightning_wd.end_reason"]
    assert client.get_run(other).info.status == "RUNNING"  # another study: its own next invocation closes it
    assert client.get_run(alive.parent_run_id).info.status == "RUNNING"
    alive.finish("FINISHED")



# -- the logger's own work on the training thread --------------------------------------------------------------
def test_names_are_prefixed_and_cleaned_once_and_the_writer_starts_with_the_run(tmp_path, mlflow_sqlite):
    from mlflow import MlflowClient

    from lightning_wd.tracking.buffered import BufferedMLFlowLogger

    logger = BufferedMLFlowLogger(experiment_name="keys", tracking_uri=mlflow_sqlite, prefix="fit",
                                  spill_dir=tmp_path)
    logger.log_hyperparams({"a": 1})
    assert logger._writer is not None  # started at fit start, not by the first metrics
    with pytest.warns(RuntimeWarning, match=r"'fit-wd/x\(1\)' is logged as 'fit-wd/x1'"):
        logger.log_metrics({"wd/x(1)": 1.0, "wd/y": 2.0, "note": "text"}, step=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the cleaned name is cached: no second warning
        logger.log_metrics({"wd/x(1)": 3.0, "wd/y": 4.0}, step=2)
    assert logger.points_logged == 4
    logger.finalize("success")
    client = MlflowClient(mlflow_sqlite)
    history = {k: [(m.step, m.value) for m in client.get_metric_history(logger.run_id, k)]
               for k in ("fit-wd/x1", "fit-wd/y")}
    assert history == {"fit-wd/x1": [(1, 1.0), (2, 3.0)], "fit-wd/y": [(1, 2.0), (2, 4.0)]}
    assert logger.points_sent == 4 and logger.points_unsent == 0
