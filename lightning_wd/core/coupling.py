"""How the learning rate enters the decay: the one place of the lr-coupling maths.

With ``strength`` lambda, the group's current ``lr``, its initial ``lr0`` and its largest ``lr_max``, the
decay rate of one step (the factor a decoupled scheme multiplies ``w`` by is ``1 - rate``) is:

=================  ===========================  =====================================================
``coupling``       rate                         meaning
=================  ===========================  =====================================================
``lr``             ``lr * lambda``              PyTorch's AdamW (the default)
``lr_ratio``       ``lambda * lr / lr0``        the schedule's shape, at strength lambda
``none``           ``lambda``                   independent of the learning rate
``corrected``      ``lambda * lr^2 / lr_max``   AdamC (Defazio 2025) on the tensors of layers that feed a
                                                normalisation layer (:mod:`lightning_wd.core.normalized`),
                                                ``lr * lambda`` on the others, as the paper defines it
``corrected_all``  ``lambda * lr^2 / lr_max``   on every decayed tensor (timm's ``corrected_weight_decay``)
=================  ===========================  =====================================================

Why ``lr^2 / lr_max``: for a layer followed by a normalisation, the steady state of decoupled decay at rate
``r`` and lr ``η`` has ``‖g‖/‖w‖ = sqrt(2r)/η`` (:mod:`lightning_wd.core.diagnostics`): ``sqrt(2λ/η)`` with
``r = λη``, which grows as ``η`` falls at the end of a schedule (the late rise of the gradient norm), and
``sqrt(2λ/η_max)``, constant, with ``r = λη²/η_max`` (Defazio 2025).

The *coefficient* ``c`` is the optimizer's ``weight_decay`` that yields the same rate natively
(``rate = lr * c``).
"""

from __future__ import annotations

__all__ = ["LR_COUPLINGS", "coefficient", "decay_rate", "timescale_unit"]

LR_COUPLINGS = ("lr", "lr_ratio", "none", "corrected", "corrected_all")


def coefficient(coupling: str, strength: float, lr: float, lr0: float, lr_max: float) -> float:
    """``c`` such that the decay rate of this step is ``lr * c`` (``corrected_all`` is ``corrected`` per tensor).

    Example:
        >>> coefficient("lr", 0.1, lr=0.5, lr0=1.0, lr_max=1.0), coefficient("corrected", 0.1, 0.5, 1.0, 1.0)
        (0.1, 0.05)
    """
    if coupling == "lr":
        return strength
    if coupling == "lr_ratio":
        return strength / lr0 if lr0 else 0.0
    if coupling in ("corrected", "corrected_all"):
        return strength * lr / lr_max if lr_max else 0.0
    return strength / lr if lr else 0.0


def decay_rate(coupling: str, strength: float, lr: float, lr0: float, lr_max: float) -> float:
    """The decay rate of this step (see the table above).

    Example:
        >>> decay_rate("lr", 0.1, lr=0.5, lr0=1.0, lr_max=1.0), decay_rate("none", 0.1, 0.5, 1.0, 1.0)
        (0.05, 0.1)
    """
    if coupling == "none":
        return strength
    return lr * coefficient(coupling, strength, lr, lr0, lr_max)


def timescale_unit(coupling: str, lr0: float, lr_max: float) -> float:
    """The rate at ``lr0`` per unit of strength: lambda = 1 / (unit * tau * steps per epoch) for timescale tau.

    Example:
        >>> timescale_unit("lr", 0.01, 0.01), timescale_unit("none", 0.01, 0.01)
        (0.01, 1.0)
    """
    corrected = lr0 * lr0 / lr_max if lr_max else 0.0
    return {"lr": lr0, "lr_ratio": 1.0, "none": 1.0, "corrected": corrected, "corrected_all": corrected}[coupling]
