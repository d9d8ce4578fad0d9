#!/usr/bin/env bash
# The prefix cache in a multi-turn chat: a first turn with HISTORY_TOKENS
# tokens of history, then the next turn; the second turn's time to first
# token against the first's, the cached tokens reported, and whether the
# answer is the same with the cache off. shelf and llama-server in one run,
# same model, threads and client; exits non-zero when shelf's ratio (median
# of ROUNDS) is above BAR, no cached tokens are reported, or an answer
# changes with the cache off.
#
# Usage: bench/prefix-cache.sh [MODEL.gguf] [THREADS]
# Env:   HISTORY_TOKENS (1500) ROUNDS (3) CTX (4096) GPU_LAYERS (0) BAR (0.25)
#        SHELF_BIN LOADGEN LLAMA_SERVER
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib/servers.sh

models=${SHELF_TEST_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/shelf/test-models}
model=${1:-$models/smollm2-135m-instruct-q4_1.gguf}
threads=${2:-2}
history=${HISTORY_TOKENS:-1500} rounds=${ROUNDS:-3} ctx=${CTX:-4096}
ngl=${GPU_LAYERS:-0} bar=${BAR:-0.25}
[ -f "$model" ] || python3 scripts/fetch-models.py smollm2-135m-instruct-q4_1 >&2
prepare_binaries
trap stop_server EXIT

out=$(mktemp -d)
name=$(basename "$model" .gguf)
run_rounds "$rounds" 1 "$ctx" "$out" multiturn --history-tokens "$history"

python3 - "$out" "$rounds" "$name" "$threads" "$bar" <<'PY'
import json, os, statistics, sys
out, rounds, name, threads, bar = sys.argv[1:6]
rounds, bar = int(rounds), float(bar)
runs = {s: [json.load(open(os.path.join(out, f"{s}-{r}.json"))) for r in range(1, rounds + 1)] for s in ("llama", "shelf")}
print(f"model: {name}  threads: {threads}  second turn carries {runs['shelf'][0]['history_tokens']} prompt tokens  rounds: {rounds}")
print("| server | turn 1 TTFT ms | turn 2 TTFT ms | turn 2 / turn 1 (median; rounds) | cached tokens | same answer without cache |")
print("| --- | ---: | ---: | ---: | ---: | --- |")
for s, label in (("llama", "llama-server"), ("shelf", "shelf")):
    r = runs[s]
    ratios = [x["ratio"] for x in r]
    print(f"| {label} | {statistics.median(x['ttft1_ms'] for x in r):.0f} | {statistics.median(x['ttft2_ms'] for x in r):.0f} | "
          f"{statistics.median(ratios):.3f} ({', '.join(f'{x:.3f}' for x in ratios)}) | {r[-1]['cached_tokens']} | "
          f"{all(x['same_answer_without_cache'] for x in r)} |")
shelf = runs["shelf"]
ratio = statistics.median(x["ratio"] for x in shelf)
ok = ratio <= bar and all(x["cached_tokens"] for x in shelf) and all(x["same_answer_without_cache"] for x in shelf)
print(f"shelf turn 2 / turn 1: {ratio:.3f} ({'within' if ratio <= bar else 'OVER'} the {bar} bar); "
      f"cached tokens reported: {all(x['cached_tokens'] for x in shelf)}; answers unchanged without the cache: "
      f"{all(x['same_answer_without_cache'] for x in shelf)}")
sys.exit(0 if ok else 1)
PY
