"""Issue 18: API misuse gets a clear error naming the argument; exclude rules that leave nothing to decay while
a strength is set are a warning naming the rule (and no warning when nothing is asked to decay)."""

from __future__ import annotations

import warnings

import pytest
import torch.nn as nn

from lightning_wd import WeightDecay, param_groups, plan_groups


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))


@pytest.mark.parametrize("bad", ["not a model", None, [nn.Parameter(nn.Linear(2, 2).weight)], nn.Linear])
def test_model_that_is_not_a_module(bad):
    for function in (param_groups, plan_groups):
        with pytest.raises(TypeError, match=r"`model` must be a torch.nn.Module, got "):
            function(bad, 0.1)


@pytest.mark.parametrize("key", ["exclude", "include"])
@pytest.mark.parametrize("bad", [5, 1.5, {"a": 1}, [3], [""]])
def test_patterns_that_are_not_globs(key, bad):
    with pytest.raises(TypeError, match=f"`{key}` must"):
        plan_groups(model(), 0.1, **{key: bad})
    with pytest.raises((TypeError, ValueError), match=f"`{key}` must"):
        WeightDecay(strength=0.1, **{key: bad})


@pytest.mark.parametrize("rule", [["*"], ["type:Linear", "type:LayerNorm"], "*"])
def test_exclude_everything_with_a_strength_warns_naming_the_rule(rule):
    with pytest.warns(UserWarning, match=r"exclude=\[.*\] leaves no tensor to decay although the strength is 0.1"):
        plan = plan_groups(model(), 0.1, exclude=rule)
    assert not any(g["weight_decay"] for g in plan.groups)


def test_no_warning_without_a_strength():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plan_groups(model(), 0.0, exclude=["*"])
        plan_groups(model(), 0.1, exclude=["*"], warn_strength=0)


def test_the_callback_names_its_own_strength(tiny_net, tiny_loader, quiet_trainer):
    with pytest.warns(UserWarning, match=r"exclude=\['\*'\] leaves no tensor to decay although the strength is 0.03"):
        quiet_trainer([WeightDecay(strength=0.03, exclude=["*"], print_audit=False)], max_epochs=1).fit(
            tiny_net, tiny_loader)


def test_the_callback_is_quiet_at_strength_zero(tiny_net, tiny_loader, quiet_trainer):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_trainer([WeightDecay(strength=0.0, exclude=["*"], print_audit=False)], max_epochs=1).fit(
            tiny_net, tiny_loader)
    assert not [w for w in caught if "leaves no tensor" in str(w.message)]
