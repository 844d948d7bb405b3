"""Report section L6 and benchmark 11: the decay timescale in epochs transfers across data set sizes.

Claim (Wang & Aitchison 2025): AdamW's weights are an EMA of recent updates with timescale ``τ = 1 / (η λ)``
iterations; measured in epochs (``τ_epochs = τ / S``, ``S`` optimizer steps per epoch) the best timescale stays
put when the data set grows, so ``λ = 1 / (η τ_epochs S)`` must shrink as ``S`` grows. The experiment: a grid over
``τ_epochs`` fitted on 25 % and on 100 % of the training data (same epochs, batch and lr, so ``S`` grows 4x);
``τ*`` tuned on 25 % (the grid point of best mean validation accuracy) is scored on 100 % against the best grid
point there. The naive transfer (keep the ``λ`` tuned on 25 %, i.e. a timescale 4x shorter in epochs) is scored
beside it.

Each fit is a plain torch loop over the MNIST-1D MLP (40-256-256-10, Adam, the library's decoupled decay planned by
the callback's rules) with ``λ`` derived from ``τ_epochs`` by the rule ``best.yaml`` prints
(:func:`lightning_wd.apps.tuning.report.transfer_rule`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from lightning_wd.apps.report.runs import mean_sd
from lightning_wd.apps.report.tables import Section, _table

__all__ = ["FULL", "Transfer", "fit_accuracy", "strength_of", "timescale_section", "transfer"]


#: the sizes of the benchmark (``benchmarks/timescale_transfer.py``) and of the full report
FULL = {"taus": (0.5, 1, 2, 4, 8, 16, 32, 64, 128), "num_train": 1600, "epochs": 30}


def strength_of(tau_epochs: float, lr: float, steps_per_epoch: int) -> float:
    """``λ = 1 / (η τ_epochs S)``.

    Example:
        >>> strength_of(10.0, 0.01, 80)
        0.125
    """
    return 1.0 / (lr * tau_epochs * steps_per_epoch)


def fit_accuracy(strength: float, seed: int, x, y, x_val, y_val, epochs: int = 20, lr: float = 0.01,
                 batch: int = 50, hidden: int = 256) -> float:
    """Validation accuracy after ``epochs`` epochs of Adam + the library's decoupled decay at ``strength``."""
    from lightning_wd.apps.report.literature import _decay, train_epochs

    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(x.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                          nn.Linear(hidden, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    decay = _decay(model, optimizer, strength, "lr")
    train_epochs(model, optimizer, x, y, epochs, seed, batch)
    decay.uninstall()
    with torch.no_grad():
        return float((model(x_val).argmax(dim=1) == y_val).float().mean())


@dataclass
class Transfer:
    """The grid's accuracies: ``acc[fraction][tau]`` is a list over seeds."""

    taus: tuple[float, ...]
    fractions: tuple[float, float]
    steps_per_epoch: dict[float, int]
    lr: float
    acc: dict[float, dict[float, list[float]]] = field(default_factory=dict)

    def stats(self, fraction: float, tau: float) -> tuple[float, float]:
        return mean_sd(self.acc[fraction][tau])

    def best(self, fraction: float) -> float:
        """The grid's ``τ`` of best mean accuracy at ``fraction``."""
        return max(self.taus, key=lambda t: self.stats(fraction, t)[0])

    def flat(self) -> int:
        """How many grid points on the large fraction are within one seed sd of its best (the best included)."""
        top = self.stats(self.fractions[1], self.best(self.fractions[1]))
        return sum(top[0] - self.stats(self.fractions[1], t)[0] <= top[1] for t in self.taus)

    def verdict(self) -> tuple[bool, str]:
        """Whether ``τ*`` tuned on the small fraction is within one seed sd of the best on the large one
        (inconclusive when half the grid or more is: a flat landscape tells no timescale from another)."""
        small, large = self.fractions
        tuned, best = self.best(small), self.best(large)
        got, top = self.stats(large, tuned), self.stats(large, best)
        ok = within = top[0] - got[0] <= top[1]
        flat = self.flat()
        word = "reproduced" if ok else "not reproduced"
        if ok and 2 * flat >= len(self.taus):
            ok, word = False, (f"inconclusive ({flat} of {len(self.taus)} timescales are within one seed sd of the "
                               f"best on {100 * large:g} %: a flat landscape)")
        return ok, (f"{word}: tau tuned on {100 * small:g} % of the data "
                    f"({tuned:g} epochs) scores {100 * got[0]:.1f} ± {100 * got[1]:.1f} % on {100 * large:g} %, "
                    f"the best there ({best:g} epochs) {100 * top[0]:.1f} ± {100 * top[1]:.1f} %: a gap of "
                    f"{100 * (top[0] - got[0]):.1f} points, {'within' if within else 'beyond'} one seed sd "
                    f"({100 * top[1]:.1f})")

    def naive(self) -> tuple[float, tuple[float, float]]:
        """The timescale on the large fraction that keeps the small fraction's tuned ``λ``, and its accuracy
        (the grid point nearest to ``τ* S_small / S_large``, when the grid holds it)."""
        small, large = self.fractions
        wanted = self.best(small) * self.steps_per_epoch[small] / self.steps_per_epoch[large]
        nearest = min(self.taus, key=lambda t: abs(math.log(t / wanted)))
        return nearest, self.stats(large, nearest)

    def rows(self) -> list[dict]:
        small, large = self.fractions
        out = []
        for tau in self.taus:
            a, b = self.stats(small, tau), self.stats(large, tau)
            out.append({"tau_epochs": tau,
                        f"lambda_{100 * small:g}%": strength_of(tau, self.lr, self.steps_per_epoch[small]),
                        f"val_acc_{100 * small:g}%": f"{100 * a[0]:.1f} ± {100 * a[1]:.1f}",
                        f"lambda_{100 * large:g}%": strength_of(tau, self.lr, self.steps_per_epoch[large]),
                        f"val_acc_{100 * large:g}%": f"{100 * b[0]:.1f} ± {100 * b[1]:.1f}",
                        "note": " ".join(n for n, hit in ((f"best on {100 * small:g} %", tau == self.best(small)),
                                                          (f"best on {100 * large:g} %", tau == self.best(large)))
                                         if hit)})
        return out


def transfer(seeds: tuple[int, ...] = (0, 1, 2), taus: tuple[float, ...] = (0.5, 1, 2, 4, 8, 16, 32, 64),
             fractions: tuple[float, float] = (0.25, 1.0), num_train: int = 4000, epochs: int = 20,
             lr: float = 0.01, batch: int = 50, hidden: int = 256) -> Transfer:
    """Fit the grid of timescales on both fractions of MNIST-1D's training split, every seed."""
    from lightning_wd.examples.data import load_mnist1d

    data = load_mnist1d(num_train, 1000, 0, None, True)
    x, y = torch.from_numpy(data["x"]).float(), torch.from_numpy(data["y"]).long()
    x_val, y_val = torch.from_numpy(data["x_test"]).float(), torch.from_numpy(data["y_test"]).long()
    keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))  # one fixed subset per fraction
    result = Transfer(tuple(taus), tuple(fractions), {}, lr)
    for fraction in fractions:
        idx = keep[: max(batch, round(fraction * len(y)))]
        result.steps_per_epoch[fraction] = math.ceil(len(idx) / batch)
        result.acc[fraction] = {
            tau: [fit_accuracy(strength_of(tau, lr, result.steps_per_epoch[fraction]), seed, x[idx], y[idx], x_val,
                               y_val, epochs, lr, batch, hidden) for seed in seeds] for tau in taus}
    return result


def timescale_section(out: Path, seeds: int = 3, taus: tuple[float, ...] = (1, 4, 16, 64), epochs: int = 10,
                      num_train: int = 2000) -> Section:
    """τ tuned on 25 % of the data against the best τ on 100 %, with the naive λ transfer beside it."""
    result = transfer(tuple(range(seeds)), taus, num_train=num_train, epochs=epochs)
    ok, verdict = result.verdict()
    tau_naive, naive = result.naive()
    small, large = result.fractions
    verdict += (f"; keeping lambda instead (timescale {tau_naive:g} epochs on {100 * large:g} %) scores "
                f"{100 * naive[0]:.1f} ± {100 * naive[1]:.1f} %")
    _figure(out / "timescale_transfer.png", result)
    rows = [[f"{r['tau_epochs']:g}", *(str(v) if isinstance(v, str) else f"{v:.3g}" for v in list(r.values())[1:])]
            for r in result.rows()]
    header = ["τ (epochs)", *list(result.rows()[0])[1:]]
    return Section(
        "L6", "The decay timescale in epochs transfers across data set sizes",
        "Wang & Aitchison (2025): the EMA timescale tau = 1/(lr lambda), in epochs, is what stays optimal when the "
        "data set grows; lambda = 1/(lr tau S) must then shrink with the steps per epoch S.",
        f"MNIST-1D MLP 40-256-256-10, Adam lr {result.lr:g}, batch 50, {epochs} epochs, {num_train} training "
        f"examples (100 %) or a fixed 25 % subset, 1000 held-out examples validate; grid over tau in epochs, "
        f"lambda = 1/(lr tau S), seeds 0..{seeds - 1} (validation accuracy, mean ± sd):\n\n" + _table(header, rows),
        verdict, "timescale_transfer.png")


def _figure(path: Path, result: Transfer) -> None:
    from lightning_wd.apps.report.figures import _pyplot, _save

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for fraction, colour in zip(result.fractions, ("tab:orange", "tab:blue")):
        stats = [result.stats(fraction, t) for t in result.taus]
        lams = [strength_of(t, result.lr, result.steps_per_epoch[fraction]) for t in result.taus]
        label = f"{100 * fraction:g} % of the data (S = {result.steps_per_epoch[fraction]} steps/epoch)"
        for ax, xs in zip(axes, (result.taus, lams)):
            ax.errorbar(xs, [100 * m for m, _ in stats], yerr=[100 * s for _, s in stats], marker="o", capsize=3,
                        color=colour, label=label)
        best = result.best(fraction)
        axes[0].axvline(best, color=colour, linestyle="--", linewidth=1)
    axes[0].set_xlabel("decay timescale τ = 1/(ηλS) (epochs, log)")
    axes[1].set_xlabel("decay strength λ (log)")
    axes[0].set_ylabel("validation accuracy (%)")
    axes[0].set_title("against the timescale τ in epochs")
    axes[1].set_title("against the strength λ (the same runs)")
    for ax in axes:
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    seeds = len(next(iter(result.acc[result.fractions[0]].values())))
    fig.suptitle(f"Timescale transfer, AdamW decoupled decay on MNIST-1D (mean ± sd over {seeds} seeds; dashed: "
                 "best τ)")
    _save(plt, fig, path)
