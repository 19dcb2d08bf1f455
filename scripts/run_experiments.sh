#!/usr/bin/env bash
# Re-run the full-size experiments behind the README's results table, then print the table.
#   GENDER_ROOT=/path/to/DataBases CIFAR_ROOT=/path/to/folder/with/archive scripts/run_experiments.sh [NAME ...]
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

run() {  # name, then the full command line arguments
  local name=$1; shift
  echo "== $name: python -m advlab $*"
  local start=$(date +%s)
  $PY -m advlab "$@" > "runs/experiment-logs/$name.log" 2>&1
  echo "   done in $(( $(date +%s) - start )) s (log: runs/experiment-logs/$name.log)"
}

wanted=("$@")
want() { [ ${#wanted[@]} -eq 0 ] || [[ " ${wanted[*]} " == *" $1 "* ]]; }

want quickstart && run quickstart +experiment=quickstart
for e in gender_perceptron gender_cnn gender_cnn_dropout gender_fool; do
  # shellcheck disable=SC2086
  want $e && run $e +experiment=$e data.root="$GENDER_ROOT" $GENDER_TAGS
done
# shellcheck disable=SC2086
want gender_overfitting && run gender_overfitting -m +experiment=gender_overfitting \
  data.root="$GENDER_ROOT" $GENDER_TAGS hydra/launcher=joblib_local threads=1
# shellcheck disable=SC2086
want cifar10_fool && run cifar10_fool +experiment=cifar10_fool data.root="$CIFAR_ROOT" $CIFAR_EXTRA
# shellcheck disable=SC2086
want cifar10_regularization_sweep && run cifar10_regularization_sweep -m \
  +experiment=cifar10_regularization_sweep data.root="$CIFAR_ROOT" $CIFAR_EXTRA
# shellcheck disable=SC2086
want cifar10_adversarial_training && run cifar10_adversarial_training -m \
  +experiment=cifar10_adversarial_training data.root="$CIFAR_ROOT" $CIFAR_EXTRA
if want transfer; then
  # craft on the gender_cnn run (no dropout), evaluate on the dropout model
  source_dir=$($PY - <<'PY'
from advlab import results
frame = results.load(experiment="gender_cnn")
frame = frame[frame["status"] == "FINISHED"].sort_values("start_time")
print(frame.iloc[-1]["tags.advlab.run_dir"])
PY
)
  # shellcheck disable=SC2086
  run transfer -m +experiment=transfer data.root="$GENDER_ROOT" $GENDER_TAGS "eval.transfer_from=[$source_dir]"
fi

$PY scripts/results_table.py
