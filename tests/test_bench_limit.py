"""The GFLOP/s lines of benchmarks/bench_limit.py count what the cores must compute."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.bench_limit import count_flops


def test_a_linear_training_step_counts_forward_and_both_backward_matmuls():
    model = nn.Linear(64, 16, bias=False)
    x, y = torch.rand(32, 64), torch.randint(0, 16, (32,))

    def step() -> None:
        F.cross_entropy(model(x), y).backward()

    forward = 2 * 32 * 64 * 16
    # backward: the weights' gradient; the input needs none (a leaf without requires_grad)
    assert count_flops(step) == 2 * forward


def test_a_frozen_model_pgd_step_counts_the_input_gradient_not_the_weights():
    model = nn.Linear(64, 16, bias=False).requires_grad_(False)
    x = torch.rand(32, 64, requires_grad=True)
    y = torch.randint(0, 16, (32,))

    def step() -> None:
        F.cross_entropy(model(x), y).backward()

    assert count_flops(step) == 2 * (2 * 32 * 64 * 16)
