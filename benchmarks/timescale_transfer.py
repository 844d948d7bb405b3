"""11. Timescale transfer (Wang & Aitchison 2025): the decay timescale tuned on 25 % of the training data, trained
on 100 %, against the best timescale there.

A grid over ``τ_epochs`` (``λ = 1 / (η τ_epochs S)``, the rule ``best.yaml`` prints) fitted on a fixed 25 % subset
and on all of the training examples (:data:`lightning_wd.apps.report.timescale.FULL`: 1600 MNIST-1D examples, the
MLP 40-256-256-10, Adam lr 0.01, batch 50, 30 epochs; ``S`` grows 4x), every seed. The rows give each grid point's
validation accuracy (mean ± sd over seeds) on both; the last row the verdict: ``τ*`` of the 25 % grid scored on
100 % within one seed sd of the best 100 % grid point (the target), and the naive transfer (``λ`` kept, so ``τ``
4x shorter) beside it. The experiment lives in :mod:`lightning_wd.apps.report.timescale` (the report's section
L6 runs it at smaller sizes with ``--quick``, at these sizes without).
"""

from __future__ import annotations

from lightning_wd.apps.report.timescale import FULL, transfer

QUICK = {"seeds": (0,), "taus": (4.0, 16.0), "num_train": 400, "epochs": 1}  # smoke-test sizes


def run(seeds: tuple[int, ...] = (0, 1, 2, 3, 4), taus: tuple[float, ...] = FULL["taus"],
        num_train: int = FULL["num_train"], epochs: int = FULL["epochs"]) -> list[dict]:
    import torch

    from benchmarks.common import one_thread

    with one_thread():
        result = transfer(tuple(seeds), tuple(taus), num_train=num_train, epochs=epochs)
    rows = result.rows()
    ok, verdict = result.verdict()
    tau_naive, naive = result.naive()
    keys = list(rows[0])
    rows.append({**dict.fromkeys(keys, ""), "tau_epochs": "verdict",
                 "note": f"{verdict} (target {'met' if ok else 'not met'}); keeping lambda instead (tau "
                         f"{tau_naive:g} epochs on 100 %): {100 * naive[0]:.1f} ± {100 * naive[1]:.1f} %; "
                         f"{len(seeds)} seeds, torch {torch.__version__}"})
    return rows
