"""The "Audit" section of a run's report: ``python -m advlab.audit``'s ``results/audit.json``.

Shows, per attack, a row per eps with each library's robust accuracy, the per-point worst case over
the three, the run's own figure, the points where the libraries disagree and the verdict; then each
library's wall time. Reads the JSON as the audit wrote it; recomputes nothing.
"""

from __future__ import annotations

from typing import Any

from advlab import naming
from advlab.report.blocks import WARN, Story
from advlab.report.format import MISSING, attack_label, fmt_eps, fmt_pct
from advlab.verdict import PASS

LIBRARIES = {"torchattacks": "torchattacks", "art": "ART", "foolbox": "Foolbox", "worst": "worst"}
CAPTION = (
    "Robust accuracy on the run's evaluated points, each eps attacked from x. worst: per point, "
    "robust only if robust under all three libraries. run: the run's own figure (with "
    "eval.cascade on it may be lower, as each point keeps its example from a smaller eps). "
    "disagree: points whose outcome is not the same under all three. FGSM must agree exactly; "
    "PGD passes when, for every pair of libraries, the points robust under one only split as "
    "random starts would (exact two-sided sign test, p >= 0.01)."
)


def section(story: Story, audit: dict[str, Any]) -> None:
    """The "Audit" section for one run's ``results/audit.json`` (``audit``)."""
    story.h1("Audit: the same attacks from three libraries")
    versions = ", ".join(f"{LIBRARIES[k]} {v}" for k, v in audit.get("versions", {}).items())
    story.para(
        f"Verdict: {audit['verdict']}. {audit['n']} points, clean accuracy "
        f"{fmt_pct(audit[naming.CLEAN_ACC])} "
        f"(the run logged {fmt_pct(audit.get('run_clean_acc'))}); "
        f"{versions}; on {audit.get('device', MISSING)}."
    )
    rows = audit["rows"]
    for attack in dict.fromkeys(row["attack"] for row in rows):
        _attack_table(story, attack, [row for row in rows if row["attack"] == attack])
    story.para(CAPTION, "caption")
    warned = [row for row in rows if row["verdict"] != PASS]
    if warned:
        story.bullets(
            f"{attack_label(r['attack'])} at {fmt_eps(r['eps'])}: {r['evidence']}" for r in warned
        )
    times = [["library", *(attack_label(a) for a in next(iter(audit["seconds"].values())))]]
    for library, by_attack in audit["seconds"].items():
        times.append([LIBRARIES[library], *(f"{s:.1f} s" for s in by_attack.values())])
    story.table(times, [0.3] + [0.2] * (len(times[0]) - 1))
    story.para("Wall time of each library over the eps grid, same points and device.", "caption")


def _attack_table(story: Story, attack: str, rows: list[dict[str, Any]]) -> None:
    ran = rows[-1]  # the largest eps: an attack ran there (at eps 0 none does)
    setting = ""
    if "steps" in ran and attack != "fgsm":
        start = "random start" if ran["random_start"] else "no random start"
        setting = f" ({ran['steps']} steps, {start})"
    story.h2(f"{attack_label(attack)}{setting}")
    table: list[list[object]] = [["eps", *LIBRARIES.values(), "run", "disagree", "verdict"]]
    highlight = {}
    for i, row in enumerate(rows, 1):
        accs = [fmt_pct(row["robust_acc"].get(name)) for name in LIBRARIES]
        run = fmt_pct(row.get("run_robust_acc"))
        table.append([fmt_eps(row["eps"]), *accs, run, row["disagree"], row["verdict"]])
        if row["verdict"] != PASS:
            highlight[i] = WARN
    story.table(table, [0.1, 0.13, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1], highlight=highlight)
