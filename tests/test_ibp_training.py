"""Certified (IBP) training: the loss against a hand-written oracle on a tiny model, the eps/kappa
ramp, eps 0, gradients, dropout, config checks, and one quickstart run through the pipeline."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from torch import nn

from advlab import naming
from advlab.certify import margin_lower_bounds
from advlab.config import AdversarialMethod
from advlab.errors import ConfigError
from advlab.models import InputSpec, zoo
from advlab.pipeline import run
from advlab.training import adversarial
from advlab.training.ibp import IbpSchedule, ibp_loss
from advlab.validate import validate_config
from tests.conftest import compose_config, only_run

EPS = 8.0  # 1/255 units


def _ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y)


def _tiny_model(dropout: float = 0.0) -> nn.Module:
    """Normalize, Flatten, Linear, Sigmoid, Dropout, Linear."""
    torch.manual_seed(0)
    spec = InputSpec(1, (6, 6), 3, mean=(0.3,), std=(0.2,))
    return zoo.perceptron(spec, hidden=5, dropout=dropout)


def _batch(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 6, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def _hand_worst_case_logits(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float):
    """Interval arithmetic written out for the perceptron, last layer folded into the margins."""
    lo, hi = (x - eps / 255).clamp(0, 1), (x + eps / 255).clamp(0, 1)
    mean, std = 0.3, 0.2
    lo, hi = ((lo - mean) / std).flatten(1), ((hi - mean) / std).flatten(1)
    w1, b1, w2, b2 = model.fc1.weight, model.fc1.bias, model.fc2.weight, model.fc2.bias
    pos, neg = w1.clamp(min=0), w1.clamp(max=0)
    h_lo = torch.sigmoid(lo @ pos.T + hi @ neg.T + b1)
    h_hi = torch.sigmoid(hi @ pos.T + lo @ neg.T + b1)
    rows = []
    for i in range(x.shape[0]):
        row = []
        for j in range(w2.shape[0]):
            if j == int(y[i]):
                row.append(torch.zeros(()))
                continue
            d = w2[y[i]] - w2[j]  # margin z_y - z_j = d . h + (b_y - b_j)
            low = (d.clamp(min=0) * h_lo[i] + d.clamp(max=0) * h_hi[i]).sum() + b2[y[i]] - b2[j]
            row.append(-low)
        rows.append(torch.stack(row))
    return torch.stack(rows)


# --------------------------------------------------------------------------------- the loss
def test_the_ibp_loss_is_the_hand_computed_mixture_of_clean_and_worst_case_cross_entropy() -> None:
    model, (x, y) = _tiny_model(), _batch()
    kappa = 0.3
    loss, logits = ibp_loss(model, x, y, eps=EPS, kappa=kappa, loss_fn=_ce)
    z_hat = _hand_worst_case_logits(model, x, y, EPS)
    expected = kappa * _ce(model(x), y) + (1 - kappa) * _ce(z_hat, y)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits, z_hat, rtol=1e-5, atol=1e-5)


def test_the_worst_case_logits_are_the_negated_certified_margin_bounds() -> None:
    model, (x, y) = _tiny_model().eval(), _batch()
    _, z_hat = ibp_loss(model, x, y, eps=EPS, kappa=0.0, loss_fn=_ce)
    bounds = margin_lower_bounds(model, x, y, EPS, "ibp")
    off = torch.ones_like(bounds, dtype=torch.bool).scatter(1, y.view(-1, 1), False)
    torch.testing.assert_close(z_hat[off], -bounds[off])
    assert torch.equal(z_hat.gather(1, y.view(-1, 1)), torch.zeros(len(y), 1))


def test_at_eps_zero_the_bound_term_is_the_clean_cross_entropy() -> None:
    model, (x, y) = _tiny_model(), _batch()
    loss, _ = ibp_loss(model, x, y, eps=0.0, kappa=0.0, loss_fn=_ce)
    torch.testing.assert_close(loss, _ce(model(x), y), rtol=1e-5, atol=1e-6)


def test_the_bound_term_bounds_the_loss_of_inputs_inside_the_ball() -> None:
    model, (x, y) = _tiny_model(), _batch(64)
    bound, _ = ibp_loss(model, x, y, eps=EPS, kappa=0.0, loss_fn=_ce)
    g = torch.Generator().manual_seed(2)
    for _ in range(5):
        noise = (torch.rand(x.shape, generator=g) * 2 - 1) * EPS / 255
        assert _ce(model((x + noise).clamp(0, 1)), y) <= bound


def test_gradients_of_the_bound_term_reach_every_parameter() -> None:
    model, (x, y) = _tiny_model(), _batch()
    loss, _ = ibp_loss(model, x, y, eps=EPS, kappa=0.0, loss_fn=_ce)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_kappa_one_computes_no_bound_and_returns_the_clean_logits() -> None:
    model, (x, y) = _tiny_model(), _batch()
    loss, logits = ibp_loss(model, x, y, eps=EPS, kappa=1.0, loss_fn=_ce)
    torch.testing.assert_close(logits, model(x))
    torch.testing.assert_close(loss, _ce(model(x), y))


def test_the_bound_term_bounds_the_eval_network_and_leaves_dropout_in_train_mode() -> None:
    model, (x, y) = _tiny_model(dropout=0.5), _batch()
    model.train()
    _, z_train = ibp_loss(model, x, y, eps=EPS, kappa=0.0, loss_fn=_ce)
    _, z_again = ibp_loss(model, x, y, eps=EPS, kappa=0.0, loss_fn=_ce)
    assert model.dropout.training  # put back
    assert torch.equal(z_train, z_again)  # no dropout mask drawn in the bound
    model.eval()
    _, z_eval = ibp_loss(model, x, y, eps=EPS, kappa=0.0, loss_fn=_ce)
    torch.testing.assert_close(z_train, z_eval)


# ------------------------------------------------------------------------------- the schedule
@pytest.mark.parametrize(
    ("epochs_done", "eps", "kappa"),
    [
        (0.0, 0.0, 1.0),  # warm-up: clean training
        (1.5, 0.0, 1.0),
        (2.0, 0.0, 1.0),  # the ramp starts
        (3.0, 2.5, 0.875),  # a quarter of the way
        (4.5, 6.25, 0.6875),
        (6.0, 10.0, 0.5),  # the ramp ends
        (9.0, 10.0, 0.5),  # and stays
    ],
)
def test_the_ramp_moves_eps_and_kappa_linearly_after_the_warm_up(epochs_done, eps, kappa) -> None:
    schedule = IbpSchedule(eps=10.0, warmup_epochs=2, ramp_epochs=4, kappa_end=0.5)
    assert schedule.at(epochs_done) == pytest.approx((eps, kappa))


def test_no_ramp_jumps_to_full_eps_after_the_warm_up() -> None:
    schedule = IbpSchedule(eps=10.0, warmup_epochs=1, ramp_epochs=0, kappa_end=0.2)
    assert schedule.at(0.99) == (0.0, 1.0)
    assert schedule.at(1.0) == pytest.approx((10.0, 0.2))


def test_the_training_objective_follows_the_configured_ramp() -> None:
    cfg = OmegaConf.create(
        {"method": "ibp", "eps": EPS, "warmup_epochs": 1, "ramp_epochs": 2, "kappa_end": 0.5}
    )
    objective = adversarial.training_objective(cfg, loss_fn=_ce)
    model, (x, y) = _tiny_model(), _batch()
    loss, _ = objective(model, x, y, generator=None, epochs_done=2.0)  # half-way: eps 4, kappa .75
    expected, _ = ibp_loss(model, x, y, eps=EPS / 2, kappa=0.75, loss_fn=_ce)
    torch.testing.assert_close(loss, expected)
    warm, _ = objective(model, x, y, generator=None, epochs_done=0.5)
    torch.testing.assert_close(warm, _ce(model(x), y))


# ------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("train.adversarial.kappa_end", 1.5, "must be in [0, 1]"),
        ("train.adversarial.kappa_end", -0.1, "must be in [0, 1]"),
        ("train.adversarial.warmup_epochs", -1, "must be >= 0"),
        ("train.adversarial.ramp_epochs", -2, "must be >= 0"),
        ("train.loss", "mse", "needs cross_entropy"),
    ],
)
def test_bad_ibp_settings_are_refused_in_one_line(key: str, value, why: str) -> None:
    cfg = compose_config(["train.adversarial.method=ibp", f"{key}={value}"])
    with pytest.raises(ConfigError) as caught:
        validate_config(cfg)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{key}={value!r}") and why in message


def test_the_ibp_option_turns_certified_training_on_with_robust_early_stopping() -> None:
    cfg = compose_config(["+adversarial@_global_=ibp"])
    validate_config(cfg)
    assert cfg.train.adversarial.method == AdversarialMethod.ibp
    assert cfg.train.adversarial.val_robust is True
    assert (cfg.train.early_stopping.monitor, cfg.train.early_stopping.mode) == (
        "val_pgd_acc",
        "max",
    )


def test_the_certified_experiment_trains_each_model_of_its_sweep_at_one_budget() -> None:
    for method in ("standard", "pgd", "ibp"):
        cfg = compose_config(["+experiment=mnist_certified", f"adversarial@_global_={method}"])
        validate_config(cfg)
        assert 26 in cfg.eval.eps and cfg.eval.certify == "ibp"
    assert cfg.train.adversarial.method == AdversarialMethod.ibp


# ---------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_the_quickstart_trains_with_ibp_and_validates_robustly(make_cfg, fresh_store) -> None:
    cfg = make_cfg(
        "train.adversarial.method=ibp",
        "train.epochs=2",
        "train.adversarial.warmup_epochs=0",
        "train.adversarial.ramp_epochs=1",
        "data.limit_train=128",
        "data.limit_test=64",
        "eval.n_examples=32",
        "eval.eps=[0,8]",
        "train.adversarial.val_robust_n=16",
        "train.adversarial.val_robust_steps=2",
        "report.enabled=false",
        "tracking.log_model=false",
    )
    metrics = run(cfg)
    assert 0 <= metrics[naming.CLEAN_ACC] <= 1
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    mlflow_run = only_run(cfg)
    assert mlflow_run.info.status == "FINISHED"
    assert mlflow_run.data.tags[naming.ADVERSARIAL_TRAINING_TAG] == "ibp"
    history = client.get_metric_history(mlflow_run.info.run_id, naming.VAL_PGD_ACC)
    assert [m.step for m in history] == [1, 2]
    assert all(0 <= m.value <= 1 for m in history)
