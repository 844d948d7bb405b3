"""Report section L3: the equilibrium of decoupled weight decay, read off this library's ``wd/*`` diagnostics.

Claim (Kosson et al. 2024, "Rotational equilibrium"; Defazio 2025): for a scale-invariant tensor (its output
feeds a normalisation layer, so ``g ⟂ w``) trained by SGD with decoupled decay ``w' = (1 - ηλ) w - η g``, the
expected squared norm ``E‖w'‖² = (1 - ηλ)²‖w‖² + η²‖g‖²`` is stationary when ``η²‖g‖² ≈ 2ηλ‖w‖²``:

* ``‖g‖ / ‖w‖ -> sqrt(2λ / η)``, i.e. ``wd/equilibrium_ratio -> 1``, whatever the initial norm;
* the angular update per step ``-> sqrt(2ηλ)``, the same for every such layer (balanced rotation).

The runs: a LayerNorm MLP ``16-64-64-4`` whose two hidden weights feed a LayerNorm without affine parameters (and
have no bias: exactly scale-invariant), online teacher-student data with 20 % random labels (the gradient noise
stays), plain SGD, decoupled decay planned by the library's rules, and :class:`~lightning_wd.core.diagnostics.
Diagnostics` snapshotted and computed exactly as the callback does at its statistics interval.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from lightning_wd.apps.report.runs import mean_sd
from lightning_wd.apps.report.tables import Section, _table

__all__ = ["equilibrium_section", "equilibrium_trace"]

#: the scale-invariant tensors of the model below (their output feeds a LayerNorm)
INVARIANT = ("0.weight", "3.weight")
METRICS = ("grad_weight_ratio", "equilibrium_ratio", "angular_update")


def _model(width: int) -> nn.Module:
    return nn.Sequential(nn.Linear(16, width, bias=False), nn.LayerNorm(width, elementwise_affine=False), nn.ReLU(),
                         nn.Linear(width, width, bias=False), nn.LayerNorm(width, elementwise_affine=False),
                         nn.ReLU(), nn.Linear(width, 4))


def equilibrium_trace(strength: float, seed: int, steps: int = 1000, lr: float = 0.1, every: int = 10,
                      width: int = 64) -> dict[str, list[float]]:
    """``{"step": [...], "<metric>/<tensor>": [...]}`` every ``every`` steps, for the metrics of :data:`METRICS` and
    the tensors of :data:`INVARIANT` (the per-tensor ``wd/*`` diagnostics without their ``wd/`` prefix)."""
    from lightning_wd.apps.report.literature import _decay, teacher_student
    from lightning_wd.core.diagnostics import Diagnostics

    torch.manual_seed(seed)
    model = _model(width)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    decay = _decay(model, optimizer, strength, "lr")
    diagnostics = Diagnostics(per_tensor=True)
    trace: dict[str, list[float]] = {"step": []}
    for step, (x, y) in enumerate(teacher_student(seed, steps)):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        if diagnostics.due(step, every):
            diagnostics.snapshot([decay], step)  # what the callback does in on_before_optimizer_step
        optimizer.step()
        if (step + 1) % every == 0:
            stats = diagnostics.compute([decay], step + 1)
            trace["step"].append(step + 1)
            for metric in METRICS:
                for name in INVARIANT:
                    trace.setdefault(f"{metric}/{name}", []).append(stats[f"wd/{metric}/{name}"])
    decay.uninstall()
    return trace


def _rms_tail(values: list[float]) -> float:
    """The root mean square over the second half (the ratios are per batch: ``E‖g‖²`` is what equilibrates)."""
    tail = values[len(values) // 2:]
    return math.sqrt(sum(v * v for v in tail) / len(tail))


def equilibrium_section(out: Path, seeds: int = 3, strengths: tuple[float, ...] = (0.05, 0.2), steps: int = 1000,
                        lr: float = 0.1) -> Section:
    """Measured ``‖g‖/‖w‖``, ``wd/equilibrium_ratio`` and the angular update against their steady states."""
    traces = {s: [equilibrium_trace(s, seed, steps, lr) for seed in range(seeds)] for s in strengths}
    rows, ok = [], True
    summary = {}
    for s in strengths:
        target, angle = math.sqrt(2 * s / lr), math.sqrt(2 * lr * s)
        for name in INVARIANT:
            ratio = mean_sd([_rms_tail(t[f"grad_weight_ratio/{name}"]) for t in traces[s]])
            eq = mean_sd([_rms_tail(t[f"equilibrium_ratio/{name}"]) for t in traces[s]])
            ang = mean_sd([_rms_tail(t[f"angular_update/{name}"]) for t in traces[s]])
            summary[(s, name)] = eq[0]
            ok &= 0.8 <= eq[0] <= 1.25 and 0.8 <= ang[0] / angle <= 1.25
            rows.append([f"{s:g}", name, f"{target:.3f}", f"{ratio[0]:.3f} ± {ratio[1]:.3f}",
                         f"{eq[0]:.3f} ± {eq[1]:.3f}", f"{angle:.3f}", f"{ang[0]:.3f} ± {ang[1]:.3f}"])
    eqs = ", ".join(f"{v:.2f}" for v in summary.values())
    verdict = (f"reproduced: on every scale-invariant layer and strength the equilibrium ratio settles within 20 % "
               f"of 1 ({eqs}) and the angular update within 20 % of sqrt(2 lr lambda) on both layers"
               if ok else f"not reproduced here: equilibrium ratios {eqs} (the claim: within 20 % of 1)")
    _figure(out / "equilibrium.png", traces, strengths, lr)
    return Section(
        "L3", "The equilibrium of decoupled decay (wd/grad_weight_ratio, wd/equilibrium_ratio, wd/angular_update)",
        "Kosson et al. (2024), Defazio (2025): for scale-invariant weights under SGD with decoupled decay, ‖g‖/‖w‖ "
        "approaches sqrt(2 lambda / lr) and the angular update sqrt(2 lr lambda), the same on every layer, "
        "whatever the initial norm.",
        f"LayerNorm MLP 16-64-64-4 (hidden weights bias-free, feeding a LayerNorm: scale-invariant), online "
        f"teacher-student data with 20 % random labels, SGD lr {lr:g}, {steps} steps, decoupled decay, the library's "
        f"diagnostics every 10 steps, seeds 0..{seeds - 1}. RMS over the second half of training (mean ± sd over "
        "seeds):\n\n" + _table(["lambda", "tensor", "sqrt(2λ/η)", "‖g‖/‖w‖", "equilibrium ratio", "sqrt(2ηλ)",
                                "angular update (rad)"], rows),
        verdict, "equilibrium.png")


def _figure(path: Path, traces, strengths, lr: float) -> None:
    from lightning_wd.apps.report.figures import _pyplot, _save
    from lightning_wd.tracking.colours import OTHER_COLOURS

    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    styles = dict(zip(INVARIANT, ("-", ":")))
    for colour, s in zip(("tab:blue", *OTHER_COLOURS), strengths):
        steps = traces[s][0]["step"]
        for metric, ax in zip(METRICS, axes):
            for name in INVARIANT:
                series = [mean_sd([t[f"{metric}/{name}"][i] for t in traces[s]])[0] for i in range(len(steps))]
                window = 5  # a moving average over 5 intervals: the per-batch values are noisy
                smooth = [sum(series[max(0, i - window):i + 1]) / len(series[max(0, i - window):i + 1])
                          for i in range(len(series))]
                ax.plot(steps, smooth, styles[name], color=colour, label=f"λ {s:g}, {name}")
        axes[0].axhline(math.sqrt(2 * s / lr), color=colour, linestyle="--", linewidth=1,
                        label=f"sqrt(2λ/η) = {math.sqrt(2 * s / lr):.2f}")
        axes[2].axhline(math.sqrt(2 * lr * s), color=colour, linestyle="--", linewidth=1,
                        label=f"sqrt(2ηλ) = {math.sqrt(2 * lr * s):.3f}")
    axes[1].axhline(1.0, color="black", linestyle="--", linewidth=1, label="steady state (1)")
    for ax, ylabel, title in zip(axes, ("‖g‖ / ‖w‖", "wd/equilibrium_ratio", "angular update per step (rad)"),
                                 ("gradient / weight norm", "measured over predicted steady state",
                                  "angular update")):
        ax.set_xlabel(f"SGD step (lr {lr:g})")
        ax.set_ylabel(ylabel)
        ax.set_title(f"decoupled decay: {title}")
        ax.set_ylim(bottom=0.0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Equilibrium diagnostics on scale-invariant layers (mean over {len(traces[strengths[0]])} seeds, "
                 "moving average over 50 steps)")
    _save(plt, fig, path)
