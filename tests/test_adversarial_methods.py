"""N-FGSM and TRADES adversarial training: their budgets, their numbers against hand-written
oracles on a tiny model, their config checks, and one quickstart run each through the pipeline."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from torch import nn

from advlab import naming
from advlab.config import AdversarialMethod
from advlab.errors import ConfigError
from advlab.models import InputSpec, zoo
from advlab.pipeline import run
from advlab.training import adversarial
from advlab.training.losses import trades_loss
from advlab.validate import validate_config
from tests.conftest import compose_config, only_run

EPS = 8.0  # 1/255 units
TOL = 1e-6


def _ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y)


def _tiny_model() -> nn.Module:
    """No dropout, no batch norm: train and eval mode compute the same function."""
    torch.manual_seed(0)
    return zoo.perceptron(InputSpec(1, (12, 12), 3, mean=(0.3,), std=(0.2,)), hidden=8)


def _batch(n: int = 32, low: float = 0.0, high: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = low + (high - low) * torch.rand(n, 1, 12, 12, generator=g)
    return x, torch.randint(0, 3, (n,), generator=g)


def _adv_cfg(method: str, **settings) -> OmegaConf:
    base = {"method": method, "eps": EPS, "alpha": None, "steps": 3, "noise": 2.0, "beta": 6.0}
    return OmegaConf.create({**base, **settings})


def _linf(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# ------------------------------------------------------------------------------------- N-FGSM
def _nfgsm(model, x, y, seed: int = 0, **kwargs) -> torch.Tensor:
    settings = {"eps": EPS, "alpha": EPS, "noise": 2.0, **kwargs}
    gen = torch.Generator().manual_seed(seed)
    return adversarial.nfgsm(model, x, y, loss_fn=_ce, generator=gen, **settings)


def test_nfgsm_stays_within_its_documented_budget_and_in_pixel_range() -> None:
    model, (x, y) = _tiny_model(), _batch(64)
    for noise, alpha in ((2.0, EPS), (1.0, 10.0), (0.0, EPS)):
        adv = _nfgsm(model, x, y, noise=noise, alpha=alpha)
        assert _linf(adv, x) <= (noise * EPS + alpha) / 255 + TOL
        assert adv.min() >= 0 and adv.max() <= 1


def test_nfgsm_is_not_projected_onto_the_eps_ball() -> None:
    model, (x, y) = _tiny_model(), _batch(64, 0.2, 0.8)  # far from 0 and 1: nothing is clamped
    adv = _nfgsm(model, x, y)
    assert _linf(adv, x) > EPS / 255 + TOL
    assert _linf(adv, x) <= 3 * EPS / 255 + TOL  # noise 2 eps + step eps


def test_nfgsm_equals_a_hand_written_step_from_the_same_noise() -> None:
    model, (x, y) = _tiny_model(), _batch(16, 0.2, 0.8)
    eps_px = EPS / 255
    noise = (torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1) * 2 * eps_px
    start = (x + noise).requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(start), y), start)
    oracle = (x + noise + eps_px * grad.sign()).clamp(0, 1)
    torch.testing.assert_close(_nfgsm(model, x, y), oracle)


def test_nfgsm_is_reproducible_under_a_seeded_generator() -> None:
    model, (x, y) = _tiny_model(), _batch()
    assert torch.equal(_nfgsm(model, x, y, seed=5), _nfgsm(model, x, y, seed=5))
    assert not torch.equal(_nfgsm(model, x, y, seed=5), _nfgsm(model, x, y, seed=6))


def test_nfgsm_without_noise_is_fgsm_and_at_eps_zero_leaves_the_batch() -> None:
    model, (x, y) = _tiny_model(), _batch()
    fgsm = adversarial.pgd(
        model, x, y, eps=EPS, alpha=EPS, steps=1, loss_fn=_ce, random_start=False
    )
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    no_noise = adversarial.nfgsm(
        model, x, y, eps=EPS, alpha=EPS, noise=0, loss_fn=_ce, generator=gen
    )
    torch.testing.assert_close(no_noise, fgsm)
    at_zero = adversarial.nfgsm(model, x, y, eps=0, alpha=EPS, noise=2, loss_fn=_ce, generator=gen)
    assert torch.equal(at_zero, x)
    assert torch.equal(gen.get_state(), state)  # neither drew a random number


# ------------------------------------------------------------------------------------- TRADES
def _trades(model, x, y, seed: int = 0, eps: float = EPS) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return adversarial.trades(model, x, y, eps=eps, alpha=2.0, steps=5, generator=gen)


def test_trades_example_stays_in_the_eps_ball_and_in_pixel_range() -> None:
    model, (x, y) = _tiny_model(), _batch(64)
    adv = _trades(model, x, y)
    assert _linf(adv, x) <= EPS / 255 + TOL
    assert adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():  # it moved the predictions away from the clean ones
        p = F.log_softmax(model(x), 1)
        kl = F.kl_div(F.log_softmax(model(adv), 1), p, reduction="batchmean", log_target=True)
    assert kl > 1e-4
    assert torch.equal(_trades(model, x, y, eps=0), x)


def test_trades_crafts_in_eval_mode_and_puts_back_train_mode() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(144, 16), nn.ReLU(), nn.Dropout(0.5))
    model.append(nn.Linear(16, 3)).train()
    x, y = _batch()
    torch.manual_seed(1)
    first = _trades(model, x, y)
    torch.manual_seed(2)  # other dropout masks, had dropout been on
    assert torch.equal(_trades(model, x, y), first)
    assert model.training


def test_trades_loss_is_clean_loss_plus_beta_times_batch_mean_kl() -> None:
    torch.manual_seed(0)
    clean, adv, y = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 2, 1, 2])
    p, q = clean.softmax(1), adv.softmax(1)
    kl = (p * (p.log() - q.log())).sum(1).mean()  # summed over classes, mean over the batch
    expected = F.cross_entropy(clean, y) + 6.0 * kl
    torch.testing.assert_close(trades_loss(clean, adv, y, beta=6.0, loss_fn=_ce), expected)


def test_trades_objective_on_a_tiny_model_equals_the_hand_computed_loss() -> None:
    model, (x, y) = _tiny_model(), _batch(16)
    objective = adversarial.training_objective(_adv_cfg("trades", beta=2.0), loss_fn=_ce)
    model.train()
    loss, logits = objective(model, x, y, generator=torch.Generator().manual_seed(0))
    # the same adversarial example: the default step is Madry's, 2.5 eps / steps
    gen = torch.Generator().manual_seed(0)
    x_adv = adversarial.trades(model, x, y, eps=EPS, alpha=2.5 * EPS / 3, steps=3, generator=gen)
    p, q = model(x).softmax(1), model(x_adv).softmax(1)
    expected = F.cross_entropy(model(x), y) + 2.0 * (p * (p.log() - q.log())).sum(1).mean()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(logits, model(x_adv))  # training accuracy: the adversarial batch
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_trades_with_beta_zero_is_the_plain_clean_loss() -> None:
    model, (x, y) = _tiny_model(), _batch(16)
    objective = adversarial.training_objective(_adv_cfg("trades", beta=0.0), loss_fn=_ce)
    loss, _ = objective(model, x, y, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loss, F.cross_entropy(model(x), y))


@pytest.mark.parametrize(
    ("method", "expected"),
    [("nfgsm", EPS), ("trades", 2.5 * EPS / 3)],
)
def test_default_step_sizes(method: str, expected: float) -> None:
    assert adversarial.train_alpha(_adv_cfg(method)) == pytest.approx(expected)
    assert adversarial.train_alpha(_adv_cfg(method, alpha=1.5)) == 1.5


def test_nfgsm_training_objective_uses_the_configured_noise() -> None:
    model, (x, y) = _tiny_model(), _batch(16, 0.2, 0.8)
    objective = adversarial.training_objective(_adv_cfg("nfgsm", noise=0.0), loss_fn=_ce)
    loss, _ = objective(model, x, y, generator=None)  # no noise: nothing drawn
    fgsm = adversarial.pgd(
        model, x, y, eps=EPS, alpha=EPS, steps=1, loss_fn=_ce, random_start=False
    )
    torch.testing.assert_close(loss, F.cross_entropy(model(fgsm), y))


# ------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("key", "value"),
    [("train.adversarial.beta", -1.0), ("train.adversarial.noise", -0.5)],
)
def test_a_negative_beta_or_noise_is_refused_in_one_line(key: str, value: float) -> None:
    cfg = compose_config([f"{key}={value}"])
    with pytest.raises(ConfigError) as caught:
        validate_config(cfg)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{key}={value!r}") and "must be >= 0" in message


@pytest.mark.parametrize("method", ["nfgsm", "trades"])
def test_the_adversarial_option_turns_the_method_on_with_robust_early_stopping(method: str) -> None:
    cfg = compose_config([f"+adversarial@_global_={method}"])
    validate_config(cfg)
    assert cfg.train.adversarial.method == AdversarialMethod(method)
    assert cfg.train.adversarial.val_robust is True
    assert (cfg.train.early_stopping.monitor, cfg.train.early_stopping.mode) == (
        "val_pgd_acc",
        "max",
    )


# ---------------------------------------------------------------------------------- end to end
@pytest.mark.slow
@pytest.mark.parametrize("method", ["nfgsm", "trades"])
def test_the_quickstart_trains_with_the_method_and_validates_robustly(
    make_cfg, fresh_store, method: str
) -> None:
    cfg = make_cfg(
        f"train.adversarial.method={method}",
        "train.epochs=1",
        "data.limit_train=128",
        "data.limit_test=64",
        "eval.n_examples=32",
        "eval.eps=[0,8]",
        "train.adversarial.steps=2",
        "train.adversarial.val_robust_n=16",
        "train.adversarial.val_robust_steps=2",
        "report.enabled=false",
        "tracking.log_model=false",
    )
    assert cfg.train.adversarial.method == AdversarialMethod(method)
    metrics = run(cfg)
    assert 0 <= metrics[naming.CLEAN_ACC] <= 1
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    mlflow_run = only_run(cfg)
    assert mlflow_run.info.status == "FINISHED"
    assert mlflow_run.data.tags[naming.ADVERSARIAL_TRAINING_TAG] == method
    history = client.get_metric_history(mlflow_run.info.run_id, naming.VAL_PGD_ACC)
    assert [m.step for m in history] == [1]
    assert 0 <= history[0].value <= 1
