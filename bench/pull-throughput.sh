#!/usr/bin/env bash
# `shelf pull` against curl on loopback: the same file from the same server,
# in one run, best of ROUNDS for each. Two servers: shelf's mock registry
# (Hugging Face resolve URLs, Range support) and Python's http.server (no
# Range, no sha256 headers: one stream, hashed as it comes).
#
# Usage: bench/pull-throughput.sh [FILE.gguf]
# Env:   ROUNDS (3)
set -euo pipefail
cd "$(dirname "$0")/.."
models=${SHELF_TEST_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/shelf/test-models}
file=${1:-$models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf}
rounds=${ROUNDS:-3}
cargo build --release --bin shelf --bin shelf-mock-registry >&2
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT
name=$(basename "$file")
size=$(stat -c %s "$file")

# The mock registry prints its URL once the file is loaded.
fifo=$work/fifo; mkfifo "$fifo"
target/release/shelf-mock-registry --hf bench/Model="$file" > "$fifo" &
pids+=($!)
read -r mock < "$fifo"

# http.server laid out as a hub: /OWNER/REPO/resolve/main/FILE.
mkdir -p "$work/www/bench/Plain/resolve/main"
ln -s "$(readlink -f "$file")" "$work/www/bench/Plain/resolve/main/$name"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server "$port" --bind 127.0.0.1 --directory "$work/www" >/dev/null 2>&1 &
pids+=($!)
plain=http://127.0.0.1:$port
until curl -sf -o /dev/null "$plain/"; do sleep 0.1; done

best() { sort -n | head -1; }
time_cmd() { # seconds for one run of "$@"
  local start end
  start=$(date +%s.%N); "$@" >/dev/null 2>&1; end=$(date +%s.%N)
  echo "$end - $start" | bc -l
}
measure() { # label endpoint repo
  local label=$1 endpoint=$2 repo=$3 c s
  c=$(for _ in $(seq "$rounds"); do
        rm -f "$work/curl.out"
        time_cmd curl -sfL -o "$work/curl.out" "$endpoint/$repo/resolve/main/$name"
      done | best)
  s=$(for _ in $(seq "$rounds"); do
        rm -rf "$work/store"
        time_cmd env HF_ENDPOINT="$endpoint" target/release/shelf pull "hf.co/$repo/$name" --models-dir "$work/store"
      done | best)
  test -f "$work/store/blobs/sha256-$(sha256sum "$file" | cut -c1-64)" || { echo "pull failed" >&2; exit 1; }
  python3 - "$label" "$size" "$c" "$s" <<'PY'
import sys
label, size, c, s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
mb = size / 1e6
print(f"| {label} | {mb:.0f} MB | {mb/c:.0f} MB/s | {mb/s:.0f} MB/s | {c/s:.2f}x |")
PY
}
echo "| server | file | curl | shelf pull | shelf/curl |"
echo "| --- | --- | --- | --- | --- |"
measure "mock registry (ranges, sha256 known)" "$mock" bench/Model
measure "python http.server (no ranges)" "$plain" bench/Plain
