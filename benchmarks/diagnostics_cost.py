"""8. Equilibrium diagnostics: their share of training time at the default interval (Lightning's 50 steps).

Per interval the callback pays, on the step before the logging step, a copy of the decayed tensors and the
squared norms of their gradients (:meth:`Diagnostics.snapshot`), then at the logging step the norms of the
weights and of the change, the stable ranks' power iterations and one host sync (:meth:`Diagnostics.compute`);
every other step pays the hook's interval check. The candidates alternate inside every repetition.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from benchmarks.common import interleaved
from benchmarks.step_overhead import SHAPES
from lightning_wd.core.callback import WeightDecay
from lightning_wd.core.decay_step import OptimizerDecay
from lightning_wd.core.diagnostics import Diagnostics
from lightning_wd.core.schedules import StrengthSchedule
from lightning_wd.core.schemes import get_scheme

QUICK = {"repeats": 1, "number": 1}  # the smoke test's sizes (tests/test_benchmarks.py, --quick)


def run(interval: int = 50, repeats: int = 7, number: int = 5) -> list[dict]:
    rows = []
    for shape, (build, input_shape) in SHAPES.items():
        torch.manual_seed(0)
        model = build()
        names = {id(p): n for n, p in model.named_parameters()}
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        decay = OptimizerDecay(opt, get_scheme("decoupled"), StrengthSchedule("constant", 0.05),
                               assign=lambda p: ("decay", 1.0) if p.ndim > 1 else ("no_decay", 0.0), names=names)
        decay.install()
        x = torch.randn(*input_shape)
        diagnostics = Diagnostics()
        callback = WeightDecay(strength=0.05, print_audit=False, log_every_n_steps=interval)
        callback.decays = [decay]
        trainer = SimpleNamespace(global_step=1, log_every_n_steps=interval, is_global_zero=True)

        def train_step():
            opt.zero_grad()
            model(x).float().square().mean().backward()
            opt.step()

        def diagnose():  # one interval's work: the snapshot before the last step, the metrics at the log
            diagnostics.snapshot([decay], step=0)
            diagnostics.compute([decay], step=1)

        def hook():  # what every other step pays: the interval check in on_before_optimizer_step
            callback.on_before_optimizer_step(trainer, None, opt)

        train_step()
        times = interleaved({"step": train_step, "diagnostics": diagnose, "hook": lambda: [hook() for _ in range(100)]},
                            repeats=repeats, number=number)
        per_interval = times["diagnostics"] + (interval - 1) * times["hook"] / 100
        rows.append({"shape": shape, "step_ms": times["step"] * 1e3, "diagnostics_ms": times["diagnostics"] * 1e3,
                     "hook_us": times["hook"] / 100 * 1e6, "interval": interval,
                     "share_at_interval": per_interval / (interval * times["step"] + per_interval)})
        decay.uninstall()
    return rows
