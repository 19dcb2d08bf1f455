"""Sanity checks, metrics and grids: each check passes on a good case and warns or fails on a bad
one (fail where its condition fails outright: bounds, eps 0)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from advlab.attacks import metrics, sanity
from advlab.attacks.grids import perturbation_scale, save_grid
from advlab.attacks.runner import clean_pass, eval_mode
from advlab.errors import AttackError


def table(rows: dict[str, dict[float, float]]) -> pd.DataFrame:
    """A robustness table from {attack: {eps: robust_acc}}."""
    return pd.DataFrame(
        [
            {"attack": a, "eps": float(e), "robust_acc": acc}
            for a, curve in rows.items()
            for e, acc in curve.items()
        ]
    )


GOOD = table(
    {
        "fgsm": {0: 0.9, 4: 0.5, 16: 0.2},
        "pgd": {0: 0.9, 4: 0.3, 16: 0.0},
        "worst_case": {0: 0.9, 4: 0.3, 16: 0.0},
    }
)


# ---------------------------------------------------------------------------------- metrics
def test_wilson_interval_known_values():
    low, high = metrics.wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = metrics.wilson_interval(50, 100)
    assert (low, high) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    low, high = metrics.wilson_interval(100, 100)
    assert high == 1.0 and low == pytest.approx(0.9630, abs=1e-4)
    assert all(math.isnan(v) for v in metrics.wilson_interval(0, 0))
    with pytest.raises(ValueError):
        metrics.wilson_interval(11, 10)


def test_success_rate_counts_only_points_correct_before():
    clean = np.array([True, True, True, False, False])
    adv = np.array([True, False, False, False, False])
    assert metrics.success_rate(clean, adv) == pytest.approx(2 / 3)
    assert math.isnan(metrics.success_rate(np.zeros(3, bool), np.zeros(3, bool)))


def test_norms_confidence_and_confusion():
    x = torch.zeros(2, 1, 2, 2)
    x_adv = x.clone()
    x_adv[0, 0, 0, 0] = 0.5
    x_adv[1] = 0.1
    linf, l2 = metrics.perturbation_norms(x_adv, x)
    assert linf.tolist() == pytest.approx([0.5, 0.1])
    assert l2.tolist() == pytest.approx([0.5, 0.2])
    conf = metrics.true_class_confidence(
        torch.tensor([[0.0, 0.0], [10.0, -10.0]]), torch.tensor([0, 1])
    )
    assert conf.tolist() == pytest.approx([0.5, 0.0], abs=1e-6)
    cm = metrics.confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 0]), 3)
    assert cm == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]


# ---------------------------------------------------------------------------------- check 1
def test_check_bounds_accepts_the_ball_and_rejects_violations():
    x = torch.full((4, 1, 3, 3), 0.5)
    eps = 8 / 255
    ok = (x + eps * torch.sign(torch.randn_like(x))).clamp(0, 1)
    assert sanity.check_bounds("pgd", 8, ok, x, norm="linf", budget=eps) == pytest.approx(eps)
    with pytest.raises(AttackError, match=r"'pgd' at eps 8/255.*exceeds the budget"):
        sanity.check_bounds("pgd", 8, x + 2 * eps, x, norm="linf", budget=eps)
    with pytest.raises(AttackError, match=r"leave \[0, 1\]"):
        sanity.check_bounds("pgd", 8, x + 0.6, x, norm="linf", budget=1.0)
    with pytest.raises(AttackError, match="NaN"):
        sanity.check_bounds("pgd", 8, x * float("nan"), x, norm="linf", budget=eps)
    # L2: a radius-0.8 ball; an L-inf-small but L2-large perturbation violates it
    l2_bad = x + 0.3  # L2 norm 0.9 over 9 pixels
    with pytest.raises(AttackError, match="l2 norm"):
        sanity.check_bounds("pgd_l2", 8, l2_bad, x, norm="l2", budget=0.8)
    # unbounded (minimum-norm): only the box is checked
    assert sanity.check_bounds("cw", 8, x + 0.3, x, norm="linf", budget=None) == pytest.approx(0.3)


def test_a_violation_fails_the_bounds_check_instead_of_stopping_the_run():
    x = torch.full((4, 1, 3, 3), 0.5)
    eps = 8 / 255
    largest, problem = sanity.bound_violation("leaky", 8, x + 2 * eps, x, norm="linf", budget=eps)
    assert largest == pytest.approx(2 * eps) and "'leaky' at eps 8/255" in problem
    assert sanity.bound_violation("pgd", 8, x + eps, x, norm="linf", budget=eps)[1] is None
    check = sanity.bounds_summary(36, 2.0, [problem])
    assert check.status == "fail" and "1 attack x eps result(s)" in check.evidence
    assert "exceeds the budget" in check.evidence
    assert sanity.bounds_summary(36, 1.0, []).status == "pass"


# ---------------------------------------------------------------------------------- checks 2-5
def test_eps_zero_check():
    assert sanity.check_eps_zero(GOOD, 0.9, 100).status == "pass"
    bad = table({"fgsm": {0: 0.85, 4: 0.5}})
    check = sanity.check_eps_zero(bad, 0.9, 100)
    assert check.status == "fail" and "fgsm 85.0%" in check.evidence
    assert "not applicable" in sanity.check_eps_zero(table({"fgsm": {4: 0.5}}), 0.9, 100).evidence


def test_pgd_le_fgsm_check():
    assert sanity.check_pgd_le_fgsm(GOOD, 0.01).status == "pass"
    bad = table({"fgsm": {4: 0.5}, "pgd": {4: 0.6}})
    check = sanity.check_pgd_le_fgsm(bad, 0.01)
    assert check.status == "warn" and "pgd 60.0% > fgsm 50.0%" in check.evidence
    assert sanity.check_pgd_le_fgsm(bad, 0.2).status == "pass"  # within tolerance
    assert "not applicable" in sanity.check_pgd_le_fgsm(table({"pgd": {4: 0.6}}), 0.01).evidence


def test_monotone_check():
    assert sanity.check_monotone(GOOD, 0.01).status == "pass"
    bad = table({"pgd": {0: 0.9, 4: 0.3, 8: 0.45}})
    check = sanity.check_monotone(bad, 0.01)
    assert check.status == "warn" and "eps 4 30.0% -> eps 8 45.0%" in check.evidence


def test_chance_check():
    assert sanity.check_chance(GOOD, num_classes=10, margin=0.1).status == "pass"
    masked = table({"pgd": {0: 0.9, 16: 0.7}})
    check = sanity.check_chance(masked, num_classes=2, margin=0.1)
    assert check.status == "warn" and "gradient masking" in check.evidence
    assert "chance is 50.0%" in check.evidence


# ---------------------------------------------------------------------------------- checks 6-8
def test_convergence_check():
    base = np.array([True] * 50 + [False] * 50)
    check = sanity.check_convergence(base, base.copy(), steps=10, eps=8, points="points of pgd")
    assert check.status == "pass" and "20 steps" in check.evidence
    assert "on the 100 points of pgd: 10 steps 50.0%" in check.evidence
    moved = base.copy()
    moved[:2] = False  # 2 points in 100 = 2 points of accuracy
    check = sanity.check_convergence(base, moved, steps=10, eps=8)
    assert check.status == "warn" and "not converged" in check.evidence


def test_zero_gradient_check_flags_a_saturated_model():
    torch.manual_seed(0)
    x = torch.rand(32, 1, 4, 4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    y = model(x).argmax(1).detach()
    with eval_mode(model):
        healthy = clean_pass(model, x, y, batch_size=8)
    assert sanity.check_zero_gradients(healthy.zero_grad).status == "pass"
    # Huge logits saturate the softmax in float32: the loss gradient is exactly zero, so
    # gradient attacks cannot move these points (gradient masking).
    with torch.no_grad():
        model[1].weight.mul_(1e4)
        model[1].bias.mul_(1e4)
    y = model(x).argmax(1).detach()
    with eval_mode(model):
        saturated = clean_pass(model, x, y, batch_size=8)
    check = sanity.check_zero_gradients(saturated.zero_grad)
    assert check.status == "warn" and saturated.zero_grad.mean() > 0.5
    assert f"{int(saturated.zero_grad.sum())} of 32" in check.evidence
    # re-attacked by the escalation (black-box + restarts): no longer an unresolved indicator
    check = sanity.check_zero_gradients(saturated.zero_grad, escalated=True)
    assert check.status == "pass" and "masking_escalated" in check.evidence


def test_black_box_check():
    white = {"fgsm": True, "pgd": True, "square": False}
    ok = table({"fgsm": {8: 0.3}, "pgd": {8: 0.2}, "square": {8: 0.25}})
    assert sanity.check_black_box(ok, white, 0.01).status == "pass"
    masked = table({"fgsm": {8: 0.6}, "pgd": {8: 0.5}, "square": {8: 0.1}})
    check = sanity.check_black_box(masked, white, 0.01)
    assert check.status == "warn" and "square 10.0% < best white-box 50.0%" in check.evidence
    assert "not applicable" in sanity.check_black_box(ok, {"pgd": True}, 0.01).evidence


# ---------------------------------------------------------------------------------- grids
@pytest.mark.parametrize("channels", [1, 3])
def test_grid_png(tmp_path, channels):
    rng = np.random.default_rng(0)
    clean = rng.random((3, channels, 8, 8)).astype(np.float32)
    adv = np.clip(clean + rng.choice([-4 / 255, 4 / 255], clean.shape), 0, 1).astype(np.float32)
    path = save_grid(
        tmp_path / "grids" / "pgd_eps_4.png",
        clean,
        adv,
        labels=np.array([0, 1, 0]),
        clean_pred=np.array([0, 1, 0]),
        clean_conf=np.array([0.9, 0.8, 0.7]),
        adv_pred=np.array([1, 1, 0]),
        adv_conf=np.array([0.6, 0.7, 0.5]),
        class_names=["male", "female"],
        title="pgd at eps 4/255",
    )
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        pixels = np.asarray(image.convert("RGB"))
    assert height > width  # one row per example
    # Row 0 is fooled (adv_pred 1, label 0): its adversarial title is drawn in crimson.
    assert (pixels == np.array([220, 20, 60], dtype=np.uint8)).all(axis=-1).any()
    assert not list(tmp_path.glob("grids/*.tmp"))
    assert perturbation_scale(adv - clean) == pytest.approx(0.5 / (4 / 255), rel=1e-4)
    assert perturbation_scale(np.zeros(3)) == 1.0


# ---------------------------------------------------------------------------------- checks 9-10
def test_ce_vs_margin_check_warns_when_the_losses_disagree():
    close = table({"fgsm": {8: 0.40}, "pgd": {8: 0.30}, "margin": {0: 0.9, 8: 0.295}})
    check = sanity.check_margin(close, ["fgsm", "pgd"], 0.01)
    assert check.status == "pass" and "eps 8: pgd 30.0%, margin 29.5%" in check.evidence
    apart = table({"fgsm": {8: 0.40}, "pgd": {8: 0.30}, "margin": {8: 0.25}})
    check = sanity.check_margin(apart, ["fgsm", "pgd"], 0.01)
    assert check.status == "warn" and "eps 8: pgd 30.0%, margin 25.0%" in check.evidence
    assert "not applicable" in sanity.check_margin(GOOD, ["fgsm", "pgd"], 0.01).evidence


def test_escalation_check_warns_on_flagged_points_left_unattacked():
    def counts(flagged, points, flips, left):
        return pd.DataFrame(
            {"eps": [0.0, 8.0], "flagged": [0, flagged], "points": [0, points],
             "flips": [0, flips], "left": [0, left]}
        )  # fmt: skip

    check = sanity.check_escalation(counts(12, 12, 9, 0), enabled=True)
    assert (
        check.status == "pass" and "eps 8: 12 flagged, 12 re-attacked, 9 broken" in check.evidence
    )
    check = sanity.check_escalation(counts(12, 5, 4, 7), enabled=True)
    assert check.status == "warn" and "eval.escalation.max_points" in check.evidence
    check = sanity.check_escalation(counts(12, 0, 0, 12), enabled=False)
    assert check.status == "warn" and "enabled=false" in check.evidence
    assert sanity.check_escalation(counts(0, 0, 0, 0), enabled=True).status == "pass"
