"""What a run says about itself: params from the config, its name, its ``advlab.*`` tags and
the sweep it belongs to.

Pure functions of the config and the environment (git, installed versions, Hydra's state); they
write nothing. :class:`advlab.tracking.Tracker` and :mod:`advlab.sweep_callback` log what they
return.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from advlab import __version__, naming
from advlab.config import PROJECT_ROOT
from advlab.naming import option_name
from advlab.tracking.store import MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH, clean_key, truncate

log = logging.getLogger(__name__)

# Environment variables through which a sweep's parent run reaches its jobs (set by
# advlab.sweep_callback.MlflowSweepCallback.on_multirun_start, beside naming.SWEEP_FILE).
ENV_PARENT_RUN_ID = "ADVLAB_SWEEP_PARENT_RUN_ID"
ENV_SWEEP_ID = "ADVLAB_SWEEP_ID"


# ------------------------------------------------------------------------------------ params
def param_value(value: Any) -> str:
    """``value`` as an MLflow param string; a whole float keeps its ``.0``."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return repr(value)  # 8.0 stays '8.0', so a swept float column stays one type
    return str(value)


def _resolved(cfg: DictConfig | Mapping[str, Any], *, enum_to_str: bool = False) -> dict[str, Any]:
    """The config as plain dicts and lists, interpolations resolved, Hydra's own node left out.

    Resolved one top-level node at a time: a child node still resolves interpolations against the
    whole config, and the ``hydra`` node (present in composed test configs, with values only a
    running Hydra job has) is never resolved.
    """
    data: dict[str, Any] = {}
    for key in cfg:
        if key == "hydra":
            continue
        value = cfg[key]
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(
                value, resolve=True, throw_on_missing=False, enum_to_str=enum_to_str
            )
        data[str(key)] = value
    return data


def flatten_config(cfg: DictConfig | Mapping[str, Any]) -> dict[str, str]:
    """The resolved config as MLflow params: dotted keys -> string values.

    ``attacks.*`` keeps only the attacks listed in ``eval.attacks``; the ``hydra`` node and the
    ``audit``, ``search`` and ``leaderboard`` nodes (settings of ``python -m advlab.audit``,
    ``python -m advlab.search`` and ``python -m advlab.leaderboard``, not of the run) are left out.
    Lists are one param (``eval.eps`` -> ``'[0.0, 1.0, 2.0]'``); values longer than MLflow's limit
    (6000 characters) are truncated with ``...``.
    """
    data = _resolved(cfg)
    data.pop("audit", None)
    data.pop("search", None)
    data.pop("leaderboard", None)
    chosen = set((data.get("eval") or {}).get("attacks") or [])
    if isinstance(data.get("attacks"), dict):
        data["attacks"] = {k: v for k, v in data["attacks"].items() if k in chosen}

    out: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        else:
            text = "{}" if isinstance(node, dict) else param_value(node)
            out[clean_key(prefix)] = truncate(text, MAX_PARAM_VAL_LENGTH)

    walk(data, "")
    return out


def typed_config_json(cfg: DictConfig) -> str:
    """The resolved config as JSON with its types kept (bools, numbers, lists; enums by name).

    Params are strings (``'True'``, ``'[0.0, 4.0]'``); this is what readers such as the report
    use instead of parsing params back. Hydra's own node is left out, as for params.
    """
    return json.dumps(_resolved(cfg, enum_to_str=True), indent=2, sort_keys=True)


# ---------------------------------------------------------------------------------- run name
def _short_float(x: float) -> str:
    """Compact number for run names: 0.5 -> '0.5', 0.0001 -> '1e-4', 0.0005 -> '5e-4', 0 -> '0'."""
    x = float(x)
    if x == 0:
        return "0"
    if abs(x) < 1e-2:
        mantissa, exp = f"{x:.2e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}e{int(exp)}"
    return f"{x:g}"


def derive_run_name(cfg: DictConfig) -> str:
    """``<tracking.run_name>-s<seed>``, else ``<data>-<model>-do<dropout>-wd<wd>[...]-s<seed>``.

    E.g. ``gender-course_cnn-do0.5-wd1e-4-s0``; ``-n<N>`` when ``data.limit_train`` is set,
    ``-flip``/``-shift<px>``/``-rot<deg>`` with augmentation, ``-at_<method>`` with adversarial
    training, ``-noes`` without early stopping: runs of a sweep get names that tell them apart,
    and the seeds of one setting differ by their last part only.
    """
    seed = f"s{cfg.seed}"
    if cfg.tracking.get("run_name"):
        return f"{cfg.tracking.run_name}-{seed}"
    return "-".join([*_setting_parts(cfg), seed])


def _setting_parts(cfg: DictConfig) -> list[str]:
    parts = [
        str(cfg.data.name),
        option_name(str(cfg.model._target_)),
        f"do{_short_float(cfg.model.get('dropout', 0.0) or 0.0)}",
        f"wd{_short_float(cfg.optimizer.get('weight_decay', 0.0) or 0.0)}",
    ]
    if cfg.data.get("limit_train"):
        parts.append(f"n{int(cfg.data.limit_train)}")
    parts += _augment_parts(cfg)
    method = str(cfg.train.adversarial.method)
    if method != "none":
        parts.append(f"at_{method}")
    if not cfg.train.early_stopping.enabled:
        parts.append("noes")
    return parts


def _augment_parts(cfg: DictConfig) -> list[str]:
    aug = cfg.data.get("augment") or {}
    parts = ["flip"] if aug.get("hflip") else []
    if aug.get("shift"):
        parts.append(f"shift{int(aug.shift)}")
    if aug.get("rotation"):
        parts.append(f"rot{_short_float(aug.rotation)}")
    return parts


def overfitting_controls(cfg: DictConfig) -> str:
    """Overfitting controls in use, e.g. ``dropout=0.5,weight_decay=0.0001,early_stopping,augment``.

    ``train_size=<N>`` is added when ``data.limit_train`` caps the training set; ``none`` if no
    control is in use. The value of ``advlab.controls`` in ``results/run_info.json``.
    """
    out = []
    dropout = float(cfg.model.get("dropout", 0.0) or 0.0)
    wd = float(cfg.optimizer.get("weight_decay", 0.0) or 0.0)
    if dropout > 0:
        out.append(f"dropout={dropout:g}")
    if wd > 0:
        out.append(f"weight_decay={wd:g}")
    if cfg.train.early_stopping.enabled:
        out.append("early_stopping")
    if _augment_parts(cfg):
        out.append("augment")
    if cfg.data.get("limit_train"):
        out.append(f"train_size={int(cfg.data.limit_train)}")
    return ",".join(out) or "none"


# --------------------------------------------------------------------------------------- tags
def _git(*args: str) -> str | None:
    try:
        res = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), *args],
            capture_output=True,
            text=True,
            timeout=10,
            # Read-only: never take index.lock (a concurrent commit must not be disturbed).
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def git_state() -> tuple[str, str]:
    """(commit sha or 'unknown', dirty flag 'true'/'false'/'unknown'); tolerant of no git at all."""
    commit = _git("rev-parse", "HEAD")
    if not commit:
        return "unknown", "unknown"
    status = _git("status", "--porcelain", "--untracked-files=no")
    dirty = "unknown" if status is None else ("true" if status else "false")
    return commit, dirty


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _device_and_precision(cfg: DictConfig) -> tuple[str, str]:
    """The device a run uses for ``cfg.device`` (``auto`` resolved) and ``train.precision`` as
    that device trains in it (``auto`` resolved to fp32 or bf16)."""
    from advlab.runtime import resolve_precision, select_device

    device = select_device(str(cfg.get("device", "auto")))
    return str(device), resolve_precision(str(cfg.train.precision), device)


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that started this process, ``python -m advlab ...`` for the CLI.

    A sweep job started by a launcher in its own process (submitit on SLURM runs
    ``submitit/_submit.py <folder>``) gets the command of its own point instead:
    ``python -m advlab <its overrides>``, which reruns that job alone.
    """
    argv = list(sys.argv if argv is None else argv)
    if argv and Path(argv[0]).name == "__main__.py" and Path(argv[0]).parent.name == "advlab":
        return shlex.join(["python", "-m", "advlab", *argv[1:]])
    overrides = _hydra_task_overrides()
    if argv and "submitit" in Path(argv[0]).parts and overrides is not None:
        return shlex.join(["python", "-m", "advlab", *overrides])
    return shlex.join(argv)


def run_tags(cfg: DictConfig, *, run_dir: Path) -> dict[str, str]:
    """The ``advlab.*`` tags of a run: what users filter on in the MLflow UI (dataset, model,
    adversarial training, seed) and where its files are. The descriptive facts are in
    :func:`run_facts` (``results/run_info.json``)."""
    tags = {
        naming.DATASET_TAG: str(cfg.data.name),
        naming.MODEL_TAG: option_name(str(cfg.model._target_)),
        naming.ADVERSARIAL_TRAINING_TAG: str(cfg.train.adversarial.method),
        naming.SEED_TAG: str(cfg.seed),
        naming.RUN_DIR_TAG: str(run_dir),
    }
    return {k: truncate(v, MAX_TAG_VAL_LENGTH) for k, v in tags.items()}


def run_facts(cfg: DictConfig) -> dict[str, str]:
    """The descriptive facts of a run (:data:`advlab.naming.INFO_KEYS`): attacks, overfitting
    controls, code and library versions, device, precision, the command and its overrides. The
    payload of ``results/run_info.json``; readers use :func:`advlab.naming.run_info`."""
    commit, dirty = git_state()
    device, precision = _device_and_precision(cfg)
    facts = {
        naming.ATTACKS_INFO: ",".join(str(a) for a in cfg.eval.attacks),
        naming.CONTROLS_INFO: overfitting_controls(cfg),
        naming.GIT_COMMIT_INFO: commit,
        naming.GIT_DIRTY_INFO: dirty,
        naming.VERSION_INFO: __version__,
        naming.TORCH_VERSION_INFO: _version("torch"),
        naming.TORCHATTACKS_VERSION_INFO: _version("torchattacks"),
        naming.DEVICE_INFO: device,
        naming.PRECISION_INFO: precision,
        naming.COMMAND_INFO: command_line(),
    }
    overrides = _hydra_task_overrides()
    if overrides is not None:
        facts[naming.OVERRIDES_INFO] = shlex.join(overrides)
    return facts


def _hydra_task_overrides() -> list[str] | None:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return [str(o) for o in HydraConfig.get().overrides.task]


def mlflow_context_tags() -> dict[str, str]:
    """MLflow's own source/user tags (``mlflow.source.name``, ``mlflow.user``, ...) if known."""
    try:
        from mlflow.tracking.context.registry import resolve_tags

        tags = resolve_tags({})
    except Exception as err:  # context providers probe git/notebooks; never fail a run for them
        log.debug("mlflow context tags unavailable: %s", err)
        return {}
    return {k: str(v) for k, v in tags.items() if k != naming.MLFLOW_RUN_NAME_TAG}


# -------------------------------------------------------------------------------------- sweeps
def sweep_context() -> dict[str, str] | None:
    """The sweep a Hydra multirun job belongs to: ``parent_run_id``, ``sweep_id``, ... or None.

    From ``$ADVLAB_SWEEP_PARENT_RUN_ID``/``$ADVLAB_SWEEP_ID`` (set by the sweep callback in the
    submitting process, inherited by local and joblib jobs), else from
    ``<hydra.sweep.dir>/mlflow_sweep.json`` (written by the callback; the sweep dir is shared with
    cluster jobs). A multirun job without the callback still gets a sweep id from its sweep dir.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if os.environ.get(ENV_PARENT_RUN_ID):
        parent = os.environ[ENV_PARENT_RUN_ID]
        return {"parent_run_id": parent, "sweep_id": os.environ.get(ENV_SWEEP_ID, parent)}
    if HydraConfig.initialized():
        hc = HydraConfig.get()
        if hc.mode == RunMode.MULTIRUN:
            sweep_dir = Path(str(hc.sweep.dir))
            info_file = sweep_dir / naming.SWEEP_FILE
            if info_file.is_file():
                return json.loads(info_file.read_text())
            return {"sweep_id": sweep_id_from_dir(sweep_dir)}
    return None


def sweep_tags(experiment_id: str) -> dict[str, str]:
    """``advlab.sweep`` and ``mlflow.parentRunId`` for a job of a sweep (empty outside one).

    A job is nested under the sweep's parent run only when both are in experiment
    ``experiment_id``: MLflow's UI shows no nesting across experiments.
    """
    sweep = sweep_context()
    if not sweep:
        return {}
    tags = {naming.SWEEP_TAG: str(sweep["sweep_id"])}
    parent = sweep.get("parent_run_id")
    if parent and sweep.get("experiment_id") in (None, experiment_id):
        tags[naming.MLFLOW_PARENT_TAG] = str(parent)
    elif parent:
        log.warning("sweep parent run %s is in another experiment; run not nested under it", parent)
    return tags


def sweep_id_from_dir(sweep_dir: Path) -> str:
    """Readable sweep id: ``.../multirun/2024-05-01/12-00-00`` -> ``'2024-05-01_12-00-00'``."""
    parts = Path(sweep_dir).parts
    return clean_key("_".join(parts[-2:]) if len(parts) >= 2 else str(sweep_dir))
