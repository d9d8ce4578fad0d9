#!/usr/bin/env bash
# The planner against the engine on this box, in one run: predicted memory
# (`shelf fit --json`) against the buffers llama.cpp reports allocating
# (model + KV + compute + output), and predicted decode speed against
# `shelf bench`'s tg128, for each model given. With PREFILL=1, also
# predicted prompt speed against `shelf bench` at pp512 and pp4096: the runs
# the planner's CPU rate and attention share are fitted on (docs/planner.md;
# re-fit so both ratios come near 1).
#
# Usage: bench/fit-check.sh [MODEL.gguf ...]
# Env:   THREADS (2) CTX (4096) PREFILL (0) SHELF_BIN (default: build release)
set -euo pipefail
cd "$(dirname "$0")/.."
models_dir=${SHELF_TEST_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/shelf/test-models}
threads=${THREADS:-2} ctx=${CTX:-4096}
if [ $# -eq 0 ]; then
  set -- "$models_dir"/smollm2-135m-instruct-q4_1.gguf "$models_dir"/gemma3-270m-q4_k_m.gguf \
         "$models_dir"/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
  [ -f "$models_dir/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf" ] && set -- "$@" "$models_dir/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
fi
if [ -z "${SHELF_BIN:-}" ]; then
  cargo build --release --bin shelf >&2
  SHELF_BIN=target/release/shelf
fi
echo "| model | predicted memory | llama.cpp buffers | ratio | predicted decode | shelf bench tg128 | ratio |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
for model in "$@"; do
  fit=$("$SHELF_BIN" fit "$model" --threads "$threads" --ctx "$ctx" --json)
  # llama.cpp prints every buffer it allocates; sum them (MiB).
  buffers=$(SHELF_LOG="llama-cpp-2=info" "$SHELF_BIN" run "$model" "hi" --max-tokens 1 \
      --threads "$threads" --ctx "$ctx" --models-dir "$(mktemp -d)" 2>&1 >/dev/null \
    | sed 's/\x1b\[[0-9;]*m//g' | grep -E "buffer size = " | grep -oE "= +[0-9.]+ MiB" | grep -oE "[0-9.]+" \
    | paste -sd+ | bc)
  bench=$("$SHELF_BIN" bench "$model" --threads "$threads" --pp 0 --tg 128 --reps 3 --json)
  python3 - "$model" "$fit" "$buffers" "$bench" <<'PY'
import json, os, sys
model, fit, buffers, bench = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3]), json.loads(sys.argv[4])
actual = buffers * 2**20
tg = [r for r in (bench if isinstance(bench, list) else bench.get("results", [])) if r.get("test", "").startswith("tg")]
measured = tg[0]["avg_ts"] if tg else float("nan")
print(f"| {os.path.basename(model)} | {fit['memory_bytes']/2**20:.0f} MiB | {buffers:.0f} MiB | "
      f"{fit['memory_bytes']/actual:.2f} | {fit['decode_tps']:.1f} t/s | {measured:.1f} t/s | {fit['decode_tps']/measured:.2f} |")
PY
done
if [ "${PREFILL:-0}" = 1 ]; then
  echo
  echo "| model | prompt | predicted prefill | shelf bench | predicted / measured |"
  echo "| --- | ---: | ---: | ---: | ---: |"
  for model in "$@"; do
    for pp in 512 4096; do
      fit=$("$SHELF_BIN" fit "$model" --threads "$threads" --prompt "$pp" --json)
      bench=$("$SHELF_BIN" --ctx 8192 bench "$model" --threads "$threads" --pp "$pp" --tg 0 --reps 1 --json)
      python3 - "$model" "$pp" "$fit" "$bench" <<'PY'
import json, os, sys
model, pp, fit, bench = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
rows = [r for r in (bench if isinstance(bench, list) else bench.get("results", [])) if r.get("test", "").startswith("pp")]
measured = rows[0]["avg_ts"] if rows else float("nan")
print(f"| {os.path.basename(model)} | {pp} | {fit['prefill_tps']:.1f} t/s | {measured:.1f} t/s | {fit['prefill_tps']/measured:.2f} |")
PY
    done
  done
fi
