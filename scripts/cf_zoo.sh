#!/usr/bin/env bash
# The README's CF model zoo: every model trained and tested with the default commands (no
# flags beyond the run folder and seed), one at a time so train times mean something, then the
# table (scripts/cf_zoo_table.py). Finished runs (metrics_test.json present) are skipped, so an
# interrupted zoo resumes.
# usage: scripts/cf_zoo.sh [--data-root DIR] [--out DIR] [--seeds "0 1 2"] [--seeded-models "sasrec gru4rec"]
#   seed 0 for every model; the other seeds only for --seeded-models.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=../shared/data/amazon2018 OUT=runs/cf-zoo SEEDS="0 1 2" SEEDED="sasrec gru4rec"
DATASETS="Toys_and_Games Office_Products" MODELS="mostpop sasrec bert4rec gru4rec caser"
while [ $# -gt 0 ]; do
  case "$1" in
    --data-root) ROOT=$2; shift ;;
    --out) OUT=$2; shift ;;
    --seeds) SEEDS=$2; shift ;;
    --seeded-models) SEEDED=$2; shift ;;
    --datasets) DATASETS=$2; shift ;;
    --models) MODELS=$2; shift ;;
    *) echo "cf_zoo.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
TCA=${TCA4REC:-.venv/bin/tca4rec}
for S in $SEEDS; do
  for D in $DATASETS; do
    for M in $MODELS; do
      [ "$S" = 0 ] || [[ " $SEEDED " == *" $M "* ]] || continue
      RUN=$OUT/$D/$M-s$S
      [ -f "$RUN/metrics_test.json" ] && continue
      echo "== $M on $D, seed $S"
      "$TCA" cf train --data "$ROOT/$D" --model "$M" --seed "$S" --out "$RUN" --quiet --overwrite
      "$TCA" cf evaluate --run "$RUN" --split test > /dev/null
    done
  done
done
"${PYTHON:-.venv/bin/python}" scripts/cf_zoo_table.py "$OUT" | tee "$OUT/table.md"
