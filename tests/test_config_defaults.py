"""Defaults have one home, the schemas: no YAML under conf/ restates a schema's default.

A key in a YAML file whose value equals the default of the schema it lands in (advlab's
dataclasses in ``advlab.config``, Hydra's and its plugins' for ``hydra.*``) is a second copy of that
default, which drifts when the schema changes. It is allowed only where it is needed: where dropping
it changes the composed config (an experiment switching back on what its parent switched off).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from advlab.config import CONF_DIR

# Keys kept whatever their value: what an option instantiates, and Hydra's own list.
KEPT = {"_target_", "defaults"}


def _yaml_files(conf_dir: Path) -> list[Path]:
    return sorted(conf_dir.rglob("*.yaml"))


def _header_package(path: Path) -> str | None:
    for line in path.read_text().splitlines():
        if line.startswith("# @package"):
            return line.split(None, 2)[2].strip()
    return None


def _primary_choices(conf_dir: Path) -> dict[str, str]:
    """group -> option chosen by conf/config.yaml's defaults list."""
    choices = {}
    for entry in yaml.safe_load((conf_dir / "config.yaml").read_text())["defaults"]:
        if isinstance(entry, dict):
            ((key, value),) = entry.items()
            choices[key.removeprefix("optional ").split("@")[0]] = str(value)
    return choices


def _placement(conf_dir: Path, path: Path) -> tuple[str, list[str], str]:
    """(primary config, overrides that compose this file, dotted path its keys land under)."""
    rel = path.relative_to(conf_dir).with_suffix("")
    if len(rel.parts) == 1:
        return rel.name, [], ""
    group, option = "/".join(rel.parts[:-1]), rel.parts[-1]
    package = _header_package(path)
    if group == "attack":  # every attack option is composed under attacks.<option>
        return "config", [], f"attacks.{option}"
    choices = _primary_choices(conf_dir)
    if choices.get(group) == option:
        overrides = []
    elif group in choices or group.startswith("hydra/"):
        overrides = [f"{group}={option}"]
    else:
        overrides = [f"+{group}={option}"]
    if package is None:
        package = group.replace("/", ".")
    return "config", overrides, "" if package == "_global_" else package


def _leaves(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, raw value) of every leaf of a YAML mapping; lists are leaves."""
    if not isinstance(node, dict):
        return [(prefix, node)]
    out = []
    for key, value in node.items():
        if key in KEPT or (not prefix and key == "hydra" and _is_sweep_only(value)):
            continue
        out += _leaves(value, f"{prefix}.{key}" if prefix else str(key))
    return out


def _is_sweep_only(node: Any) -> bool:
    # An experiment's hydra.sweeper.params is its sweep, which no schema defaults.
    return isinstance(node, dict) and set(node) == {"sweeper"}


def _compose(conf_dir: Path, primary: str, overrides: list[str]) -> Any:
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        return compose(primary, overrides=overrides, return_hydra_config=True)


def _schema_default(cfg: Any, dotted: str) -> tuple[bool, Any]:
    """(whether a schema types the key, its default there, raw: ``???``, interpolations as text)."""
    parent, _, key = dotted.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    schema = OmegaConf.get_type(node) if OmegaConf.is_config(node) else None
    if schema is None or not dataclasses.is_dataclass(schema):
        return False, None
    defaults = OmegaConf.to_container(OmegaConf.structured(schema), resolve=False, enum_to_str=True)
    return (True, defaults[key]) if key in defaults else (False, None)


def _same(value: Any, default: Any) -> bool:
    if isinstance(value, bool) != isinstance(default, bool):
        return False  # YAML 1 is not the schema's True
    if isinstance(value, list) and isinstance(default, list):
        return len(value) == len(default) and all(map(_same, value, default))
    if isinstance(value, dict) or isinstance(default, dict):
        return False
    return value == default


def _without(path: Path, dotted: str) -> str:
    """The file's text with one key removed (its ``# @package`` line kept)."""
    data = yaml.safe_load(path.read_text())
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        node = node[key]
    del node[last]
    package = _header_package(path)
    head = f"# @package {package}\n" if package else ""
    return head + yaml.safe_dump(data, sort_keys=False)


def restated_defaults(conf_dir: Path, scratch: Path, only: list[str] | None = None) -> list[str]:
    """``file: key = value`` for every key of a YAML under conf_dir (or of the files ``only``
    names, relative to it) that restates its schema's default and that the composed config does
    not need (dropping it changes nothing)."""
    files = [conf_dir / f for f in only] if only else _yaml_files(conf_dir)
    composed: dict[tuple[str, ...], Any] = {}  # the attack options all compose the default
    found = []
    for path in files:
        raw = yaml.safe_load(path.read_text()) or {}
        primary, overrides, package = _placement(conf_dir, path)
        for key, value in _leaves(raw):
            dotted = f"{package}.{key}" if package else key
            run = (primary, *overrides)
            if run not in composed:
                composed[run] = _compose(conf_dir, primary, overrides)
            typed, default = _schema_default(composed[run], dotted)
            if not typed or not _same(value, default):
                continue
            if _needed(conf_dir, scratch, path, key, primary, overrides, composed[run]):
                continue
            found.append(f"{path.relative_to(conf_dir.parent)}: {key} = {value!r}")
    return found


def _needed(
    conf_dir: Path,
    scratch: Path,
    path: Path,
    key: str,
    primary: str,
    overrides: list[str],
    cfg: Any,
) -> bool:
    """Whether dropping ``key`` from ``path`` changes the composed config (job and hydra)."""
    copy = scratch / "conf"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(conf_dir, copy)
    (copy / path.relative_to(conf_dir)).write_text(_without(path, key))
    changed = _compose(copy, primary, overrides)
    return _comparable(changed) != _comparable(cfg)


def _comparable(cfg: Any) -> str:
    # hydra.runtime and hydra.job name where the config was read from (the scratch copy).
    cfg = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
    for volatile in ("runtime", "job"):
        cfg.get("hydra", {}).pop(volatile, None)
    return yaml.safe_dump(cfg, sort_keys=False)


def test_no_yaml_restates_a_schema_default(tmp_path: Path) -> None:
    found = restated_defaults(CONF_DIR, tmp_path)
    assert not found, "restated schema defaults (remove them):\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("file", "line", "expected"),
    [
        ("model/course_cnn.yaml", "dropout: 0.0", "model/course_cnn.yaml: dropout = 0.0"),
        ("eval/default.yaml", "sanity: {tolerance: 0.01}", "eval/default.yaml: sanity.tolerance"),
        ("experiment/gender_cnn.yaml", "seed: 0", "experiment/gender_cnn.yaml: seed = 0"),
        ("hydra/launcher/slurm.yaml", "nodes: 1", "hydra/launcher/slurm.yaml: nodes = 1"),
    ],
)
def test_a_restated_default_is_named_with_its_file_and_key(
    tmp_path: Path, file: str, line: str, expected: str
) -> None:
    conf = tmp_path / "src" / "conf"
    shutil.copytree(CONF_DIR, conf)
    target = conf / file
    target.write_text(target.read_text() + line + "\n")
    found = restated_defaults(conf, tmp_path, only=[file])
    assert len(found) == 1 and found[0].startswith(f"conf/{expected}"), found


def test_a_default_needed_to_undo_a_parent_experiment_is_allowed(tmp_path: Path) -> None:
    # cifar10_fool turns early stopping off; an experiment built on it turns it back on with the
    # schema's own default, and must be allowed to.
    conf = tmp_path / "src" / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "experiment" / "child.yaml").write_text(
        "# @package _global_\ndefaults:\n  - cifar10_fool\n"
        "train:\n  early_stopping:\n    enabled: true\n"
    )
    assert restated_defaults(conf, tmp_path, only=["experiment/child.yaml"]) == []
