"""The recorded contract: every name a run writes and a reader reads back, defined once.

A run leaves MLflow params, metrics, tags and artifacts, and the same files in its run directory.
Writers (pipeline, tracking, the evaluation's tables, fit) and readers (report, ``advlab.results``,
the audit, the checkpoint sources, ``scripts/``) import these names; ``tests/test_contract.py``
fails on a recorded name spelled as a literal anywhere else. docs/architecture.md ("The recorded
contract") lists each name with its writer and readers.

Names written by earlier releases are still read: :data:`LEGACY_METRICS`, :data:`LEGACY_ARTIFACTS`
and :data:`LEGACY_TAG_PREFIXES` map them onto today's names, and every reader goes through
:func:`current_metric` / :func:`artifact_candidates`.

Units: eps is in 1/255 units in configs, metric names and tables, and in pixel units ([0, 1]
images) only where a tensor is perturbed (:func:`to_pixels`).
"""

from __future__ import annotations

import re

# ----------------------------------------------------------------------------------- units
PIXEL_LEVELS = 255.0  # eps of the config, metric names and tables is in 1/255 units


def to_pixels(eps: float) -> float:
    """Eps (or a step size) from 1/255 units to pixel units of a [0, 1] image: 8 -> 8/255."""
    return float(eps) / PIXEL_LEVELS


def madry_step(eps: float, steps: int) -> float:
    """Madry et al.'s PGD step size 2.5 * eps / steps (same units as ``eps``): enough to reach
    the ball's boundary from its centre and move along it."""
    return 2.5 * float(eps) / max(int(steps), 1)


def format_eps(eps: float) -> str:
    """Eps in 1/255 units as it appears in metric names: 8.0 -> '8', 0.5 -> '0.5'."""
    eps = float(eps)
    return str(int(eps)) if eps.is_integer() else f"{eps:g}"


# ------------------------------------------------------------------------- run directory
# Paths relative to a run directory; each file is also the MLflow artifact of the same path.
CONFIG_DIR = "config"
CONFIG_FILE = "config.json"  # the resolved config with its types (run dir root; artifact below)
CONFIG_ARTIFACT = f"{CONFIG_DIR}/{CONFIG_FILE}"
HYDRA_DIR = "hydra"  # Hydra's own .hydra/ files (config.yaml, overrides.yaml)
RESULTS_DIR = "results"
GRIDS_DIR = "grids"  # example-grid PNGs (artifact path; results/grids/ in the run dir)
MODEL_DIR = "model"
MODEL_FILE = "model.pt"  # the trained weights (state dict + what rebuilds the model)
MODEL_ARTIFACT = f"{MODEL_DIR}/{MODEL_FILE}"
CHECKPOINTS_DIR = "checkpoints"  # last.pt / best.pt for train.resume
MLFLOW_RUN_FILE = "mlflow_run.json"  # the MLflow run this directory belongs to (resume)
SWEEP_FILE = "mlflow_sweep.json"  # in a Hydra sweep dir: the sweep's parent run (cluster jobs)


def _result(name: str) -> str:
    return f"{RESULTS_DIR}/{name}"


RESULTS_JSON = _result("results.json")  # every headline metric of the run, as logged
VERDICT_JSON = _result("verdict.json")  # {"verdict", "reason", "checks": [...]}, as CHECKS_JSON
CERTIFIED_CSV = _result("certified.csv")  # per point and eps: certified, margin lower bound
CHECKS_JSON = _result("checks.json")  # the evaluation's checks: [{name, status, evidence}]
ROBUSTNESS_JSON = _result("robustness.json")  # the eps curve per attack, with n and CIs
ROBUSTNESS_CSV = _result("robustness.csv")
ROBUSTNESS_TABLE = _result("robustness_table.json")  # the same, as an MLflow table (UI)
PER_CLASS_CSV = _result("per_class.csv")
CONFUSION_JSON = _result("confusion.json")
AUDIT_JSON = _result("audit.json")  # python -m advlab.audit
RUN_INFO_JSON = _result("run_info.json")  # descriptive facts that are not tags (INFO_KEYS)
# Earlier releases' artifact names -> today's (readers try both, today's first).
LEGACY_ARTIFACTS = {CHECKS_JSON: (_result("sanity.json"),)}


def artifact_candidates(path: str) -> tuple[str, ...]:
    """``path`` and the names earlier releases wrote the same artifact under, today's first."""
    return (path, *LEGACY_ARTIFACTS.get(path, ()))


# ------------------------------------------------------------------------------------ tags
# Tags are what users filter and sort on in the MLflow UI, and what the lifecycle needs.
TAG_PREFIX = "advlab."
DATASET_TAG = "advlab.dataset"
MODEL_TAG = "advlab.model"
ADVERSARIAL_TRAINING_TAG = "advlab.adversarial_training"
SEED_TAG = "advlab.seed"
VERDICT_TAG = "advlab.verdict"  # pass | warn | fail
VERDICT_REASON_TAG = "advlab.verdict_reason"  # the one line naming the first problem
CHECK_TAG_PREFIX = "advlab.check."  # advlab.check.<name> = warn | fail (passing checks: no tag)
RUN_DIR_TAG = "advlab.run_dir"  # where a run's files (model/model.pt, results/) live
ERROR_TAG = "advlab.error"  # a FAILED run: the exception
STOP_REASON_TAG = "advlab.stop_reason"  # a KILLED run: the signal or Ctrl-C that stopped it
KILLED_REASON_TAG = "advlab.killed_reason"  # a run found dead by the liveness sweep
RESUMED_FROM_TAG = "advlab.resumed_from"
RESUMED_CHANGES_TAG = "advlab.resumed_changes"
# liveness: which process owns a RUNNING run, and when it last said so
HOST_TAG = "advlab.host"
PID_TAG = "advlab.pid"
PID_NAMESPACE_TAG = "advlab.pid_namespace"
PROCESS_START_TAG = "advlab.process_start"
HEARTBEAT_TAG = "advlab.heartbeat"
# sweeps: a job's sweep, and the parent run's description of it
SWEEP_TAG = "advlab.sweep"
SWEEP_PARENT_TAG = "advlab.sweep_parent"
SWEEP_DIR_TAG = "advlab.sweep_dir"
SWEEP_PARAMS_TAG = "advlab.sweep_params"
LAUNCHER_TAG = "advlab.launcher"
# Descriptive facts: in results/run_info.json (RUN_INFO_JSON), no longer tags. Readers use
# run_info(), which also reads them from the tags of runs recorded by earlier releases.
ATTACKS_INFO = "advlab.attacks"
CONTROLS_INFO = "advlab.controls"
GIT_COMMIT_INFO = "advlab.git_commit"
GIT_DIRTY_INFO = "advlab.git_dirty"
VERSION_INFO = "advlab.version"
TORCH_VERSION_INFO = "advlab.torch_version"
TORCHATTACKS_VERSION_INFO = "advlab.torchattacks_version"
DEVICE_INFO = "advlab.device"
PRECISION_INFO = "advlab.precision"
COMMAND_INFO = "advlab.command"
OVERRIDES_INFO = "advlab.overrides"
INFO_KEYS = (
    ATTACKS_INFO,
    CONTROLS_INFO,
    GIT_COMMIT_INFO,
    GIT_DIRTY_INFO,
    VERSION_INFO,
    TORCH_VERSION_INFO,
    TORCHATTACKS_VERSION_INFO,
    DEVICE_INFO,
    PRECISION_INFO,
    COMMAND_INFO,
    OVERRIDES_INFO,
)
# Earlier releases' per-check tags (advlab.sanity.<name>, advlab.sanity = worst status).
LEGACY_TAG_PREFIXES = {CHECK_TAG_PREFIX: "advlab.sanity."}
LEGACY_CHECKS_TAG = "advlab.sanity"
RUN_ID = re.compile(r"[0-9a-f]{32}")  # how MLflow spells a run id (audit.run, eval.transfer_from)
# MLflow's own tags advlab sets
MLFLOW_PARENT_TAG = "mlflow.parentRunId"
MLFLOW_RUN_NAME_TAG = "mlflow.runName"
MLFLOW_NOTE_TAG = "mlflow.note.content"  # the run's description in the UI (markdown)


def check_tag(name: str) -> str:
    """The tag of check ``name``: ``advlab.check.<name>``."""
    return f"{CHECK_TAG_PREFIX}{name}"


def run_info(tags: dict[str, str], info: dict[str, str] | None) -> dict[str, str]:
    """The descriptive facts of a run (keys :data:`INFO_KEYS`): from ``results/run_info.json``
    (``info``), else from the tags of a run recorded before they moved there."""
    out = {key: tags[key] for key in INFO_KEYS if key in tags}
    out.update({key: str(value) for key, value in (info or {}).items() if key in INFO_KEYS})
    return out


def checks_from_tags(tags: dict[str, str]) -> dict[str, str]:
    """check name -> status from a run's tags, today's ``advlab.check.*`` or the older
    ``advlab.sanity.*`` (which also recorded passing checks)."""
    out: dict[str, str] = {}
    for prefix in (LEGACY_TAG_PREFIXES[CHECK_TAG_PREFIX], CHECK_TAG_PREFIX):
        out.update({k.removeprefix(prefix): v for k, v in tags.items() if k.startswith(prefix)})
    return out


# --------------------------------------------------------------------------------- metrics
WORST_CASE = "worst_case"  # pseudo-attack name: per-example worst case over all attacks run
MARGIN = "margin"  # the escalation's margin-loss attack (APGD-T, APGD-DLR or logit-margin PGD)
CLEAN_ACC = "clean_acc"  # on the whole evaluated test split (n: CLEAN_N)
CLEAN_N = "clean_n"  # how many test points the clean accuracy is over
POINTS_CLEAN_ACC = "points_clean_acc"  # clean accuracy on the ROBUST_N evaluated points
# what always answering the most frequent class of those points keeps, at every eps
CONSTANT_ACC = "constant_acc"
ROBUST_N = "robust_n"  # how many points every robust figure is over (eval.n_examples)
NUM_PARAMS = "num_params"
BEST_EPOCH = "best_epoch"
STOPPED_EPOCH = "stopped_epoch"
# Per-epoch metrics (step = epoch) of every run.
TRAIN_LOSS, TRAIN_ACC, VAL_LOSS, VAL_ACC = "train_loss", "train_acc", "val_loss", "val_acc"
LR, EPOCH_SECONDS, IMAGES_PER_S, GEN_GAP = "lr", "epoch_seconds", "images_per_s", "gen_gap"
# Per-epoch accuracies under attack on a validation subset (train.adversarial.val_robust).
VAL_PGD_ACC = "val_pgd_acc"  # PGD (val_robust_steps): the early-stopping monitor
VAL_FGSM_ACC = "val_fgsm_acc"  # FGSM on the same subset: with PGD's, shows catastrophic overfitting
EPOCH_METRICS = (
    TRAIN_LOSS,
    TRAIN_ACC,
    VAL_LOSS,
    VAL_ACC,
    LR,
    EPOCH_SECONDS,
    IMAGES_PER_S,
    GEN_GAP,
    VAL_PGD_ACC,
    VAL_FGSM_ACC,
)
# Earlier releases' metric names -> today's.
LEGACY_METRICS = {"val_robust_acc": VAL_PGD_ACC}


def current_metric(name: str) -> str:
    """Today's name of metric ``name`` (a name written by an earlier release is mapped)."""
    return LEGACY_METRICS.get(name, name)


def robust_acc_key(attack: str, eps: float) -> str:
    """Robust accuracy of ``attack`` at ``eps`` (1/255 units): ``robust_acc/<attack>/eps_<e>``."""
    return f"robust_acc/{attack}/eps_{format_eps(eps)}"


def asr_key(attack: str, eps: float) -> str:
    """Attack success rate (over points correct before the attack): ``asr/<attack>/eps_<e>``."""
    return f"asr/{attack}/eps_{format_eps(eps)}"


def certified_acc_key(eps: float) -> str:
    """Certified accuracy at ``eps`` (1/255), the bracket's lower end: ``certified_acc/eps_<e>``."""
    return f"certified_acc/eps_{format_eps(eps)}"


def parse_certified_metric(name: str) -> float | None:
    """The eps of a name made by :func:`certified_acc_key`; None for any other name."""
    prefix = "certified_acc/eps_"
    if not name.startswith(prefix):
        return None
    try:
        return float(name.removeprefix(prefix))
    except ValueError:
        return None


EVAL_SECONDS_PREFIX = "eval_seconds/"
# the evaluation's parts, in the order they run (eval_seconds/<part>)
EVAL_PARTS = ("clean", "attacks", "escalation", "checks", "certify", "grids")


def eval_seconds_key(part: str) -> str:
    """``eval_seconds/<part>``: wall seconds of one part of the evaluation (:data:`EVAL_PARTS`)."""
    return f"{EVAL_SECONDS_PREFIX}{part}"


def escalation_points_key(eps: float) -> str:
    """Number of points the escalation re-attacked at ``eps`` (1/255 units)."""
    return f"escalation/points/eps_{format_eps(eps)}"


def escalation_flips_key(eps: float) -> str:
    """Number of points the escalation broke at ``eps`` (every other attack failed)."""
    return f"escalation/flips/eps_{format_eps(eps)}"


AUDIT_TAG = "advlab.audit"  # python -m advlab.audit's verdict on the run (pass | warn)


def audit_acc_key(library: str, attack: str, eps: float) -> str:
    """The audit's robust accuracy of ``library``'s ``attack`` at ``eps``:
    ``audit/<library>/<attack>/eps_<e>``."""
    return f"audit/{library}/{attack}/eps_{format_eps(eps)}"


def audit_seconds_key(library: str, attack: str) -> str:
    """The audit's wall time of ``library``'s ``attack`` over the eps grid."""
    return f"audit/{library}/{attack}/seconds"


_EPS_METRIC_KINDS = ("robust_acc", "asr")


def parse_eps_metric(name: str) -> tuple[str, str, float] | None:
    """``(kind, attack, eps)`` of a name made by :func:`robust_acc_key` or :func:`asr_key`.

    The one reader of those names: ``'robust_acc/pgd/eps_8'`` -> ``('robust_acc', 'pgd', 8.0)``;
    any other name (``clean_acc``, ``audit/...``) -> None.
    """
    kind, sep, rest = name.partition("/")
    attack, sep2, eps_part = rest.rpartition("/")
    if kind not in _EPS_METRIC_KINDS or not sep or not sep2 or not attack or "/" in attack:
        return None
    if not eps_part.startswith("eps_"):
        return None
    try:
        eps = float(eps_part.removeprefix("eps_"))
    except ValueError:
        return None
    return kind, attack, eps


def option_name(target: str) -> str:
    """Option name from a ``_target_``: 'advlab.models.zoo.course_cnn' -> 'course_cnn'."""
    return target.rsplit(".", 1)[-1]


# --- added by training and attacks
# The evaluation's other files, relative to a run directory like RESULTS_JSON.
ADVERSARIAL_DIR = "adversarial"  # eval.save_adversarial: <attack>_eps_<e>.npz (under results/)
TRANSFER_CSV = _result("transfer.csv")  # eval.transfer_from: source x target accuracies
TRANSFER_JSON = _result("transfer.json")

# --- added by config
AUTOATTACK_GAP_JSON = _result("autoattack_gap.json")  # scripts/autoattack_gap.py, in the run dir

# --- added by tracking
TRAIN_SECONDS = "train_seconds"  # wall-clock seconds of the fit loop
# Sweep parent run: how many of its jobs ended in each status (jobs_finished, jobs_failed, ...).
SWEEP_JOBS = "jobs"


def sweep_jobs_key(status: str) -> str:
    """Number of a sweep's jobs that ended ``status``: ``jobs_finished``, ``jobs_failed``, ..."""
    return f"{SWEEP_JOBS}_{status.lower()}"


# results.json (and the dict pipeline.run returns): the verdict beside the metrics.
VERDICT_KEY = "verdict"
VERDICT_REASON_KEY = "verdict_reason"
# MLflow dataset inputs of a run: one per split, named <data.name>/<split>, in MLflow's contexts.
DATASET_SPLITS = ("train", "val", "test")
DATASET_CONTEXTS = {"train": "training", "val": "validation", "test": "test"}
LOGGED_MODEL_NAME = "model"  # the run's MLflow PyTorch model (a LoggedModel: models:/<model_id>)


def dataset_name(data: str, split: str) -> str:
    """Name of a run's dataset input: ``gender/train``, ``mnist/test``."""
    return f"{data}/{split}"


REPORT_ARTIFACT_DIR = "report"  # the run's PDF report (artifact path)

# --- added by search (python -m advlab.search)
# The search's MLflow run (named search-<study>) and its trials' runs (its children).
SEARCH_TAG = "advlab.search"  # the Optuna study's name, on the search run and every trial run
SEARCH_PARENT_TAG = "advlab.search_parent"  # "true" on the search run itself
SEARCH_TRIAL_TAG = "advlab.search_trial"  # a trial run: the Optuna trial number it belongs to
SEARCH_STORAGE_TAG = "advlab.search_storage"  # the search run: its Optuna storage URL
SEARCH_BEST_JSON = _result("search_best.json")  # best trial: number, value, settings, command
SEARCH_TRIALS_CSV = _result("search_trials.csv")  # every finished trial, one row each
# Search run metrics, logged when it ends.
SEARCH_TRIALS = "search/trials"  # finished trials (complete or failed with an error)
SEARCH_FEASIBLE = "search/feasible"  # complete trials meeting every constraint
SEARCH_BEST_VALUE = "search/best_value"  # the best feasible trial's objective (mean over seeds)
SEARCH_BEST_CLEAN = "search/best_clean_acc"  # its mean clean accuracy
SEARCH_BEST_TRIAL = "search/best_trial"  # its Optuna trial number


def search_run_name(study: str) -> str:
    """Name of a search's MLflow run: ``search-<study>``."""
    return f"search-{study}"
