#!/usr/bin/env bash
# Build llama-embedding, the embeddings anchor, from the same llama.cpp tree
# (the llama-cpp-python sdist's) and build directory as llama-server.
# Prints the binary's path.
#
# Usage: bench/build-llama-embedding.sh [extra cmake args]
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=llama-embedding exec bench/build-llama-server.sh "$@"
