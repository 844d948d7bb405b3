"""MLflow tracking: logger construction, the record callback, resume, run status, a live server."""

from __future__ import annotations

import csv
import io
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from fixtures_mlflow import free_port
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from lightning_wd import build_optimizer, explain
from lightning_wd.tracking import (
    DEFAULT_TRACKING_URI,
    MLflowRecord,
    TrackingUnavailable,
    check_tracking_uri,
    compare_runs,
    find_decay_callback,
    log_config,
    mlflow_logger,
    resolve_tracking_uri,
    run_id_from_checkpoint,
)
from lightning_wd.tracking.plots import PNG_MAGIC

STEPS_PER_EPOCH = 4


class TinyModel(pl.LightningModule):
    def __init__(self, fail_at: int | None = None, interrupt_at: int | None = None) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.LayerNorm(16), nn.Linear(16, 2))
        self.fail_at, self.interrupt_at = fail_at, interrupt_at

    def _step(self, batch, stage: str):
        x, y = batch
        logits = self.net(x)
        loss = F.cross_entropy(logits, y)
        self.log(f"{stage}/loss", loss, on_step=stage == "train", on_epoch=stage == "val")
        self.log(f"{stage}/acc", (logits.argmax(1) == y).float().mean(), on_step=stage == "train",
                 on_epoch=stage == "val")
        return loss

    def training_step(self, batch, batch_idx):
        if self.global_step == self.fail_at:
            raise RuntimeError("boom at step")
        if self.global_step == self.interrupt_at:
            raise KeyboardInterrupt
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def configure_optimizers(self):
        return build_optimizer(self, "adamw", lr=0.01, weight_decay=0.1)

    def _loader(self, seed: int):
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(16 * STEPS_PER_EPOCH, 8, generator=generator)
        return DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=16)

    def train_dataloader(self):
        return self._loader(0)

    def val_dataloader(self):
        return self._loader(1)


class StandInDecay(Callback):
    """What MLflowRecord needs from the WeightDecay callback: ``hparams``, ``plan`` and ``history``."""

    def __init__(self, keep_history: bool = True) -> None:
        self.keep_history = keep_history
        self.plan = None
        self.history: list[dict] = []

    @property
    def hparams(self) -> dict:
        return {"weight_decay": 0.1, "scheme": "decoupled", "schedule": "constant", "rules": {"bias": True}}

    def setup(self, trainer, pl_module, stage):
        self.plan = explain(pl_module, 0.1)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        named = dict(pl_module.named_parameters())
        metrics, total, nonzero, squares = {}, 0, 0, 0.0
        for row in self.plan.rows:
            if row.decayed:
                weight = named[row.name].detach()
                fraction = float((weight.abs() > 1e-3).float().mean())
                metrics[f"wd/nonzero_fraction/{row.name}"] = fraction
                metrics[f"wd/weight_norm/{row.name}"] = float(weight.norm())
                total, nonzero = total + weight.numel(), nonzero + fraction * weight.numel()
                squares += float(weight.pow(2).sum())
        metrics.update({"wd/nonzero_fraction": nonzero / total, "wd/weight_norm": squares**0.5,
                        "wd/strength": 0.1, "wd/penalty": 0.05 * squares, "wd/dead_units": 0.0})
        if self.keep_history:
            self.history.append({"step": trainer.global_step, "metrics": metrics})
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)


def make_trainer(tmp_path: Path, logger, max_steps: int = STEPS_PER_EPOCH, callbacks=(), **kwargs) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu", devices=1, max_steps=max_steps, logger=logger, log_every_n_steps=1,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        default_root_dir=tmp_path, callbacks=list(callbacks), **kwargs,
    )


def client_for(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(uri)


def is_png_bytes(data: bytes) -> bool:
    return data.startswith(PNG_MAGIC) and len(data) > 1000


@pytest.fixture(autouse=True)
def _no_env_uri(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


# ---------------------------------------------------------------------------------------------------------


def test_import_lightning_wd_does_not_import_mlflow():
    code = "import sys, lightning_wd, lightning_wd.apps.compare; assert 'mlflow' not in sys.modules, 'mlflow'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_store_modules_and_queries_load_neither_lightning_nor_mlflow():
    code = ("import sys, lightning_wd.tracking.uris, lightning_wd.tracking.queries, lightning_wd.apps.compare; "
            "loaded = [m for m in ('lightning', 'mlflow') if m in sys.modules]; assert not loaded, loaded")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_public_names_load_from_their_modules():
    import importlib

    import lightning_wd.tracking as tracking

    for name in tracking.__all__:
        value = getattr(tracking, name)
        home = tracking._LAZY.get(name, "uris")
        assert getattr(importlib.import_module(f"lightning_wd.tracking.{home}"), name) is value, name
    assert set(tracking._LAZY) <= set(tracking.__all__) <= set(dir(tracking))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        tracking.nope  # noqa: B018


def test_tracking_uri_resolution(monkeypatch, tmp_path, mlflow_sqlite):
    assert resolve_tracking_uri() == DEFAULT_TRACKING_URI == "sqlite:///mlruns/mlflow.db"
    assert resolve_tracking_uri("http://h:1") == "http://h:1"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_sqlite)
    assert resolve_tracking_uri() == mlflow_sqlite
    logger = mlflow_logger("env")
    assert isinstance(logger, MLFlowLogger)
    assert logger._tracking_uri == mlflow_sqlite
    assert logger._artifact_location == (tmp_path / "store" / "artifacts").as_uri()
    assert resolve_tracking_uri("http://h:1") == "http://h:1"  # an explicit URI beats the variable


def test_logger_arguments(monkeypatch, tmp_path):
    import types

    from lightning_wd.tracking import buffered, store

    made, prepared = [], []
    monkeypatch.setattr(buffered, "BufferedMLFlowLogger",
                        lambda **kwargs: made.append(kwargs) or types.SimpleNamespace(**kwargs))
    monkeypatch.setattr(store, "prepare_store", lambda *args: prepared.append(args) or "7")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LIGHTNING_WD_TRACKING_STRICT", raising=False)
    logger = mlflow_logger(run_name="r", tags={"k": 1}, parent_run_id="p" * 32, log_model="all")
    assert made[-1] == {
        "experiment_name": "lightning_wd", "run_name": "r", "tracking_uri": f"sqlite:///{tmp_path}/mlruns/mlflow.db",
        "tags": {"k": "1", "mlflow.parentRunId": "p" * 32}, "log_model": "all",
        "artifact_location": f"file://{tmp_path}/mlruns/artifacts", "run_id": None, "strict": False,
        "spill_dir": tmp_path / "mlruns" / "unsent",
    }
    assert prepared[-1] == (made[-1]["tracking_uri"], "lightning_wd", made[-1]["artifact_location"])
    assert logger._experiment_id == "7"  # found or created under the store's lock
    monkeypatch.setenv("LIGHTNING_WD_TRACKING_STRICT", "1")
    assert mlflow_logger().strict is True
    monkeypatch.delenv("LIGHTNING_WD_TRACKING_STRICT")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///deep/er/runs.db")
    mlflow_logger("e")
    assert made[-1]["tracking_uri"] == f"sqlite:///{tmp_path}/deep/er/runs.db" and made[-1]["tags"] is None
    assert made[-1]["artifact_location"] == f"file://{tmp_path}/deep/er/artifacts"


def test_unreachable_server_fails_fast_with_one_line():
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(TrackingUnavailable, match="unreachable") as raised:
        mlflow_logger(tracking_uri=uri)
    assert time.monotonic() - started < 5
    message = str(raised.value)
    assert "\n" not in message and uri in message
    assert isinstance(raised.value, RuntimeError)


def test_file_store_is_refused_clearly(monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(TrackingUnavailable, match="sqlite:///mlruns/mlflow.db"):
        check_tracking_uri("file:./mlruns")


def test_unknown_run_id_is_refused(mlflow_sqlite):
    with pytest.raises(ValueError, match="not a run"):
        mlflow_logger("x", tracking_uri=mlflow_sqlite, run_id="0" * 32)


def test_fit_logs_to_default_sqlite_store(monkeypatch, tmp_path, mlflow_sqlite_template):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlruns").mkdir()
    shutil.copyfile(mlflow_sqlite_template, tmp_path / "mlruns" / "mlflow.db")  # saves creating the tables
    logger = mlflow_logger(run_name="tiny", tags={"purpose": "test"})
    assert logger._tracking_uri == f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    decay, record = StandInDecay(), MLflowRecord()
    trainer = make_trainer(tmp_path, logger, callbacks=[record, decay], max_epochs=1)
    trainer.fit(TinyModel())
    assert log_config(trainer, {"model": {"lr": 0.01}, "trainer": {"max_steps": 4}}) == "config.yaml"
    assert log_config(logger, "seed: 1\n", name="configs/extra.yaml") == "configs/extra.yaml"

    class Parser:  # what SaveConfigCallback uses of LightningArgumentParser
        def dump(self, config, skip_none=False):
            return f"dumped: {config['x']}\n"

    from lightning_wd.tracking import MLflowSaveConfigCallback

    saver = MLflowSaveConfigCallback(Parser(), {"x": 1}, config_filename="cli.yaml")
    saver.setup(trainer, trainer.lightning_module, "fit")  # no log dir: Lightning's own would assert
    assert saver.already_saved

    assert (tmp_path / "mlruns" / "mlflow.db").is_file()
    client = client_for(logger._tracking_uri)
    run = client.get_run(logger.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "tiny" and run.data.tags["purpose"] == "test"
    artifacts = Path(run.info.artifact_uri.removeprefix("file://"))
    assert artifacts.is_relative_to(tmp_path / "mlruns" / "artifacts")

    params, tags = run.data.params, run.data.tags
    assert params["wd.weight_decay"] == "0.1" and params["wd.scheme"] == "decoupled"
    assert params["wd.rules.bias"] == "True"
    assert params["optimizer.class"] == "AdamW"
    assert params["optimizer.group0.name"] == "decay" and params["optimizer.group1.name"] == "no_decay"
    assert params["optimizer.group0.tensors"] == "2" and params["optimizer.group1.tensors"] == "4"
    assert params["optimizer.group0.betas"] == "[0.9, 0.999]"
    assert params["optimizer.group0.native_weight_decay"] == "0.1"  # the optimizer decays natively here
    assert params["optimizer.group1.native_weight_decay"] == "0.0"
    assert {tags[f"lightning_wd.{k}"] for k in ("scheme", "schedule", "strength", "optimizer")} == {
        "decoupled", "constant", "0.1", "AdamW"}
    assert tags["lightning_wd.version"]

    steps = [m.step for m in client.get_metric_history(run.info.run_id, "wd/nonzero_fraction")]
    assert steps == list(range(1, STEPS_PER_EPOCH + 1))
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == STEPS_PER_EPOCH

    assert "norm layer LayerNorm" in (artifacts / "audit" / "grouping.txt").read_text()
    rows = list(csv.DictReader(io.StringIO((artifacts / "audit" / "grouping.csv").read_text())))
    assert [r["name"] for r in rows] == [n for n, _ in TinyModel().named_parameters()]
    assert rows[0] == {"name": "net.0.weight", "shape": "16x8", "numel": "128", "group": "decay",
                       "strength": "0.1", "reason": "weight"}
    assert (artifacts / "config.yaml").read_text().startswith("model:\n  lr: 0.01")
    assert (artifacts / "configs" / "extra.yaml").read_text() == "seed: 1\n"
    assert (artifacts / "cli.yaml").read_text() == "dumped: 1\n"
    plots = sorted(p.name for p in (artifacts / "plots").iterdir())
    assert plots == ["decay_overview.png", "layer_nonzero_fraction.png", "layer_weight_norms.png",
                     "nonzero_fraction.png", "weight_histogram.png"]
    assert all(is_png_bytes((artifacts / "plots" / name).read_bytes()) for name in plots)


def test_resumed_fit_continues_the_same_run(tmp_path, mlflow_sqlite):
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first = mlflow_logger("resume", tracking_uri=mlflow_sqlite)
    make_trainer(tmp_path, first, callbacks=[MLflowRecord(plots=False), StandInDecay(), checkpoints]).fit(
        TinyModel())
    last = tmp_path / "ckpt" / "last.ckpt"
    run_id = run_id_from_checkpoint(last)
    assert run_id == first.run_id

    second = mlflow_logger("resume", tracking_uri=mlflow_sqlite, run_id=run_id)
    decay = StandInDecay()  # its history holds only the resumed steps: plots also read MLflow's
    resumed = make_trainer(tmp_path, second, max_steps=2 * STEPS_PER_EPOCH,
                           callbacks=[MLflowRecord(), decay, ModelCheckpoint(dirpath=tmp_path / "ckpt2")])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed.fit(TinyModel(), ckpt_path=last)
    assert not [w for w in caught if "lightning_wd" in str(w.message) or "MLflow" in str(w.message)]
    assert second.run_id == run_id
    assert [r["step"] for r in decay.history] == list(range(STEPS_PER_EPOCH + 1, 2 * STEPS_PER_EPOCH + 1))

    client = client_for(mlflow_sqlite)
    experiment = client.get_experiment_by_name("resume")
    assert [r.info.run_id for r in client.search_runs([experiment.experiment_id])] == [run_id]
    assert client.get_run(run_id).info.status == "FINISHED"
    for key in ("train/loss", "wd/nonzero_fraction"):
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert len(steps) == len(set(steps)) == 2 * STEPS_PER_EPOCH, (key, steps)
    assert run_id_from_checkpoint(next((tmp_path / "ckpt2").glob("*.ckpt"))) == run_id
    assert "plots/nonzero_fraction.png" in {f.path for f in client.list_artifacts(run_id, "plots")}


def test_run_status_failed_and_killed(tmp_path, mlflow_sqlite):
    client = client_for(mlflow_sqlite)
    failing = mlflow_logger("status", tracking_uri=mlflow_sqlite)
    with pytest.raises(RuntimeError, match="boom"):
        make_trainer(tmp_path, failing, callbacks=[MLflowRecord()]).fit(TinyModel(fail_at=2))
    run = client.get_run(failing.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["lightning_wd.error"] == "RuntimeError: boom at step"

    interrupted = mlflow_logger("status", tracking_uri=mlflow_sqlite)
    handler = signal.getsignal(signal.SIGINT)
    try:  # Lightning exits (code 1) after a KeyboardInterrupt, and ignores SIGINT from then on
        with pytest.raises(SystemExit):
            make_trainer(tmp_path, interrupted, callbacks=[MLflowRecord()]).fit(TinyModel(interrupt_at=1))
    finally:
        signal.signal(signal.SIGINT, handler)
    assert client.get_run(interrupted.run_id).info.status == "KILLED"
    assert "finalize" not in vars(interrupted)  # the one-off override is gone
    interrupted.finalize("success")
    assert client.get_run(interrupted.run_id).info.status == "FINISHED"


def test_other_loggers_are_left_alone(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    record, decay = MLflowRecord(), StandInDecay()
    trainer = make_trainer(tmp_path, CSVLogger(tmp_path / "csv"), callbacks=[record, decay])
    trainer.fit(TinyModel())
    assert not record.active and record.state_dict() == {}
    assert find_decay_callback(trainer) is decay
    assert log_config(trainer, {"a": 1}) is None
    assert not (tmp_path / "mlruns").exists()
    make_trainer(tmp_path, False, callbacks=[MLflowRecord()]).fit(TinyModel())  # no logger at all


def test_log_config_rejects_escaping_names():
    for name in ("", "/etc/passwd", "../up.yaml"):
        with pytest.raises(ValueError, match="relative artifact path"):
            log_config(None, "a: 1", name=name)


@pytest.mark.server
def test_fit_over_http_and_compare(tmp_path, mlflow_server, capsys):
    from lightning_wd.apps import compare

    logger = mlflow_logger("http", tracking_uri=mlflow_server, run_name="over-http")
    decay = StandInDecay(keep_history=False)  # no history: the plots are drawn from MLflow's metrics
    trainer = make_trainer(tmp_path, logger, callbacks=[MLflowRecord(), decay], max_epochs=1)
    trainer.fit(TinyModel())
    log_config(logger, {"model": {"lr": 0.01}})

    client = client_for(mlflow_server)
    run = client.get_run(logger.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == list(range(STEPS_PER_EPOCH))
    assert "val/acc" in run.data.metrics and "wd/weight_norm/net.3.weight" in run.data.metrics
    assert run.data.params["wd.scheme"] == "decoupled"
    artifacts = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"audit", "plots", "config.yaml"} <= artifacts
    plots = {f.path for f in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/layer_weight_norms.png" in plots and "plots/nonzero_fraction.png" in plots
    local = client.download_artifacts(run.info.run_id, "plots/nonzero_fraction.png", str(tmp_path))
    assert is_png_bytes(Path(local).read_bytes())

    child = mlflow_logger("http", tracking_uri=mlflow_server, parent_run_id=logger.run_id)
    assert client.get_run(child.run_id).data.tags["mlflow.parentRunId"] == logger.run_id
    child.finalize("success")

    rows = compare_runs("http", tracking_uri=mlflow_server)
    top = rows[0]
    assert top["run"] == "over-http" and top["scheme"] == "decoupled" and top["strength"] == 0.1
    assert top["status"] == "FINISHED" and top["val_acc"] is not None and top["duration_s"] > 0
    assert compare.main(["--tracking-uri", mlflow_server, "--experiment", "http", "--format", "csv"]) == 0
    assert "over-http" in capsys.readouterr().out
    assert compare.main(["--tracking-uri", mlflow_server, "--experiment", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no experiment 'nope'" in err
