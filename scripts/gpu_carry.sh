#!/usr/bin/env bash
# Prepare what scripts/gpu_study.sh needs on a lent GPU machine that reaches no package index and
# receives at most 64 MiB per call: .gpu_a/ (wheels of the pinned transformers/peft/gguf, the
# datasets, the first part of the default LLM's GGUF, its checksum, its tokenizer for --smoke)
# and .gpu_b/ (the second part), about 57 MiB each with Office_Products. Carry .gpu_a on a first call (e.g. the --smoke run) and .gpu_b
# on the next call to the same machine: folders carried earlier stay there between calls.
# usage: scripts/gpu_carry.sh [DATASET ...]    (default: Office_Products; read from ../shared)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DATASETS=("${@:-Office_Products}")
for d in .gpu_a .gpu_b; do grep -qx "/$d/" .git/info/exclude 2>/dev/null || echo "/$d/" >> .git/info/exclude; done
rm -rf .gpu_a .gpu_b && mkdir -p .gpu_a/wheels .gpu_a/data .gpu_b
pins=$(grep -oE '"(transformers|peft|gguf)==[^"]+"' pyproject.toml | tr -d '"')
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .gpu_a/wheels $pins
for d in "${DATASETS[@]}"; do cp -r "../shared/data/amazon2018/$d" .gpu_a/data/; done
GGUF=$($PY -c "from tca4rec.llm.model import _gguf_path; print(_gguf_path())")
HALF=$(( 36 * 1048576 ))  # part0 travels with the wheels, datasets and tokenizer
head -c "$HALF" "$GGUF" > .gpu_a/gguf.part0
tail -c +$(( HALF + 1 )) "$GGUF" > .gpu_b/gguf.part1
(cd "$(dirname "$GGUF")" && sha256sum "$(basename "$GGUF")") > .gpu_a/gguf.sha256
$PY -c "from tca4rec.llm.model import load_tokenizer; load_tokenizer().save_pretrained('.gpu_a/tokenizer')" >/dev/null
du -sh .gpu_a .gpu_b
