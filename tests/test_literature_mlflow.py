"""Issue 16: every item of the recent literature reaches MLflow through the real logger and MLflowRecord: the
diagnostics as metrics (item 1), AdamC's per-layer coupling as a param and in the audit artifact (item 2), the
target_norm and selective_projection settings and statistics (item 3), the timescale and the strength it derives
(item 4)."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
from lit_net import QUIET
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_wd.core.callback import WeightDecay
from lightning_wd.core.diagnostics import DIAGNOSTICS

LR, STEPS_PER_EPOCH = 0.05, 4


class LayerNormNet(L.LightningModule):
    """Linear -> LayerNorm -> ReLU -> Linear, SGD at ``LR``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 3))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=LR)


def _fit(mlflow_sqlite, tmp_path, decay: WeightDecay):
    from mlflow.tracking import MlflowClient

    from lightning_wd.tracking import MLflowRecord, mlflow_logger

    logger = mlflow_logger("literature", tracking_uri=mlflow_sqlite)
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(32, 4, generator=g), torch.randint(0, 3, (32,), generator=g))
    trainer = L.Trainer(**{**QUIET, "logger": logger, "max_epochs": 2, "log_every_n_steps": 2,
                           "default_root_dir": tmp_path}, callbacks=[decay, MLflowRecord(plots=False)])
    trainer.fit(LayerNormNet(), DataLoader(data, batch_size=32 // STEPS_PER_EPOCH))
    client = MlflowClient(mlflow_sqlite)
    run = client.get_run(logger.run_id)
    return client, run, Path(run.info.artifact_uri.removeprefix("file://"))


@pytest.mark.parametrize("settings", [
    {"scheme": "target_norm", "strength": 0.1},
    {"scheme": "selective_projection", "strength": 1.0},
    {"scheme": "decoupled", "strength": 0.1, "lr_coupling": "corrected"},
    {"scheme": "decoupled", "timescale_epochs": 5.0},
], ids=["target_norm", "selective_projection", "adamc", "timescale"])
def test_each_item_reaches_mlflow(settings, mlflow_sqlite, tmp_path):
    decay = WeightDecay(print_audit=False, log_every_n_steps=2, **settings)
    client, run, artifacts = _fit(mlflow_sqlite, tmp_path, decay)
    params, metrics = run.data.params, run.data.metrics
    assert params["wd.scheme"] == settings["scheme"]
    for name in ("grad_weight_ratio", "update_weight_ratio", "angular_update", "stable_rank"):
        assert metrics[f"wd/{name}"] == pytest.approx(decay.history[-1]["metrics"][f"wd/{name}"], rel=1e-12)
        assert f"wd/{name}/net.0.weight" in metrics
    history = client.get_metric_history(run.info.run_id, "wd/grad_weight_ratio")
    assert [m.step for m in history] == [2, 4, 6, 8]
    audit = (artifacts / "audit" / "grouping.txt").read_text()
    if settings["scheme"] == "target_norm":
        assert params["wd.target_norm_scale"] == "1.0" and "wd/penalty" in metrics
        assert "wd/equilibrium_ratio" not in metrics  # reported for decoupled decay only
    elif settings["scheme"] == "selective_projection":
        assert 0 <= metrics["wd/spd_selected"] <= 2  # of the two decayed tensors
        assert {int(m.value) for m in client.get_metric_history(run.info.run_id, "wd/spd_selected")} <= {0, 1, 2}
    elif "lr_coupling" in settings:
        assert params["wd.lr_coupling"] == "corrected" and "wd/equilibrium_ratio" in metrics
        assert "net.0.weight [8, 4] -> decay: weight; lr coupling corrected (feeds LayerNorm net.1)" in audit
        assert "net.3.weight [3, 8] -> decay: weight; lr coupling lr (feeds no norm layer)" in audit
    else:  # lambda = 1 / (lr * tau * steps per epoch), logged as the applied strength
        assert float(params["wd.timescale_epochs"]) == 5.0
        assert float(params["wd.strength"]) == pytest.approx(1.0 / (LR * 5.0 * STEPS_PER_EPOCH), rel=1e-9)
        assert metrics["wd/equilibrium_ratio"] == pytest.approx(
            decay.history[-1]["metrics"]["wd/equilibrium_ratio"], rel=1e-12)
    assert set(DIAGNOSTICS) - {"equilibrium_ratio"} <= {k[3:] for k in metrics if k.startswith("wd/")}
    assert not math.isnan(metrics["wd/angular_update"])
