"""The escalation (eval.escalation): masked points re-attacked, margin attack, worst case."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from advlab import naming
from advlab.attacks import zoo
from advlab.attacks.evaluate import evaluate_robustness, evaluation_metrics
from advlab.attacks.margin import LossPGD, margin_attack
from advlab.attacks.runner import eval_mode
from advlab.data.base import DataSplits, ImageSet
from tests.conftest import compose_config
from tests.test_evaluate import synthetic_splits, train_tiny

CPU = torch.device("cpu")
THRESHOLD = 100  # the dead unit wakes when the mean of the 2x2 corner patch exceeds 100/255
PATCH = 92  # every test image's patch: 8/255 below the threshold, 16/255 reaches past it


def dead_region_model() -> nn.Module:
    """Two classes; one ReLU unit on the image's top-left 2x2 patch, dead (pre-activation < 0)
    while the patch mean is below THRESHOLD/255. There the output is constant, class 0, and the
    input gradient exactly zero; once awake, the unit votes class 1 strongly."""
    unit = nn.Linear(16, 1)
    head = nn.Linear(1, 2)
    with torch.no_grad():
        unit.weight.zero_()
        unit.weight[0, [0, 1, 4, 5]] = 0.25  # mean of the 2x2 patch (flattened 4x4 image)
        unit.bias.fill_(-THRESHOLD / 255)
        head.weight.copy_(torch.tensor([[0.0], [255.0]]))
        head.bias.copy_(torch.tensor([1.0, 0.0]))
    return nn.Sequential(nn.Flatten(), unit, nn.ReLU(), head).eval()


def dead_region_data(n: int = 40) -> DataSplits:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 1, 4, 4)).astype(np.uint8)
    images[:, :, :2, :2] = PATCH
    split = ImageSet(images, np.zeros(n, dtype=np.int64))  # all class 0: all correct, all dead
    return DataSplits("dead", split, split, split, ["zero", "one"], (0.5,), (0.25,))


def dead_config(*overrides: str):
    cfg = compose_config(
        [
            "eval.attacks=[fgsm,pgd]",
            "eval.eps=[0,8,16]",
            "eval.n_examples=null",
            "eval.grid_eps=null",
            "attacks.pgd.random_start=false",  # a random start could wake the unit: not a test
            "eval.escalation.attacks=[square]",
            "eval.escalation.queries=100",
            "eval.escalation.margin=none",  # the margin PGD's random start could wake it too
            *overrides,
        ]
    )
    return cfg.eval, OmegaConf.create({name: cfg.attacks[name] for name in cfg.eval.attacks})


def _robust(ev, attack: str, eps: float) -> float:
    rows = ev.table[(ev.table.attack == attack) & (ev.table.eps == eps)]
    return float(rows.robust_acc.iloc[0])


def test_a_dead_region_is_broken_by_the_escalation(tmp_path):
    model, data = dead_region_model(), dead_region_data()
    cfg_eval, attacks = dead_config()
    ev = evaluate_robustness(model, data, cfg_eval, attacks, seed=0, device=CPU, out_dir=tmp_path)
    assert ev.clean_acc == 1.0
    # gradient attacks cannot move a single point: the output is flat around every one of them
    for attack in ("fgsm", "pgd"):
        assert _robust(ev, attack, 16) == 1.0
    counts = ev.escalation.set_index("eps")
    # at 8/255 the patch reaches the threshold but not past it: nothing to find
    assert counts.loc[8.0, "points"] == 40 and counts.loc[8.0, "flips"] == 0
    assert _robust(ev, naming.WORST_CASE, 8) == 1.0
    # at 16/255 Square (black-box) wakes the unit on every point: the worst case falls to 0
    assert counts.loc[16.0, "points"] == 40 and counts.loc[16.0, "flips"] == 40
    assert _robust(ev, naming.WORST_CASE, 16) == 0.0
    metrics = evaluation_metrics(ev)
    assert metrics[naming.escalation_flips_key(16)] == 40.0
    written = json.loads((tmp_path / Path(naming.CHECKS_JSON).name).read_text())
    checks = {c["name"]: c for c in written}
    assert checks["zero_gradients"]["status"] == "pass"  # every such point was re-attacked
    assert "40 of 40 examples" in checks["zero_gradients"]["evidence"]
    assert checks["masking_escalated"]["status"] == "pass"
    assert (
        "eps 16: 40 flagged, 40 re-attacked, 40 broken" in checks["masking_escalated"]["evidence"]
    )
    assert checks["bounds"]["status"] == "pass"  # Square's examples were bound-checked too


def test_without_the_escalation_the_masked_points_stay_robust_and_warn(tmp_path):
    model, data = dead_region_model(), dead_region_data()
    cfg_eval, attacks = dead_config("eval.escalation.enabled=false")
    ev = evaluate_robustness(model, data, cfg_eval, attacks, seed=0, device=CPU, out_dir=tmp_path)
    assert _robust(ev, naming.WORST_CASE, 16) == 1.0
    assert (ev.escalation.points == 0).all()
    checks = {c.name: c for c in ev.checks}
    assert checks["zero_gradients"].status == "warn"
    assert checks["masking_escalated"].status == "warn"
    assert "eval.escalation.enabled=false" in checks["masking_escalated"].evidence


def test_the_cap_on_points_is_kept_and_reported(tmp_path):
    model, data = dead_region_model(), dead_region_data()
    cfg_eval, attacks = dead_config("eval.escalation.max_points=10")
    ev = evaluate_robustness(model, data, cfg_eval, attacks, seed=0, device=CPU, out_dir=tmp_path)
    counts = ev.escalation.set_index("eps")
    assert counts.loc[16.0, "points"] == 10 and counts.loc[16.0, "left"] == 30
    assert _robust(ev, naming.WORST_CASE, 16) == pytest.approx(30 / 40)
    check = {c.name: c for c in ev.checks}["masking_escalated"]
    assert check.status == "warn" and "eval.escalation.max_points" in check.evidence


def test_the_margin_attack_on_two_classes_beats_a_saturated_cross_entropy():
    data = synthetic_splits(num_classes=2)
    model = train_tiny(data)
    with torch.no_grad():  # same decisions, logits 1e4 times larger: softmax saturates in fp32
        model[-1].weight.mul_(1e4)
        model[-1].bias.mul_(1e4)
    x = torch.from_numpy(data.test.images[:100]).float() / 255
    y = torch.from_numpy(data.test.labels[:100])
    with eval_mode(model), torch.no_grad():
        keep = model(x).argmax(1) == y
    x, y = x[keep], y[keep]
    with eval_mode(model):
        margin = margin_attack(model, eps=16, seed=0, num_classes=2, steps=20, targets=3)(x, y)
        pgd = zoo.pgd(model, eps=16, seed=0, steps=20)(x, y)
        with torch.no_grad():
            fooled_margin = int((model(margin).argmax(1) != y).sum())
            fooled_pgd = int((model(pgd).argmax(1) != y).sum())
    assert (margin - x).abs().max() <= 16 / 255 + 1e-6
    assert margin.min() >= 0 and margin.max() <= 1
    # cross-entropy's gradient underflows to zero on saturated points; the logit margin's does not
    assert fooled_margin >= fooled_pgd and fooled_margin > 0.3 * len(y)


def test_margin_row_and_worst_case_on_three_classes(tmp_path):
    data = synthetic_splits(num_classes=3)
    model = train_tiny(data)
    cfg = compose_config(
        [
            "eval.attacks=[fgsm,pgd]",
            "eval.eps=[0,8,16]",
            "eval.n_examples=80",
            "eval.grid_eps=null",
            "eval.escalation.queries=20",
            "eval.escalation.margin_steps=10",
            "eval.escalation.margin_eps=[16]",  # the headline eps only
        ]
    )
    attacks = OmegaConf.create({name: cfg.attacks[name] for name in cfg.eval.attacks})
    ev = evaluate_robustness(model, data, cfg.eval, attacks, seed=0, device=CPU, out_dir=tmp_path)
    margin = ev.table[ev.table.attack == naming.MARGIN]
    assert list(margin.eps) == [16.0]  # margin_eps restricts it
    worst16 = _robust(ev, naming.WORST_CASE, 16)
    assert worst16 <= float(margin.robust_acc.iloc[0]) <= _robust(ev, "pgd", 16)


def test_reattack_all_reattacks_every_robust_point_not_only_the_flagged_ones(tmp_path):
    data = synthetic_splits(num_classes=3)
    model = train_tiny(data)
    base = [
        "eval.attacks=[fgsm,pgd]",
        "eval.eps=[0,16]",
        "eval.n_examples=80",
        "eval.grid_eps=null",
        "eval.escalation.queries=20",
        "eval.escalation.margin=none",
    ]

    def counts_and_worst(*extra: str):
        cfg = compose_config([*base, *extra])
        attacks = OmegaConf.create({name: cfg.attacks[name] for name in cfg.eval.attacks})
        ev = evaluate_robustness(
            model, data, cfg.eval, attacks, seed=0, device=CPU, out_dir=tmp_path
        )
        return ev.escalation.set_index("eps").loc[16.0], _robust(ev, naming.WORST_CASE, 16)

    flagged_only, worst_flagged = counts_and_worst()
    every, worst_every = counts_and_worst("eval.escalation.reattack_all=true")
    robust_before = round(worst_flagged * 80) + int(flagged_only["flips"])
    assert flagged_only["points"] == flagged_only["flagged"] < robust_before  # the default
    assert every["points"] == robust_before and every["left"] == 0  # every robust point
    assert worst_every <= worst_flagged  # more attacks never raise the worst case


def test_eval_thorough_is_autoattack_strength_and_keeps_the_experiments_grid():
    cfg = compose_config(["eval=thorough", "+experiment=gender_fool"])
    esc = cfg.eval.escalation
    assert (esc.margin_targets, esc.margin_steps, esc.queries) == (9, 100, 5000)
    assert esc.reattack_all and esc.enabled
    assert list(cfg.eval.eps) == list(compose_config(["+experiment=gender_fool"]).eval.eps)


def test_continuing_pgd_from_its_last_iterate_is_the_second_half_of_one_longer_run():
    # The convergence check (pgd_converged) goes on from the main PGD's last iterates: the same
    # steps, the same size, so it fools at least the points one run of twice the steps fools.
    torchattacks = zoo.import_torchattacks()
    data = synthetic_splits(num_classes=3, n=120)
    model = train_tiny(data)
    x = torch.from_numpy(data.test.images).float() / 255
    y = torch.from_numpy(data.test.labels)
    eps, alpha, steps = 8 / 255, 1 / 255, 5
    with eval_mode(model):
        first = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=False)
        longer = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=2 * steps, random_start=False)
        half = first(x, y)
        whole = longer(x, y)
        atk = LossPGD(model, eps=eps, steps=steps, restarts=1, loss="ce", alpha=alpha)
        found, fooled = atk.continue_from(x, y, half)
        whole_fooled = model(whole).argmax(1) != y
    assert (found - x).abs().max() <= eps + 1e-6 and 0 <= found.min() and found.max() <= 1
    assert bool(whole_fooled.any()) and not bool((whole_fooled & ~fooled).any())
