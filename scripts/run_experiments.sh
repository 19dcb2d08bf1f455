#!/usr/bin/env bash
# Re-run the full-size experiments behind the README's results table, then print the table.
#   GENDER_ROOT=/path/to/DataBases CIFAR_ROOT=/path/to/folder/with/archive scripts/run_experiments.sh [NAME ...]
# NAME: any experiment of conf/experiment/ (default: every one, transfer last: it crafts on the
# latest finished gender_cnn run). Sweep experiments run with -m.
# Without GENDER_ROOT/CIFAR_ROOT it reads the development copies in ../shared/data, which carry
# other tags (5k, test1k) and a reconstructed CIFAR-10 archive with its own MD5; those overrides are
# added only for them. Your own folders get the course's tags (10k, test10k) and the official MD5.
# GENDER_TAGS / CIFAR_EXTRA replace the added overrides (e.g. GENDER_TAGS="data.train=100k").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh

SHARED=$(pwd)/../shared/data
GENDER_ROOT=${GENDER_ROOT:-$SHARED/gender}
CIFAR_ROOT=${CIFAR_ROOT:-$SHARED/cifar10}
same() { [ "$(realpath -m "$1")" = "$(realpath -m "$2")" ]; }
dev_tags="" dev_cifar=""
if same "$GENDER_ROOT" "$SHARED/gender"; then dev_tags="data.train=5k data.test=test1k"; fi
if same "$CIFAR_ROOT" "$SHARED/cifar10"; then
  dev_cifar="data.md5=00642bf920abbcac83eeb31b7ac31122 data.download=false"
fi
GENDER_TAGS=${GENDER_TAGS-$dev_tags}
CIFAR_EXTRA=${CIFAR_EXTRA-$dev_cifar}
PY=.venv/bin/python
mkdir -p runs/experiment-logs

# Per experiment: "<name> <data option> <sweep|single>", from conf/experiment/.
mapfile -t EXPERIMENTS < <($PY -c '
from advlab.config import experiment_names, experiment_option, experiment_sweeps
for name in experiment_names():
    print(name, experiment_option(name, "data"), "sweep" if experiment_sweeps(name) else "single")
')
# What an experiment needs beyond its data: the overfitting sweep's 48 small jobs run 2 at a time.
declare -A EXTRA=([gender_overfitting]="hydra/launcher=joblib_local threads=1")

run() {  # name, then the full command line arguments
  local name=$1; shift
  echo "== $name: python -m advlab $*"
  local start=$(date +%s)
  $PY -m advlab "$@" > "runs/experiment-logs/$name.log" 2>&1
  echo "   done in $(( $(date +%s) - start )) s (log: runs/experiment-logs/$name.log)"
}

wanted=("$@")
want() { [ ${#wanted[@]} -eq 0 ] || [[ " ${wanted[*]} " == *" $1 "* ]]; }
known=" ${EXPERIMENTS[*]%% *} "
for name in "${wanted[@]}"; do
  [[ $known == *" $name "* ]] || { echo "unknown experiment $name; options:$known" >&2; exit 2; }
done

args_for() {  # name data mode -> the arguments of python -m advlab, one per line
  local name=$1 data=$2 mode=$3
  [ "$mode" = sweep ] && echo -m
  echo "+experiment=$name"
  case $data in
    gender) echo "data.root=$GENDER_ROOT"; for a in $GENDER_TAGS; do echo "$a"; done ;;
    cifar10) echo "data.root=$CIFAR_ROOT"; for a in $CIFAR_EXTRA; do echo "$a"; done ;;
  esac
  for a in ${EXTRA[$name]:-}; do echo "$a"; done
}

for line in "${EXPERIMENTS[@]}"; do
  read -r name data mode <<< "$line"
  [ "$name" = transfer ] && continue  # below: it needs a source run
  want "$name" || continue
  mapfile -t args < <(args_for "$name" "$data" "$mode")
  run "$name" "${args[@]}"
done
if want transfer; then
  # craft on the gender_cnn run (no dropout), evaluate on the dropout model
  source_dir=$($PY - <<'PY'
from advlab import naming, results
frame = results.load(experiment="gender_cnn")
frame = frame[frame["status"] == "FINISHED"].sort_values("start_time")
print(frame.iloc[-1][f"tags.{naming.RUN_DIR_TAG}"])
PY
)
  mapfile -t args < <(args_for transfer gender sweep)
  run transfer "${args[@]}" "eval.transfer_from=[$source_dir]"
fi

$PY scripts/results_table.py
