"""Worker for the 2-rank tests (tests/test_distributed.py): fit every scheme under one strategy, save full weights.

``python distributed_fit.py OUT STRATEGY [--resume MODE] [--steps-per-epoch N] [--time]``

* STRATEGY: ``single`` (one process, global batch 16), ``ddp``, ``fsdp2`` or ``fsdp1`` (2 CPU ranks, gloo,
  batch 8 per rank: the same global batches, as the distributed sampler interleaves the samples). ``fsdp1``
  is Lightning's ``FSDPStrategy`` (FULL_SHARD, ``use_orig_params=True``, each Linear wrapped; ``fsdp1-X``
  for sharding strategy X) on CPU
  (:class:`CPUFSDP`: Lightning accepts FSDP1 on GPUs only, torch's FSDP1 runs on CPU given the device).
* Every config of ``CONFIGS`` is fitted in turn (float64, 2 epochs of 10 steps); rank 0 saves
  ``OUT/<strategy>.pt``: ``{config: {"weights": full state dict, "stats": last wd/* statistics}}``.
* ``--resume sharded|full`` (STRATEGY fsdp2 or fsdp1): l2_sp with a cosine schedule fitted 2 epochs straight,
  and 1 epoch then checkpointed and resumed for the second; saves ``OUT/resume-<mode>.pt`` (fsdp2) or
  ``OUT/resume-fsdp1-<mode>.pt`` with both weights.
* ``--time``: per config, the mean step time with statistics every step vs never (``OUT/time-<strategy>.json``).
"""

from __future__ import annotations

import json
import os
import sys
import time

import lightning as L
import torch
from lightning.pytorch.plugins.precision import FSDPPrecision
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_wd.core.callback import WeightDecay
from lightning_wd.core.distributed import full
from lightning_wd.core.flat_shards import clean_name

# name -> (WeightDecay kwargs, optimizer). Biases and 1-D tensors decay too (split units under dim-0 shards).
EVERYTHING = dict(exclude_bias=False, exclude_1d=False, print_audit=False, log_every_n_steps=5)
CONFIGS = {
    "decoupled": (dict(scheme="decoupled", strength=0.5), "adamw"),
    "decoupled_cosine": (dict(scheme="decoupled", strength=0.5, schedule="cosine", final_strength=0.05), "adamw"),
    "l2": (dict(scheme="l2", strength=0.05, schedule="warmup_cosine", warmup_steps=4), "sgd"),
    "l1": (dict(scheme="l1", strength=0.3, schedule="linear", final_strength=0.0), "adamw"),
    "elastic_net": (dict(scheme="elastic_net", strength=0.05, l1_ratio=0.7), "sgd"),
    "group_lasso": (dict(scheme="group_lasso", strength=2.0, schedule="step"), "adamw"),
    # 12 units die in 20 steps (11 rows of net.0, row 1 of net.5: FSDP1 splits that row between the ranks)
    "group_lasso_dying": (dict(scheme="group_lasso", strength=1.0, multipliers={"net.3.*": 0.1, "net.5.*": 0.3}),
                          "adamw"),
    "l2_sp": (dict(scheme="l2_sp", strength=0.5, lr_coupling="lr_ratio"), "adamw"),
    "cautious": (dict(scheme="cautious", strength=0.5, schedule="cosine", final_strength=0.1), "adamw"),
    "target_norm": (dict(scheme="target_norm", strength=0.5), "adamw"),  # whole-tensor norms: one all-reduce
    "selective_projection": (dict(scheme="selective_projection", strength=0.8), "adamw"),
}


class Net(L.LightningModule):
    """4 -> 64 -> LayerNorm -> Tanh -> 64 (4096 weights: the large-tensor kernels) -> Tanh -> 3 (3 rows: uneven)."""

    def __init__(self, optimizer: str = "adamw", fsdp: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 64), nn.LayerNorm(64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(),
                                 nn.Linear(64, 3))
        self.optimizer, self.fsdp = optimizer, fsdp

    def configure_model(self):
        if not self.fsdp:
            return
        from torch.distributed.fsdp import fully_shard

        mesh = self.device_mesh["data_parallel"]
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                fully_shard(layer, mesh=mesh)
        fully_shard(self.net, mesh=mesh)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        if self.optimizer == "sgd":
            return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)
        return torch.optim.AdamW(self.parameters(), lr=0.01, weight_decay=0.0)


class Interleaved(torch.utils.data.Sampler):
    """Rank r of w takes samples r, r + w, ...: global batch k is samples 16k..16k+15 at any world size (Lightning's
    own distributed sampler always shuffles the training data)."""

    def __init__(self, n: int) -> None:
        self.n = n

    @staticmethod
    def _place() -> tuple[int, int]:
        dist = torch.distributed
        return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)

    def __iter__(self):
        rank, world = self._place()
        return iter(range(rank, self.n, world))

    def __len__(self) -> int:
        return self.n // self._place()[1]


def loader(strategy: str, steps_per_epoch: int = 10) -> DataLoader:
    g = torch.Generator().manual_seed(1)
    n = 16 * steps_per_epoch
    data = TensorDataset(torch.randn(n, 4, generator=g) * 3, torch.randint(0, 3, (n,), generator=g))
    return DataLoader(data, batch_size=16 if strategy == "single" else 8, sampler=Interleaved(n))


class CPUFSDP(FSDPStrategy):
    """Lightning's FSDP1 strategy on CPU ranks: the model wrapped with ``device_id=cpu`` (Lightning passes
    ``None`` on CPU, which torch's FSDP1 refuses); everything else is Lightning's own code."""

    def _setup_model(self, model):
        from torch.distributed.fsdp import FullyShardedDataParallel

        if not any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
            kwargs = dict(self.kwargs)
            model = FullyShardedDataParallel(module=model, sharding_strategy=self.sharding_strategy,
                                             device_id=torch.device("cpu"), **kwargs)
            self.kwargs.pop("auto_wrap_policy", None)
        return super()._setup_model(model)


class Float64FSDPPrecision(FSDPPrecision):
    """``32-true`` with float64 in place of float32 (the model and the inputs), for the parity runs."""

    def __init__(self) -> None:
        super().__init__("32-true")
        self._desired_input_dtype = torch.float64


def make_strategy(strategy: str, sharded_checkpoint: bool = True):
    if strategy.startswith("fsdp1"):  # fsdp1 (FULL_SHARD), fsdp1-SHARD_GRAD_OP, fsdp1-NO_SHARD
        sharding = strategy.partition("-")[2] or "FULL_SHARD"
        return CPUFSDP(process_group_backend="gloo", auto_wrap_policy={nn.Linear}, use_orig_params=True,
                       sharding_strategy=sharding, state_dict_type="sharded" if sharded_checkpoint else "full")
    if strategy == "fsdp2":
        return ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1,
                                     save_distributed_checkpoint=sharded_checkpoint)
    return "ddp" if strategy == "ddp" else "auto"


def trainer(strategy: str, callbacks, sharded_checkpoint: bool = True, **kwargs) -> L.Trainer:
    options = dict(max_epochs=2, accelerator="cpu", devices=1 if strategy == "single" else 2, logger=False,
                   enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                   num_sanity_val_steps=0, deterministic=True, use_distributed_sampler=False)
    if strategy.startswith("fsdp1"):  # Lightning's FSDP precision casts the model to float32 (it has no 64-true)
        options["plugins"] = [Float64FSDPPrecision()]
    return L.Trainer(strategy=make_strategy(strategy, sharded_checkpoint), callbacks=callbacks,
                     **{**options, **kwargs})


def full_weights(model: nn.Module, trainer: L.Trainer | None = None) -> dict[str, torch.Tensor]:
    """The whole weights by name (every rank: collectives); FSDP1 through FSDP's own ``summon_full_params``."""
    wrapped = getattr(getattr(trainer, "strategy", None), "model", None)
    if isinstance(trainer.strategy if trainer else None, FSDPStrategy):
        from torch.distributed.fsdp import FullyShardedDataParallel

        with FullyShardedDataParallel.summon_full_params(wrapped):
            return {clean_name(k): v.detach().clone() for k, v in model.named_parameters()}
    return {k: full(v).detach().clone() for k, v in model.state_dict().items()}


def fit_all(out: str, strategy: str, steps_per_epoch: int) -> None:
    results, rank = {}, 0
    for name, (kwargs, optimizer) in CONFIGS.items():
        model = Net(optimizer, fsdp=strategy == "fsdp2")
        fused = True if os.environ.get("FUSED_MIN_NUMEL") else "auto"  # True: every scheme with a fused form
        cb = WeightDecay(**{**EVERYTHING, **kwargs, "fused": fused})
        t = trainer(strategy, [cb])
        t.fit(model, loader(strategy, steps_per_epoch))
        weights, rank = full_weights(model, t), t.global_rank
        assert cb.steps == [t.global_step] == [2 * steps_per_epoch], (cb.steps, t.global_step)
        assert "step" not in t.optimizers[0].__dict__
        assert bool(cb.history) == (rank == 0)
        results[name] = {"weights": weights, "stats": cb.history[-1]["metrics"] if cb.history else {},
                         "logged_steps": [h["step"] for h in cb.history],
                         "fused_tensors": sum(d.fused.count for d in cb.decays)}
    if rank == 0:
        torch.save(results, f"{out}/{strategy}.pt")


class StopAfterFirstEpoch(L.Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


def resume(out: str, mode: str, steps_per_epoch: int, strategy: str = "fsdp2") -> None:
    kwargs = {**EVERYTHING, "scheme": "l2_sp", "strength": 0.5, "schedule": "cosine", "final_strength": 0.05}
    sharded, fsdp2 = mode == "sharded", strategy == "fsdp2"
    straight = Net(fsdp=fsdp2)
    t0 = trainer(strategy, [WeightDecay(**kwargs)], sharded)
    t0.fit(straight, loader(strategy, steps_per_epoch))
    expected = full_weights(straight, t0)
    first = Net(fsdp=fsdp2)
    t = trainer(strategy, [WeightDecay(**kwargs), StopAfterFirstEpoch()], sharded)
    t.fit(first, loader(strategy, steps_per_epoch))
    path = f"{out}/half-{strategy}-{mode}.ckpt"
    t.save_checkpoint(path)
    second = Net(fsdp=fsdp2)
    torch.manual_seed(123)
    with torch.no_grad():  # other starting weights: everything must come from the checkpoint
        for p in second.parameters():
            p.normal_()
    cb = WeightDecay(**kwargs)
    t2 = trainer(strategy, [cb], sharded)
    t2.fit(second, loader(strategy, steps_per_epoch), ckpt_path=path)
    got = full_weights(second, t2)
    assert cb.steps == [2 * steps_per_epoch], cb.steps
    if t2.global_rank == 0:
        name = f"resume-{mode}.pt" if fsdp2 else f"resume-{strategy}-{mode}.pt"
        torch.save({"expected": expected, "got": got}, f"{out}/{name}")


def timing(out: str, strategy: str, steps_per_epoch: int) -> None:
    """Mean step time (after 5 warm-up steps) with statistics at every step, and with none."""

    class Clock(L.Callback):
        def __init__(self):
            self.times = []

        def on_train_batch_start(self, *args):
            self.start = time.perf_counter()

        def on_train_batch_end(self, *args):
            self.times.append(time.perf_counter() - self.start)

    result, rank = {}, 0
    for every in (1, 10 ** 9):
        for name in ("decoupled", "l1", "group_lasso"):
            kwargs, optimizer = CONFIGS[name]
            clock = Clock()
            cb = WeightDecay(**{**EVERYTHING, **kwargs, "log_every_n_steps": every})
            t = trainer(strategy, [cb, clock], max_epochs=1)
            t.fit(Net(optimizer, fsdp=strategy == "fsdp2"), loader(strategy, steps_per_epoch))
            rank = t.global_rank
            times = sorted(clock.times[5:])
            result[f"{name}/{'every_step' if every == 1 else 'never'}"] = times[len(times) // 2]
    if rank == 0:
        with open(f"{out}/time-{strategy}.json", "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":  # process-wide settings only when run as the worker (pytest also imports this file)
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    if os.environ.get("FUSED_MIN_NUMEL"):  # the fused step on this net's small tensors too (tests/test_fused_step.py)
        from lightning_wd.core.fused import path as fused_path

        fused_path.MIN_NUMEL = int(os.environ["FUSED_MIN_NUMEL"])
    out, strategy, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    steps = int(args[args.index("--steps-per-epoch") + 1]) if "--steps-per-epoch" in args else 10
    if "--resume" in args:
        resume(out, args[args.index("--resume") + 1], steps, "fsdp1" if strategy == "fsdp1" else "fsdp2")
    elif "--time" in args:
        timing(out, strategy, steps)
    else:
        fit_all(out, strategy, steps)
