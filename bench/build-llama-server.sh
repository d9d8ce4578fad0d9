#!/usr/bin/env bash
# Build llama-server, the serving anchor, from the llama.cpp tree inside the
# llama-cpp-python sdist on PyPI (vendor/llama.cpp), with the same flags as
# shelf's own llama.cpp build (Release, GGML_NATIVE). Prints the binary's path.
# The sdist is fetched by pip with a pinned hash and cached in .bench/.
#
# Usage: bench/build-llama-server.sh [extra cmake args, e.g. -DGGML_CUDA=ON]
# Env:   LLAMA_SERVER_SRC (a llama.cpp tree to use instead of the sdist's),
#        LLAMA_SERVER_BUILD_DIR (default .bench/llama-server-build),
#        FETCH_ONLY=1: fetch and unpack the sdist, print its llama.cpp tree, build nothing
#        TARGET: another program of that tree to build instead (default llama-server)
set -euo pipefail
cd "$(dirname "$0")/.."

version=0.3.36
sha=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
cache=.bench/sdist
build=${LLAMA_SERVER_BUILD_DIR:-.bench/llama-server-build}
src=${LLAMA_SERVER_SRC:-}
if [ -z "$src" ]; then
  src=$cache/llama_cpp_python-$version/vendor/llama.cpp
  if [ ! -f "$src/CMakeLists.txt" ]; then
    mkdir -p "$cache"
    tarball=$cache/llama_cpp_python-$version.tar.gz
    if ! echo "$sha  $tarball" | sha256sum -c - >/dev/null 2>&1; then
      echo "llama-cpp-python==$version --hash=sha256:$sha" > "$cache/req.txt"
      # pip builds the sdist's metadata in an isolated environment, which
      # fetches its build tools from PyPI; nothing is installed here.
      python3 -m pip download --quiet --no-deps --no-binary=:all: --require-hashes \
        -d "$cache" -r "$cache/req.txt" >&2
    fi
    echo "$sha  $tarball" | sha256sum -c - >&2
    tar -C "$cache" -xzf "$tarball" "llama_cpp_python-$version/vendor/llama.cpp"
  fi
fi
if [ -n "${FETCH_ONLY:-}" ]; then echo "$src"; exit 0; fi
# Another program of the same tree (llama-embedding) needs the examples.
target=${TARGET:-llama-server}
examples=OFF; [ "$target" = llama-server ] || examples=ON
. bench/lib/no-amx.sh
# No network at build time (no prebuilt web UI, no curl), no TLS.
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=$examples -DLLAMA_BUILD_SERVER=ON \
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  -DLLAMA_LLGUIDANCE=OFF "${no_amx[@]}" "$@" >&2
cmake --build "$build" --target "$target" -j "${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" >&2
echo "$build/bin/$target"
