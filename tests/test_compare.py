"""``lightning-wd compare``: rows from MLflow runs, sorting, formats, and command-line errors.

The contract test fits a real ``WeightDecay`` recorded by ``MLflowRecord`` and reads the run back as a
row; the other tests use a store written by hand, for the cases a fit cannot produce cheaply (failed and
running runs, params without tags).
"""

from __future__ import annotations

import csv
import io
import time

import pytest
from fixtures_mlflow import free_port
from lit_net import Net, make_loader, make_trainer
from torch.nn import functional as F

from lightning_wd import WeightDecay
from lightning_wd.apps.compare import COLUMNS, format_table, main
from lightning_wd.tracking import MLflowRecord, mlflow_logger
from lightning_wd.tracking.queries import ExperimentNotFound, compare_runs
from lightning_wd.tracking.uris import TrackingUnavailable


class Classifier(Net):
    """The shared tiny net, logging the metrics a compare row reads, with a validation set."""

    def _step(self, batch, stage: str):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=not on_step)
        self.log(f"{stage}/acc", (logits.argmax(1) == y).float().mean(), on_step=on_step, on_epoch=not on_step)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")


def test_contract_a_recorded_fit_becomes_its_compare_row(tmp_path, mlflow_sqlite, capsys):
    """WeightDecay + MLflowRecord + mlflow_logger write what compare_runs reads, value for value."""
    decay = WeightDecay(scheme="l1", strength=0.5, schedule="cosine", print_audit=False)
    logger = mlflow_logger("contract", tracking_uri=mlflow_sqlite, run_name="l1-cosine")
    trainer = make_trainer([decay, MLflowRecord(plots=False)], logger=logger, max_epochs=2, log_every_n_steps=1,
                           default_root_dir=tmp_path)
    model = Classifier()
    trainer.fit(model, make_loader(), make_loader(seed=2))
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    decayed = [model.body[0].weight, model.head.weight]  # what the default rules decay
    nonzero = sum(int((w != 0).sum()) for w in decayed) / sum(w.numel() for w in decayed)

    rows = compare_runs("contract", tracking_uri=mlflow_sqlite)
    assert len(rows) == 1
    row = rows[0]
    assert row["run"] == "l1-cosine" and row["run_id"] == logger.run_id and row["status"] == "FINISHED"
    assert (row["scheme"], row["strength"], row["schedule"]) == ("l1", 0.5, "cosine")
    for key, metric in [("train_acc", "train/acc"), ("val_acc", "val/acc"), ("train_loss", "train/loss"),
                        ("val_loss", "val/loss")]:
        assert row[key] == pytest.approx(logged[metric], rel=1e-6), key
    assert row["nonzero_fraction"] == pytest.approx(nonzero, rel=1e-9)  # of the final weights
    assert row["nonzero_fraction"] == pytest.approx(decay.history[-1]["metrics"]["wd/nonzero_fraction"])
    assert 0.0 < row["nonzero_fraction"] < 1.0  # L1 made exact zeros, and kept some weights
    assert row["duration_s"] is not None and row["duration_s"] > 0

    assert main(["--experiment", "contract", "--tracking-uri", mlflow_sqlite, "--format", "csv"]) == 0
    (printed,) = csv.DictReader(io.StringIO(capsys.readouterr().out))
    assert (printed["run"], printed["scheme"], printed["strength"], printed["schedule"]) == (
        "l1-cosine", "l1", "0.5", "cosine")
    assert float(printed["val_acc"]) == pytest.approx(logged["val/acc"], rel=1e-5)


@pytest.fixture
def store(mlflow_sqlite) -> str:
    """A store written by hand, experiment ``sweep``: three finished or failed runs and one still running."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    client = MlflowClient(mlflow_sqlite)
    experiment = client.create_experiment("sweep")
    now = int(time.time() * 1000)

    def run(name, status, metrics, tags=(), params=(), seconds=90.0):
        created = client.create_run(experiment, start_time=now, run_name=name)
        run_id = created.info.run_id
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, now + 1000 * i, step) for i, (k, v, step) in enumerate(metrics)],
            params=[Param(k, v) for k, v in params],
            tags=[RunTag(k, v) for k, v in tags],
        )
        if status != "RUNNING":
            client.set_terminated(run_id, status, end_time=now + int(seconds * 1000))
        return run_id

    wd = [("lightning_wd.scheme", "decoupled"), ("lightning_wd.schedule", "cosine")]
    run("low", "FINISHED", [("val/acc", 0.5, 0), ("val/acc", 0.8, 5), ("train/acc", 0.85, 5),
                            ("train/loss", 0.4, 5), ("val/loss", 0.5, 5), ("wd/nonzero_fraction", 0.75, 5)],
        tags=[*wd, ("lightning_wd.strength", "0.01")])
    run("high", "FINISHED", [("val/acc", 0.9, 5), ("train/loss", 0.3, 5)],
        tags=[*wd, ("lightning_wd.strength", "0.1")], seconds=3725)
    run("failed", "FAILED", [("val/acc", 0.85, 2)], params=[("wd.scheme", "l1"), ("wd.weight_decay", "0.001")])
    run("running", "RUNNING", [])
    return mlflow_sqlite


def test_rows_sorted_by_validation_accuracy(store):
    rows = compare_runs("sweep", tracking_uri=store)
    assert [r["run"] for r in rows] == ["high", "failed", "low", "running"]
    low = rows[2]
    assert low["val_acc"] == 0.8  # the value at the last step, not the best
    assert (low["scheme"], low["strength"], low["schedule"]) == ("decoupled", 0.01, "cosine")
    assert (low["train_acc"], low["train_loss"], low["val_loss"], low["nonzero_fraction"]) == (0.85, 0.4, 0.5, 0.75)
    assert low["duration_s"] == 90.0 and low["status"] == "FINISHED"
    failed = rows[1]
    assert (failed["scheme"], failed["strength"], failed["schedule"]) == ("l1", 0.001, None)
    running = rows[3]
    assert running["status"] == "RUNNING" and running["duration_s"] is None and running["val_acc"] is None


def test_environment_variable_names_the_store(store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    assert len(compare_runs("sweep")) == 4


def test_table_formats(store):
    rows = compare_runs("sweep", tracking_uri=store)
    table = [line.split() for line in format_table(rows).splitlines()]
    assert [line[1] for line in table] == ["run_id"] + [r["run_id"][:8] for r in rows]  # short ids
    table = [" ".join(line[:1] + line[2:]) for line in table]
    assert table[0].split() == ["run", "scheme", "strength", "schedule", "train_acc", "val_acc", "train_loss",
                                "val_loss", "nonzero", "duration", "status"]
    assert table[1].split() == ["high", "decoupled", "0.1", "cosine", "-", "0.9000", "0.3000", "-", "-",
                                "1h02m", "FINISHED"]
    assert table[3].split()[-2:] == ["1m30s", "FINISHED"]
    assert table[4].split() == ["running"] + ["-"] * 9 + ["RUNNING"]

    markdown = format_table(rows, "markdown").splitlines()
    assert markdown[1] == "|---|---|---|---|---|---|---|---|---|---|---|---|"
    assert markdown[2].startswith(f"| high | {rows[0]['run_id'][:8]} | decoupled | 0.1 | cosine | - | 0.9000 |")
    assert all(line.startswith("|") and line.endswith("|") for line in markdown)

    parsed = list(csv.DictReader(io.StringIO(format_table(rows, "csv"))))
    assert [r["run"] for r in parsed] == ["high", "failed", "low", "running"]
    assert parsed[0]["val_acc"] == "0.9" and parsed[0]["duration_s"] == "3725.0" and parsed[0]["train_acc"] == ""
    assert len(parsed[0]["run_id"]) == 32

    assert format_table([], "csv").startswith("run,run_id,")
    with pytest.raises(ValueError, match="fmt"):
        format_table(rows, "html")


def test_missing_values_and_odd_cells():
    rows = [{"run": "a|b", "val_acc": float("nan"), "strength": "auto"}]
    assert "a\\|b" in format_table(rows, "markdown")
    assert format_table(rows).splitlines()[1].split()[:5] == ["a|b", "-", "-", "auto", "-"]


def test_command_prints_the_table(store, capsys):
    assert main(["--experiment", "sweep", "--tracking-uri", store, "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[2].startswith("| high |")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--format", "xml"], "invalid choice: 'xml'"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--experiment"], "expected one argument"),
    ],
)
def test_command_rejects_bad_arguments(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("lightning-wd compare: error: ") and message in err and err.count("\n") == 1


def test_command_unknown_experiment(store, capsys):
    assert main(["--experiment", "nope", "--tracking-uri", store]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no experiment 'nope'" in err and "sweep" in err
    with pytest.raises(ExperimentNotFound):
        compare_runs("nope", tracking_uri=store)


def test_command_unreachable_server_fails_fast(capsys):
    started = time.monotonic()
    assert main(["--tracking-uri", f"http://127.0.0.1:{free_port()}"]) == 2
    assert time.monotonic() - started < 5
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unreachable" in err and "Traceback" not in err


def test_missing_default_store_is_not_created(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(TrackingUnavailable, match="no MLflow store"):
        compare_runs()
    assert main([]) == 2
    assert "no MLflow store" in capsys.readouterr().err
    assert not (tmp_path / "mlruns").exists()


def test_help_exits_zero(capsys):
    assert main(["--help"]) == 0
    assert "--tracking-uri" in capsys.readouterr().out


def test_filters_by_study_and_parent_and_pruned_status(store, capsys):
    from mlflow import MlflowClient
    from mlflow.entities import RunTag

    client = MlflowClient(store)
    experiment = client.create_experiment("tuning")
    parent = client.create_run(experiment, run_name="study s").info.run_id
    for number, state in ((0, "COMPLETE"), (1, "PRUNED")):
        run = client.create_run(experiment, run_name=f"trial {number}", tags={
            "mlflow.parentRunId": parent, "optuna.study_name": "s", "lightning_wd.kind": "trial"}).info.run_id
        client.log_batch(run, tags=[RunTag("optuna.state", state)])
        client.set_terminated(run, "FINISHED")
    by_study = compare_runs(tracking_uri=store, study="s")
    assert sorted((r["run"], r["status"]) for r in by_study) == [("trial 0", "FINISHED"), ("trial 1", "PRUNED")]
    assert {r["run"] for r in compare_runs(tracking_uri=store, parent=parent)} == {"trial 0", "trial 1"}
    # no --experiment: every experiment of the store (the recipes name their own), not "lightning_wd" only
    assert len(compare_runs(tracking_uri=store)) == 4 + 3
    assert main(["--tracking_uri", store, "--study", "s"]) == 0  # LightningCLI's spelling too
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and "PRUNED" in lines[1] + lines[2]


def test_closed_pipe_ends_cleanly(store, tmp_path):
    import subprocess
    import sys

    shell = f"{sys.executable} -m lightning_wd compare --tracking-uri {store} | head -1"
    result = subprocess.run(["bash", "-c", "set -o pipefail; " + shell], capture_output=True, text=True, timeout=120)
    assert result.stdout.split()[:2] == ["run", "run_id"]
    assert result.stderr == "" and result.returncode == 0


def test_duration_of_a_resumed_run_is_its_active_time(tmp_path, mlflow_sqlite):
    """A fit resumed into the same run after a pause: compare's duration is the two fits, not the pause;
    a run never resumed lasts what MLflow's own duration (end - start) says."""
    from mlflow import MlflowClient

    from lightning_wd.tracking.active_time import SEGMENT_TAG, active_seconds

    client = MlflowClient(mlflow_sqlite)

    def fit(epochs, run_id=None, ckpt=None):
        logger = mlflow_logger("resumed", tracking_uri=mlflow_sqlite, run_name="r", run_id=run_id)
        trainer = make_trainer([WeightDecay(strength=0.1, print_audit=False), MLflowRecord(plots=False)],
                               logger=logger, max_epochs=epochs, default_root_dir=tmp_path)
        started = time.time()
        trainer.fit(Classifier(), make_loader(), make_loader(seed=2), ckpt_path=ckpt)
        trainer.save_checkpoint(tmp_path / "last.ckpt")
        return logger.run_id, time.time() - started

    run_id, first = fit(1)
    run = client.get_run(run_id)
    (row,) = compare_runs("resumed", tracking_uri=mlflow_sqlite)
    assert row["duration_s"] == active_seconds(run) == (run.info.end_time - run.info.start_time) / 1000
    after_first = row["duration_s"]
    time.sleep(3.0)  # the pause between the two fits
    again, second = fit(2, run_id=run_id, ckpt=tmp_path / "last.ckpt")
    assert again == run_id
    run = client.get_run(run_id)
    span = (run.info.end_time - run.info.start_time) / 1000
    (row,) = compare_runs("resumed", tracking_uri=mlflow_sqlite)
    assert row["status"] == "FINISHED"
    second_segment = (run.info.end_time - int(run.data.tags[SEGMENT_TAG])) / 1000
    assert 0 < second_segment <= second + 0.05
    assert row["duration_s"] == pytest.approx(after_first + second_segment, abs=2e-3)
    assert row["duration_s"] <= first + second + 0.05  # the two fits (each timed around trainer.fit)
    assert span - row["duration_s"] >= 3.0  # the pause is not in it


def test_a_segment_left_open_by_a_killed_process_ends_at_its_last_metric(mlflow_sqlite):
    """SIGKILL: the run stays RUNNING with no end; the next resume closes the segment at its last metric.
    A run marked KILLED later by someone else (a study finding a dead worker) ends at its last metric too."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, RunTag

    from lightning_wd.tracking.active_time import ACTIVE_TAG, SEGMENT_TAG, active_seconds, open_segment

    client = MlflowClient(mlflow_sqlite)
    experiment = client.create_experiment("killed")
    t0 = int(time.time() * 1000) - 3_600_000

    def killed_run(name):  # a first fit of 40 s, a pause, then a fit killed 15 s in
        run_id = client.create_run(experiment, start_time=t0 - 50_000, run_name=name).info.run_id
        client.log_batch(run_id, tags=[RunTag(ACTIVE_TAG, "40"), RunTag(SEGMENT_TAG, str(t0))],
                         metrics=[Metric("val/acc", 0.5, t0 + 5_000, 1), Metric("val/acc", 0.6, t0 + 15_000, 2)])
        return run_id

    sigkilled, marked = killed_run("sigkilled"), killed_run("marked")
    client.set_terminated(marked, "KILLED", end_time=t0 + 1_800_000)  # marked dead half an hour later
    rows = {r["run"]: r for r in compare_runs("killed", tracking_uri=mlflow_sqlite)}
    assert rows["sigkilled"]["status"] == "RUNNING" and rows["sigkilled"]["duration_s"] is None
    assert rows["marked"]["duration_s"] == pytest.approx(55.0) == active_seconds(client.get_run(marked))

    open_segment(client, client.get_run(sigkilled), continued=True)  # resumed: the dead segment closed
    tags = client.get_run(sigkilled).data.tags
    assert float(tags[ACTIVE_TAG]) == pytest.approx(55.0)
    assert abs(int(tags[SEGMENT_TAG]) - time.time() * 1000) < 60_000  # the new segment starts now


def test_a_store_without_runs_prints_the_header_and_says_so(mlflow_sqlite, capsys):
    from mlflow import MlflowClient

    MlflowClient(mlflow_sqlite).create_experiment("empty")
    assert format_table([], "table").split() == [header for _, header in COLUMNS]
    assert main(["--tracking-uri", mlflow_sqlite]) == 0
    captured = capsys.readouterr()
    assert captured.out.split() == [header for _, header in COLUMNS]
    assert captured.err == "lightning-wd compare: no runs in the tracking store\n"
    assert main(["--tracking-uri", mlflow_sqlite, "--experiment", "empty", "--study", "s"]) == 0
    assert capsys.readouterr().err == "lightning-wd compare: no runs in experiment 'empty' matching the filters\n"
