#!/usr/bin/env bash
# What `make test-cluster` needs beyond .venv, installed only when missing: SLURM, munge and the
# PostgreSQL server (Debian/Ubuntu packages, apt as root) and the PostgreSQL driver of
# `mlflow server` (the `cluster` extra of pyproject.toml, into .venv).
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "$(id -u)" -ne 0 ]; then
  echo "make test-cluster: needs root (it starts slurmd, which runs the jobs as root)" >&2
  exit 1
fi

# package -> a file it installs
declare -A provides=(
  [slurm-wlm]=/usr/sbin/slurmctld
  [munge]=/usr/sbin/munged
  [postgresql]="/usr/lib/postgresql/*/bin/postgres"
)
missing=()
for package in slurm-wlm munge postgresql; do
  # shellcheck disable=SC2086  # the glob is meant to expand
  compgen -G ${provides[$package]} > /dev/null || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  if ! command -v apt-get > /dev/null; then
    echo "make test-cluster: install ${missing[*]} (no apt-get here)" >&2
    exit 1
  fi
  echo "test-cluster: apt-get install ${missing[*]}"
  apt-get update -q > /dev/null
  # the daemons are started by tests/cluster, not by the packages (no systemd needed)
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" > /dev/null
fi

if ! .venv/bin/python -c "import psycopg2" 2> /dev/null; then
  echo "test-cluster: pip install -e '.[cluster]' (psycopg2-binary)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[cluster]" 2>&1 |
    { grep -v "is ignored: it is neither a file nor a directory" || true; }
  exit "${PIPESTATUS[0]}"
fi
