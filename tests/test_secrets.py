"""Issue 18: credentials never leave the process. A password planted in the tracking URI
(``http://alice:SECRET@host``), in a recipe's ``tune:`` storage URL and in a password-like key shows up in no
output, artifact, param or tag of a fit and a study; artifacts the project writes are owner-only."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lightning_wd.tracking.redaction import is_secret_key, redact, redact_text, redact_value, split_credentials
from lightning_wd.tracking.uris import resolve_tracking_uri

ROOT = Path(__file__).resolve().parents[1]
SECRET = "Zq9xSECRETpw"
TINY = {
    "seed_everything": 0, "num_threads": 1,
    "trainer": {"max_epochs": 1, "log_every_n_steps": 1, "enable_checkpointing": False,
                "enable_progress_bar": False, "enable_model_summary": False,
                "callbacks": [{"class_path": "lightning_wd.WeightDecay",
                               "init_args": {"scheme": "decoupled", "strength": 0.1}}]},
    "model": {"class_path": "lightning_wd.examples.MLP",
              "init_args": {"in_features": 40, "hidden": [8], "num_classes": 10, "optimizer": "adam", "lr": 0.01}},
    "data": {"class_path": "lightning_wd.examples.MNIST1DDataModule",
             "init_args": {"batch_size": 50, "num_train": 200, "num_test": 100, "seed": 0}},
    "tune": {"storage": f"postgresql+psycopg2://bob:{SECRET}@127.0.0.1:9/optuna",
             "space": {"strength": {"low": 1.0e-4, "high": 1.0, "log": True}}},
}


def test_redaction_rules():
    assert redact(f"http://alice:{SECRET}@h:5000/x") == "http://alice:***@h:5000/x"
    assert redact(f"postgresql://u:{SECRET}@h/db?sslpassword={SECRET}") == "postgresql://u:***@h/db?sslpassword=***"
    text = f"tracking_uri: https://a:{SECRET}@h\nstorage: 'mysql://r:{SECRET}@db/x'\npassword: \"{SECRET} x\"\n"
    assert SECRET not in redact_text(text) and "https://a:***@h" in redact_text(text)
    assert redact_text("max_tokens: 3\nlr: 0.1") == "max_tokens: 3\nlr: 0.1"
    assert redact_value({"db": {"auth_token": SECRET}, "urls": [f"http://u:{SECRET}@h"]}) == \
        {"db": {"auth_token": "***"}, "urls": ["http://u:***@h"]}
    assert is_secret_key("MLFLOW_TRACKING_PASSWORD") and not is_secret_key("hidden")
    assert split_credentials(f"https://u:{SECRET}@h:1/p") == ("https://h:1/p", "u", SECRET)


def test_tracking_uri_credentials_move_to_the_environment(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    assert resolve_tracking_uri(f"http://alice:{SECRET}@127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "alice" and os.environ["MLFLOW_TRACKING_PASSWORD"] == SECRET
    # a masked copy (best.yaml, config.yaml) keeps the password of the environment
    assert resolve_tracking_uri("http://alice:***@127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == SECRET


def test_config_artifact_is_masked_and_owner_only(mlflow_sqlite, tmp_path):
    from mlflow import MlflowClient

    from lightning_wd import tracking

    logger = tracking.mlflow_logger("private", tracking_uri=mlflow_sqlite)
    tracking.log_config(logger, {"tracking_uri": f"http://a:{SECRET}@h", "db": {"password": SECRET}})
    run = MlflowClient(mlflow_sqlite).get_run(logger.run_id)
    path = Path(run.info.artifact_uri.removeprefix("file://")) / "config.yaml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert SECRET not in path.read_text()
    assert yaml.safe_load(path.read_text()) == {"tracking_uri": "http://a:***@h", "db": {"password": "***"}}


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "lightning_wd", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=400)


def _hits(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]


@pytest.mark.slow
@pytest.mark.server
def test_no_secret_in_any_output_artifact_param_or_tag(mlflow_server, tmp_path):
    from mlflow import MlflowClient

    uri = mlflow_server.replace("http://", f"http://alice:{SECRET}@")
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(TINY, sort_keys=False))
    # fit ignores the tune: section, so it may hold any key (a password-like one here), and it is saved
    fit_recipe = {**TINY, "tune": {**TINY["tune"], "api_key": SECRET}}
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump(fit_recipe, sort_keys=False))
    fit = _run(["fit", "--config", "fit.yaml", "--tracking-uri", uri, "--experiment", "secret_fit"], tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    tune = _run(["tune", "--config", "recipe.yaml", "--tracking-uri", uri, "--experiment", "secret_tune",
                 "--n-trials", "2", "--sampler", "random", "--seed", "1", "--no-progress",
                 "--storage", f"sqlite:///{tmp_path / 'optuna.db'}", "--out", str(tmp_path / "out")], tmp_path)
    assert tune.returncode == 0, tune.stderr[-3000:]
    printed = fit.stdout + fit.stderr + tune.stdout + tune.stderr
    assert "View run" in printed and mlflow_server in printed  # MLflow's own link, without the user's password
    assert SECRET not in printed

    client = MlflowClient(mlflow_server)
    runs = [r for name in ("secret_fit", "secret_tune")
            for r in client.search_runs([client.get_experiment_by_name(name).experiment_id])]
    assert len(runs) == 1 + 3  # the fit; the study's parent and its 2 trials
    assert {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        for value in [*run.data.params.values(), *run.data.tags.values(), *run.data.params, *run.data.tags]:
            assert SECRET not in value, (run.info.run_name, value)
        local = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "dl" / run.info.run_id)))
        assert _hits(local) == []
    config = (tmp_path / "dl" / runs[0].info.run_id / "config.yaml").read_text()
    assert "bob:***@127.0.0.1:9" in config and "api_key: '***'" in config  # masked, not dropped
    assert yaml.safe_load(config)["tune"]["api_key"] == "***"  # and still valid YAML
    # only the user's own recipes hold it
    assert sorted(_hits(tmp_path)) == [str(tmp_path / "fit.yaml"), str(tmp_path / "recipe.yaml")]
    best = tmp_path / "out" / "best.yaml"
    assert stat.S_IMODE(best.stat().st_mode) == 0o600


def test_print_config_masks_the_tracking_password(tmp_path, monkeypatch, capsys):
    """LightningCLI's own --print_config output goes to terminals and issue reports: no password in it."""
    from lightning_wd.apps.cli import main

    monkeypatch.chdir(tmp_path)
    recipe = ROOT / "recipes" / "digits_mlp.yaml"
    assert main(["fit", "--config", str(recipe), "--tracking_uri", "http://alice:s3cret@127.0.0.1:5999",
                 "--print_config"]) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out
    assert yaml.safe_load(out)["tracking_uri"] == "http://alice:***@127.0.0.1:5999"
    assert list(tmp_path.iterdir()) == []  # printed only: no store, no run
