"""The constant-answer baseline: its share, the check that judges a defence against it, and the
sweep report's sentence on which settings beat it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from advlab import naming
from advlab.baseline import check_constant_baseline, constant_answer, worst_curve
from advlab.report.facts import constant_sentence
from advlab.verdict import PASS, WARN


def _table(rows: list[tuple[str, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["attack", "eps", "robust_acc"])


# The faces' FGSM-RS models: 64.6% clean, 49.9% worst case at the training budget 4/255.
FACES = _table(
    [
        ("pgd", 0.0, 0.646),
        ("pgd", 2.0, 0.58),
        ("pgd", 4.0, 0.51),
        (naming.WORST_CASE, 0.0, 0.646),
        (naming.WORST_CASE, 2.0, 0.57),
        (naming.WORST_CASE, 4.0, 0.499),
        (naming.WORST_CASE, 8.0, 0.30),
    ]
)


def test_the_constant_answer_is_the_most_frequent_class_and_its_share() -> None:
    share, answer = constant_answer(np.array([1, 0, 1, 1]), ["female", "male"])
    assert (share, answer) == (0.75, "male")
    assert constant_answer(np.array([], dtype=np.int64), ["a"]) == (0.0, "")


def test_the_worst_curve_is_the_worst_case_row_else_the_lowest_linf_attack() -> None:
    assert worst_curve(FACES).to_dict() == {0.0: 0.646, 2.0: 0.57, 4.0: 0.499, 8.0: 0.30}
    single = _table([("fgsm", 4.0, 0.4), ("pgd", 4.0, 0.3), ("pgd_l2", 4.0, 0.1)])
    assert worst_curve(single).to_dict() == {4.0: 0.3}  # the L2 ball is another threat model


def test_an_adversarially_trained_model_below_the_constant_answer_is_warned() -> None:
    check = check_constant_baseline(FACES, 0.547, "female", trained_eps=4.0)
    assert check.name == "constant_baseline" and check.status == WARN
    assert "49.9%" in check.evidence and "54.7%" in check.evidence
    assert "eps 4/255" in check.evidence and "'female'" in check.evidence


def test_a_defence_above_the_constant_answer_at_every_eps_passes() -> None:
    check = check_constant_baseline(FACES, 0.25, "female", trained_eps=4.0)
    assert check.status == PASS and "30.0%" in check.evidence and "25.0%" in check.evidence
    # the larger eps it is attacked at count too: 30% at 8/255 is not above 45%
    beyond = check_constant_baseline(FACES, 0.45, "female", trained_eps=2.0)
    assert beyond.status == WARN and "eps 8/255 (trained for 2)" in beyond.evidence


def test_a_model_trained_without_attacks_is_not_judged_but_told_where_it_falls() -> None:
    check = check_constant_baseline(FACES, 0.547, "female", trained_eps=None)
    assert check.status == PASS
    assert "not judged" in check.evidence and "from eps 4/255 on" in check.evidence


def test_no_eps_in_the_grid_is_not_applicable() -> None:
    clean_only = _table([(naming.WORST_CASE, 0.0, 0.9)])
    check = check_constant_baseline(clean_only, 0.5, "a", trained_eps=4.0)
    assert check.status == PASS and check.evidence.startswith("not applicable")
    above = _table([(naming.WORST_CASE, 8.0, 0.2)])  # only an eps above the training budget
    assert check_constant_baseline(above, 0.5, "a", trained_eps=4.0).status == WARN


def test_the_sweep_sentence_names_the_settings_above_and_not_above() -> None:
    table = pd.DataFrame({"name": ["standard", "fgsm_rs"], "robust": [0.009, 0.499]})
    said = constant_sentence(table, 0.547, naming.WORST_CASE, 4.0)
    assert "keeps 54.7% at every eps" in said and "No setting keeps more" in said
    mixed = constant_sentence(table, 0.3, naming.WORST_CASE, 4.0)
    assert "Above it at eps 4/255 (worst case): fgsm_rs. Not above it: standard." in mixed
    assert constant_sentence(table, None, naming.WORST_CASE, 4.0) is None
