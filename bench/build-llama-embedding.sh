#!/usr/bin/env bash
# Build llama-embedding, the embeddings anchor, from the same llama.cpp tree
# (the llama-cpp-python sdist's) and build directory as llama-server, with
# the examples turned on. Prints the binary's path.
#
# Usage: bench/build-llama-embedding.sh [extra cmake args]
set -euo pipefail
cd "$(dirname "$0")/.."
src=$(FETCH_ONLY=1 bench/build-llama-server.sh)
build=${LLAMA_SERVER_BUILD_DIR:-.bench/llama-server-build}
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=ON -DLLAMA_BUILD_SERVER=ON \
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  -DLLAMA_LLGUIDANCE=OFF "$@" >&2
cmake --build "$build" --target llama-embedding -j "${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" >&2
echo "$build/bin/llama-embedding"
