#!/usr/bin/env python3
"""Write docs/config.md, the reference of every config key, from the schemas.

    .venv/bin/python scripts/config_reference.py           # rewrite docs/config.md
    .venv/bin/python scripts/config_reference.py --check   # exit 1 when docs/config.md is stale

Each key's type comes from its schema (the dataclasses of ``advlab/config.py``), its meaning from
the comment beside the field there, its bound from the checks of ``advlab/validate.py`` (read from
that module's source, the one home of every bound), its choices from the enum it is typed with,
and its default from the composed config (the schema plus the option's YAML in ``conf/``).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import enum
import fnmatch
import io
import sys
import tokenize
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

# This project's advlab, whichever one the interpreter has installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from advlab import config as schemas  # noqa: E402
from advlab import validate  # noqa: E402

DOC = schemas.PROJECT_ROOT / "docs" / "config.md"
# Groups whose options add keys of their own: each option gets its section.
OPTION_GROUPS = ("data", "model", "optimizer")
BOUND_CHECKS = ("_at_least", "_positive", "_fraction", "_one_of", "_fail")

INTRO = """\
# Configuration reference

Look up any key you can set on the command line (`python -m advlab key=value`): its type, its
default, the values it accepts and what it does. Keys are grouped by config node, as
`python -m advlab --cfg job` prints them; options of the `data`, `model` and `optimizer` groups
(`data=gender`, `model=vgg_small`, ...) add keys of their own and have their own sections.

- **default** is what a run gets when neither an experiment nor the command line sets the key;
  **quickstart** is where `python -m advlab` (no experiment) differs, from `conf/preset/mnist.yaml`.
- **bound / choices** are checked before any data is read; a value outside them stops the run with
  one line naming the key. `???` is a value you must give; `${...}` is an interpolation.
- Eps values are in 1/255 pixel units everywhere (`eval.eps=[0,8]` means 0 and 8/255).
- Relative paths typed on the command line (`data.root`, `train.resume`, `eval.transfer_from`,
  `audit.run`) mean the folder you run the command in; paths in `conf/` mean the project folder.

This page is generated from the schemas (`advlab/config.py`) and the checks (`advlab/validate.py`):
after changing either, regenerate it with `.venv/bin/python scripts/config_reference.py`.
"""


def _compose(overrides: list[str]) -> tuple[DictConfig, dict[str, str]]:
    """The job config (what --cfg job prints) and the option chosen in each group."""
    with initialize_config_dir(config_dir=str(schemas.CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]  # --cfg job leaves it out too
    return cfg, choices


# ------------------------------------------------------------------------------- meanings
def field_comments() -> dict[tuple[str, str], str]:
    """(class name, field name) -> the comment beside the field in advlab/config.py (or the
    comment lines right above it)."""
    source = Path(schemas.__file__).read_text()
    comments = {
        tok.start[0]: tok.string.lstrip("#").strip()
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    }
    lines = source.splitlines()
    found = {}
    for cls in (n for n in ast.parse(source).body if isinstance(n, ast.ClassDef)):
        for stmt in cls.body:
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            span = range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1)
            text = [comments[i] for i in span if i in comments]
            above = stmt.lineno - 1
            while not text or above < stmt.lineno - 1:  # the comment block right above
                if above not in comments or not lines[above - 1].lstrip().startswith("#"):
                    break
                text.insert(0, comments[above])
                above -= 1
            if text:
                found[(cls.name, stmt.target.id)] = " ".join(text)
    return found


def meaning(schema: type, name: str, comments: dict[tuple[str, str], str]) -> str:
    for cls in schema.__mro__:
        if (cls.__name__, name) in comments:
            return comments[(cls.__name__, name)]
    return ""


# --------------------------------------------------------------------------------- bounds
def bounds() -> list[tuple[str, str]]:
    """(key pattern, bound) of every check in advlab/validate.py, keys as fnmatch patterns
    (``attacks.*.steps``), read from its source."""
    tree = ast.parse(Path(validate.__file__).read_text())
    found: list[tuple[str, str]] = []
    for func in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
        _visit(func.body, {}, found)
    return found


def _visit(body: list[ast.stmt], loop: dict[str, list[str]], found: list) -> None:
    for stmt in body:
        if (
            isinstance(stmt, ast.For)
            and isinstance(stmt.target, ast.Name)
            and isinstance(stmt.iter, ast.Tuple)
            and all(isinstance(e, ast.Constant) for e in stmt.iter.elts)
        ):
            for elt in stmt.iter.elts:
                _visit(stmt.body, {**loop, stmt.target.id: [elt.value]}, found)
            continue
        for node in ast.walk(stmt) if not isinstance(stmt, ast.For | ast.If) else []:
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in BOUND_CHECKS:
                found += _bound_of(node, loop)
        for field in ("body", "orelse"):
            if isinstance(stmt, ast.For | ast.If) and getattr(stmt, field, None):
                _visit(getattr(stmt, field), loop, found)


def _key_pattern(node: ast.expr, loop: dict[str, list[str]]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if not isinstance(node, ast.JoinedStr):
        return None
    parts = []
    for value in node.values:
        if isinstance(value, ast.Constant):
            parts.append(str(value.value))
        elif isinstance(value.value, ast.Name) and value.value.id in loop:
            parts.append(str(loop[value.value.id][0]))
        else:
            parts.append("*")
    return "".join(parts)


def _value(node: ast.expr) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return getattr(validate, node.id)
    if isinstance(node, ast.Tuple):
        return tuple(_value(e) for e in node.elts)
    raise ValueError(ast.dump(node))


def _bound_of(call: ast.Call, loop: dict[str, list[str]]) -> list[tuple[str, str]]:
    name = call.func.id
    key = _key_pattern(call.args[0], loop) if call.args else None
    if key is None:
        return []
    kw = {k.arg: _value(k.value) for k in call.keywords}
    null = ", or null" if kw.get("allow_none") else ""
    if name == "_at_least":
        return [(key, f">= {_value(call.args[2]):g}{null}")]
    if name == "_positive":
        return [(key, f"> 0{null}")]
    if name == "_fraction":
        low = "(" if kw.get("low_open") else "["
        high = "]" if kw.get("high_closed") else ")"
        return [(key, f"in {low}0, 1{high}")]
    if name == "_one_of":
        choices = _value(call.args[2]) if len(call.args) > 2 else ()
        if isinstance(choices, type) and issubclass(choices, enum.Enum):
            return []  # the enum type's choices are listed from the schema
        return [(key, "one of " + ", ".join(str(c) for c in choices) + null)]
    message = call.args[2] if len(call.args) > 2 else None  # _fail(key, value, why)
    if isinstance(message, ast.Constant) and str(message.value).startswith(("needs", "must")):
        return [(key, message.value)]  # a rule on the value; other messages explain a conflict
    return []


# ---------------------------------------------------------------------------------- rows
def _shown(value: Any) -> str:
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=False, enum_to_str=True)
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return str(value)


def _raw(node: DictConfig, key: str) -> Any:
    if OmegaConf.is_missing(node, key):
        return "???"
    if OmegaConf.is_interpolation(node, key):
        return node._get_node(key)._value()  # the ${...} text, as --cfg job prints it
    return node[key]


def _choices(annotation: str) -> str:
    names = [part.strip() for part in annotation.split("|")]
    for part in names:
        enum_type = getattr(schemas, part, None)
        if isinstance(enum_type, type) and issubclass(enum_type, enum.Enum):
            null = ", or null" if "None" in names else ""
            return "one of " + ", ".join(m.value for m in enum_type) + null
    return ""


def node_rows(
    path: str, node: DictConfig, quick: DictConfig | None, context: dict[str, Any]
) -> list[list[str]]:
    """Table rows (key, type, default, quickstart, bound / choices, meaning) of node's leaves."""
    schema = OmegaConf.get_type(node)
    fields = (
        {f.name: f for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else {}
    )
    rows = []
    for key in node:
        if isinstance(node._get_node(key), DictConfig):
            continue
        full = f"{path}.{key}" if path else str(key)
        annotation = str(fields[key].type) if key in fields else "Any"
        default = _shown(_raw(node, key))
        quickstart = ""
        if quick is not None:
            shown = _shown(_raw(quick, key))
            quickstart = shown if shown != default else ""
        rules = [b for pattern, b in context["bounds"] if fnmatch.fnmatchcase(full, pattern)]
        if "None" not in annotation:  # a check shared with optional keys
            rules = [rule.removesuffix(", or null") for rule in rules]
        rules += [c] if (c := _choices(annotation)) else []
        why = meaning(schema, key, context["comments"]) if fields else ""
        if not why:
            context["missing"].append(f"{schema.__name__}.{key} ({full})")
        rows.append([key, annotation, default, quickstart, "; ".join(rules), why])
    return rows


def _table(rows: list[list[str]], with_quickstart: bool) -> list[str]:
    head = ["key", "type", "default", "quickstart", "bound / choices", "meaning"]
    keep = [i for i in range(len(head)) if with_quickstart or head[i] != "quickstart"]
    out = ["| " + " | ".join(head[i] for i in keep) + " |", "|" + "---|" * len(keep)]
    for row in rows:
        cells = [row[i].replace("|", "\\|") for i in keep]
        cells[0] = f"`{cells[0]}`"
        for i in (2, 3) if with_quickstart else (2,):
            cells[i] = f"`{cells[i]}`" if cells[i] else ""
        out.append("| " + " | ".join(cells) + " |")
    return out


def _nodes(cfg: DictConfig, path: str = "") -> list[tuple[str, DictConfig]]:
    """Every dict node holding a leaf, depth first, as --cfg job prints them."""
    out = []
    if any(not isinstance(cfg._get_node(k), DictConfig) for k in cfg):
        out.append((path, cfg))
    for key in cfg:
        child = cfg._get_node(key)
        if isinstance(child, DictConfig):
            out += _nodes(child, f"{path}.{key}" if path else str(key))
    return out


def render() -> tuple[str, list[str]]:
    """(docs/config.md's text, the schema fields that have no meaning to show)."""
    context = {"bounds": bounds(), "comments": field_comments(), "missing": []}
    (base, chosen), (quick, _) = _compose(["preset=none"]), _compose([])
    lines = [INTRO]
    shown: dict[str, list[list[str]]] = {}  # the default options' rows, by node
    for path, node in _nodes(base):
        group = path.split(".")[0]
        title = "top level" if not path else f"`{path}`"
        if group in OPTION_GROUPS:
            title += f" ({group}={chosen[group]}, the default)"
        quick_node = OmegaConf.select(quick, path) if path else quick
        rows = node_rows(path, node, quick_node, context)
        shown[path] = [row[:3] + [""] + row[4:] for row in rows]
        lines += ["", f"## {title}", ""]
        lines += _table(rows, with_quickstart=True)
    for group in OPTION_GROUPS:
        for option in sorted(p.stem for p in (schemas.CONF_DIR / group).glob("*.yaml")):
            if option == chosen[group]:
                continue
            cfg, _ = _compose([f"{group}={option}", "preset=none"])
            for path, node in _nodes(OmegaConf.select(cfg, group), group):
                rows = node_rows(path, node, None, context)
                if path != group and rows == shown.get(path):
                    continue  # a sub-node every option shares (data.augment): listed above
                where = f" (`{path}`)" if path != group else ""
                lines += ["", f"## `{group}={option}`{where}", ""]
                lines += _table(rows, with_quickstart=False)
    return "\n".join(lines) + "\n", context["missing"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/config.md is stale")
    args = parser.parse_args(argv)
    text, missing = render()
    if missing:
        print("fields without a meaning (add a comment in advlab/config.py):", *missing, sep="\n  ")
        return 1
    if args.check:
        stale = not DOC.exists() or DOC.read_text() != text
        print(f"{DOC} is {'stale: run scripts/config_reference.py' if stale else 'up to date'}")
        return int(stale)
    DOC.write_text(text)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
