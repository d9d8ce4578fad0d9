#!/usr/bin/env bash
# Build llama.cpp's own llama-bench (and llama-completion) from the exact
# source vendored in the pinned llama-cpp-sys-2 crate, so shelf is compared
# against the same llama.cpp it links.
#
# Usage: bench/build-llama.sh [extra cmake args...]   (prints the build dir)
# Env:   LLAMA_BUILD_DIR (default .bench/llama-<backend>), CMAKE_BUILD_PARALLEL_LEVEL
set -euo pipefail
cd "$(dirname "$0")/.."

src=$(cargo metadata --format-version 1 2>/dev/null | python3 -c '
import json, os, sys
meta = json.load(sys.stdin)
[pkg] = [p for p in meta["packages"] if p["name"] == "llama-cpp-sys-2"]
print(os.path.join(os.path.dirname(pkg["manifest_path"]), "llama.cpp"))')
tag=$(echo "$*" | tr -c 'a-zA-Z0-9' '_' | head -c 40)
work=${LLAMA_BUILD_DIR:-.bench/llama${tag:+-$tag}}
mkdir -p "$work"
# The crate ships only some tools; build just the ones compared against.
rm -rf "$work/src"
cp -r "$src" "$work/src"
printf 'llama_add_compile_flags()\nadd_subdirectory(llama-bench)\nadd_subdirectory(completion)\n' > "$work/src/tools/CMakeLists.txt"
cmake -S "$work/src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF \
  -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_COMMON=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF "$@" >&2
cmake --build "$work/build" --target llama-bench llama-completion -j "${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" >&2
echo "$work/build"
