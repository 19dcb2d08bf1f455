"""The run's verdict: the worst check decides and names the first problem; chance-level fails."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from advlab.attacks.evaluate import evaluate_robustness
from advlab.attacks.sanity import binomial_tail
from advlab.attacks.sanity import check_clean_above_chance as above_chance
from advlab.verdict import FAIL, PASS, WARN, Check, decide
from tests.test_evaluate import eval_config, synthetic_splits

CPU = torch.device("cpu")


def _check(name: str, status: str) -> Check:
    return Check(name, status, f"evidence of {name}")


def test_the_worst_status_decides_and_its_first_check_is_the_reason() -> None:
    checks = [
        _check("a", PASS),
        _check("b", WARN),
        _check("c", FAIL),
        _check("d", FAIL),
        _check("e", WARN),
    ]
    verdict = decide(checks)
    assert verdict.status == FAIL
    assert verdict.reason == "c: evidence of c"
    assert decide(checks[:2] + checks[4:]).reason == "b: evidence of b"
    passed = decide([_check("a", PASS), _check("b", PASS)])
    assert (passed.status, passed.reason) == (PASS, "all 2 checks pass")
    assert decide([]).status == WARN  # nothing ran: nothing supports the figures


def test_the_reason_is_one_line_and_the_payload_lists_every_check() -> None:
    long = Check("x", WARN, "line one\nline two " + "y" * 1000)
    verdict = decide([_check("a", PASS), long])
    assert "\n" not in verdict.reason and len(verdict.reason) <= 500
    payload = verdict.to_dict()
    assert payload["verdict"] == WARN and [c["name"] for c in payload["checks"]] == ["a", "x"]


@pytest.mark.parametrize(("k", "n", "p"), [(0, 5, 0.3), (3, 5, 0.3), (5, 5, 0.3), (7, 20, 0.5)])
def test_binomial_tail_equals_the_direct_sum(k: int, n: int, p: float) -> None:
    direct = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))
    assert binomial_tail(k, n, p) == pytest.approx(direct, rel=1e-9)


def test_chance_level_clean_accuracy_fails_and_the_bar_rises_for_small_n() -> None:
    ten_classes = np.arange(500) % 10
    chance_level = np.arange(500) < 47  # 9.4% of 500, the lr=1e6 quickstart of issue 14
    check = above_chance(chance_level, ten_classes, 10)
    assert check.status == FAIL and "9.4%" in check.evidence and "chance" in check.evidence
    binary = np.arange(100) % 2
    # 60 of 100 on a balanced binary task: p = 0.028, not significant at alpha 0.01 ...
    assert above_chance(np.arange(100) < 60, binary, 2).status == FAIL
    # ... while 60% of 1000 is (p ~ 1e-10)
    assert above_chance(np.arange(1000) < 600, np.arange(1000) % 2, 2).status == PASS


def test_chance_is_the_most_frequent_class_not_one_over_k() -> None:
    labels = np.where(np.arange(1000) < 800, 0, 1)  # 80% class 0
    always_zero = labels == 0  # a constant guess: 80% correct
    check = above_chance(always_zero, labels, 2)
    assert check.status == FAIL and "80.0%" in check.evidence


class _Constant(nn.Module):
    """The same logits for every input: a model that has learnt nothing."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.linspace(0.0, 1.0, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1) + 0.0 * x.flatten(1).sum(dim=1, keepdim=True)


def test_a_constant_model_gets_a_fail_verdict_from_its_evaluation(tmp_path) -> None:
    data = synthetic_splits()
    cfg_eval, attacks = eval_config("eval.escalation.enabled=false")
    evaluation = evaluate_robustness(
        _Constant(data.num_classes), data, cfg_eval, attacks, seed=0, device=CPU, out_dir=tmp_path
    )
    verdict = decide(evaluation.checks)
    assert verdict.status == FAIL
    assert verdict.reason.startswith("clean_above_chance: ")


def test_a_learnt_model_is_not_failed(tmp_path) -> None:
    from tests.test_evaluate import train_tiny

    data = synthetic_splits()
    cfg_eval, attacks = eval_config()
    evaluation = evaluate_robustness(
        train_tiny(data), data, cfg_eval, attacks, seed=0, device=CPU, out_dir=tmp_path
    )
    assert decide(evaluation.checks).status in {PASS, WARN}


@pytest.mark.e2e
def test_a_diverged_run_ends_with_a_fail_verdict_everywhere(make_cfg) -> None:
    """optimizer.lr=1e6 on the quickstart (issue 14): the loss explodes; the run stops training,
    still evaluates and reports, and says fail naming the divergence."""
    import json
    from pathlib import Path

    from advlab import naming
    from advlab.pipeline import run
    from tests.conftest import only_run

    cfg = make_cfg("optimizer.lr=1e6", "train.epochs=3", "report.enabled=false")
    metrics = run(cfg)
    assert metrics["verdict"] == FAIL
    assert metrics["verdict_reason"].startswith("training_stable: training diverged in epoch 1")
    mlflow_run = only_run(cfg)
    assert mlflow_run.info.status == "FINISHED"  # the run ended normally, with its curves
    assert mlflow_run.data.tags[naming.VERDICT_TAG] == FAIL
    assert mlflow_run.data.metrics[naming.STOPPED_EPOCH] < 3  # training stopped early
    run_dir = Path(mlflow_run.data.tags[naming.RUN_DIR_TAG])
    written = json.loads((run_dir / naming.VERDICT_JSON).read_text())
    assert written["verdict"] == FAIL and written["checks"][0]["name"] == "training_stable"
    assert json.loads((run_dir / naming.RESULTS_JSON).read_text())["verdict"] == FAIL
