#!/usr/bin/env bash
# Build raw llama.cpp's benchmark program (bench/llama-bench-lite.cpp) from the
# exact llama.cpp source vendored in the pinned llama-cpp-sys-2 crate, so shelf
# is compared with the same llama.cpp it links. Prints the binary's path.
#
# Usage: bench/build-llama.sh [extra cmake args, e.g. -DGGML_CUDA=ON]
# Env:   LLAMA_SRC (default: found with cargo metadata), LLAMA_BUILD_DIR
set -euo pipefail
cd "$(dirname "$0")/.."

src=${LLAMA_SRC:-$(cargo metadata --format-version 1 | python3 -c '
import json, os, sys
meta = json.load(sys.stdin)
[pkg] = [p for p in meta["packages"] if p["name"] == "llama-cpp-sys-2"]
print(os.path.join(os.path.dirname(pkg["manifest_path"]), "llama.cpp"))')}
build=${LLAMA_BUILD_DIR:-.bench/llama-build}
. bench/lib/no-amx.sh
# GGML_NATIVE matches shelf's own build (.cargo/config.toml sets target-cpu=native).
cmake -S bench -B "$build" -DLLAMA_SRC="$src" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON "${no_amx[@]}" "$@" >&2
cmake --build "$build" --target llama-bench-lite -j "${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" >&2
echo "$build/llama-bench-lite"
