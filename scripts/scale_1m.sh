#!/usr/bin/env bash
# A study cell on a million-item synthetic catalog, end to end (docs/results/scale-1m.yaml):
# synthetic data, SASRec, a tiny LLM fine-tuned with soft labels over the 1M-item trie,
# constrained-beam evaluation, the report, then one `tca4rec recommend` call. Each stage prints
# its wall time and the peak resident memory of its process; the study also logs its own stages.
# usage: scripts/scale_1m.sh [--items N] [--out DIR]     (default 1,000,000 items, runs/scale-1m)
set -euo pipefail
cd "$(dirname "$0")/.."
ITEMS=1000000 OUT_DIR=runs/scale-1m
while [ $# -gt 0 ]; do
  case "$1" in
    --items) ITEMS=$2; shift ;;
    --out) OUT_DIR=$2; shift ;;
    *) echo "scale_1m.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT_DIR" && OUT_DIR=$(cd "$OUT_DIR" && pwd)

stage() {  # NAME COMMAND...: run COMMAND; print its wall time and its peak resident memory
  local name=$1; shift
  "$PY" -c '
import resource, subprocess, sys, time
start = time.time()
rc = subprocess.call(sys.argv[2:])
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(f"[scale] {sys.argv[1]}: {time.time() - start:.1f} s, peak memory {peak:.0f} MiB", flush=True)
sys.exit(rc)' "$name" "$@"
}

TINY=$OUT_DIR/tiny-llm
[ -f "$TINY/config.json" ] || stage "tiny LLM" "$PY" scripts/tiny_llm.py "$TINY"
stage "study ($ITEMS items)" "$PY" -m tca4rec.cli study docs/results/scale-1m.yaml --set "out=$OUT_DIR" \
  --set "train.llm=$TINY" --set "datasets.synth.synthetic.num_items=$ITEMS"
RUN=$OUT_DIR/synth/llm/tallrec-sasrec-a0.1-s0
mapfile -t HISTORY < <("$PY" -c "import sys; from tca4rec.data import load_dataset
print('\n'.join(load_dataset(sys.argv[1]).titles[1:3]))" "$OUT_DIR/synth/data")
stage "recommend ($ITEMS items)" "$PY" -m tca4rec.cli recommend --run "$RUN" --history "${HISTORY[@]}" --k 10
