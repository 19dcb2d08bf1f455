#!/usr/bin/env bash
# The course's steps on the gender faces, each over 3 seeds: the measurements of docs/course.md.
#   GENDER_ROOT=/path/to/DataBases scripts/run_course.sh [STEP ...]
# STEP: a gender experiment of conf/experiment/, with or without its gender_ prefix (fool,
# cnn_dropout, gender_overfitting, ...), or figures (default: every one, then the figures). Every
# experiment on data=gender is a step except transfer, which needs a source run
# (scripts/run_experiments.sh runs it).
# Without GENDER_ROOT it reads the development copy in ../shared/data/gender (tags 5k / test1k,
# added only for it). Each step prints its wall time and appends it to runs/course-logs/times.tsv;
# then `scripts/results_table.py <experiment>` prints its mean ± std over the seeds, and each
# experiment's PDF (reports/) has its figures also as PNGs in runs/course-figures/<experiment>/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh

SHARED=$(pwd)/../shared/data
GENDER_ROOT=${GENDER_ROOT:-$SHARED/gender}
dev_tags=""
if [ "$(realpath -m "$GENDER_ROOT")" = "$(realpath -m "$SHARED/gender")" ]; then
  dev_tags="data.train=5k data.test=test1k"
fi
GENDER_TAGS=${GENDER_TAGS-$dev_tags}
SEEDS=${SEEDS:-0,1,2}
PY=.venv/bin/python
LOGS=runs/course-logs
mkdir -p "$LOGS"

mapfile -t STEPS < <($PY -c '
from advlab.config import experiment_names
print(*(name for name in experiment_names(data="gender") if name != "transfer"), sep="\n")
')
# The course measures the overfitting controls on 1k faces with early stopping: dropout x weight
# decay x seeds.
declare -A EXTRA=([gender_overfitting]="data.limit_train=1000 train.early_stopping.enabled=true")

step() {  # name, then the arguments of python -m advlab
  local name=$1; shift
  echo "== $name: python -m advlab $*"
  local start=$(date +%s)
  $PY -m advlab "$@" > "$LOGS/$name.log" 2>&1
  local took=$(( $(date +%s) - start ))
  echo "   done in $took s (log: $LOGS/$name.log)"
  printf '%s\t%s\t%s\n' "$name" "$took" "$(date -u +%FT%TZ)" >> "$LOGS/times.tsv"
}

wanted=()
for arg in "$@"; do
  if [ "$arg" = figures ] || [[ " ${STEPS[*]} " == *" $arg "* ]]; then wanted+=("$arg")
  elif [[ " ${STEPS[*]} " == *" gender_$arg "* ]]; then wanted+=("gender_$arg")
  else echo "unknown step $arg; steps: ${STEPS[*]} figures" >&2; exit 2
  fi
done
want() { [ ${#wanted[@]} -eq 0 ] || [[ " ${wanted[*]} " == *" $1 "* ]]; }
data=(data.root="$GENDER_ROOT")
# shellcheck disable=SC2206
tags=($GENDER_TAGS)

for name in "${STEPS[@]}"; do
  want "$name" || continue
  # shellcheck disable=SC2206
  extra=(${EXTRA[$name]:-})
  step "$name" -m +experiment="$name" "${data[@]}" "${tags[@]}" "${extra[@]}" seed="$SEEDS"
done
if want figures; then
  for e in "${STEPS[@]}"; do
    $PY -m advlab.report report.experiment="$e" report.figures_dir="runs/course-figures/$e" \
      > "$LOGS/report-$e.log" 2>&1 || echo "   report of $e failed (log: $LOGS/report-$e.log)"
  done
fi
# Each table at the experiment's adversarial-training budget where it sets one (4/255 for
# gender_adversarial_training), else at results_table.py's default eps.
while read -r eps names; do
  # shellcheck disable=SC2086
  if [ "$eps" = default ]; then $PY scripts/results_table.py $names
  else $PY scripts/results_table.py --eps "$eps" $names; fi
done < <($PY - "${STEPS[@]}" <<'PY'
import sys
from collections import defaultdict

from omegaconf import OmegaConf

from advlab.config import CONF_DIR

groups = defaultdict(list)
for name in sys.argv[1:]:
    eps = OmegaConf.select(OmegaConf.load(CONF_DIR / "experiment" / f"{name}.yaml"), "train.adversarial.eps")
    groups["default" if eps is None else f"{eps:g}"].append(name)
for eps, names in groups.items():
    print(eps, *names)
PY
)
