"""Certified bounds: sound on sampled points of the ball, tight at eps 0, CROWN never looser than
IBP, unsupported layers refused, and no certified point broken by PGD."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advlab.certify import certified, logit_bounds, margin_lower_bounds
from advlab.certify.crown import crown_margins
from advlab.certify.graph import layers
from advlab.certify.ibp import ibp_margins, input_box
from advlab.errors import AttackError, ConfigError
from advlab.models import InputSpec, zoo
from advlab.models.layers import BasicBlock, Normalize
from advlab.training.adversarial import pgd

EPS = 8.0  # 1/255 units
CENTRES, PER_CENTRE = 4, 2_500  # 10,000 sampled points per model


def _spec(c: int, hw: int, classes: int = 3) -> InputSpec:
    return InputSpec(c, (hw, hw), classes, mean=(0.45,) * c, std=(0.22,) * c)


def _norm(c: int) -> Normalize:
    return Normalize((0.45,) * c, (0.22,) * c)


# name -> (factory, input shape (C, H, W)); each model is tiny and random.
MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, int, int]]] = {
    "linear_relu_dropout": (
        lambda: nn.Sequential(
            _norm(1), nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(12, 4),
        ),
        (1, 4, 4),
    ),
    "conv_bn_relu_maxpool": (
        lambda: nn.Sequential(
            _norm(2), nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, 3),
        ),
        (2, 6, 6),
    ),
    "overlapping_padded_maxpool": (
        lambda: nn.Sequential(
            _norm(1), nn.Conv2d(1, 3, 3, stride=2), nn.ReLU(),
            nn.MaxPool2d(3, stride=1, padding=1), nn.Flatten(), nn.Linear(27, 3),
        ),
        (1, 7, 7),
    ),
    "sigmoid_tanh": (
        lambda: nn.Sequential(
            _norm(1), nn.Flatten(), nn.Linear(16, 8), nn.Sigmoid(), nn.Linear(8, 8), nn.Tanh(),
            nn.Linear(8, 3),
        ),
        (1, 4, 4),
    ),
    "avgpools_nested": (
        lambda: nn.Sequential(
            _norm(1), nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU()), nn.AvgPool2d(2),
            nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.Tanh()), nn.AdaptiveAvgPool2d(1),
            nn.Flatten(), nn.Linear(4, 3),
        ),
        (1, 6, 6),
    ),
    "batchnorm1d_identity": (
        lambda: nn.Sequential(
            _norm(1), nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(),
            nn.Identity(), nn.Linear(8, 3),
        ),
        (1, 4, 4),
    ),
    "residual_blocks": (
        lambda: nn.Sequential(
            _norm(2), BasicBlock(2, 4, stride=2), BasicBlock(4, 4), nn.AdaptiveAvgPool2d(1),
            nn.Flatten(), nn.Linear(4, 3),
        ),
        (2, 6, 6),
    ),
    # Every zoo model at (about) its smallest input.
    "zoo_perceptron": (lambda: zoo.perceptron(_spec(1, 6), hidden=8), (1, 6, 6)),
    "zoo_course_cnn": (lambda: zoo.course_cnn(_spec(1, 8)), (1, 8, 8)),
    "zoo_lenet5": (lambda: zoo.lenet5(_spec(1, 16)), (1, 16, 16)),
    "zoo_mnist_cnn": (lambda: zoo.mnist_cnn(_spec(1, 6)), (1, 6, 6)),
    "zoo_vgg_small": (
        lambda: zoo.vgg_small(_spec(3, 4), widths=(4, 8), hidden=16, dropout=0.3),
        (3, 4, 4),
    ),
    "zoo_resnet_small": (
        lambda: zoo.resnet_small(_spec(3, 4), blocks_per_stage=1, width=4),
        (3, 4, 4),
    ),
}  # fmt: skip


def _build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    factory, _ = MODELS[name]
    model = factory()
    for m in model.modules():  # batch norm that is not the identity, with negative scales too
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.3, 2.0)
            nn.init.uniform_(m.weight, -1.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)
    return model.eval()


def _points(name: str, n: int = CENTRES, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, *MODELS[name][1]), generator=g)
    x[0] = (x[0] > 0.5).float()  # a point on the pixel range's edges: the clipping matters
    y = torch.randint(0, 3, (n,), generator=g)
    return x, y


def _samples(x: torch.Tensor, eps: float, per_centre: int) -> torch.Tensor:
    """``per_centre`` points of the clipped ball around each point: half uniform, half corners."""
    g = torch.Generator().manual_seed(2)
    xs = x.repeat_interleave(per_centre, 0)
    delta = (torch.rand(xs.shape, generator=g) * 2 - 1) * (eps / 255)
    delta[::2] = delta[::2].sign() * (eps / 255)
    return (xs + delta).clamp(0, 1)


def _margins(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return logits.gather(1, y.view(-1, 1)) - logits


def _tol(t: torch.Tensor) -> float:
    return 1e-5 * (1 + float(t.abs().max()))  # float32 rounding of the bounds


@pytest.mark.parametrize("name", list(MODELS))
def test_bounds_hold_on_points_sampled_in_the_ball(name: str) -> None:
    model = _build(name)
    x, y = _points(name)
    with torch.no_grad():
        logits = model(_samples(x, EPS, PER_CENTRE)).view(CENTRES, PER_CENTRE, -1)
    y = y % logits.shape[2]
    lo, hi = logit_bounds(model, x, EPS)
    tol = _tol(logits)
    assert bool((logits >= lo.unsqueeze(1) - tol).all()), "a logit below its IBP lower bound"
    assert bool((logits <= hi.unsqueeze(1) + tol).all()), "a logit above its IBP upper bound"
    worst = _margins(logits.flatten(0, 1), y.repeat_interleave(PER_CENTRE))
    worst = worst.view(CENTRES, PER_CENTRE, -1).amin(1)
    box = input_box(x, EPS / 255)
    nodes = layers(model)
    with torch.no_grad():
        own = {"crown": crown_margins(nodes, *box, y), "ibp": ibp_margins(nodes, *box, y)}
    for method in ("crown", "ibp"):
        bound = margin_lower_bounds(model, x, y, EPS, method)
        off_label = bound.isfinite()
        below = (worst < bound - tol)[off_label]
        assert not bool(below.any()), f"{method}: a margin below its lower bound"
        assert bool((worst >= own[method] - tol)[off_label].all()), f"{method} alone is unsound"
        assert bool(torch.isinf(bound.gather(1, y.view(-1, 1))).all())


@pytest.mark.parametrize("name", list(MODELS))
def test_bounds_are_tight_at_eps_zero(name: str) -> None:
    model = _build(name)
    x, y = _points(name)
    with torch.no_grad():
        logits = model(x)
    y = y % logits.shape[1]
    tol = _tol(logits)
    lo, hi = logit_bounds(model, x, 0)
    torch.testing.assert_close(lo, logits, atol=tol, rtol=0)
    torch.testing.assert_close(hi, logits, atol=tol, rtol=0)
    off_label = torch.ones_like(logits, dtype=torch.bool).scatter(1, y.view(-1, 1), False)
    for method in ("crown", "ibp"):
        bound = margin_lower_bounds(model, x, y, 0, method)
        torch.testing.assert_close(
            bound[off_label], _margins(logits, y)[off_label], atol=tol, rtol=0
        )
        ok = certified(model, x, y, 0, method)
        assert torch.equal(ok, logits.argmax(1) == y)


def test_crown_is_not_looser_than_ibp_on_relu_nets() -> None:
    # CROWN's own bound, before the elementwise max with IBP. With interval bounds inside and the
    # adaptive lower slope (1 when u > -l) it is not looser than IBP in theory only on average: at
    # a small eps it is nowhere looser here, at a larger one it is tighter on average.
    for name in ("linear_relu_dropout", "conv_bn_relu_maxpool", "zoo_mnist_cnn", "zoo_vgg_small"):
        for seed in range(3):
            model, (x, y) = _build(name, seed), _points(name, 16, seed)
            for eps in (1.0, 8.0):
                box, nodes = input_box(x, eps / 255), layers(model)
                with torch.no_grad():
                    crown, ibp = crown_margins(nodes, *box, y), ibp_margins(nodes, *box, y)
                where = f"{name} seed {seed} eps {eps}"
                assert float((crown - ibp).mean()) > 0, f"{where}: CROWN looser on average"
                if eps == 1.0:
                    assert bool((crown >= ibp - 1e-5).all()), f"{where}: CROWN looser"


@pytest.mark.parametrize("eps", [2.0, 32.0, 128.0])
def test_crown_result_is_never_below_ibp(eps: float) -> None:
    for name in ("sigmoid_tanh", "zoo_resnet_small", "overlapping_padded_maxpool"):
        model, (x, y) = _build(name), _points(name, 8)
        crown = margin_lower_bounds(model, x, y, eps, "crown")
        assert bool((crown >= margin_lower_bounds(model, x, y, eps, "ibp")).all())


class Square(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


@pytest.mark.parametrize(
    ("layer", "named"),
    [(nn.LSTM(4, 4), "'2' (LSTM)"), (nn.ELU(), "'2' (ELU)"), (Square(), "'2' (Square)")],
)
def test_an_unsupported_layer_is_refused_by_name(layer: nn.Module, named: str) -> None:
    model = nn.Sequential(_norm(1), nn.Flatten(), layer, nn.Linear(4, 2)).eval()
    with pytest.raises(AttackError, match=re.escape(f"cannot bound layer {named};")):
        margin_lower_bounds(model, torch.rand(2, 1, 2, 2), torch.zeros(2, dtype=torch.long), 1)


def test_nested_unsupported_layers_and_training_mode_are_refused() -> None:
    model = nn.Sequential(_norm(1), nn.Sequential(nn.Flatten(), nn.GELU()), nn.Linear(4, 2))
    x, y = torch.rand(2, 1, 2, 2), torch.zeros(2, dtype=torch.long)
    with pytest.raises(AttackError, match="training mode"):
        certified(model, x, y, 1)
    with pytest.raises(AttackError, match=r"'1\.1' \(GELU\)"):
        certified(model.eval(), x, y, 1)
    with pytest.raises(AttackError, match=r"ceil_mode"):
        certified(nn.Sequential(_norm(1), nn.MaxPool2d(2, ceil_mode=True)).eval(), x, y, 1)
    with pytest.raises(ConfigError, match="method='box'"):
        certified(_build("zoo_perceptron"), torch.rand(2, 1, 6, 6), y, 1, "box")


def test_batches_give_the_same_bounds_and_the_model_is_left_as_it_was() -> None:
    model = _build("zoo_resnet_small")
    x, y = _points("zoo_resnet_small", 10)
    whole = margin_lower_bounds(model, x, y, 4, batch_size=64)
    torch.testing.assert_close(margin_lower_bounds(model, x, y, 4, batch_size=3), whole)
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    assert margin_lower_bounds(model, x, y, 4).requires_grad is False


def _trained_model() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small ReLU net trained on an easy task (bright vs dark 6x6 images) and test points."""
    g = torch.Generator().manual_seed(0)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, 2, (n,), generator=g)
        x = torch.rand((n, 1, 6, 6), generator=g) * 0.6 + 0.4 * y.view(-1, 1, 1, 1)
        return x, y

    torch.manual_seed(0)
    model = nn.Sequential(
        _norm(1), nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2),
    )  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = draw(256)
    for _ in range(150):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval(), *draw(128)


def test_pgd_cannot_break_a_certified_point() -> None:
    model, x, y = _trained_model()
    eps = 32.0  # large enough that some points are not certified
    ok = certified(model, x, y, eps, "crown")
    assert 0 < int(ok.sum()) < len(ok), "the test needs certified and uncertified points"
    assert bool((ok >= certified(model, x, y, eps, "ibp")).all()), "IBP certified more"
    x_adv = pgd(model, x, y, eps=eps, alpha=2.5 * eps / 20, steps=20, loss_fn=F.cross_entropy)
    with torch.no_grad():
        robust = model(x_adv).argmax(1) == y
    assert bool(robust[ok].all()), "PGD broke a certified point"
    assert int(ok.sum()) <= int(robust.sum())  # the certified share is the bracket's lower end
