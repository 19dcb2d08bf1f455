"""The CUDA paths: device choice, pinned non-blocking batches, bf16 under ``precision=auto``,
training and the robustness evaluation on the GPU. Run where a CUDA device is visible (``pytest
-m gpu``), skipped elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from advlab.attacks.evaluate import evaluate_robustness
from advlab.data.base import batches
from advlab.runtime import resolve_precision, select_device
from tests.test_evaluate import eval_config, synthetic_splits
from tests.test_training import cfg_for, run_fit, toy_splits

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible"),
]
CUDA = torch.device("cuda")


def test_device_auto_picks_the_gpu():
    assert select_device("auto") == torch.device("cuda")
    assert select_device("cuda:0") == torch.device("cuda:0")


def test_precision_auto_is_bf16_on_a_gpu_that_has_it():
    expected = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    assert resolve_precision("auto", CUDA) == expected


def test_batches_copied_to_the_gpu_equal_the_cpu_batches():
    data = synthetic_splits()
    kwargs = dict(shuffle=True, augment=None)
    on_cpu = batches(data.train, 64, generator=torch.Generator().manual_seed(0), **kwargs)
    on_gpu = batches(
        data.train, 64, generator=torch.Generator().manual_seed(0), device=CUDA, **kwargs
    )
    for (x_cpu, y_cpu), (x_gpu, y_gpu) in zip(on_cpu, on_gpu, strict=True):
        assert x_gpu.is_cuda and y_gpu.is_cuda
        assert torch.equal(x_gpu.cpu(), x_cpu) and torch.equal(y_gpu.cpu(), y_cpu)


@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_fit_then_evaluate_on_the_gpu(tmp_path: Path, precision: str):
    data = toy_splits()
    cfg = cfg_for(f"train.precision={precision}", "train.channels_last=true")
    model, result = run_fit(cfg, data, tmp_path, device=CUDA)
    assert next(model.parameters()).is_cuda
    assert result.history[-1]["val_acc"] > 0.5, "the synthetic task is learnt on the GPU too"
    cfg_eval, attacks = eval_config("eval.eps=[0,8,128]")  # the toy task survives small budgets
    evaluation = evaluate_robustness(
        model, data, cfg_eval, attacks, seed=0, device=CUDA, out_dir=tmp_path / "eval"
    )
    statuses = {check.name: check.status for check in evaluation.checks}
    assert statuses["bounds"] == "pass" and statuses["eps0_clean"] == "pass"
    pgd = evaluation.table[evaluation.table.attack == "pgd"].set_index("eps").robust_acc
    assert pgd[0.0] > pgd[128.0], "PGD on the GPU lowers the accuracy"
