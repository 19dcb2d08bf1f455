"""Training diagnostics: divergence stops a run without raising, catastrophic overfitting is
flagged from the PGD/FGSM validation curves, FGSM validation leaves PGD's numbers alone."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from advlab.models import build_model
from advlab.naming import VAL_FGSM_ACC, VAL_PGD_ACC
from advlab.training import adversarial, fit
from advlab.training.diagnostics import (
    DIVERGENCE_FACTOR,
    catastrophic_epochs,
    divergence,
    training_checks,
)
from advlab.training.validation import val_subset
from advlab.verdict import FAIL, PASS, WARN
from tests.test_training import CPU, cfg_for, run_fit, toy_splits


@pytest.fixture(scope="module")
def data():
    return toy_splits()


def finite_weights(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in model.state_dict().values())


def check(result, name: str):
    return next(c for c in result.checks if c.name == name)


class TurnsNaN(nn.Module):
    """Wraps a model; from its ``after``-th training forward on, its logits are NaN, as when an
    optimizer step overflows. Its NaN gradients make the weights NaN too."""

    def __init__(self, inner: nn.Module, after: int) -> None:
        super().__init__()
        self.inner, self.after, self.calls = inner, after, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.inner(x)
        if self.training:
            self.calls += 1
            if self.calls > self.after:
                return logits * float("nan")
        return logits


# ---------------------------------------------------------------------------------- divergence
def test_a_huge_learning_rate_diverges_stops_early_and_keeps_finite_weights(data, tmp_path: Path):
    seen: list[tuple[int, dict]] = []
    cfg = cfg_for("optimizer=sgd", "optimizer.lr=1e6", "train.epochs=3")
    model, result = run_fit(cfg, data, tmp_path, on_epoch=lambda e, m: seen.append((e, m)))
    assert result.diverged is not None
    assert len(result.history) < cfg.train.epochs and result.stopped_epoch == len(result.history)
    assert finite_weights(model)
    stable = check(result, "training_stable")
    assert stable.status == FAIL
    assert f"training diverged in epoch {result.stopped_epoch}" in stable.evidence
    assert "lower optimizer.lr, now 1e+06" in stable.evidence
    assert math.isfinite(result.start_loss) and result.start_loss > 0
    # The curves reach on_epoch, but never a non-finite value (MLflow refuses them).
    assert [e for e, _ in seen] == list(range(1, result.stopped_epoch + 1))
    assert all(math.isfinite(v) for _, m in seen for v in m.values())


def test_nan_in_epoch_two_restores_the_weights_of_epoch_one(data, tmp_path: Path):
    cfg = cfg_for("train.epochs=4", "train.early_stopping.enabled=false")
    torch.manual_seed(0)
    model = TurnsNaN(build_model(cfg.model, data), after=8)  # 6 steps per epoch: NaN in epoch 2
    after_epoch: dict[int, dict] = {}

    def on_epoch(epoch: int, metrics: dict) -> None:
        after_epoch[epoch] = {k: v.clone() for k, v in model.state_dict().items()}
        assert all(math.isfinite(v) for v in metrics.values())

    result = fit(
        model, data, cfg.train, cfg.optimizer, seed=0, device=CPU, run_dir=tmp_path,
        on_epoch=on_epoch,
    )  # fmt: skip
    assert result.diverged == "train loss became nan"
    assert (result.stopped_epoch, result.best_epoch) == (2, 1)
    assert math.isnan(result.history[1]["train_loss"])  # the history keeps what was measured
    for k, v in model.state_dict().items():
        assert torch.equal(v, after_epoch[1][k]), f"{k} is not epoch 1's"
    assert "diverged in epoch 2: train loss became nan" in check(result, "training_stable").evidence

    # Resuming the diverged run trains no further and ends the same way.
    resumed = TurnsNaN(build_model(cfg.model, data), after=0)  # would diverge at once if trained
    cfg.train.resume = str(tmp_path)
    again = fit(resumed, data, cfg.train, cfg.optimizer, seed=0, device=CPU, run_dir=tmp_path)
    assert resumed.calls == 0
    assert (again.diverged, again.best_epoch, again.start_loss) == (
        result.diverged,
        result.best_epoch,
        result.start_loss,
    )


def test_a_normal_run_passes_both_checks(data, tmp_path: Path):
    _, result = run_fit(cfg_for("train.epochs=2"), data, tmp_path)
    assert result.diverged is None and result.stopped_epoch == 2
    stable = check(result, "training_stable")
    assert stable.status == PASS and f"start loss of {result.start_loss:.3g}" in stable.evidence
    overfit = check(result, "catastrophic_overfitting")
    assert overfit.status == PASS and overfit.evidence.startswith("not applicable")


def test_divergence_rule() -> None:
    assert divergence({"train_loss": 0.5, "val_loss": 0.6}, 2.3) is None
    assert divergence({"train_loss": DIVERGENCE_FACTOR * 2.3, "val_loss": 1.0}, 2.3) is None
    assert divergence({"train_loss": 7.1e26, "val_loss": 1e20}, 2.3) == (
        "train loss 7.1e+26 is 3.1e+26 x its start 2.3"
    )
    infinite = {"train_loss": 1.0, "val_loss": math.inf}
    assert divergence(infinite, 2.3) == "validation loss became inf"
    assert divergence({"val_loss": 1.0}, 2.3) is None  # a missing loss is no evidence


# ---------------------------------------------------------------------- catastrophic overfitting
def epochs(*pairs: tuple[float, float] | None) -> list[dict[str, float]]:
    """A history of (pgd, fgsm) validation accuracies; None for an epoch without them."""
    return [{"train_loss": 1.0} | ({} if p is None else {VAL_PGD_ACC: p[0], VAL_FGSM_ACC: p[1]})
            for p in pairs]  # fmt: skip


def test_catastrophic_epochs_flags_a_pgd_collapse_while_fgsm_rises() -> None:
    history = epochs((0.30, 0.40), (0.35, 0.45), (0.02, 0.80), (0.01, 0.90))
    assert catastrophic_epochs(history) == [3]  # epoch 4: a drop of 1 point is not a collapse
    checks = training_checks(history, start_loss=0.7, diverged=None, lr=0.01)
    warn = next(c for c in checks if c.name == "catastrophic_overfitting")
    assert warn.status == WARN
    assert "in epoch 3 PGD validation accuracy fell 35.0% -> 2.0%" in warn.evidence
    assert "FGSM's rose 45.0% -> 80.0%" in warn.evidence


def test_catastrophic_epochs_needs_fgsm_to_rise_and_both_metrics() -> None:
    assert catastrophic_epochs(epochs((0.40, 0.50), (0.10, 0.20))) == []  # worse against both
    assert catastrophic_epochs(epochs((0.40, 0.50), (0.25, 0.60))) == []  # not halved
    assert catastrophic_epochs(epochs((0.40, 0.50), None, (0.01, 0.90))) == []  # gap: skipped
    assert catastrophic_epochs(epochs((0.40, 0.50), (math.nan, 0.90))) == []
    ok = training_checks(epochs((0.30, 0.40), (0.35, 0.45)), start_loss=0.7, diverged=None, lr=0.1)
    assert [c.status for c in ok] == [PASS, PASS]
    assert "epoch 2: PGD 35.0%, FGSM 45.0%" in ok[1].evidence


# ------------------------------------------------------------------------------ FGSM validation
def test_fgsm_is_one_eps_step_from_the_clean_point() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval()
    x, y = torch.rand(5, 3, 2, 2), torch.tensor([0, 1, 2, 0, 1])
    loss = nn.CrossEntropyLoss()
    x_adv = adversarial.fgsm(model, x, y, eps=8, loss_fn=loss)
    x_in = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(model(x_in), y), x_in)
    assert torch.allclose(x_adv, (x + 8 / 255 * grad.sign()).clamp(0, 1))
    assert torch.equal(x_adv, adversarial.fgsm(model, x, y, eps=8, loss_fn=loss))  # no random


def test_robust_validation_logs_fgsm_and_leaves_pgd_unchanged(data, tmp_path: Path) -> None:
    cfg = cfg_for(
        "train.adversarial.method=fgsm_rs",
        "train.adversarial.eps=8",
        "train.adversarial.val_robust=true",
        "train.adversarial.val_robust_n=40",
        "train.adversarial.val_robust_steps=3",
        "train.epochs=1",
    )
    model, result = run_fit(cfg, data, tmp_path)
    (m,) = result.history
    assert 0 <= m[VAL_FGSM_ACC] <= 1 and 0 <= m[VAL_PGD_ACC] <= 1
    # Recompute both on the trained model (one epoch, no restore): PGD's number is what its own
    # freshly seeded generator gives, as before FGSM validation existed.
    subset = val_subset(data, cfg.train.adversarial, seed=0, device=CPU)
    loss = nn.CrossEntropyLoss()
    starts = torch.Generator().manual_seed(subset.seed)

    def pgd_attack(xb, yb):  # Madry's step 2.5 eps / steps, 3 steps
        return adversarial.pgd(
            model, xb, yb, eps=8, alpha=2.5 * 8 / 3, steps=3, loss_fn=loss, generator=starts
        )

    def fgsm_attack(xb, yb):
        return adversarial.fgsm(model, xb, yb, eps=8, loss_fn=loss)

    pgd = adversarial.accuracy_under(model, subset.x, subset.y, pgd_attack, 256)
    fgsm = adversarial.accuracy_under(model, subset.x, subset.y, fgsm_attack, 256)
    assert (m[VAL_PGD_ACC], m[VAL_FGSM_ACC]) == (pgd, fgsm)
    assert check(result, "catastrophic_overfitting").status == PASS


def test_resume_of_a_checkpoint_without_start_loss_uses_the_first_train_loss(data, tmp_path):
    cfg = cfg_for("train.epochs=1")
    _, first = run_fit(cfg, data, tmp_path)
    last = tmp_path / "checkpoints" / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["config"]["start_loss"] == first.start_loss
    del ckpt["config"]["start_loss"]  # as written before the start loss was stored
    torch.save(ckpt, last)
    cfg.train.resume, cfg.train.epochs = str(tmp_path), 2
    _, resumed = run_fit(cfg, data, tmp_path)
    assert resumed.start_loss == first.history[0]["train_loss"]
    assert resumed.diverged is None and resumed.stopped_epoch == 2
