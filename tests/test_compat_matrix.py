"""The compatibility matrix (issue 11, case 12): unchanged Lightning code with ``WeightDecay`` added.

Every ``configure_optimizers`` return format, manual optimization, accumulation, clipping, bf16, EarlyStopping,
EMA weight averaging, ``Tuner.lr_find`` and Lightning's own demo models: the fit runs, the optimizers' groups
are recorded exactly as without the callback (``Watch``), and the weights equal torch's optimizer on
:func:`lightning_wd.param_groups` (float64, bit for bit; bf16 runs a float32 model). See ``test_compat.py``.
"""

from __future__ import annotations

import pytest
import torch
from compat_models import (
    LR,
    Classifier,
    RefDecay,
    S,
    Watch,
    after_fit,
    assert_same_log,
    assert_same_weights,
    fit,
    loader,
    trainer,
    wd,
)
from lightning.pytorch import callbacks as pl_callbacks
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.demos import BoringModel, DemoModel, LightningLSTM, LightningTransformer
from lightning.pytorch.demos.boring_classes import ManualOptimBoringModel, RandomDataset
from lightning.pytorch.tuner import Tuner
from lit_net import float64  # noqa: F401  (float64: fixture)
from torch import nn
from torch.optim.lr_scheduler import OneCycleLR, ReduceLROnPlateau, StepLR
from torch.utils.data import DataLoader, Dataset

from lightning_wd import param_groups

pytestmark = pytest.mark.usefixtures("float64")


def adamw(params, **kwargs):
    return torch.optim.AdamW(params, lr=LR, **{"foreach": True, **kwargs})


def user_adamw(m, **kwargs):
    return adamw(m.parameters(), weight_decay=0.01, **kwargs)


def ref_adamw(m, **kwargs):
    return adamw(param_groups(m, S), **kwargs)


class Manual(Classifier):
    """Manual optimization: ``self.optimizers()`` (one or two), ``manual_backward``, ``step``, the scheduler."""

    def __init__(self, make_opt, seed: int = 0) -> None:
        super().__init__(make_opt, seed)
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        x, y = batch
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        loss = nn.functional.cross_entropy(self(x), y)
        for opt in optimizers:
            opt.zero_grad()
        self.manual_backward(loss)
        for opt in optimizers:
            opt.step()
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()
        return loss


def with_step_lr(opt):
    return {"optimizer": opt, "lr_scheduler": StepLR(opt, 4, 0.5)}


def two(make):
    """A list of two optimizer dicts: the backbone's (with a scheduler) and the head's."""
    return lambda m: [with_step_lr(make(m.backbone)), {"optimizer": make(m.head)}]


def bf16(make_opt):
    return Classifier(make_opt).float()


def early_stopping():
    return EarlyStopping(monitor="train_loss", patience=1, min_delta=10.0, check_on_train_epoch_end=True)


def ema():
    if not hasattr(pl_callbacks, "EMAWeightAveraging"):
        pytest.skip("this Lightning has no EMAWeightAveraging")
    return pl_callbacks.EMAWeightAveraging(decay=0.9)


# name: (user's configure_optimizers, reference, options); options: model, trainer kwargs, callbacks (a factory of
# Lightning callbacks for each run), reference_callbacks, data, exact, premise (a check of the user's run that
# makes the case mean what it says)
CASES = {
    "optimizer": (user_adamw, ref_adamw, {}),
    "list": (lambda m: [user_adamw(m)], lambda m: [ref_adamw(m)], {}),
    "tuple_with_scheduler": (
        lambda m: ([opt := user_adamw(m)], [StepLR(opt, 2, 0.5)]),
        lambda m: ([opt := ref_adamw(m)], [StepLR(opt, 2, 0.5)]), {}),
    "dict_with_scheduler_dict": (
        lambda m: {"optimizer": (opt := user_adamw(m)),
                   "lr_scheduler": {"scheduler": OneCycleLR(opt, 0.1, total_steps=30), "interval": "step"}},
        lambda m: {"optimizer": (opt := ref_adamw(m)),
                   "lr_scheduler": {"scheduler": OneCycleLR(opt, 0.1, total_steps=30), "interval": "step"}}, {}),
    "dict_with_plateau": (
        lambda m: {"optimizer": (opt := user_adamw(m)),
                   "lr_scheduler": {"scheduler": ReduceLROnPlateau(opt, patience=0), "monitor": "train_loss"}},
        lambda m: {"optimizer": (opt := ref_adamw(m)),
                   "lr_scheduler": {"scheduler": ReduceLROnPlateau(opt, patience=0), "monitor": "train_loss"}}, {}),
    "two_optimizers_manual": (
        two(lambda module: adamw(module.parameters(), weight_decay=0.01)),
        two(lambda module: adamw(param_groups(module, S))),
        {"model": Manual, "premise": lambda t: len(t.optimizers) == 2}),
    "manual": (user_adamw, ref_adamw, {"model": Manual}),
    "fused": (lambda m: user_adamw(m, foreach=False, fused=True), lambda m: ref_adamw(m, foreach=False, fused=True),
              {"exact": False}),
    "accumulate_grad_batches": (user_adamw, ref_adamw, {"trainer": {"accumulate_grad_batches": 2, "max_steps": 12}}),
    # clipping sums the squared gradient norms in group order: the reference keeps the user's one group
    "gradient_clip_val": (user_adamw, lambda m: adamw(m.parameters(), weight_decay=0.0),
                          {"trainer": {"gradient_clip_val": 0.05}, "reference_callbacks": lambda: [RefDecay(S)]}),
    "bf16_mixed": (user_adamw, ref_adamw, {"model": bf16, "data": lambda: loader(dtype=torch.float32),
                                           "trainer": {"precision": "bf16-mixed"}}),
    "early_stopping": (user_adamw, ref_adamw, {"callbacks": lambda: [early_stopping()], "trainer": {"max_epochs": 10},
                                               "premise": lambda t: t.current_epoch < 10}),
    "ema_weight_averaging": (user_adamw, ref_adamw, {"callbacks": lambda: [ema()]}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_configure_optimizers_formats_and_trainer_features(case):
    user, reference, options = CASES[case]
    model_cls = options.get("model", Classifier)
    data = options.get("data", loader)
    extra = options.get("callbacks", list)
    kwargs = options.get("trainer", {})

    got, watch = model_cls(user), Watch()
    t = fit(got, [watch, *extra(), wd(strength=S)], data=data(), **kwargs)
    assert options.get("premise", lambda t: True)(t)
    ref = model_cls(reference)
    fit(ref, [*extra(), *options.get("reference_callbacks", list)()], data=data(), **kwargs)
    plain = Watch()
    fit(model_cls(user), [plain, *extra()], data=data(), **kwargs)
    assert_same_log(watch, plain)
    assert_same_weights(got, ref, exact=options.get("exact", True))


def lr_find(make, callbacks, tmp_path):
    """``Tuner.lr_find`` (its suggestion becomes ``model.lr``), then fit: (model, finder)."""
    model = Classifier(make)
    t = trainer(callbacks, max_epochs=2, default_root_dir=tmp_path)
    finder = Tuner(t).lr_find(model, train_dataloaders=loader(200), min_lr=1e-4, max_lr=0.5, num_training=20,
                              early_stop_threshold=None)
    t.fit(model, loader(200))
    after_fit(t, model)
    return model, finder


def user_at_lr(m):
    return torch.optim.AdamW(m.parameters(), lr=m.lr, weight_decay=0.01, foreach=True)


def reference_at_lr(m):
    return torch.optim.AdamW(param_groups(m, S), lr=m.lr, foreach=True)


def test_fit_after_lr_find_equals_the_reference_at_the_found_lr(tmp_path):
    watch = Watch()
    got, _ = lr_find(user_at_lr, [watch, wd(strength=S)], tmp_path)
    assert got.lr != LR  # the premise: the suggestion was applied
    ref = Classifier(reference_at_lr)
    ref.lr = got.lr
    fit(ref, data=loader(200), max_epochs=2)
    assert_same_weights(got, ref)
    plain = Watch()
    lr_find(user_at_lr, [plain], tmp_path)
    assert_same_log(watch, plain, ignore=("lr", "initial_lr"))  # the suggestion may differ, the structure not


def test_lr_find_searches_with_the_decay(tmp_path):
    """The search runs inside LearningRateFinder's on_fit_start, before WeightDecay's: its losses must still be
    those of the decayed training (as on param_groups), not of the user's optimizer undecorated (it was, before
    WeightDecay built itself at the search's on_train_start)."""
    _, finder = lr_find(user_at_lr, [wd(strength=S)], tmp_path)
    _, ref_finder = lr_find(reference_at_lr, [], tmp_path)
    assert finder.results["lr"] == ref_finder.results["lr"]
    assert finder.results["loss"] == ref_finder.results["loss"]


class SizedClassifier(Classifier):
    """A Classifier whose train loader follows ``self.batch_size`` (what BatchSizeFinder scales)."""

    def __init__(self, make) -> None:
        super().__init__(make)
        self.batch_size = 4

    def train_dataloader(self):
        return loader(64, batch_size=self.batch_size)


def test_batch_size_search_with_the_decay_then_the_same_fit_as_the_reference(tmp_path, caplog):
    """BatchSizeFinder's trials run before WeightDecay's on_fit_start too: they train with the decay, the fit
    after them starts from step 0 (the search's steps not counted) and ends as on param_groups; the audit
    is shown once."""
    got, ref = SizedClassifier(user_at_lr), SizedClassifier(reference_at_lr)
    decay = wd(strength=S, print_audit=True)
    caplog.set_level("INFO")
    trainer([decay, pl_callbacks.BatchSizeFinder(max_trials=2)], max_epochs=1, default_root_dir=tmp_path).fit(got)
    trainer([pl_callbacks.BatchSizeFinder(max_trials=2)], max_epochs=1, default_root_dir=tmp_path).fit(ref)
    assert got.batch_size == ref.batch_size == 4  # tried 2, then 4 (init_val 2, two trials)
    assert decay.steps == [64 // 4]
    assert_same_weights(got, ref)
    assert caplog.text.count("grouping:") == 1


# -- Lightning's demo models, unchanged (their data built offline) ------------------------------------------


class TokenData(Dataset):
    """Random (input, target) token blocks in place of WikiText2 (no download)."""

    def __init__(self, vocab: int = 40, block: int = 12, n: int = 16) -> None:
        self.data = torch.randint(0, vocab, (n, block + 1), generator=torch.Generator().manual_seed(3))

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return self.data[i, :-1], self.data[i, 1:]


class OfflineTransformer(LightningTransformer):
    def __init__(self) -> None:
        super().__init__(vocab_size=40)

    def prepare_data(self) -> None:
        pass

    def train_dataloader(self):
        return DataLoader(TokenData(), batch_size=4)


class OfflineLSTM(LightningLSTM):
    def __init__(self) -> None:
        super().__init__(vocab_size=40)

    def prepare_data(self) -> None:
        pass

    def train_dataloader(self):
        return DataLoader(TokenData(), batch_size=4)


def sgd_on_groups(module, lr, **scheduler):
    opt = torch.optim.SGD(param_groups(module, S), lr=lr)
    return ([opt], [StepLR(opt, **scheduler)]) if scheduler else opt


def reference_of(cls, configure):
    return type(f"Reference{cls.__name__}", (cls,), {"configure_optimizers": configure})


DEMOS = {  # demo class, the decay asked for, its reference (the same model on param_groups), data, steps
    "BoringModel": (BoringModel, "l2", lambda self: sgd_on_groups(self, 0.1, step_size=1), None, 24),
    "ManualOptimBoringModel": (ManualOptimBoringModel, "l2", lambda self: sgd_on_groups(self, 0.1, step_size=1),
                               None, 24),
    "DemoModel": (DemoModel, "decoupled",
                  lambda self: torch.optim.AdamW(param_groups(self, S), lr=self.learning_rate),
                  lambda: DataLoader(RandomDataset(32, 64), batch_size=8), 24),
    "LightningTransformer": (OfflineTransformer, "l2", lambda self: sgd_on_groups(self.model, 0.1), None, 20),
    "LightningLSTM": (OfflineLSTM, "l2", lambda self: sgd_on_groups(self, 20.0), None, 6),  # 8.4M tensors: few steps
}


@pytest.mark.parametrize("demo", [pytest.param(n, marks=pytest.mark.slow) if n == "LightningLSTM" else n
                                  for n in DEMOS])
def test_lightning_demo_models(demo):
    cls, scheme, configure, data, steps = DEMOS[demo]

    def run(model_cls, callbacks):
        torch.manual_seed(0)  # the weights, the demo's random data and dropout: the same in every run
        model = model_cls()
        t = trainer(callbacks, max_steps=steps, limit_val_batches=0)
        t.fit(model, data() if data else None)
        after_fit(t, model)
        return model

    watch = Watch()
    got = run(cls, [watch, wd(scheme=scheme, strength=S)])
    ref = run(reference_of(cls, configure), [])
    plain = Watch()
    run(cls, [plain])
    assert_same_log(watch, plain)
    assert_same_weights(got, ref)
