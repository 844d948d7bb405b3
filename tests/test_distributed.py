"""Issue 12: the decay on 2 CPU ranks (gloo) under FSDP2, FSDP1 and DDP equals one process; unsupported
strategies are refused at fit start. The worker is tests/distributed_fit.py (one subprocess per strategy)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lightning_wd.core.distributed import UnsupportedStrategyError, check_strategy, like

WORKER = Path(__file__).with_name("distributed_fit.py")
ROOT = WORKER.parents[1]


def run_worker(out: Path, *args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(WORKER), str(out), *args], cwd=out, env=env,
                            capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-4000:]


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / a.norm().clamp_min(1e-300))


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("single")
    run_worker(out, "single")
    return torch.load(out / "single.pt")


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("strategy", ["fsdp2", "ddp", "fsdp1", "fsdp1-SHARD_GRAD_OP", "fsdp1-NO_SHARD"])
def test_two_ranks_equal_one_process(strategy, single, tmp_path):
    run_worker(tmp_path, strategy)
    got = torch.load(tmp_path / f"{strategy}.pt")
    assert got.keys() == single.keys()
    for name, reference in single.items():
        weights = got[name]["weights"]
        assert weights.keys() == reference["weights"].keys()
        for key, tensor in reference["weights"].items():
            assert weights[key].shape == tensor.shape
            assert relative(tensor, weights[key]) <= 1e-6, (name, key)
        stats, expected = got[name]["stats"], reference["stats"]
        if strategy in ("fsdp1", "fsdp1-SHARD_GRAD_OP"):  # flat pieces hold no whole rows: no stable rank
            expected = {k: v for k, v in expected.items() if not k.startswith("wd/stable_rank")}
        assert stats.keys() == expected.keys(), name
        for key, value in expected.items():
            assert stats[key] == pytest.approx(value, rel=1e-6, abs=1e-12), (name, key)
        assert got[name]["logged_steps"] == reference["logged_steps"] == [5, 10, 15, 20]
    zeros = sum(int((v == 0).sum()) for v in single["l1"]["weights"].values())
    assert zeros > 0  # the proximal l1 step made exact zeros, identically on both layouts
    head = single["group_lasso_dying"]["weights"]["net.5.weight"]  # row 1: split between the FSDP1 ranks
    assert single["group_lasso_dying"]["stats"]["wd/dead_units"] == 12 and not head[1].any() and head[0].any()


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("mode", ["sharded", "full"])
def test_fsdp2_checkpoint_resumes_bit_exactly(mode, tmp_path):
    # l2_sp (its reference) with a cosine schedule (its position): 1 epoch, checkpoint, resume from other weights.
    run_worker(tmp_path, "fsdp2", "--resume", mode)
    saved = torch.load(tmp_path / f"resume-{mode}.pt")
    for key, tensor in saved["expected"].items():
        assert torch.equal(tensor, saved["got"][key]), key


@pytest.mark.slow
@pytest.mark.distributed
def test_fsdp1_sharded_checkpoint_resumes_bit_exactly(tmp_path):
    # FSDP1's full-state-dict hook segfaults on CPU-only ranks (inside torch, before any callback state is
    # read), so the full-checkpoint path is left to GPU runs.
    run_worker(tmp_path, "fsdp1", "--resume", "sharded")
    saved = torch.load(tmp_path / "resume-fsdp1-sharded.pt")
    assert saved["expected"].keys() == saved["got"].keys() and "net.3.weight" in saved["got"]
    for key, tensor in saved["expected"].items():
        assert torch.equal(tensor, saved["got"][key]), key


def strategy(name: str, bases: tuple = (), **attributes) -> SimpleNamespace:
    cls = type(name, bases, {})
    return SimpleNamespace(strategy=cls.__new__(cls) if not attributes else _with(cls, attributes))


def _with(cls, attributes):
    obj = cls.__new__(cls)
    obj.__dict__.update(attributes)
    return obj


@pytest.mark.parametrize(
    ("trainer", "match"),
    [
        (strategy("DeepSpeedStrategy", (type("DDPStrategy", (), {}),)), r"strategy DeepSpeedStrategy: DeepSpeed"),
        (strategy("FSDPStrategy", kwargs={"use_orig_params": False}), r"FSDP1 with use_orig_params=False"),
        (strategy("FSDPStrategy", kwargs={}, sharding_strategy=SimpleNamespace(name="HYBRID_SHARD")),
         r"sharding_strategy=HYBRID_SHARD replicates each shard"),
        (strategy("ModelParallelStrategy", _tensor_parallel_size=2), r"tensor_parallel_size=2"),
        (strategy("XLAStrategy"), r"XLAStrategy: it is not verified on XLA"),
        (strategy("MyStrategy"), r"MyStrategy: it is not verified"),
    ],
)
def test_unsupported_strategies_refused_with_one_line(trainer, match):
    with pytest.raises(UnsupportedStrategyError, match=match) as caught:
        check_strategy(trainer)
    message = str(caught.value)
    assert "\n" not in message and "use single device, 'ddp'" in message and "ModelParallelStrategy" in message


def test_refused_at_fit_start_by_the_callback(tiny_net, tiny_loader, quiet_trainer):
    from lightning.pytorch.strategies import SingleDeviceStrategy

    from lightning_wd import WeightDecay

    class Unproven(SingleDeviceStrategy):
        pass

    Unproven.__name__ = "UnprovenXLAStrategy"
    trainer = quiet_trainer([WeightDecay(strength=0.1, print_audit=False)],
                            strategy=Unproven(device=torch.device("cpu")))
    with pytest.raises(UnsupportedStrategyError, match=r"does not support strategy UnprovenXLAStrategy"):
        trainer.fit(tiny_net, tiny_loader)


@pytest.mark.parametrize("name", ["SingleDeviceStrategy", "DDPStrategy", "ModelParallelStrategy", "FSDPStrategy"])
def test_supported_strategies_pass(name):
    check_strategy(strategy(name, _tensor_parallel_size=1, kwargs={}))


def test_flat_shard_rows_and_pieces():
    from lightning_wd.core.flat_shards import FlatShard, rows_of, slice_of

    whole = torch.arange(12.0).reshape(3, 4)
    pieces = [FlatShard(torch.Size([3, 4]), 0, 5, 0), FlatShard(torch.Size([3, 4]), 5, 7, 0)]
    assert torch.equal(torch.cat([slice_of(whole, p) for p in pieces]), whole.reshape(-1))
    # row 1 (elements 4..7) is split: 1 element on the first piece, 3 on the second, counted where it starts
    assert rows_of(pieces[0]) == ([0, 1], [4, 1], [False, True], [True, True])
    assert rows_of(pieces[1]) == ([1, 2], [3, 4], [True, False], [False, True])
    assert rows_of(FlatShard(torch.Size([5]), 0, 0, 3)) == ([], [], [], [])


def test_like_keeps_plain_tensors_as_before():
    param = torch.zeros(2, 3, dtype=torch.float64)
    value = like(torch.ones(2, 3, dtype=torch.float32), param)
    assert value.dtype == torch.float64 and torch.equal(value, torch.ones(2, 3, dtype=torch.float64))


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_fused_step_on_two_ranks_equals_one_process(strategy, single, tmp_path, monkeypatch):
    # Every tensor takes the fused step where it can (FUSED_MIN_NUMEL=1): on DDP the fused kernel runs on each
    # rank's full tensors, under FSDP2 the DTensor shards take the general path; both equal one process (general).
    monkeypatch.setenv("FUSED_MIN_NUMEL", "1")
    run_worker(tmp_path, strategy)
    got = torch.load(tmp_path / f"{strategy}.pt")
    for name, reference in single.items():
        fused = got[name]["fused_tensors"]
        assert fused == (0 if strategy == "fsdp2" or name not in FUSABLE else 6), name
        for key, tensor in reference["weights"].items():
            assert relative(tensor, got[name]["weights"][key]) <= 1e-12, (name, key)
            assert torch.equal(tensor == 0, got[name]["weights"][key] == 0), (name, key)


# configs whose scheme has a fused form on their optimizer (l2 and elastic_net: SGD with momentum; the LayerNorm
# is not decayed, so no group is native)
FUSABLE = ("decoupled", "decoupled_cosine", "l1", "l2_sp", "cautious", "l2", "elastic_net")
