#!/usr/bin/env bash
# CF-guided decoding on Office_Products, evaluation only (no training): the LLM run and its
# SASRec teacher from the GPU study (runs/gpu-office, copied into this checkout's runs/).
# beta is chosen on valid rows (never on test); plain and guided decoding are then evaluated
# on the same first test rows, and `tca4rec report` pairs them.
# Sizes: VALID_ROWS / TEST_ROWS below; the target is >= 500 test rows (about 2-3 s
# per row and per method on a 2-core CPU, 10 beams).
set -euo pipefail
RUNS=${RUNS:-runs/gpu-office/Office_Products}
VALID_ROWS=${VALID_ROWS:-20}
TEST_ROWS=${TEST_ROWS:-50}
GRID=${GRID:-"0 1 4"}
LLM=$RUNS/llm/tallrec-nocf-a0-s0
CF=$RUNS/cf/sasrec-s0

tca4rec tune-beta --run "$LLM" --cf-run "$CF" --split valid --rows "$VALID_ROWS" --grid $GRID
tca4rec evaluate --run "$LLM" --split test --limit "$TEST_ROWS"
tca4rec evaluate --run "$LLM" --split test --limit "$TEST_ROWS" --beta auto --cf-run "$CF"
tca4rec cf evaluate --run "$CF" --split test --limit "$TEST_ROWS"
