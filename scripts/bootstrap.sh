#!/usr/bin/env bash
# Create or refresh .venv so that `make run` / `make test` work on a fresh machine.
# Idempotent: re-installs only when pyproject.toml (or this script) changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.bootstrap-hash
# torch is pinned and installed first, so nothing later pulls another build. Which build
# `torch==2.13.0` is depends on the package index: this project's machines serve a CPU wheel; on
# standard PyPI (Linux x86_64) it is the CUDA build with several GB of nvidia-* packages. Choose one
# explicitly with ADVLAB_TORCH_SPEC (pip arguments, word-split), e.g.
#   ADVLAB_TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" make test
#   ADVLAB_TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126" make run
TORCH_SPEC=${ADVLAB_TORCH_SPEC:-torch==2.13.0}
# torchattacks' metadata pins requests~=2.25.1 and asks for torchvision; its attacks need neither,
# and resolving them against mlflow makes pip backtrack for many minutes. So: --no-deps, last.
TORCHATTACKS_SPEC=torchattacks==3.5.1

# A changed ADVLAB_TORCH_SPEC re-installs too (a CPU .venv asked for CUDA must not stay CPU).
want=$( (cat pyproject.toml scripts/bootstrap.sh; echo "$TORCH_SPEC") | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
  exit 0
fi

echo "bootstrap: installing advlab into $VENV (takes about 1-2 minutes on a fresh machine)"
start=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip_install() {
  # Drop pip's notes about this machine's local index folders; keep every real warning and error.
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@" 2>&1 |
    { grep -v "is ignored: it is neither a file nor a directory" || true; }
  return "${PIPESTATUS[0]}"
}
# shellcheck disable=SC2086  # word-split on purpose: the spec may carry --index-url
pip_install $TORCH_SPEC
pip_install -e ".[dev]"
pip_install --no-deps "$TORCHATTACKS_SPEC"
echo "$want" > "$STAMP"
echo "bootstrap: done in $(( $(date +%s) - start )) s"
