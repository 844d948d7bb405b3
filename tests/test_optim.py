"""The optimizer factory: name resolution, fast kernels, decay carried by the groups, the CLI callable."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import pytest
import torch
from torch import nn

from lightning_wd import GroupedOptimizer, build_optimizer
from lightning_wd.core.optim import OPTIMIZERS, resolve_optimizer

SHORT_NAMES = ["adamw", "adam", "sgd", "rmsprop", "adagrad", "nadam", "radam", "adamax"]
FUSED = {torch.optim.AdamW, torch.optim.Adam, torch.optim.SGD, torch.optim.Adagrad}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models step far faster on one intra-op thread, above all on a machine shared with other jobs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 3)).double()


def timm_style_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Hand-written groups as timm builds them: no decay for 1-D tensors and biases."""
    named = list(model.named_parameters())
    decay = [p for n, p in named if p.ndim > 1 and not n.endswith(".bias")]
    rest = [p for n, p in named if not (p.ndim > 1 and not n.endswith(".bias"))]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int = 60) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(32, 6, dtype=torch.float64, generator=generator)
    y = torch.randn(32, 3, dtype=torch.float64, generator=generator)
    for _ in range(steps):
        optimizer.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


def implementation(optimizer: torch.optim.Optimizer) -> dict:
    return {k: optimizer.defaults[k] for k in ("fused", "foreach") if optimizer.defaults.get(k) is not None}


# -- resolving the optimizer ---------------------------------------------------------------------------


def test_the_short_names_are_those_documented():
    assert sorted(OPTIMIZERS) == sorted(SHORT_NAMES)


@pytest.mark.parametrize("name", SHORT_NAMES)
def test_each_short_name_builds_its_optimizer(name):
    model = make_model()
    optimizer = build_optimizer(model, name, lr=1e-2, weight_decay=0.1)
    assert type(optimizer) is OPTIMIZERS[name]
    assert [(g["name"], g["weight_decay"]) for g in optimizer.param_groups] == [("decay", 0.1), ("no_decay", 0.0)]
    assert all(g["lr"] == 1e-2 for g in optimizer.param_groups)
    train(model, optimizer, steps=2)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("AdamW", torch.optim.AdamW),
        ("SGD", torch.optim.SGD),
        ("ASGD", torch.optim.ASGD),
        ("RMSProp", torch.optim.RMSprop),  # short names ignore case
        ("torch.optim.ASGD", torch.optim.ASGD),
        ("torch.optim.adamw.AdamW", torch.optim.AdamW),
        (torch.optim.NAdam, torch.optim.NAdam),
    ],
    ids=str,
)
def test_class_names_import_paths_and_classes_resolve(spec, expected):
    assert resolve_optimizer(spec) is expected


def test_an_optimizer_class_outside_torch_is_accepted():
    class Custom(torch.optim.SGD):
        pass

    optimizer = build_optimizer(make_model(), Custom, lr=0.1, weight_decay=0.01)
    assert type(optimizer) is Custom
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.01, 0.0]


@pytest.mark.parametrize(
    "spec", ["adamww", "torch.optim.Nope", "torch.nn.Linear", "torch.optim.lr_scheduler", "nomodule.Adam", ".Adam"]
)
def test_an_unknown_optimizer_raises_listing_the_names(spec):
    listing = r"\['adagrad', 'adam', 'adamax', 'adamw', 'nadam', 'radam', 'rmsprop', 'sgd'\]"
    with pytest.raises(ValueError, match=rf"`optimizer` must be one of {listing}.*got '{spec}'"):
        build_optimizer(make_model(), spec, lr=1e-3)


@pytest.mark.parametrize("spec", [nn.Linear, 3, None])
def test_an_optimizer_that_is_neither_name_nor_optimizer_class_raises(spec):
    with pytest.raises(TypeError, match="`optimizer` must be a name or an Optimizer class"):
        resolve_optimizer(spec)


# -- fast kernels --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SHORT_NAMES)
def test_fused_or_else_foreach_is_chosen(name):
    optimizer = build_optimizer(make_model(), name, lr=1e-2)
    if OPTIMIZERS[name] in FUSED:
        assert implementation(optimizer) == {"fused": True}
    else:
        assert implementation(optimizer) == {"foreach": True}


@pytest.mark.parametrize("override", [{"fused": False}, {"foreach": False}, {"foreach": True}])
def test_the_user_choice_of_implementation_is_respected(override):
    optimizer = build_optimizer(make_model(), "adamw", lr=1e-2, **override)
    assert implementation(optimizer) == override


def test_complex_parameters_get_foreach_not_fused():
    model = nn.Module()
    model.w = nn.Parameter(torch.zeros(2, 2, dtype=torch.complex128))
    assert implementation(build_optimizer(model, "adamw", lr=1e-2)) == {"foreach": True}


def test_differentiable_gets_the_plain_implementation():
    """Neither kernel supports ``differentiable=True`` (torch raises for fused at construction)."""
    with pytest.raises(RuntimeError, match="`fused` does not support `differentiable`"):
        torch.optim.Adam(make_model().parameters(), fused=True, differentiable=True)
    optimizer = build_optimizer(make_model(), "adam", lr=1e-2, weight_decay=0.1, differentiable=True)
    assert implementation(optimizer) == {}
    assert optimizer.defaults["differentiable"] is True


def test_an_optimizer_without_weight_decay_works_only_without_decay():
    assert "weight_decay" not in build_optimizer(make_model(), "Rprop", lr=1e-2).param_groups[0]
    with pytest.raises(ValueError, match="`optimizer` Rprop has no weight_decay"):
        build_optimizer(make_model(), "Rprop", lr=1e-2, weight_decay=0.1)


def test_an_optimizer_taking_keyword_arguments_gets_the_decay():
    class KeywordSGD(torch.optim.SGD):
        def __init__(self, params, **kwargs) -> None:
            super().__init__(params, **kwargs)

    optimizer = build_optimizer(make_model(), KeywordSGD, lr=1e-2, weight_decay=0.1)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]


# -- the decay is carried by the groups ----------------------------------------------------------------


def test_groups_carry_names_rules_and_options():
    model = make_model()
    optimizer = build_optimizer(model, "sgd", lr=0.1, weight_decay=0.1, momentum=0.9, exclude="3.*",
                                multipliers={"0.*": 0.5})
    assert [(g["name"], g["param_names"], g["weight_decay"], g["momentum"]) for g in optimizer.param_groups] == [
        ("decay[0.*]", ["0.weight"], 0.05, 0.9),
        ("no_decay", ["0.bias", "1.weight", "1.bias", "3.weight", "3.bias"], 0.0, 0.9),
    ]


def test_an_invalid_weight_decay_raises():
    with pytest.raises(ValueError, match="`weight_decay` must be a finite number >= 0"):
        build_optimizer(make_model(), "adamw", lr=1e-3, weight_decay=-1e-4)


@pytest.mark.parametrize("name", SHORT_NAMES)
def test_steps_match_the_optimizer_on_timm_style_groups(name):
    model, reference_model = make_model(), make_model()
    optimizer = build_optimizer(model, name, lr=1e-2, weight_decay=0.1)
    reference = OPTIMIZERS[name](timm_style_groups(reference_model, 0.1), lr=1e-2, **implementation(optimizer))
    for ours, theirs in zip(train(model, optimizer), train(reference_model, reference)):
        assert torch.equal(ours, theirs)


def test_adamw_matches_the_plain_torch_implementation_tightly():
    model, reference_model, all_decay_model = make_model(), make_model(), make_model()
    ours = train(model, build_optimizer(model, "adamw", lr=1e-2, weight_decay=0.1), steps=100)
    theirs = train(reference_model, torch.optim.AdamW(timm_style_groups(reference_model, 0.1), lr=1e-2), steps=100)
    decay_all = train(all_decay_model, torch.optim.AdamW(all_decay_model.parameters(), lr=1e-2, weight_decay=0.1),
                      steps=100)
    for a, b in zip(ours, theirs):  # fused and for-loop kernels round apart: ~1e-12 here
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    assert any(not torch.allclose(a, c, atol=1e-4) for a, c in zip(ours, decay_all)), "the test can tell groups"


def test_sgd_decay_is_the_coupled_l2_of_its_groups():
    model = nn.Linear(2, 1, bias=True).double()
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(1.0)
    optimizer = build_optimizer(model, "sgd", lr=0.5, weight_decay=0.2)
    optimizer.zero_grad()
    (model.weight.sum() * 0 + model.bias.sum() * 0).backward()  # zero gradients: only decay moves weights
    optimizer.step()
    assert torch.equal(model.weight, torch.full((1, 2), 0.9, dtype=torch.float64))
    assert torch.equal(model.bias, torch.ones(1, dtype=torch.float64))


# -- GroupedOptimizer ----------------------------------------------------------------------------------


def test_grouped_optimizer_builds_on_call():
    factory = GroupedOptimizer("sgd", lr=0.1, weight_decay=0.01, exclude=["3.*"], include=["1.weight"],
                               multipliers={"0.*": 2.0}, options={"momentum": 0.9, "foreach": False})
    optimizer = factory(make_model())
    assert type(optimizer) is torch.optim.SGD
    assert [(g["name"], g["param_names"], g["weight_decay"]) for g in optimizer.param_groups] == [
        ("decay", ["1.weight"], 0.01),
        ("decay[0.*]", ["0.weight"], 0.02),
        ("no_decay", ["0.bias", "1.bias", "3.weight", "3.bias"], 0.0),
    ]
    assert optimizer.defaults["momentum"] == 0.9 and optimizer.defaults["foreach"] is False
    assert repr(factory) == "GroupedOptimizer('sgd', lr=0.1, weight_decay=0.01)"


def test_grouped_optimizer_can_opt_embeddings_out():
    model = nn.Sequential(nn.Embedding(4, 3), nn.Linear(3, 3))
    groups = GroupedOptimizer(weight_decay=0.1, exclude_embeddings=True)(model).param_groups
    assert groups[0]["param_names"] == ["1.weight"]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"optimizer": "adamww"}, ValueError, "`optimizer` must be one of"),
        ({"weight_decay": -0.1}, ValueError, "`weight_decay` must be a finite number >= 0"),
        ({"lr": float("nan")}, ValueError, "`lr` must be a finite number >= 0"),
    ],
)
def test_grouped_optimizer_checks_its_arguments_when_configured(kwargs, error, match):
    with pytest.raises(error, match=match):
        GroupedOptimizer(**kwargs)


# -- configured from YAML by jsonargparse, as LightningCLI does ----------------------------------------


DEFAULT_OPTIMIZER = GroupedOptimizer()


class Module:
    """Stands for a LightningModule that takes its optimizer factory as an argument."""

    def __init__(self, optimizer: GroupedOptimizer = DEFAULT_OPTIMIZER, hidden: int = 4) -> None:
        self.optimizer, self.hidden = optimizer, hidden


def cli_parser(cls: type = Module):
    jsonargparse = pytest.importorskip("jsonargparse")
    parser = jsonargparse.ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "model")
    return parser


YAML = """
model:
  hidden: 8
  optimizer:
    class_path: lightning_wd.GroupedOptimizer
    init_args:
      optimizer: sgd
      lr: 0.1
      weight_decay: 0.01
      exclude: ["3.*"]
      multipliers: {"0.*": 0.5}
      options: {momentum: 0.9}
"""


def test_a_yaml_config_builds_the_grouped_optimizer():
    parser = cli_parser()
    model = parser.instantiate(parser.parse_string(YAML)).model
    assert isinstance(model.optimizer, GroupedOptimizer) and model.hidden == 8
    optimizer = model.optimizer(make_model())
    assert [(g["name"], g["weight_decay"], g["momentum"]) for g in optimizer.param_groups] == [
        ("decay[0.*]", 0.005, 0.9), ("no_decay", 0.0, 0.9),
    ]


def test_a_dict_config_and_a_command_line_override():
    parser = cli_parser()
    config = {"model": {"optimizer": {"class_path": "lightning_wd.GroupedOptimizer",
                                      "init_args": {"optimizer": "adamw", "lr": 0.01, "weight_decay": 0.05}}}}
    factory = parser.instantiate(parser.parse_object(config)).model.optimizer
    assert (factory.optimizer, factory.lr, factory.weight_decay) == ("adamw", 0.01, 0.05)
    factory = parser.instantiate(parser.parse_args(["--model.optimizer.weight_decay=0.2"])).model.optimizer
    assert factory.weight_decay == 0.2
    assert type(factory(make_model())) is torch.optim.AdamW


def test_the_config_round_trips_through_its_yaml_dump():
    parser = cli_parser()
    dumped = parser.dump(parser.parse_string(YAML))
    assert "class_path: lightning_wd.GroupedOptimizer" in dumped
    factory = parser.instantiate(parser.parse_string(dumped)).model.optimizer
    assert (factory.optimizer, factory.lr, factory.weight_decay, factory.rules.exclude) == ("sgd", 0.1, 0.01, ("3.*",))
    assert factory.options == {"momentum": 0.9}


def test_a_lazy_instance_default_keeps_its_values_under_an_override():
    jsonargparse = pytest.importorskip("jsonargparse")
    default = jsonargparse.lazy_instance(GroupedOptimizer, optimizer="sgd", weight_decay=0.3)

    class Lazy:
        def __init__(self, optimizer: GroupedOptimizer = default) -> None:
            self.optimizer = optimizer

    parser = cli_parser(Lazy)
    factory = parser.instantiate(parser.parse_args(["--model.optimizer.lr=0.2"])).model.optimizer
    assert (factory.optimizer, factory.lr, factory.weight_decay) == ("sgd", 0.2, 0.3)


def test_a_callable_returning_optimizer_does_not_accept_grouped_optimizer():
    """Why the docs type the argument ``GroupedOptimizer``: jsonargparse resolves a class_path under
    ``Callable[..., Optimizer]`` only to Optimizer subclasses (the LightningCLI OptimizerCallable way)."""
    jsonargparse = pytest.importorskip("jsonargparse")

    class Typed:
        def __init__(self, optimizer: Callable[[nn.Module], torch.optim.Optimizer]) -> None:
            self.optimizer = optimizer

    parser = cli_parser(Typed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(jsonargparse.ArgumentError, match="to be a subclass of"):
            parser.parse_string(YAML.replace("  hidden: 8\n", ""))


def test_a_grouped_optimizer_default_survives_a_copy():
    factory = copy.deepcopy(GroupedOptimizer("radam", lr=0.5, weight_decay=0.1))
    assert type(factory(make_model())) is torch.optim.RAdam
