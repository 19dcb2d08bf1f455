"""The bracket in the evaluation: certified accuracy beside the attacks' worst case, its file and
metrics, and the check that a certificate and an attack never disagree."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from advlab import naming
from advlab.attacks.certification import (
    CERTIFIED_COLUMNS,
    Certification,
    certify_grid,
    check_certificates_sound,
)
from advlab.attacks.evaluate import evaluate_robustness, evaluation_metrics
from advlab.attacks.runner import eval_mode, load_points
from advlab.verdict import FAIL, PASS
from tests.test_evaluate import CPU, eval_config, synthetic_splits, train_tiny


@pytest.fixture(scope="module")
def data():
    return synthetic_splits()


@pytest.fixture(scope="module")
def model(data):
    return train_tiny(data)


@pytest.mark.parametrize("method", ["ibp", "crown"])
def test_certified_accuracy_is_a_lower_bound_of_the_worst_case(data, model, tmp_path, method):
    cfg_eval, attacks = eval_config(f"eval.certify={method}")
    ev = evaluate_robustness(model, data, cfg_eval, attacks, seed=0, device=CPU, out_dir=tmp_path)
    rows = ev.certification.rows
    assert list(rows.columns) == CERTIFIED_COLUMNS and list(rows["eps"]) == [0.0, 2.0, 8.0, 16.0]
    worst = ev.table[ev.table["attack"] == naming.WORST_CASE].set_index("eps")["robust_acc"]
    for row in rows.itertuples():
        assert row.certified_acc <= worst[row.eps] + 1e-12, row.eps
    # at eps 0 a certificate is a correct prediction
    assert rows["certified_acc"].iloc[0] == pytest.approx(ev.points_clean_acc)
    assert 0 < rows["certified_acc"].iloc[1] < 1  # 2/255: some proven, not all
    checks = {c.name: c for c in ev.checks}
    assert checks["certificate_sound"].status == PASS
    metrics = evaluation_metrics(ev)
    for row in rows.itertuples():
        assert metrics[naming.certified_acc_key(row.eps)] == row.certified_acc
    points = pd.read_csv(tmp_path / "certified.csv")
    assert len(points) == len(rows) * ev.robust_n
    assert set(points["test_index"]) == set(int(i) for i in ev.indices)
    at2 = points[points["eps"] == 2.0]
    assert at2["certified"].mean() == pytest.approx(rows["certified_acc"].iloc[1])
    assert (at2["certified"] == (at2["margin_lower"] > 0)).all()


def test_crown_certifies_at_least_what_ibp_does(data, model):
    x, y = load_points(data, np.arange(120), CPU)
    with eval_mode(model):
        ibp = certify_grid(model, x, y, [2, 4], method="ibp", batch_size=64)
        crown = certify_grid(model, x, y, [2, 4], method="crown", batch_size=64)
    for eps in (2.0, 4.0):
        assert (crown.certified[eps] >= ibp.certified[eps]).all()


def test_after_an_eps_that_certifies_nothing_larger_ones_report_zero_uncomputed(data, model):
    x, y = load_points(data, np.arange(60), CPU)
    with eval_mode(model):
        cert = certify_grid(model, x, y, [0, 64, 128], method="ibp", batch_size=64)
    rows = cert.rows.set_index("eps")
    assert rows.loc[64.0, "certified_acc"] == 0.0 and rows.loc[64.0, "computed"]
    assert rows.loc[128.0, "certified_acc"] == 0.0 and not rows.loc[128.0, "computed"]
    assert np.isnan(cert.margins[128.0]).all()  # 0 is a valid lower bound, not a measurement


def test_a_certified_point_an_attack_broke_fails_the_run_naming_it() -> None:
    rows = pd.DataFrame([[4.0, 0.5, 4, "ibp", True, 0.0]], columns=CERTIFIED_COLUMNS)
    cert = Certification("ibp", rows, {4.0: np.array([True, True, False, False])})
    robust = {4.0: np.array([True, False, False, True])}
    check = check_certificates_sound(cert, robust, np.array([10, 11, 12, 13]))
    assert check.name == "certificate_sound" and check.status == FAIL
    assert "eps 4: test points 11" in check.evidence
    sound = check_certificates_sound(cert, {4.0: np.array([True, True, False, True])}, np.arange(4))
    assert sound.status == PASS
    assert check_certificates_sound(None, robust, np.arange(4)).evidence.startswith(
        "not applicable"
    )


def test_certify_none_leaves_no_certified_metric(data, model, tmp_path):
    cfg_eval, attacks = eval_config("eval.certify=none", "eval.escalation.enabled=false")
    ev = evaluate_robustness(model, data, cfg_eval, attacks, seed=0, device=CPU, out_dir=tmp_path)
    assert ev.certification is None
    assert not [k for k in evaluation_metrics(ev) if naming.parse_certified_metric(k) is not None]
    assert not (tmp_path / "certified.csv").exists()
