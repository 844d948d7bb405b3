"""What a run records of the decay and the optimizers: params, tags and the grouping audit, as plain text.

The tag names here (``lightning_wd.scheme``, ``.strength``, ``.schedule`` ...) are the contract between
:class:`~lightning_wd.tracking.record.MLflowRecord`, which writes them, and
:func:`~lightning_wd.tracking.queries.run_row`, which reads them back. Imports neither lightning nor MLflow.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "AUDIT_COLUMNS",
    "PARAM_VALUE_LIMIT",
    "TAG_PREFIX",
    "audit_csv",
    "audit_rows",
    "decay_tags",
    "format_strength",
    "mlflow_hparams",
    "setting_label",
    "flatten_params",
    "optimizer_params",
    "plain_values",
    "run_params",
]

TAG_PREFIX = "lightning_wd."
PARAM_VALUE_LIMIT = 500
#: hparams of the model/datamodule that describe no setting (LightningCLI's ``_instantiator``) and are not logged
_PRIVATE_HPARAMS = ("_instantiator", "_class_path")
#: hparams of the model that a weight-decay callback supersedes (its ``wd.*`` params say what decays)
_SUPERSEDED_HPARAMS = ("weight_decay",)
AUDIT_COLUMNS = ("name", "shape", "numel", "group", "strength", "reason")


def plain_values(value: Any) -> Any:
    """Plain YAML-able values: mappings, sequences, numbers, strings; anything else as its ``str``.

    Example:
        >>> from pathlib import PurePosixPath
        >>> plain_values({"a": (1, PurePosixPath("x")), 2: None})
        {'a': [1, 'x'], '2': None}
    """
    if hasattr(value, "as_dict") and callable(value.as_dict):  # jsonargparse.Namespace
        value = value.as_dict()
    if isinstance(value, Mapping):
        return {str(k): plain_values(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [plain_values(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def flatten_params(params: Mapping, prefix: str) -> dict[str, str]:
    """Nested mappings as flat MLflow params ``<prefix><key>.<key>``, each value cut to 500 characters.

    Example:
        >>> flatten_params({"scheme": "l1", "rules": {"bias": True}}, "wd.")
        {'wd.scheme': 'l1', 'wd.rules.bias': 'True'}
    """
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, name + "."))
        else:
            flat[name] = str(plain_values(value))[:PARAM_VALUE_LIMIT]
    return flat


def format_strength(value: Any) -> str:
    """A decay strength as people write it: ``1e-2``, ``3e-4``, ``0.25``, ``0``; anything else as text.

    Example:
        >>> [format_strength(v) for v in (0.01, 0.00025, 0.25, 0, 1.0, None)]
        ['1e-2', '2.5e-4', '0.25', '0', '1', 'native']
    """
    if value is None:
        return "native"
    if not _is_number(value):
        return str(value)
    value = float(value)
    if value == 0 or 0.1 <= abs(value) < 1000:
        return f"{value:.3g}"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def setting_label(scheme: Any, strength: Any, seed: Any = None) -> str:
    """The name of a run from what it is: ``l1 λ=1e-2 seed 0`` (scheme, strength, seed when known).

    Example:
        >>> setting_label("l1", 0.01, 0)
        'l1 λ=1e-2 seed 0'
        >>> setting_label("decoupled", 0.25)
        'decoupled λ=0.25'
    """
    label = f"{scheme or 'none'} λ={format_strength(strength)}"
    return label if seed is None or seed == "" else f"{label} seed {seed}"


def mlflow_hparams(hparams: Mapping[str, Any], decay_managed: bool) -> dict[str, Any]:
    """The model's and datamodule's hparams as MLflow params: LightningCLI's private keys (``_instantiator``)
    left out, and, when a weight-decay callback manages the decay (``decay_managed``), the model's own
    ``weight_decay`` argument too: the callback's ``wd.*`` params are then the one account of the decay.

    Example:
        >>> mlflow_hparams({"lr": 0.1, "weight_decay": 0.0, "_instantiator": "x"}, decay_managed=True)
        {'lr': 0.1}
        >>> mlflow_hparams({"lr": 0.1, "weight_decay": 0.0}, decay_managed=False)
        {'lr': 0.1, 'weight_decay': 0.0}
    """
    dropped = _PRIVATE_HPARAMS + (_SUPERSEDED_HPARAMS if decay_managed else ())
    return {k: v for k, v in hparams.items() if str(k) not in dropped}


def optimizer_params(optimizers: Sequence, decay_managed: bool = False) -> dict[str, str]:
    """Params describing the optimizers: class, and per group its name, lr, decay, betas/momentum, sizes.

    With ``decay_managed`` (a weight-decay callback applies the decay, whose ``wd.*`` params describe it),
    a group's own ``weight_decay`` is logged as ``native_weight_decay``: the part the optimizer applies
    itself (0 when the callback does all of it), so it cannot be read as the decay of the run.

    Example:
        >>> import torch
        >>> from lightning_wd import build_optimizer
        >>> opt = build_optimizer(torch.nn.Linear(3, 2), "sgd", lr=0.1, weight_decay=0.01, momentum=0.9)
        >>> params = optimizer_params([opt])
        >>> params["optimizer.class"], params["optimizer.group0.name"], params["optimizer.group1.tensors"]
        ('SGD', 'decay', '1')
    """
    params: dict[str, str] = {}
    for i, optimizer in enumerate(optimizers):
        prefix = "optimizer." if len(optimizers) == 1 else f"optimizer{i}."
        params[prefix + "class"] = type(optimizer).__name__
        params[prefix + "groups"] = str(len(optimizer.param_groups))
        for j, group in enumerate(optimizer.param_groups):
            key = f"{prefix}group{j}."
            params[key + "name"] = str(group.get("name", j))
            for option in ("lr", "weight_decay", "betas", "momentum"):
                if option in group:
                    value = group[option]
                    value = value.item() if hasattr(value, "item") and getattr(value, "ndim", 1) == 0 else value
                    name = "native_weight_decay" if option == "weight_decay" and decay_managed else option
                    params[key + name] = str(plain_values(value))
            params[key + "tensors"] = str(len(group["params"]))
            params[key + "numel"] = str(sum(p.numel() for p in group["params"]))
    return params


def run_params(hparams: Mapping[str, Any] | None, optimizers: Sequence, seed: Any = None) -> dict[str, str]:
    """The one account of a run's decay that every logger gets: ``wd.*`` (the weight-decay callback's
    ``hparams``; ``None`` when there is no such callback), ``optimizer.*`` (:func:`optimizer_params`, with
    ``native_weight_decay`` when the callback manages the decay) and ``seed`` when one was set.

    :class:`~lightning_wd.tracking.record.MLflowRecord` logs these as MLflow params;
    :class:`~lightning_wd.tracking.hparams.DecayHparams` writes the same into the ``hparams.yaml`` of the
    other loggers (CSV, TensorBoard).

    Example:
        >>> run_params({"scheme": "l1", "strength": 0.01}, [], seed=0)
        {'wd.scheme': 'l1', 'wd.strength': '0.01', 'seed': '0'}
    """
    params = {**flatten_params(dict(hparams or {}), "wd."),
              **optimizer_params(list(optimizers), decay_managed=hparams is not None)}
    if seed is not None and seed != "":
        params["seed"] = str(seed)
    return params


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def decay_tags(hparams: Mapping[str, Any], optimizers: Sequence, version: str) -> dict[str, str]:
    """The ``lightning_wd.*`` tags of a run: scheme, strength, schedule, optimizer classes and version.

    The strength is the decay callback's (``weight_decay`` or ``strength``), else the largest
    ``weight_decay`` of the optimizers' groups; the scheme is the callback's, else ``native`` (some
    group decays) or ``none``. A schedule is tagged only when the callback has one. ``lightning_wd.setting``
    (``l1 λ=1e-3``) groups the runs of one setting (over seeds) in the MLflow UI.

    Example:
        >>> decay_tags({"scheme": "l1", "strength": 0.001, "schedule": "cosine"}, [], "1.0")
        {'lightning_wd.scheme': 'l1', 'lightning_wd.strength': '0.001', 'lightning_wd.optimizer': '-', \
'lightning_wd.version': '1.0', 'lightning_wd.schedule': 'cosine', 'lightning_wd.setting': 'l1 λ=1e-3'}
        >>> decay_tags({}, [], "1.0")["lightning_wd.scheme"]
        'none'
    """
    strength = hparams.get("weight_decay", hparams.get("strength"))
    if strength is None:
        strength = max((g.get("weight_decay", 0.0) for o in optimizers for g in o.param_groups), default=0.0)
    scheme = hparams.get("scheme") or ("native" if strength else "none")
    tags = {"scheme": scheme, "strength": f"{float(strength):g}" if _is_number(strength) else strength,
            "optimizer": ",".join(type(o).__name__ for o in optimizers) or "-", "version": version}
    if hparams.get("schedule") is not None:
        tags["schedule"] = hparams["schedule"]
    tags["setting"] = setting_label(scheme, strength)
    return {TAG_PREFIX + k: str(plain_values(v))[:PARAM_VALUE_LIMIT] for k, v in tags.items()}


def audit_rows(plan: Any, optimizers: Sequence) -> list[dict]:
    """Audit rows (:data:`AUDIT_COLUMNS`) from the plan, else from optimizer groups that carry ``param_names``.

    Example:
        >>> import torch
        >>> from lightning_wd import explain
        >>> audit_rows(explain(torch.nn.Linear(3, 2), 0.1), [])[0]
        {'name': 'weight', 'shape': '2x3', 'numel': 6, 'group': 'decay', 'strength': 0.1, 'reason': 'weight'}
    """
    if plan is not None and getattr(plan, "rows", None):
        return [
            {"name": r.name, "shape": "x".join(map(str, r.shape)) or "scalar", "numel": r.numel,
             "group": r.group or "", "strength": r.strength, "reason": r.reason}
            for r in plan.rows
        ]
    rows = []
    for optimizer in optimizers:
        for j, group in enumerate(optimizer.param_groups):
            for name, param in zip(group.get("param_names") or [], group["params"]):
                rows.append({"name": name, "shape": "x".join(map(str, param.shape)) or "scalar",
                             "numel": param.numel(), "group": str(group.get("name", j)),
                             "strength": group.get("weight_decay", 0.0), "reason": ""})
    return rows


def audit_csv(rows: Sequence[Mapping]) -> str:
    """Audit rows as CSV text with a header line.

    Example:
        >>> print(audit_csv([{"name": "w", "shape": "2", "numel": 2, "group": "decay", "strength": 0.1,
        ...                   "reason": "weight"}]))
        name,shape,numel,group,strength,reason
        w,2,2,decay,0.1,weight
        <BLANKLINE>
    """
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(AUDIT_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
