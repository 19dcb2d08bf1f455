#!/usr/bin/env bash
# The course's steps on the gender faces, each over 3 seeds: the measurements of docs/course.md.
#   GENDER_ROOT=/path/to/DataBases scripts/run_course.sh [STEP ...]
# STEP: perceptron cnn dropout fool overfitting adversarial figures (default: all, in that order).
# Without GENDER_ROOT it reads the development copy in ../shared/data/gender (tags 5k / test1k,
# added only for it). Each step prints its wall time and appends it to runs/course-logs/times.tsv;
# then `scripts/results_table.py <experiment>` prints its mean ± std over the seeds and
# `scripts/course_figures.py` draws the page's figures from the same MLflow runs.
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

step() {  # name, then the arguments of python -m advlab
  local name=$1; shift
  echo "== $name: python -m advlab $*"
  local start=$(date +%s)
  $PY -m advlab "$@" > "$LOGS/$name.log" 2>&1
  local took=$(( $(date +%s) - start ))
  echo "   done in $took s (log: $LOGS/$name.log)"
  printf '%s\t%s\t%s\n' "$name" "$took" "$(date -u +%FT%TZ)" >> "$LOGS/times.tsv"
}

wanted=("$@")
want() { [ ${#wanted[@]} -eq 0 ] || [[ " ${wanted[*]} " == *" $1 "* ]]; }
data=(data.root="$GENDER_ROOT")
# shellcheck disable=SC2206
tags=($GENDER_TAGS)

want perceptron && step perceptron -m +experiment=gender_perceptron "${data[@]}" "${tags[@]}" seed=$SEEDS
want cnn && step cnn -m +experiment=gender_cnn "${data[@]}" "${tags[@]}" seed=$SEEDS
want dropout && step dropout -m +experiment=gender_cnn_dropout "${data[@]}" "${tags[@]}" seed=$SEEDS
want fool && step fool -m +experiment=gender_fool "${data[@]}" "${tags[@]}" seed=$SEEDS
# The overfitting controls on 1k faces with early stopping: dropout x weight decay x seeds.
want overfitting && step overfitting -m +experiment=gender_overfitting "${data[@]}" "${tags[@]}" \
  data.limit_train=1000 train.early_stopping.enabled=true seed=$SEEDS
want adversarial && step adversarial -m +experiment=gender_adversarial_training "${data[@]}" \
  "${tags[@]}" seed=$SEEDS
if want figures || [ ${#wanted[@]} -eq 0 ]; then
  # Each experiment's PDF (reports/) with its figures also as PNGs in runs/course-figures/<name>/:
  # docs/course.md shows a few of them.
  for e in gender_perceptron gender_cnn gender_cnn_dropout gender_fool gender_overfitting \
    gender_adversarial_training; do
    $PY -m advlab.report report.experiment=$e report.figures_dir=runs/course-figures/$e \
      > "$LOGS/report-$e.log" 2>&1 || echo "   report of $e failed (log: $LOGS/report-$e.log)"
  done
fi
$PY scripts/results_table.py gender_perceptron gender_cnn gender_cnn_dropout gender_fool \
  gender_overfitting
$PY scripts/results_table.py --eps 4 gender_adversarial_training
