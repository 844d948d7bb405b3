"""The default grouping decides as timm and Hugging Face do, and differs from them only where it means to.

The references:

* timm: ``timm.optim.param_groups_weight_decay(model, wd, no_weight_decay_list=model.no_weight_decay())``
  (what ``timm.optim.create_optimizer_v2`` does): no decay for ``ndim <= 1``, names ending ``.bias`` and
  the globs of the root model's ``no_weight_decay()``.
* Hugging Face: ``Trainer.get_decay_parameter_names`` then the ``requires_grad`` filter of
  ``Trainer.create_optimizer``: no decay inside ``nn.LayerNorm`` and for names containing ``bias``,
  ``layernorm``, ``rmsnorm`` or a ``norm`` path component.

Models are built from their configs, without weights: timm ones on the meta device (no memory, no
initialisation time), transformers ones from tiny configs.
"""

from __future__ import annotations

import pytest
import torch
import torchvision_stub
from torch import nn

from lightning_wd import explain, param_groups

WD = 0.05


def ours(model: nn.Module, **rules) -> set[str]:
    return {n for g in param_groups(model, WD, **rules) if g["weight_decay"] > 0 for n in g["param_names"]}


def trainable(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


# -- timm ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def timm():
    """timm, imported beside a stub torchvision where the real one cannot load (see torchvision_stub)."""
    stubbed = torchvision_stub.install()
    try:
        timm = pytest.importorskip("timm")
        pytest.importorskip("timm.optim")
        yield timm
    finally:
        if stubbed:
            torchvision_stub.uninstall()


def timm_decayed(timm, model: nn.Module) -> set[str]:
    no_weight_decay = model.no_weight_decay() if hasattr(model, "no_weight_decay") else ()
    groups = timm.optim.param_groups_weight_decay(model, WD, no_weight_decay_list=no_weight_decay)
    ids = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


TIMM_MODELS = [
    "vit_tiny_patch16_224",
    "deit_tiny_patch16_224",
    "resnet18",
    "convnext_atto",
    "efficientnet_b0",
    "swin_tiny_patch4_window7_224",
]


@pytest.mark.parametrize("name", TIMM_MODELS)
def test_the_default_decides_as_timm(timm, name):
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False)
    reference = timm_decayed(timm, model)
    assert reference and reference != trainable(model), "the comparison must have both kinds of tensor"
    assert ours(model) == reference


def test_timm_models_hit_the_interesting_rules(timm):
    """The agreement above covers the model list, norm layers and 1-D tensors, not only biases."""
    with torch.device("meta"):
        vit = timm.create_model("vit_tiny_patch16_224", pretrained=False)
        swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False)
        resnet = timm.create_model("resnet18", pretrained=False)
    assert explain(vit).group_of["pos_embed"] == "no_decay"
    vit_reasons = {r.name: r.reason for r in explain(vit).rows}
    assert vit_reasons["pos_embed"] == "model.no_weight_decay: pos_embed"
    assert vit_reasons["norm.weight"] == "norm layer LayerNorm"
    table = "layers.0.blocks.0.attn.relative_position_bias_table"
    assert {r.name: r.reason for r in explain(swin).rows}[table] == f"model.no_weight_decay: {table}"
    assert {r.name: r.reason for r in explain(resnet).rows}["bn1.weight"] == "norm layer BatchNorm2d"


class Marked(nn.Module):
    """A state-space style block: ``A_log`` is 2-D and marked, as Mamba marks it."""

    def __init__(self) -> None:
        super().__init__()
        self.A_log = nn.Parameter(torch.zeros(4, 3))
        self.A_log._no_weight_decay = True
        self.proj = nn.Linear(3, 3)


def test_timm_misses_tensors_marked_no_weight_decay(timm):
    model = Marked()
    assert timm_decayed(timm, model) == {"A_log", "proj.weight"}
    assert ours(model) == {"proj.weight"}


def test_timm_misses_the_no_weight_decay_of_a_wrapped_model(timm):
    """As in a LightningModule holding a timm backbone: timm asks only the root module."""
    wrapper = nn.Module()
    with torch.device("meta"):
        wrapper.backbone = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    missed = {"backbone.pos_embed", "backbone.cls_token"}
    assert missed <= timm_decayed(timm, wrapper)
    assert not missed & ours(wrapper)
    assert ours(wrapper) == timm_decayed(timm, wrapper) - missed


def test_timm_misses_no_weight_decay_keywords(timm):
    class Keyworded(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.relative_position_bias_table = nn.Parameter(torch.zeros(9, 2))
            self.proj = nn.Linear(2, 2)

        def no_weight_decay_keywords(self):
            return {"relative_position_bias_table"}

    model = Keyworded()
    assert timm_decayed(timm, model) == {"relative_position_bias_table", "proj.weight"}
    assert ours(model) == {"proj.weight"}


def test_timm_misses_norm_layers_with_multi_dimensional_parameters(timm):
    class ChannelNorm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(1, 4, 1, 1))

    model = nn.Sequential(nn.Conv2d(2, 4, 1), ChannelNorm())
    assert timm_decayed(timm, model) == {"0.weight", "1.weight"}
    assert ours(model) == {"0.weight"}


def test_timm_misses_multi_dimensional_biases_not_named_dot_bias(timm):
    model = nn.Module()
    model.attn_bias = nn.Parameter(torch.zeros(3, 3))
    model.proj = nn.Linear(3, 3)
    assert timm_decayed(timm, model) == {"attn_bias", "proj.weight"}
    assert ours(model) == {"proj.weight"}


# -- Hugging Face transformers -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers")


def hf_decayed(transformers, model: nn.Module) -> set[str]:
    """As ``Trainer.create_optimizer`` selects: decay names that are trainable (it does not use ``self``)."""
    names = set(transformers.Trainer.get_decay_parameter_names(None, model))
    return {n for n, p in model.named_parameters() if p.requires_grad and n in names}


TINY = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, vocab_size=64,
            max_position_embeddings=32)


def build_hf(transformers, name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "bert":
        return transformers.BertModel(transformers.BertConfig(**TINY))
    if name == "gpt2":
        config = transformers.GPT2Config(n_embd=16, n_layer=2, n_head=2, vocab_size=64, n_positions=32,
                                          bos_token_id=0, eos_token_id=0)
        return transformers.GPT2LMHeadModel(config)
    if name == "llama":
        return transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY, num_key_value_heads=1))
    if name == "t5":
        config = transformers.T5Config(d_model=16, d_kv=8, d_ff=32, num_layers=2, num_decoder_layers=2,
                                       num_heads=2, vocab_size=64)
        return transformers.T5ForConditionalGeneration(config)
    raise AssertionError(name)


@pytest.mark.parametrize("name", ["bert", "gpt2", "llama"])
def test_the_default_decides_as_hugging_face(transformers, name):
    model = build_hf(transformers, name)
    reference = hf_decayed(transformers, model)
    assert reference and reference != trainable(model)
    assert ours(model) == reference


def test_gpt2_tied_head_is_grouped_once(transformers):
    model = build_hf(transformers, "gpt2")
    assert model.lm_head.weight is model.transformer.wte.weight
    plan = explain(model)
    assert {r.name: r.reason for r in plan.rows}["lm_head.weight"] == "tied to transformer.wte.weight"
    assert plan.group_of["transformer.wte.weight"] == "decay"
    assert sum(len(g["params"]) for g in plan.groups) == len(list(model.parameters()))


def test_llama_rmsnorm_is_a_norm_layer(transformers):
    reasons = {r.name: r.reason for r in explain(build_hf(transformers, "llama")).rows}
    assert reasons["model.norm.weight"] == "norm layer LlamaRMSNorm"


T5_TABLES = {"encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
             "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"}


def test_t5_differs_from_hugging_face_only_on_relative_attention_bias_tables(transformers):
    """HF drops every name containing "bias"; T5's relative-attention bias is an embedding table, which
    decays here (2-D, not named ``.bias``) like any other embedding; excluding it by glob gives HF's set."""
    model = build_hf(transformers, "t5")
    reference = hf_decayed(transformers, model)
    assert {n for n in trainable(model) if "relative_attention_bias" in n} == T5_TABLES
    assert reference <= ours(model)
    assert ours(model) - reference == T5_TABLES
    assert ours(model, exclude="*relative_attention_bias*") == reference


def test_on_t5_the_default_decides_as_timm(transformers, timm):
    model = build_hf(transformers, "t5")
    assert T5_TABLES <= timm_decayed(timm, model)
    assert ours(model) == timm_decayed(timm, model)


class HFMisses(nn.Module):
    """Tensors Hugging Face decays: a BatchNorm, a 1-D layer scale, a model-declared and a marked tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, 4, 3))
        self.conv = nn.Conv2d(3, 3, 1)
        self.bn = nn.BatchNorm2d(3)
        self.gamma = nn.Parameter(torch.ones(3))
        self.A_log = nn.Parameter(torch.zeros(3, 3))
        self.A_log._no_weight_decay = True

    def no_weight_decay(self):
        return {"pos_embed"}


def test_hugging_face_misses_batchnorm_1d_tensors_the_model_list_and_marks(transformers):
    model = HFMisses()
    assert hf_decayed(transformers, model) == {"pos_embed", "conv.weight", "bn.weight", "gamma", "A_log"}
    assert ours(model) == {"conv.weight"}
    reasons = {r.name: r.reason for r in explain(model).rows}
    assert reasons == {
        "pos_embed": "model.no_weight_decay: pos_embed",
        "gamma": "ndim<=1",
        "A_log": "marked _no_weight_decay",
        "conv.weight": "weight",
        "conv.bias": "bias",
        "bn.weight": "norm layer BatchNorm2d",
        "bn.bias": "norm layer BatchNorm2d",
    }
