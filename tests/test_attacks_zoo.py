"""The torchattacks adapters: exact FGSM, budgets, units, targeted modes, refusals, seeding."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from advlab.attacks import zoo
from advlab.config import PgdConf
from advlab.errors import AttackError, ConfigError, MissingDependencyError
from advlab.validate import check_eval
from tests.conftest import compose_config

ATTACK_OPTIONS = ["fgsm", "pgd", "pgd_l2", "apgd_ce", "square", "cw", "deepfool", "autoattack"]


class _Normalize(nn.Module):
    """The model's first layer, as in every advlab model: attacks see [0, 1] pixels."""

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def tiny_model(num_classes: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        _Normalize(0.4, 0.25),
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, num_classes),
    ).eval()


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(16, 1, 8, 8, generator=g)
    x[0].fill_(0.0)  # pixels at the box edges: the clamp to [0, 1] must matter
    x[1].fill_(1.0)
    y = torch.randint(0, 3, (16,), generator=g)
    return x, y


def test_fgsm_equals_hand_written_formula_exactly(batch):
    x, y = batch
    model = tiny_model()
    eps = 8.0
    x_adv = zoo.fgsm(model, eps=eps, seed=0)(x, y)

    xr = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model(xr), y)
    (grad,) = torch.autograd.grad(loss, xr)
    expected = torch.clamp(x + eps / 255 * grad.sign(), 0, 1)

    assert torch.equal(x_adv, expected)
    assert x_adv[0].min() == 0 and x_adv[1].max() == 1  # clamped, not just shifted


def _losses(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return F.cross_entropy(model(x), y, reduction="none")


@pytest.mark.parametrize("name", ["fgsm", "pgd", "apgd_ce", "square"])
@pytest.mark.parametrize("eps", [0.0, 2.0, 8.0])
def test_linf_attacks_raise_the_loss_inside_the_eps_ball_and_the_box(name, eps, batch):
    x, _ = batch
    model = tiny_model()
    with torch.no_grad():
        y = model(x).argmax(1)  # every point correct: an attack that does nothing fools none
    cfg = compose_config([f"attacks.square.queries={20}"])
    atk = instantiate(cfg.attacks[name])(model, eps=eps, seed=0, num_classes=3)
    x_adv = atk(x, y)
    assert (x_adv - x).abs().max() <= eps / 255 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert atk.advlab_norm == "linf" and atk.advlab_budget == pytest.approx(eps / 255)
    clean_loss, adv_loss = _losses(model, x, y), _losses(model, x_adv, y)
    if eps == 0:
        assert torch.equal(x_adv, x)  # a zero ball holds x only
        return
    assert (adv_loss >= clean_loss - 1e-6).all()  # no example made easier for the model
    assert adv_loss.mean() > clean_loss.mean()  # the identity attack would fail here
    if eps == 8:
        with torch.no_grad():
            assert (model(x_adv).argmax(1) != y).any()  # and some predictions flip


def test_pgd_l2_maps_the_grid_to_an_l2_radius(batch):
    x, y = batch
    atk = zoo.pgd_l2(tiny_model(), eps=8, l2_per_unit=0.1, steps=5, seed=0)
    assert atk.advlab_budget == pytest.approx(0.8)  # eps 8 -> radius 0.8 in pixel units
    assert atk.eps == pytest.approx(0.8) and atk.alpha == pytest.approx(0.2 * 0.8)
    x_adv = atk(x, y)
    assert (x_adv - x).flatten(1).norm(dim=1).max() <= 0.8 + 1e-5
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    # eps 0: torchattacks' PGDL2 would divide by the radius; the adapter returns x itself
    assert torch.equal(zoo.pgd_l2(tiny_model(), eps=0, seed=0)(x, y), x)


def test_pgd_is_at_least_as_strong_as_fgsm(batch):
    x, _ = batch
    model = tiny_model()
    with torch.no_grad():
        y = model(x).argmax(1)  # attack correctly classified points: accuracy 1 before
    eps = 4.0
    x_fgsm = zoo.fgsm(model, eps=eps)(x, y)
    x_pgd = zoo.pgd(model, eps=eps, steps=20, alpha=1.0, random_start=False, seed=0)(x, y)
    with torch.no_grad():
        fgsm_acc = (model(x_fgsm).argmax(1) == y).float().mean()
        pgd_acc = (model(x_pgd).argmax(1) == y).float().mean()
    assert fgsm_acc < 1  # FGSM fools some points
    assert pgd_acc <= fgsm_acc
    # 20 steps climb the loss at least as high as one step (in the same ball) when every point
    # takes them all (stop_on_success stops a point at its first fooling iterate)
    x_full = zoo.pgd(
        model, eps=eps, steps=20, alpha=1.0, random_start=False, seed=0, stop_on_success=False
    )(x, y)
    assert _losses(model, x_full, y).mean() >= _losses(model, x_fgsm, y).mean()
    assert (x_pgd - x).abs().max() <= eps / 255 + 1e-6


@pytest.mark.parametrize("name", ATTACK_OPTIONS)
def test_every_option_instantiates_from_its_yaml_as_a_partial(name):
    cfg = compose_config()
    factory = instantiate(cfg.attacks[name])  # _partial_: model and eps come at run time
    atk = factory(tiny_model(num_classes=4), eps=8, seed=0, num_classes=4)
    assert callable(atk)
    assert atk.advlab_white_box is bool(cfg.attacks[name].white_box)
    assert atk.advlab_norm == cfg.attacks[name].norm
    if name in ("cw", "deepfool"):
        assert atk.advlab_budget is None  # minimum-norm attacks take no budget


def test_minimum_norm_attacks_fool_with_valid_images(batch):
    x, _ = batch
    model = tiny_model()
    with torch.no_grad():
        y = model(x).argmax(1)  # every point correct before the attack
    cw = zoo.cw(model, steps=10, seed=0)
    for atk in (cw, zoo.deepfool(model, steps=5, seed=0)):
        x_adv = atk(x, y)
        assert x_adv.shape == x.shape and x_adv.min() >= 0 and x_adv.max() <= 1
        with torch.no_grad():
            fooled = model(x_adv).argmax(1) != y
        assert fooled.float().mean() >= 0.25  # an attack that moves nothing fools none
        if atk is cw:  # CW keeps its best adversarial example, else the image itself
            assert torch.equal(x_adv[~fooled], x[~fooled])


@pytest.mark.parametrize("version", ["standard", "plus", "rand"])
def test_autoattack_refused_on_two_classes_naming_alternatives(version):
    with pytest.raises(AttackError, match=r"apgd_ce, fab or square") as err:
        zoo.autoattack(tiny_model(num_classes=2), eps=8, version=version, num_classes=2, seed=0)
    assert "2" in str(err.value) and "\n" not in str(err.value)
    # the same refusal before training, from the config alone
    cfg = compose_config([f"attacks.autoattack.version={version}"])
    with pytest.raises(AttackError, match="apgd_ce, fab or square"):
        zoo.check_attack_support("autoattack", cfg.attacks.autoattack, 2)


def test_autoattack_refuses_three_classes_but_not_four():
    cfg = compose_config()
    with pytest.raises(AttackError, match="at least 4 classes"):
        zoo.check_attack_support("autoattack", cfg.attacks.autoattack, 3)
    zoo.check_attack_support("autoattack", cfg.attacks.autoattack, 4)
    for name in ("fgsm", "pgd", "apgd_ce", "square", "cw", "deepfool", "pgd_l2"):
        zoo.check_attack_support(name, cfg.attacks[name], 2)  # all fine on the gender task


def test_missing_torchattacks_says_how_to_install(monkeypatch, batch):
    monkeypatch.setitem(sys.modules, "torchattacks", None)  # makes `import torchattacks` fail
    with pytest.raises(MissingDependencyError) as err:
        zoo.pgd(tiny_model(), eps=8, seed=0)
    message = str(err.value)
    assert "pip install --no-deps torchattacks==3.5.1" in message
    assert "backtrack" in message  # says why --no-deps


@pytest.mark.parametrize("mode", ["random", "least_likely"])
def test_targeted_modes(mode, batch):
    x, _ = batch
    model = tiny_model()
    with torch.no_grad():
        logits = model(x)
    y = logits.argmax(1)
    atk = zoo.pgd(model, eps=64, alpha=8, steps=20, targeted=mode, seed=0)
    assert atk.targeted
    x_adv = atk(x, y)
    pred = model(x_adv).argmax(1)
    assert (pred != y).float().mean() >= 0.8  # a large budget reaches the targets
    if mode == "least_likely":
        target = logits.argmin(1)  # 3 classes: least likely of the other two = overall argmin
        assert (pred == target).float().mean() >= 0.8


def test_unknown_targeted_mode_refused_by_the_config_check():
    # The factories trust a checked config: a Python-API caller's untyped attack node meets the
    # same check (check_eval) that the typed schema's enum applies at compose time.
    cfg = compose_config(["eval.attacks=[fgsm]"])
    node = {**OmegaConf.to_container(cfg.attacks.fgsm), "targeted": "nearest"}
    with pytest.raises(ConfigError, match=r"attacks.fgsm.targeted='nearest': must be one of"):
        check_eval(cfg.eval, OmegaConf.create({"fgsm": node}))


def test_options_come_from_the_schema_and_must_describe_the_attack():
    atk = zoo.pgd(tiny_model(), eps=8, seed=0)
    assert atk.steps == PgdConf.steps  # the schema's default, not a second copy of it
    assert zoo.square(tiny_model(), eps=8, seed=0).advlab_white_box is False
    with pytest.raises(AttackError, match="norm='l2'"):
        zoo.pgd(tiny_model(), eps=8, norm="l2", seed=0)
    with pytest.raises(AttackError, match="unexpected argument"):
        zoo.fgsm(tiny_model(), eps=8, steps=3, seed=0)


def test_seeded_attacks_are_reproducible_and_leave_the_global_rng_alone(batch):
    x, y = batch
    model = tiny_model()
    torch.manual_seed(123)
    a = zoo.pgd(model, eps=8, steps=2, seed=7)(x, y)
    after_attack = torch.rand(3)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    b = zoo.pgd(model, eps=8, steps=2, seed=7)(x, y)
    c = zoo.pgd(model, eps=8, steps=2, seed=8)(x, y)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)  # the random start depends on the seed
    assert torch.equal(after_attack, expected_next)


def test_pgd_default_step_reaches_every_eps_of_the_grid() -> None:
    # alpha=None is Madry et al.'s 2.5 * eps / steps: steps * alpha > eps from any start.
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    for eps, steps in [(1, 10), (16, 3), (8, 7)]:
        atk = zoo.pgd(model, eps=eps, steps=steps, seed=0)
        assert atk.alpha == pytest.approx(2.5 * eps / steps / 255)
        assert atk.alpha * steps > atk.eps


def _images_forwarded(model: nn.Module) -> list[int]:
    seen: list[int] = []
    model.register_forward_hook(lambda module, args, out: seen.append(len(args[0])))
    return seen


def test_pgd_stopping_on_success_fools_every_point_the_full_loop_fools_in_fewer_steps():
    # float64 so that both loops do the same arithmetic per point whatever the batch size
    model = tiny_model(num_classes=3).double()
    g = torch.Generator().manual_seed(2)
    x = torch.rand(64, 1, 8, 8, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(dim=1)  # every point starts correctly classified
    runs = {}
    for stop in (True, False):
        counted = _images_forwarded(model)
        atk = zoo.pgd(model, eps=6, steps=10, seed=3, stop_on_success=stop)
        adv = atk(x, y)
        with torch.no_grad():
            fooled = model(adv).argmax(dim=1) != y
        runs[stop] = (adv, fooled, sum(counted[:-1]))  # the last forward is the judgement
        model._forward_hooks.clear()
    (adv_stop, fooled_stop, cost_stop), (adv_full, fooled_full, cost_full) = runs[True], runs[False]
    assert 0 < int(fooled_full.sum()) < len(x), "the test needs fooled and robust points"
    assert bool((fooled_stop | ~fooled_full).all()), "a point the full loop fools stayed robust"
    robust = ~fooled_stop
    assert torch.allclose(adv_stop[robust], adv_full[robust]), "robust points left their path"
    assert cost_full == 10 * len(x) and cost_stop < cost_full
    assert float((adv_stop - x).abs().max()) <= 6 / 255 + 1e-12
    assert float(adv_stop.min()) >= 0 and float(adv_stop.max()) <= 1


def test_targeted_pgd_ignores_stop_on_success(batch):
    # a targeted attack succeeds on reaching its target, not on leaving the true class
    x, y = batch
    model = tiny_model()
    runs = [
        zoo.pgd(model, eps=64, alpha=8, steps=20, targeted="random", seed=0, stop_on_success=stop)
        for stop in (True, False)
    ]
    assert torch.equal(runs[0](x, y), runs[1](x, y))
