#!/usr/bin/env bash
# Create or refresh .venv so that `make run` / `make test` work on a fresh machine.
# Idempotent: re-installs only when pyproject.toml (or this script) changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.bootstrap-hash
# torch is pinned and installed first: pinned, pip takes the local CPU wheel; unpinned (or pulled in
# by another package) it downloads several GB of CUDA packages.
TORCH_SPEC=${ADVLAB_TORCH_SPEC:-torch==2.13.0}
# torchattacks' metadata pins requests~=2.25.1 and asks for torchvision; its attacks need neither,
# and resolving them against mlflow makes pip backtrack for many minutes. So: --no-deps, last.
TORCHATTACKS_SPEC=torchattacks==3.5.1

want=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)
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
pip_install "$TORCH_SPEC"
pip_install -e ".[dev]"
pip_install --no-deps "$TORCHATTACKS_SPEC"
echo "$want" > "$STAMP"
echo "bootstrap: done in $(( $(date +%s) - start )) s"
