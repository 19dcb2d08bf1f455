"""Training: parameter groups, schedules, early stopping, adversarial training, the fit loop,
runtime helpers. Everything runs on a tiny separable task in a second or two."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from advlab import naming, runtime
from advlab.config import AugmentConf
from advlab.data.base import DataSplits, ImageSet
from advlab.errors import ConfigError, TrainingError
from advlab.models import InputSpec, build_model, zoo
from advlab.training import EarlyStopping, adversarial, fit
from advlab.training.early_stopping import ChanceFloor
from advlab.training.fit import TIMING_METRICS
from advlab.training.param_groups import build_optimizer, param_groups
from advlab.training.schedules import build_scheduler
from tests.conftest import compose_config

CPU = torch.device("cpu")
# Every epoch metric of the contract but the two of adversarial validation.
EPOCH_KEYS = set(naming.EPOCH_METRICS) - {naming.VAL_PGD_ACC, naming.VAL_FGSM_ACC}


def toy_splits(n_train: int = 192, n_val: int = 96, size: int = 12, seed: int = 0) -> DataSplits:
    """Two classes: class 1 has a bright centre square on noise; learnable in a few epochs."""
    rng = np.random.default_rng(seed)

    def part(n: int) -> ImageSet:
        labels = rng.integers(0, 2, n).astype(np.int64)
        images = rng.integers(0, 110, (n, 1, size, size)).astype(np.uint8)
        q = size // 4
        images[labels == 1, :, q : size - q, q : size - q] += 120
        return ImageSet(images, labels)

    return DataSplits(
        name="toy",
        train=part(n_train),
        val=part(n_val),
        test=part(32),
        class_names=["plain", "square"],
        mean=(0.3,),
        std=(0.2,),
        augment=AugmentConf(),
    )


@pytest.fixture(scope="module")
def data() -> DataSplits:
    return toy_splits()


def cfg_for(*overrides: str):
    return compose_config(
        ["model=course_cnn", "model.dropout=0.25", "optimizer.lr=0.01", "train.epochs=3"]
        + ["train.batch_size=32"]
        + list(overrides)
    )


def run_fit(cfg, data: DataSplits, run_dir: Path, seed: int = 0, on_epoch=None, device=CPU):
    torch.manual_seed(seed)
    model = build_model(cfg.model, data)
    result = fit(
        model,
        data,
        cfg.train,
        cfg.optimizer,
        seed=seed,
        device=device,
        run_dir=run_dir,
        on_epoch=on_epoch,
    )
    return model, result


def without_timing(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in m.items() if k not in TIMING_METRICS} for m in history]


# ------------------------------------------------------------------------------ param groups
def test_weight_decay_only_on_conv_and_linear_weights() -> None:
    spec = InputSpec(1, (8, 8), 2, mean=(0.5,), std=(0.2,))
    model = zoo.vgg_small(spec, widths=[4], convs_per_stage=1, hidden=8)
    groups = {g["name"]: g for g in param_groups(model, 0.1)}
    decay_ids = {id(p) for p in groups["decay"]["params"]}
    expected = {id(m.weight) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)}
    assert decay_ids == expected
    no_decay = groups["no_decay"]["params"]
    assert groups["no_decay"]["weight_decay"] == 0.0 and groups["decay"]["weight_decay"] == 0.1
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert any(p is bn.weight for p in no_decay) and any(p is bn.bias for p in no_decay)
    assert len(decay_ids) + len(no_decay) == len(list(model.parameters()))


@pytest.mark.parametrize("option", ["sgd", "adam", "adamw"])
def test_optimizer_decays_weights_but_not_biases(option) -> None:
    cfg = compose_config([f"optimizer={option}", "optimizer.lr=0.1", "optimizer.weight_decay=0.5"])
    model = nn.Sequential(nn.Linear(3, 2))
    optimizer = build_optimizer(model, cfg.optimizer)
    assert type(optimizer).__name__.lower() == option
    w0, b0 = model[0].weight.detach().clone(), model[0].bias.detach().clone()
    # A loss with zero gradient: only weight decay can move the parameters.
    (model(torch.ones(1, 3)).sum() * 0).backward()
    optimizer.step()
    assert torch.equal(model[0].bias, b0), "biases must not be decayed"
    # Every weight moved toward zero (Adam's normalised step may overshoot tiny weights).
    assert ((model[0].weight.detach() - w0) * w0 < 0).all(), "weights must be decayed"


# ---------------------------------------------------------------------------------- schedules
def test_staircase_is_the_course_formula() -> None:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.2)
    cfg = OmegaConf.create({"name": "staircase", "decay_rate": 0.5, "decay_steps": 3})
    sched = build_scheduler(opt, cfg, total_steps=100)
    for step in range(10):
        assert math.isclose(opt.param_groups[0]["lr"], 0.2 * 0.5 ** (step // 3))
        opt.step()
        sched.step()


def test_cosine_and_onecycle_span_the_run() -> None:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    cosine = build_scheduler(opt, OmegaConf.create({"name": "cosine"}), total_steps=20)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        cosine.step()
    assert lrs[0] == pytest.approx(0.1) and opt.param_groups[0]["lr"] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    onecycle = build_scheduler(
        opt, OmegaConf.create({"name": "onecycle", "max_lr": 0.4}), total_steps=20
    )
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        onecycle.step()
    assert max(lrs) == pytest.approx(0.4, rel=0.05) and lrs[0] < 0.05 and lrs[-1] < 0.01


# ---------------------------------------------------------------------------- early stopping
def test_early_stopping_patience_min_delta_and_state() -> None:
    es = EarlyStopping("val_loss", "min", patience=2, min_delta=0.1)
    assert es.step(1, {"val_loss": 1.0})
    assert not es.step(2, {"val_loss": 0.95})  # better, but by less than min_delta
    assert es.step(3, {"val_loss": 0.8})
    assert not es.step(4, {"val_loss": 0.9}) and not es.should_stop
    state = es.state_dict()
    assert not es.step(5, {"val_loss": 0.85}) and es.should_stop
    assert (es.best_epoch, es.stopped_epoch) == (3, 5)
    again = EarlyStopping("val_loss", "min", patience=2, min_delta=0.1)
    again.load_state_dict(state)
    assert not again.step(5, {"val_loss": 0.85}) and again.should_stop
    up = EarlyStopping("val_acc", "max", patience=0)
    assert up.step(1, {"val_acc": 0.5}) and not up.step(2, {"val_acc": 0.5}) and up.should_stop
    off = EarlyStopping("val_loss", "min", patience=0, enabled=False)
    off.step(1, {"val_loss": 1.0})
    off.step(2, {"val_loss": 2.0})
    assert not off.should_stop and off.best_epoch == 1


def test_a_robust_monitor_never_keeps_a_constant_answer_epoch_once_the_model_learns() -> None:
    # A faces run at 4/255: epochs 1-2 answer "female" to nearly every face, which keeps the
    # female share under PGD too, so val_pgd_acc is highest there; the model then learns.
    floor = ChanceFloor.of(np.array([1] * 140 + [0] * 116), num_classes=2)  # 256 images, 54.7%
    assert floor is not None and floor.share == pytest.approx(140 / 256)
    epochs = [(0.551, 0.55), (0.563, 0.54), (0.66, 0.50), (0.68, 0.52), (0.67, 0.51)]

    def best_epoch(es: EarlyStopping) -> int:
        for epoch, (acc, pgd) in enumerate(epochs, start=1):
            es.step(epoch, {naming.VAL_ACC: acc, naming.VAL_PGD_ACC: pgd})
        return es.best_epoch

    assert best_epoch(EarlyStopping(naming.VAL_PGD_ACC, "max", patience=5)) == 1  # the trap
    guarded = EarlyStopping(naming.VAL_PGD_ACC, "max", patience=5, floor=floor)
    assert best_epoch(guarded) == 4
    state = guarded.state_dict()
    resumed = EarlyStopping(naming.VAL_PGD_ACC, "max", patience=5, floor=floor)
    resumed.load_state_dict(state)
    # an epoch back at the constant answer does not take the best from a learnt one
    assert not resumed.step(6, {naming.VAL_ACC: 0.547, naming.VAL_PGD_ACC: 0.547})
    assert resumed.best_epoch == 4 and resumed.bad_epochs == 2


def test_the_chance_floor_admits_what_the_binomial_test_calls_above_chance() -> None:
    floor = ChanceFloor(n=500, share=0.5)
    assert not floor.admits(0.52)  # 260 of 500: p = 0.19
    assert floor.admits(0.56)  # 280 of 500: p = 0.0045
    assert not floor.admits(float("nan"))
    assert ChanceFloor.of(np.array([], dtype=np.int64), num_classes=2) is None


# ------------------------------------------------------------------------------- adversarial
def _tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return zoo.perceptron(InputSpec(1, (12, 12), 2, mean=(0.3,), std=(0.2,)), hidden=8).eval()


def _ce(logits, y):
    return F.cross_entropy(logits, y)


def test_pgd_one_step_from_x_equals_hand_written_fgsm() -> None:
    model, x = _tiny_model(), torch.rand(16, 1, 12, 12)
    y = torch.randint(0, 2, (16,))
    x_req = x.clone().requires_grad_(True)
    F.cross_entropy(model(x_req), y).backward()
    oracle = (x + 8 / 255 * x_req.grad.sign()).clamp(0, 1)
    adv = adversarial.pgd(model, x, y, eps=8, alpha=8, steps=1, loss_fn=_ce, random_start=False)
    torch.testing.assert_close(adv, oracle)


@pytest.mark.parametrize("method", ["fgsm_rs", "pgd"])
def test_adversarial_examples_respect_the_budget_and_raise_the_loss(method) -> None:
    model, x = _tiny_model(), torch.rand(64, 1, 12, 12)
    y = model(x).argmax(1)  # attack the model's own predictions
    gen = torch.Generator().manual_seed(0)
    kwargs = {"steps": 5} if method == "pgd" else {}
    alpha = 10.0 if method == "fgsm_rs" else 2.0
    adv = getattr(adversarial, method)(
        model, x, y, eps=4, alpha=alpha, loss_fn=_ce, generator=gen, **kwargs
    )
    assert (adv - x).abs().max() <= 4 / 255 + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        assert F.cross_entropy(model(adv), y) > F.cross_entropy(model(x), y)
    # eps = 0 leaves every pixel as it is (and draws nothing from the generator).
    state = gen.get_state()
    assert torch.equal(adversarial.pgd(model, x, y, eps=0, alpha=1, steps=3, loss_fn=_ce), x)
    assert torch.equal(
        adversarial.fgsm_rs(model, x, y, eps=0, alpha=1, loss_fn=_ce, generator=gen), x
    )
    assert torch.equal(gen.get_state(), state)


# -------------------------------------------------------------------------------------- fit
def test_fit_learns_and_reports_every_epoch(data, tmp_path: Path) -> None:
    seen: list[tuple[int, dict]] = []
    cfg = cfg_for("train.early_stopping.enabled=false")
    model, result = run_fit(cfg, data, tmp_path, on_epoch=lambda e, m: seen.append((e, m)))
    assert [e for e, _ in seen] == [1, 2, 3]
    assert (result.stopped_epoch, result.best_epoch) == (3, 3)
    assert result.history == [m for _, m in seen]
    for m in result.history:
        assert set(m) == EPOCH_KEYS
        assert m["gen_gap"] == pytest.approx(m["train_acc"] - m["val_acc"])
        assert 0 <= m["val_acc"] <= 1 and m["epoch_seconds"] > 0 and m["images_per_s"] > 0
        assert m["lr"] == pytest.approx(cfg.optimizer.lr)
    assert result.history[-1]["val_acc"] >= 0.9, "the toy task is separable"
    assert not model.training
    assert (tmp_path / "checkpoints" / "last.pt").is_file()
    assert (tmp_path / "checkpoints" / "best.pt").is_file()
    assert result.seconds > 0


def test_same_seed_same_metrics_different_seed_different(data, tmp_path: Path) -> None:
    cfg = cfg_for("data.augment.hflip=true", "data.augment.shift=2")
    augmented = DataSplits(**{**data.__dict__, "augment": cfg.data.augment})
    m1, r1 = run_fit(cfg, augmented, tmp_path / "a", seed=3)
    m2, r2 = run_fit(cfg, augmented, tmp_path / "b", seed=3)
    _, r3 = run_fit(cfg, augmented, tmp_path / "c", seed=4)
    assert without_timing(r1.history) == without_timing(r2.history)
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert without_timing(r1.history) != without_timing(r3.history)


def test_early_stopping_stops_and_restores_the_best_weights(data, tmp_path: Path) -> None:
    # min_delta larger than any possible change: only epoch 1 counts as an improvement.
    stop = ("train.epochs=8", "train.early_stopping.patience=2", "train.early_stopping.min_delta=9")
    model, result = run_fit(cfg_for(*stop), data, tmp_path / "restore")
    assert (result.best_epoch, result.stopped_epoch, len(result.history)) == (1, 3, 3)
    best = torch.load(tmp_path / "restore" / "checkpoints" / "best.pt", weights_only=True)
    assert best["epoch"] == 1
    for k, v in model.state_dict().items():
        assert torch.equal(v, best["model"][k]), f"{k} is not the best epoch's"

    model, result = run_fit(
        cfg_for(*stop, "train.early_stopping.restore_best=false"), data, tmp_path / "keep"
    )
    assert (result.best_epoch, result.stopped_epoch) == (3, 3)
    last = torch.load(tmp_path / "keep" / "checkpoints" / "last.pt", weights_only=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, last["model"][k])


def plain(node) -> DictConfig:
    """A config node as a Python-API caller builds it: plain OmegaConf, strings, no schema."""
    return OmegaConf.create(OmegaConf.to_container(node, resolve=True, enum_to_str=True))


@pytest.mark.parametrize(
    ("key", "value", "overrides"),
    [
        ("optimizer.lr", 0, []),
        ("optimizer.lr", -0.1, []),
        ("optimizer.momentum", 1.0, ["optimizer=sgd"]),
        ("train.batch_size", 0, []),
        ("train.epochs", 0, []),
        ("train.scheduler.decay_rate", 1.5, ["train.scheduler.name=staircase"]),
        ("train.scheduler.decay_rate", 0, []),
        ("train.early_stopping.monitor", "val_f1", []),
        ("train.early_stopping.monitor", "val_pgd_acc", []),  # needs val_robust=true
        ("train.early_stopping.mode", "max", []),  # val_loss improves downwards
        ("train.adversarial.eps", -1, ["train.adversarial.method=pgd"]),
        ("train.adversarial.method", "fgsm", []),
        ("train.loss", "hinge", []),
        ("train.precision", "fp16", []),
        ("train.scheduler.name", "step", []),
    ],
)
def test_fit_refuses_what_validate_refuses_before_the_first_batch(
    data, tmp_path: Path, key, value, overrides
) -> None:
    # fit(...) called directly (no pipeline, no schema) gets validate's one-line message.
    cfg = cfg_for(*overrides)
    nodes = {"train": plain(cfg.train), "optimizer": plain(cfg.optimizer)}
    group, _, rest = key.partition(".")
    OmegaConf.update(nodes[group], rest, value)
    calls: list[int] = []
    torch.manual_seed(0)
    model = build_model(cfg.model, data)
    with pytest.raises(
        ConfigError, match=rf"^{re.escape(key)}='?{re.escape(str(value))}'?: "
    ) as err:
        fit(
            model,
            data,
            nodes["train"],
            nodes["optimizer"],
            seed=0,
            device=CPU,
            run_dir=tmp_path,
            on_epoch=lambda e, m: calls.append(e),
        )
    assert "\n" not in str(err.value)
    assert not calls and not (tmp_path / "checkpoints").exists()


def test_staircase_decay_rate_one_keeps_the_lr(data, tmp_path: Path) -> None:
    # decay_rate = 1 is in validate's (0, 1]: a constant rate, accepted by fit too.
    cfg = cfg_for(
        "train.scheduler.name=staircase",
        "train.scheduler.decay_rate=1",
        "train.scheduler.decay_steps=1",
        "train.epochs=1",
    )
    _, result = run_fit(cfg, data, tmp_path)
    assert result.history[0]["lr"] == pytest.approx(cfg.optimizer.lr)


def test_disabled_early_stopping_only_checks_names(data, tmp_path: Path) -> None:
    # Matches advlab.validate: with early stopping off, monitor/mode consistency does not matter.
    cfg = cfg_for(
        "train.early_stopping.enabled=false",
        "train.early_stopping.monitor=val_pgd_acc",
        "train.early_stopping.mode=min",
        "train.epochs=2",
    )
    _, result = run_fit(cfg, data, tmp_path)
    assert (result.best_epoch, result.stopped_epoch) == (2, 2)


def test_non_finite_initial_weights_are_a_training_error(data, tmp_path: Path) -> None:
    # A loss that turns non-finite while training is a divergence, reported and not raised
    # (tests/test_training_diagnostics.py); weights non-finite before training leave nothing to do.
    cfg = cfg_for()
    torch.manual_seed(0)
    model = build_model(cfg.model, data)
    with torch.no_grad():
        model.fc.bias.fill_(float("nan"))
    with pytest.raises(TrainingError, match="untrained model's validation loss is nan"):
        fit(model, data, cfg.train, cfg.optimizer, seed=0, device=CPU, run_dir=tmp_path)


def test_mse_loss_and_schedules_train(data, tmp_path: Path) -> None:
    cfg = cfg_for(
        "train.loss=mse",
        "train.scheduler.name=staircase",
        "train.scheduler.decay_steps=6",
        "train.scheduler.decay_rate=0.5",
        "optimizer=sgd",
        "optimizer.lr=0.5",
        "optimizer.momentum=0.9",
        "train.early_stopping.enabled=false",
    )
    _, result = run_fit(cfg, data, tmp_path)
    steps_per_epoch = math.ceil(len(data.train) / 32)  # 6: one decay per epoch
    assert steps_per_epoch == 6
    for epoch, m in enumerate(result.history, start=1):
        assert m["lr"] == pytest.approx(0.5 * 0.5**epoch)
        assert 0 <= m["val_loss"] <= 1  # MSE between probabilities and one-hot targets
    assert result.history[-1]["val_acc"] >= 0.8


def test_adversarial_training_with_robust_validation(data, tmp_path: Path) -> None:
    cfg = cfg_for(
        "train.adversarial.method=fgsm_rs",
        "train.adversarial.eps=8",
        "train.adversarial.val_robust=true",
        "train.adversarial.val_robust_n=40",
        "train.adversarial.val_robust_steps=3",
        "train.early_stopping.monitor=val_pgd_acc",
        "train.early_stopping.mode=max",
        "train.epochs=2",
    )
    _, result = run_fit(cfg, data, tmp_path)
    for m in result.history:
        assert set(m) == EPOCH_KEYS | {naming.VAL_PGD_ACC, naming.VAL_FGSM_ACC}
        assert 0 <= m["val_pgd_acc"] <= 1 and 0 <= m["val_fgsm_acc"] <= 1
        assert m["val_pgd_acc"] * 40 == pytest.approx(round(m["val_pgd_acc"] * 40))


def test_speed_options_bf16_and_channels_last_train(data, tmp_path: Path) -> None:
    cfg = cfg_for("train.precision=bf16", "train.channels_last=true", "train.epochs=4")
    model, result = run_fit(cfg, data, tmp_path)
    assert all(math.isfinite(m["train_loss"]) for m in result.history)
    assert result.history[-1]["val_acc"] >= 0.8
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)


# ----------------------------------------------------------------------------------- runtime
def test_select_device() -> None:
    assert runtime.select_device("cpu") == CPU
    assert runtime.select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="device=tpu"):
        runtime.select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            runtime.select_device("cuda")


def test_precision_auto_picks_bf16_only_where_the_hardware_has_it(monkeypatch) -> None:
    assert runtime.resolve_precision("fp32", CPU) == "fp32"
    assert runtime.resolve_precision("bf16", CPU) == "bf16"  # asked for: kept, even if slow
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert runtime.resolve_precision("auto", CPU) == "bf16"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert runtime.resolve_precision("auto", CPU) == "fp32"  # AVX512-BF16 alone is slower
    cfg = cfg_for("train.precision=auto", "device=cpu")
    from advlab import naming
    from advlab.tracking.metadata import run_facts

    assert run_facts(cfg)[naming.PRECISION_INFO] == "fp32"


def test_seed_everything_repeats_every_generator() -> None:
    import random

    def draw():
        return random.random(), np.random.rand(), torch.rand(1).item()

    runtime.seed_everything(7)
    first = draw()
    runtime.seed_everything(7)
    assert draw() == first


def test_progress_is_silent_when_stderr_is_not_a_tty(capsys) -> None:
    items = list(runtime.progress(range(5), desc="x"))
    assert items == list(range(5))
    assert not runtime.progress_enabled(True)  # pytest captures stderr: not a terminal
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("method", "alpha", "expected"),
    [("fgsm_rs", None, 10.0), ("pgd", None, 2.5 * 8 / 7), ("pgd", 3.0, 3.0)],
)
def test_adversarial_training_step_defaults_to_the_published_rule(method, alpha, expected) -> None:
    cfg = OmegaConf.create({"method": method, "eps": 8.0, "alpha": alpha, "steps": 7})
    assert adversarial.train_alpha(cfg) == pytest.approx(expected)
