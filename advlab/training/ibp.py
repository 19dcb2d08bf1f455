"""Certified training with interval bound propagation (``train.adversarial.method=ibp``; Gowal et
al. 2018, "On the Effectiveness of Interval Bound Propagation for Training Verifiably Robust
Models").

The loss of a batch mixes the clean loss with the loss of the worst case the bounds allow::

    kappa * CE(z(x), y) + (1 - kappa) * CE(z_hat, y)

``z_hat`` are the worst-case logits over the ball of radius ``eps`` around ``x``
(:func:`advlab.certify.ibp.worst_case_logits`: the lower bound of ``z_y - z_j``, negated, and 0
at the true class), whose cross-entropy bounds that of every input of the ball from above. The
bounds are those of :mod:`advlab.certify` (IBP, last layer elided), computed with gradients.

**Schedule.** ``eps`` and ``kappa`` follow Gowal et al.'s ramp, counted in epochs and moved every
optimizer step: for ``warmup_epochs`` epochs eps = 0 and kappa = 1 (clean training); over the
next ``ramp_epochs`` epochs eps grows linearly from 0 to ``train.adversarial.eps`` and kappa falls
linearly from 1 to ``kappa_end``; then both stay. The position is the fraction of epochs done
(epoch 3's 10th of 100 batches: 2.1), so a resumed run picks the schedule up where it was.

**Modes.** The clean term runs the model as the loop set it (train mode: dropout on, batch norm
on batch statistics). The bound term bounds the network as it is evaluated and certified: dropout
as the identity and batch norm on its running statistics (IBP through a random dropout mask
would bound another network than the one certified).

``train_acc`` counts the worst-case logits: the share of training points certified at the
schedule's eps of that step (during the warm-up, where no bound is computed, the clean logits).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from advlab.certify.graph import PASS_THROUGH, walk
from advlab.certify.ibp import input_box, worst_case_logits
from advlab.naming import to_pixels

LossFn = Callable[[Tensor, Tensor], Tensor]  # (logits, labels) -> scalar


@dataclass(frozen=True)
class IbpSchedule:
    """Gowal et al.'s ramp: ``eps`` (1/255 units) and ``kappa`` as functions of the fraction of
    training epochs done (see the module docstring)."""

    eps: float  # train.adversarial.eps, reached at the end of the ramp
    warmup_epochs: float  # clean training first
    ramp_epochs: float  # then eps 0 -> eps and kappa 1 -> kappa_end, linearly
    kappa_end: float  # the clean term's weight after the ramp

    def ramp(self, epochs_done: float) -> float:
        """How far the ramp is, in [0, 1], after ``epochs_done`` epochs (fractional)."""
        t = epochs_done - self.warmup_epochs
        if t < 0:
            return 0.0
        if self.ramp_epochs <= 0:
            return 1.0
        return min(t / self.ramp_epochs, 1.0)

    def at(self, epochs_done: float) -> tuple[float, float]:
        """``(eps, kappa)`` after ``epochs_done`` epochs: eps in 1/255 units."""
        r = self.ramp(epochs_done)
        return r * self.eps, 1.0 - r * (1.0 - self.kappa_end)


@contextlib.contextmanager
def _dropout_off(model: nn.Module) -> Iterator[None]:
    """Dropout modules in eval mode (the identity) inside the block, their modes put back after;
    the bounds call the pass-through layers, so a training-mode dropout would draw a mask."""
    dropouts = [m for m in model.modules() if isinstance(m, PASS_THROUGH) and m.training]
    for m in dropouts:
        m.eval()
    try:
        yield
    finally:
        for m in dropouts:
            m.train()


def ibp_loss(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    kappa: float,
    loss_fn: LossFn,
) -> tuple[Tensor, Tensor]:
    """``kappa * loss_fn(model(x), y) + (1 - kappa) * loss_fn(z_hat, y)``, with ``z_hat`` the
    worst-case logits over the ball of radius ``eps`` (1/255 units) around ``x`` (float (N, C, H,
    W) pixels in [0, 1]; ``y`` int64 (N,)). Returns the loss and the logits its accuracy counts:
    ``z_hat``, or the clean logits when ``kappa == 1`` (no bound is computed then).

    The model's layers must be ones :mod:`advlab.certify` can bound (else AttackError naming the
    layer); the bound term treats dropout as the identity and batch norm with running statistics.
    """
    logits = model(x)
    loss = loss_fn(logits, y)
    if kappa >= 1.0:
        return loss, logits
    lo, hi = input_box(x, to_pixels(eps))
    with _dropout_off(model):
        z_hat = worst_case_logits(walk(model), lo, hi, y)
    return kappa * loss + (1.0 - kappa) * loss_fn(z_hat, y), z_hat


def ibp_objective(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    schedule: IbpSchedule,
    loss_fn: LossFn,
    generator: torch.Generator | None = None,
    epochs_done: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """One batch's IBP loss at the schedule's ``(eps, kappa)`` after ``epochs_done`` epochs; the
    ``generator`` is not used (IBP draws nothing)."""
    del generator
    eps, kappa = schedule.at(epochs_done)
    return ibp_loss(model, x, y, eps=eps, kappa=kappa, loss_fn=loss_fn)
