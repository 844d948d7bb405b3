"""Which parameters decay: invariants over random models, each default rule, each user rule, the audit."""

from __future__ import annotations

import hashlib
import math
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from lightning_wd import explain, param_groups, plan_groups
from lightning_wd.core.grouping import AuditRow, fingerprint, is_norm_module

# -- helpers ------------------------------------------------------------------------------------------


def decayed(model: nn.Module, weight_decay: float = 0.1, **rules) -> set[str]:
    """Names of the tensors that get a strength > 0."""
    return {n for g in param_groups(model, weight_decay, **rules) if g["weight_decay"] > 0 for n in g["param_names"]}


def reasons(model: nn.Module, **rules) -> dict[str, str]:
    return {row.name: row.reason for row in explain(model, 0.1, **rules).rows}


def group_names(model: nn.Module, weight_decay: float = 0.1, **rules) -> dict[str, list[str]]:
    return {g["name"]: g["param_names"] for g in param_groups(model, weight_decay, **rules)}


class CustomNorm(nn.Module):
    """A user norm whose scale is 2-D, so only the norm rule (not ndim<=1) can exclude it."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1, n))


class LayerNorm2d(CustomNorm):
    pass


class BatchNormAct2d(CustomNorm):
    pass


class Normalizer(CustomNorm):  # "Norm" inside the name, but not a norm class by name
    pass


class ViTLike(nn.Module):
    """A small model with a position embedding, a class token, blocks, a norm, and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, 5, 8))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 8))
        self.blocks = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 3)

    def no_weight_decay(self):
        return {"pos_embed", "cls_token"}


class TiedLM(nn.Module):
    """Embedding and output head share one tensor (as GPT-2 does)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 6)
        self.body = nn.Linear(6, 6)
        self.lm_head = nn.Linear(6, 11, bias=False)
        self.lm_head.weight = self.emb.weight


# -- invariants over random models ---------------------------------------------------------------------

_LAYERS = {
    "linear": lambda: nn.Linear(3, 4),
    "linear_nobias": lambda: nn.Linear(3, 4, bias=False),
    "conv": lambda: nn.Conv2d(2, 3, 3),
    "layernorm": lambda: nn.LayerNorm(4),
    "batchnorm": lambda: nn.BatchNorm2d(3),
    "groupnorm": lambda: nn.GroupNorm(2, 4),
    "rmsnorm": lambda: nn.RMSNorm(4),
    "embedding": lambda: nn.Embedding(7, 4),
    "custom_norm": lambda: CustomNorm(4),
    "scalar": lambda: _Holder(torch.zeros(())),
    "vector": lambda: _Holder(torch.zeros(5)),
    "matrix": lambda: _Holder(torch.zeros(2, 3)),
    "marked": lambda: _Holder(torch.zeros(2, 3), no_weight_decay=True),
}


class _Holder(nn.Module):
    def __init__(self, value: torch.Tensor, no_weight_decay: bool = False) -> None:
        super().__init__()
        self.value = nn.Parameter(value)
        if no_weight_decay:
            self.value._no_weight_decay = True


@st.composite
def random_models(draw) -> nn.Module:
    """A Sequential of random layers, with frozen tensors, shared modules and tied tensors mixed in."""
    kinds = draw(st.lists(st.sampled_from(sorted(_LAYERS)), min_size=1, max_size=8))
    model = nn.Sequential(*(_LAYERS[k]() for k in kinds))
    params = list(model.parameters())
    for p in params:
        if draw(st.booleans()) and draw(st.booleans()):  # about a quarter frozen
            p.requires_grad_(False)
    if draw(st.booleans()):  # the same module registered twice
        model.append(model[draw(st.integers(0, len(kinds) - 1))])
    linears = [m for m in model if isinstance(m, nn.Linear)]
    if len(linears) >= 2 and draw(st.booleans()):  # one tensor under two names in different modules
        linears[-1].weight = linears[0].weight
    nested = nn.Module()
    nested.inner = model
    nested.extra = nn.Linear(2, 2)
    return nested if draw(st.booleans()) else model


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    model=random_models(),
    weight_decay=st.floats(0, 1),
    exclude_bias=st.booleans(),
    exclude_1d=st.booleans(),
    exclude_norm=st.booleans(),
    exclude_embeddings=st.booleans(),
)
def test_groups_partition_the_trainable_parameters(model, weight_decay, **switches):
    groups = param_groups(model, weight_decay, **switches)
    grouped = [id(p) for g in groups for p in g["params"]]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert len(grouped) == len(set(grouped)), "a tensor sits in two groups, or twice in one"
    assert set(grouped) == trainable, "frozen tensors are left out, every trainable one is in"
    assert all(g["params"] for g in groups), "no empty group"
    by_name = dict(model.named_parameters())  # one name per tensor: the first, as torch dedups
    for g in groups:
        assert set(g) == {"name", "params", "param_names", "weight_decay"}
        assert [id(by_name[n]) for n in g["param_names"]] == [id(p) for p in g["params"]]
        assert g["weight_decay"] == (weight_decay if g["name"] == "decay" else 0.0)
    assert len({g["name"] for g in groups}) == len(groups)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=random_models())
def test_audit_has_one_row_per_name_and_agrees_with_the_groups(model):
    plan = plan_groups(model, 0.5)
    assert [r.name for r in plan.rows] == [n for n, _ in model.named_parameters(remove_duplicate=False)]
    in_groups = {n: g["name"] for g in plan.groups for n in g["param_names"]}
    assert {r.name: r.group for r in plan.rows if r.group is not None} == in_groups == plan.group_of
    for row in plan.rows:
        if row.group is None:
            assert row.reason.startswith(("tied to ", "frozen"))
        assert row.decayed == (row.group == "decay")


@settings(max_examples=30, deadline=None)
@given(model=random_models())
def test_grouping_is_deterministic(model):
    first = param_groups(model, 0.1)
    second = param_groups(model, 0.1)
    assert [(g["name"], g["param_names"]) for g in first] == [(g["name"], g["param_names"]) for g in second]
    assert fingerprint(first) == fingerprint(second)


def test_a_tied_tensor_appears_once_under_its_first_name():
    model = TiedLM()
    names = [n for g in param_groups(model, 0.1) for n in g["param_names"]]
    assert names.count("emb.weight") == 1
    assert "lm_head.weight" not in names
    assert sum(p is model.emb.weight for g in param_groups(model, 0.1) for p in g["params"]) == 1


def test_a_shared_module_appears_once():
    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    assert group_names(model) == {"decay": ["0.weight"], "no_decay": ["0.bias"]}


def test_frozen_tensors_are_left_out():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    model[0].requires_grad_(False)
    assert group_names(model) == {"decay": ["1.weight"], "no_decay": ["1.bias"]}


def test_a_model_without_trainable_tensors_gives_no_groups():
    model = nn.Linear(2, 2).requires_grad_(False)
    assert param_groups(model, 0.1) == []
    assert param_groups(nn.ReLU(), 0.1) == []


def test_a_rule_set_that_excludes_everything_gives_only_the_no_decay_group():
    assert list(group_names(nn.Linear(2, 2), exclude="*")) == ["no_decay"]


# -- default rules -------------------------------------------------------------------------------------


def test_weights_decay_and_biases_do_not():
    assert reasons(nn.Linear(3, 2)) == {"weight": "weight", "bias": "bias"}
    assert group_names(nn.Linear(3, 2), 0.25) == {"decay": ["weight"], "no_decay": ["bias"]}
    assert param_groups(nn.Linear(3, 2), 0.25)[0]["weight_decay"] == 0.25


@pytest.mark.parametrize("shape", [(), (5,)])
def test_tensors_of_at_most_one_dimension_do_not_decay(shape):
    model = _Holder(torch.zeros(shape))
    assert reasons(model) == {"value": "ndim<=1"}
    assert decayed(model) == set()
    assert decayed(model, exclude_1d=False) == {"value"}


def test_a_two_dimensional_tensor_named_bias_does_not_decay():
    model = nn.Module()
    model.attn_bias = nn.Parameter(torch.zeros(2, 2))
    assert reasons(model) == {"attn_bias": "bias"}
    assert decayed(model, exclude_bias=False) == {"attn_bias"}


def test_switching_off_the_bias_rule_leaves_biases_to_the_1d_rule():
    assert reasons(nn.Linear(3, 2), exclude_bias=False)["bias"] == "ndim<=1"
    assert decayed(nn.Linear(3, 2), exclude_bias=False, exclude_1d=False) == {"weight", "bias"}


@pytest.mark.parametrize(
    "norm",
    [
        nn.BatchNorm1d(4),
        nn.BatchNorm2d(4),
        nn.BatchNorm3d(4),
        nn.SyncBatchNorm(4),
        nn.LayerNorm(4),
        nn.GroupNorm(2, 4),
        nn.InstanceNorm1d(4, affine=True),
        nn.InstanceNorm2d(4, affine=True),
        nn.InstanceNorm3d(4, affine=True),
        nn.RMSNorm(4),
        CustomNorm(4),
        LayerNorm2d(4),
        BatchNormAct2d(4),
    ],
    ids=lambda m: type(m).__name__,
)
def test_parameters_of_norm_layers_do_not_decay(norm):
    model = nn.Sequential(nn.Linear(4, 4), norm)
    rows = [r for r in explain(model, 0.1).rows if r.name.startswith("1.")]
    assert rows, "the norm layer has parameters"
    assert {r.reason for r in rows} == {f"norm layer {type(norm).__name__}"}
    assert decayed(model) == {"0.weight"}


def test_the_norm_rule_can_be_switched_off():
    model = nn.Sequential(nn.Linear(4, 4), CustomNorm(4))
    assert decayed(model, exclude_norm=False) == {"0.weight", "1.scale"}


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        (nn.LocalResponseNorm(2), True),
        (nn.InstanceNorm2d(3), True),
        (nn.LayerNorm(3), True),
        (CustomNorm(3), True),
        (LayerNorm2d(3), True),
        (BatchNormAct2d(3), True),
        (Normalizer(3), False),
        (nn.Linear(3, 3), False),
        (nn.Embedding(3, 3), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else str(v),
)
def test_is_norm_module(module, expected):
    assert is_norm_module(module) is expected


def test_a_class_merely_containing_norm_in_its_name_is_not_a_norm():
    assert reasons(nn.Sequential(Normalizer(3))) == {"0.scale": "weight"}


def test_the_model_no_weight_decay_names_do_not_decay():
    model = ViTLike()
    rows = reasons(model)
    assert rows["pos_embed"] == "model.no_weight_decay: pos_embed"
    assert rows["cls_token"] == "model.no_weight_decay: cls_token"
    assert decayed(model) == {"blocks.0.weight", "blocks.1.weight", "head.weight"}
    assert {"pos_embed", "cls_token"} <= decayed(model, use_model_no_weight_decay=False)


def test_no_weight_decay_entries_are_globs():
    class Globbing(ViTLike):
        def no_weight_decay(self):
            return ["blocks.*"]

    assert reasons(Globbing())["blocks.1.weight"] == "model.no_weight_decay: blocks.*"
    assert decayed(Globbing()) == {"pos_embed", "cls_token", "head.weight"}


def test_a_submodule_no_weight_decay_is_prefixed_with_its_path():
    model = nn.Module()
    model.backbone = ViTLike()
    assert reasons(model)["backbone.pos_embed"] == "backbone.no_weight_decay: backbone.pos_embed"
    assert "backbone.pos_embed" not in decayed(model)


def test_no_weight_decay_keywords_are_substrings():
    class Swinish(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.Module()
            self.attn.relative_position_bias_table = nn.Parameter(torch.zeros(9, 2))
            self.attn.proj = nn.Linear(2, 2)

        def no_weight_decay_keywords(self):
            return {"relative_position"}

    model = Swinish()
    assert reasons(model)["attn.relative_position_bias_table"] == "model.no_weight_decay_keywords: relative_position"
    assert decayed(model) == {"attn.proj.weight"}


def test_tensors_marked_no_weight_decay_do_not_decay():
    model = nn.Module()
    model.A_log = nn.Parameter(torch.zeros(4, 3))
    model.A_log._no_weight_decay = True
    model.W = nn.Parameter(torch.zeros(4, 3))
    assert reasons(model) == {"A_log": "marked _no_weight_decay", "W": "weight"}
    assert decayed(model) == {"W"}


@pytest.mark.parametrize("embedding", [nn.Embedding(5, 3), nn.EmbeddingBag(5, 3)], ids=lambda m: type(m).__name__)
def test_embeddings_decay_unless_opted_out(embedding):
    model = nn.Sequential(embedding)
    assert decayed(model) == {"0.weight"}
    assert decayed(model, exclude_embeddings=True) == set()
    assert reasons(model, exclude_embeddings=True) == {"0.weight": f"embedding {type(embedding).__name__}"}


def test_precedence_marked_before_model_list_before_norm():
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = CustomNorm(3)
            self.norm.scale._no_weight_decay = True
            self.other = CustomNorm(3)

        def no_weight_decay(self):
            return ["norm.scale", "other.scale"]

    assert reasons(Model()) == {"norm.scale": "marked _no_weight_decay",
                                "other.scale": "model.no_weight_decay: other.scale"}


# -- user rules ----------------------------------------------------------------------------------------


def test_user_exclude_globs():
    model = ViTLike()
    assert reasons(model, exclude=["head.*"])["head.weight"] == "user exclude 'head.*'"
    assert decayed(model, exclude="head.*") == {"blocks.0.weight", "blocks.1.weight"}
    assert decayed(model, exclude=("blocks.?.weight", "head.weight")) == set()


def test_user_include_overrides_every_default_rule():
    model = ViTLike()
    include = ["pos_embed", "norm.weight", "head.bias"]
    rows = reasons(model, include=include)
    assert rows["pos_embed"] == "user include 'pos_embed'"
    assert rows["norm.weight"] == "user include 'norm.weight'"
    assert decayed(model, include=include) == {"blocks.0.weight", "blocks.1.weight", "head.weight", *include}


def test_include_wins_over_exclude():
    model = ViTLike()
    rows = reasons(model, exclude="head.*", include="head.weight")
    assert rows["head.weight"] == "user include 'head.weight'"
    assert rows["head.bias"] == "user exclude 'head.*'"


def test_user_rules_beat_marks_and_the_model_list():
    model = ViTLike()
    model.blocks[0].weight._no_weight_decay = True
    assert "blocks.0.weight" in decayed(model, include="blocks.0.weight")
    assert "pos_embed" in decayed(model, include="pos_embed")
    assert reasons(model, exclude="pos_embed")["pos_embed"] == "user exclude 'pos_embed'"


def test_type_patterns_match_the_class_name_of_the_owning_module():
    model = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 4), CustomNorm(4))
    assert decayed(model, exclude="type:Embedding") == {"1.weight"}
    assert reasons(model, exclude="type:Embedding")["0.weight"] == "user exclude 'type:Embedding'"
    assert decayed(model, include="type:*Norm") == {"0.weight", "1.weight", "2.scale"}
    assert decayed(model, include="type:Lin*") == {"0.weight", "1.weight", "1.bias"}


def test_a_type_pattern_does_not_match_parameter_names_and_vice_versa():
    model = nn.Sequential(nn.Linear(4, 4))
    with pytest.warns(UserWarning, match="'type:0'"):
        assert decayed(model, exclude="type:0") == {"0.weight"}
    with pytest.warns(UserWarning, match="'Linear'"):
        assert decayed(model, exclude="Linear") == {"0.weight"}


def test_patterns_see_every_name_of_a_tied_tensor():
    model = TiedLM()
    assert decayed(model, exclude="lm_head.weight") == {"body.weight"}
    assert decayed(model, exclude="type:Linear") == set()  # lm_head is a Linear: its alias counts


def test_multipliers_make_extra_named_groups():
    model = ViTLike()
    groups = {g["name"]: g for g in param_groups(model, 0.1, multipliers={"head.*": 0.5, "blocks.1.*": 2})}
    assert list(groups) == ["decay", "decay[head.*]", "decay[blocks.1.*]", "no_decay"]
    assert groups["decay[head.*]"]["param_names"] == ["head.weight"]
    assert groups["decay[head.*]"]["weight_decay"] == pytest.approx(0.05)
    assert groups["decay[blocks.1.*]"]["weight_decay"] == pytest.approx(0.2)
    assert groups["decay"]["param_names"] == ["blocks.0.weight"]
    assert "head.bias" in groups["no_decay"]["param_names"]  # multipliers scale decay, they do not add it


def test_the_first_matching_multiplier_wins():
    model = ViTLike()
    with pytest.warns(UserWarning, match="'head.weight'.*earlier multiplier"):
        groups = group_names(model, multipliers={"head.*": 0.5, "head.weight": 3.0})
    assert groups["decay[head.*]"] == ["head.weight"]
    assert "decay[head.weight]" not in groups


def test_multiplier_rows_say_which_pattern_scaled_them():
    plan = explain(ViTLike(), 0.1, multipliers={"type:Linear": 0.0})
    row = next(r for r in plan.rows if r.name == "head.weight")
    assert (row.group, row.strength, row.reason) == ("decay[type:Linear]", 0.0, "weight, x0 by 'type:Linear'")
    assert not row.decayed


def test_multipliers_apply_to_included_tensors():
    groups = group_names(ViTLike(), include="norm.weight", multipliers={"norm.*": 4})
    assert groups["decay[norm.*]"] == ["norm.weight"]


# -- warnings ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", ["exclude", "include"])
def test_an_unmatched_pattern_warns_naming_it(rule):
    with pytest.warns(UserWarning, match=r"pattern 'nothing\.\*' matched no trainable parameter"):
        param_groups(ViTLike(), 0.1, **{rule: ["head.*", "nothing.*"]})


def test_an_unmatched_multiplier_warns_naming_it():
    with pytest.warns(UserWarning, match=r"'typo\.\*' matched no trainable parameter"):
        param_groups(ViTLike(), 0.1, multipliers={"typo.*": 0.5})


def test_a_pattern_matching_only_frozen_tensors_warns():
    model = ViTLike()
    model.head.requires_grad_(False)
    with pytest.warns(UserWarning, match="'head.*'"):
        param_groups(model, 0.1, exclude="head.*")


def test_a_multiplier_matching_only_excluded_tensors_warns():
    with pytest.warns(UserWarning, match="'norm.*' matched only parameters that do not decay"):
        groups = group_names(ViTLike(), multipliers={"norm.*": 2})
    assert "decay[norm.*]" not in groups


def test_an_exclude_overridden_by_an_include_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "head.weight" in decayed(ViTLike(), exclude="head.weight", include="head.*")


def test_matching_patterns_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        param_groups(ViTLike(), 0.1, exclude="head.*", include="type:LayerNorm", multipliers={"blocks.*": 2})


def test_the_warning_points_at_the_caller():
    with pytest.warns(UserWarning) as record:
        param_groups(ViTLike(), 0.1, exclude="nothing")
    assert record[0].filename == __file__


# -- errors --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [-0.1, -1, math.nan, math.inf, -math.inf])
def test_an_invalid_weight_decay_raises(value):
    with pytest.raises(ValueError, match="`weight_decay` must be a finite number >= 0"):
        param_groups(ViTLike(), value)


@pytest.mark.parametrize("value", ["0.1", True, None, torch.tensor(0.1)])
def test_a_weight_decay_that_is_not_a_number_raises(value):
    with pytest.raises(TypeError, match="`weight_decay` must be a non-negative float"):
        param_groups(ViTLike(), value)


def test_a_zero_weight_decay_is_allowed():
    groups = param_groups(ViTLike(), 0)
    assert groups[0]["name"] == "decay" and groups[0]["weight_decay"] == 0.0


@pytest.mark.parametrize("factor", [-1.0, math.nan, math.inf])
def test_an_invalid_multiplier_raises_naming_its_pattern(factor):
    with pytest.raises(ValueError, match=r"`multipliers\['head\.\*'\]`"):
        param_groups(ViTLike(), 0.1, multipliers={"head.*": factor})


@pytest.mark.parametrize("rule", ["exclude", "include"])
@pytest.mark.parametrize("pattern", ["", [""], [3], ["head.*", None]])
def test_a_pattern_that_is_not_a_non_empty_string_raises(rule, pattern):
    with pytest.raises(TypeError, match=f"`{rule}` must hold non-empty glob strings"):
        param_groups(ViTLike(), 0.1, **{rule: pattern})


def test_a_multiplier_pattern_that_is_not_a_string_raises():
    with pytest.raises(TypeError, match="`multipliers` must hold non-empty glob strings"):
        param_groups(ViTLike(), 0.1, multipliers={1: 0.5})


# -- explain, audit rows and the rendered table --------------------------------------------------------


class Audited(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.pos_embed = nn.Parameter(torch.zeros(1, 3, 4))
        self.norm = nn.LayerNorm(4)
        self.gamma = nn.Parameter(torch.ones(4))
        self.frozen = nn.Linear(4, 4, bias=False).requires_grad_(False)
        self.head = nn.Linear(4, 10)
        self.out = nn.Linear(4, 10, bias=False)
        self.out.weight = self.emb.weight

    def no_weight_decay(self):
        return ["pos_embed"]


def test_explain_rows_give_the_reason_for_each_tensor():
    plan = explain(Audited(), 0.1, exclude="head.*")
    assert [(r.name, r.group, r.strength, r.reason) for r in plan.rows] == [
        ("pos_embed", "no_decay", 0.0, "model.no_weight_decay: pos_embed"),
        ("gamma", "no_decay", 0.0, "ndim<=1"),
        ("emb.weight", "decay", 0.1, "weight"),
        ("norm.weight", "no_decay", 0.0, "norm layer LayerNorm"),
        ("norm.bias", "no_decay", 0.0, "norm layer LayerNorm"),
        ("frozen.weight", None, 0.0, "frozen (requires_grad=False)"),
        ("head.weight", "no_decay", 0.0, "user exclude 'head.*'"),
        ("head.bias", "no_decay", 0.0, "user exclude 'head.*'"),
        ("out.weight", None, 0.0, "tied to emb.weight"),
    ]
    assert plan.rows[2] == AuditRow("emb.weight", (10, 4), 40, "decay", 0.1, "weight")
    assert plan.group_of == {r.name: r.group for r in plan.rows if r.group}
    assert plan.weight_decay == 0.1


def test_the_bias_reason():
    plan = explain(nn.Linear(2, 2))
    assert [(r.name, r.reason, r.decayed) for r in plan.rows] == [("weight", "weight", True),
                                                                   ("bias", "bias", False)]


def test_explain_uses_strength_one_by_default():
    assert explain(nn.Linear(2, 2)).groups[0]["weight_decay"] == 1.0


def test_the_rendered_table():
    text = str(explain(Audited(), 0.1, exclude="head.*"))
    assert text == "\n".join([
        "group         tensors  params  strength",
        "decay               1      40       0.1",
        "no_decay            6      74         0",
        "(not grouped)       2      56",
        "excluded (reason: tensors): model.no_weight_decay: pos_embed: 1, ndim<=1: 1, "
        "norm layer LayerNorm: 2, user exclude 'head.*': 2",
        "  pos_embed [1, 3, 4] -> no_decay: model.no_weight_decay: pos_embed",
        "  frozen.weight [4, 4] -> -: frozen (requires_grad=False)",
        "  head.weight [10, 4] -> no_decay: user exclude 'head.*'",
        "  head.bias [10] -> no_decay: user exclude 'head.*'",
        "  out.weight [10, 4] -> -: tied to emb.weight",
    ])


def test_the_table_lists_multiplier_groups_and_counts_large_groups_in_units():
    model = nn.Sequential(nn.Linear(1000, 1200), nn.Linear(10, 10))
    text = explain(model, 0.1, multipliers={"1.*": 0.5}).render()
    lines = text.splitlines()
    assert lines[:4] == [
        "group      tensors  params  strength",
        "decay            1    1.2M       0.1",
        "decay[1.*]       1     100      0.05",
        "no_decay         2    1.2k         0",
    ]
    assert lines[-1] == "  1.weight [10, 10] -> decay[1.*]: weight, x0.5 by '1.*'"


def test_the_table_does_not_call_weights_excluded_when_the_strength_is_zero():
    text = explain(nn.Linear(2, 2), 0.0).render()
    assert text.splitlines()[-1] == "excluded (reason: tensors): bias: 1"


def test_the_table_truncates_the_notable_rows():
    model = nn.Sequential(*(nn.Linear(2, 2) for _ in range(5)))
    text = explain(model, 0.1, exclude="*.weight").render(max_notable=3)
    assert text.count("user exclude") == 4  # the summary line, then three rows
    assert text.splitlines()[-1] == "  ... and 2 more (see .rows)"


# -- fingerprint ---------------------------------------------------------------------------------------


def test_fingerprint_is_stable_across_processes_and_versions():
    groups = param_groups(nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2)), 0.1)
    text = "decay:0.weight|no_decay:0.bias,1.weight,1.bias"
    assert fingerprint(groups) == hashlib.sha256(text.encode()).hexdigest()[:16] == "7605529f1fd5fb34"


def test_fingerprint_ignores_values_and_strength_but_not_membership():
    torch.manual_seed(0)
    one = fingerprint(param_groups(ViTLike(), 0.1))
    torch.manual_seed(1)
    assert fingerprint(param_groups(ViTLike(), 0.5)) == one
    assert fingerprint(param_groups(ViTLike(), 0.1, exclude="head.weight")) != one
    assert fingerprint(param_groups(ViTLike(), 0.1, multipliers={"head.*": 1.0})) != one


def test_fingerprint_of_optimizer_groups_matches_that_of_the_plan():
    model = ViTLike()
    groups = param_groups(model, 0.1)
    optimizer = torch.optim.AdamW(groups, lr=1e-3)
    assert fingerprint(optimizer.param_groups) == fingerprint(groups)
