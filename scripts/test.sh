#!/usr/bin/env bash
# Everything needed to run all of shelf's tests on a fresh machine, then run
# them: Rust unit and integration tests against real models, the official
# Python clients against the real server, and the web chat in a real browser.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --workspace
cargo test --workspace
SHELF_BIN=target/debug/shelf .venv/bin/pytest -q tests/openai tests/assistant
# The web chat in Debian's Chromium (its own run: its conftest is separate).
SHELF_BIN=target/debug/shelf .venv/bin/pytest -q tests/web
