#!/usr/bin/env bash
# Everything needed to run all of shelf's tests on a fresh machine, then run
# them: Rust unit and integration tests against real models, and the official
# openai Python client against the real server.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --workspace
cargo test --workspace
SHELF_BIN=target/debug/shelf .venv/bin/pytest -q tests/openai tests/assistant
