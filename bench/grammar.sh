#!/usr/bin/env bash
# What a JSON-schema grammar costs decode: `shelf bench --json-schema`
# decodes the same chat prompt greedily, unconstrained and under the grammar
# of bench/schemas/products.json (a list too long to finish early),
# alternating REPS times in one process, and prints the ratio.
#
# Exits non-zero when constrained decode is below 0.85x unconstrained.
#
# Usage: bench/grammar.sh [MODEL.gguf] [THREADS]
# Env:   TG (128) REPS (5) SHELF_BIN
set -euo pipefail
cd "$(dirname "$0")/.."

models=${SHELF_TEST_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/shelf/test-models}
model=${1:-$models/smollm2-135m-instruct-q4_1.gguf}
threads=${2:-2}
[ -f "$model" ] || python3 scripts/fetch-models.py smollm2-135m-instruct-q4_1 >&2
if [ -z "${SHELF_BIN:-}" ]; then
  cargo build --release --bin shelf >&2
  SHELF_BIN=target/release/shelf
fi
SHELF_LOG=error "$SHELF_BIN" bench "$model" --threads "$threads" \
  --json-schema bench/schemas/products.json --tg "${TG:-128}" --reps "${REPS:-5}"
