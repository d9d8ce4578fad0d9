#!/usr/bin/env bash
# Aggregate throughput under concurrency: shelf against llama-server, same
# model, threads, slots and client (shelf-loadgen), alternating ROUNDS times
# in one run. STREAMS streaming clients each generate TOKENS tokens at once.
# Exits non-zero when shelf's median is below BAR x llama-server's.
#
# Usage: bench/concurrency.sh [MODEL.gguf] [THREADS]
# Env:   STREAMS (8) TOKENS (128) ROUNDS (3) CTX per slot (512) GPU_LAYERS (0)
#        BAR (1.0)  SHELF_BIN LOADGEN LLAMA_SERVER: prebuilt binaries
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib/servers.sh

models=${SHELF_TEST_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/shelf/test-models}
model=${1:-$models/smollm2-135m-instruct-q4_1.gguf}
threads=${2:-2}
streams=${STREAMS:-8} tokens=${TOKENS:-128} rounds=${ROUNDS:-3} ctx=${CTX:-512}
ngl=${GPU_LAYERS:-0} bar=${BAR:-1.0}
[ -f "$model" ] || python3 scripts/fetch-models.py smollm2-135m-instruct-q4_1 >&2
prepare_binaries
trap stop_server EXIT

out=$(mktemp -d)
name=$(basename "$model" .gguf)
run_rounds "$rounds" "$streams" "$ctx" "$out" throughput --streams "$streams" --max-tokens "$tokens"

python3 - "$out" "$rounds" "$name" "$threads" "$streams" "$tokens" "$bar" <<'PY'
import json, os, statistics, sys
out, rounds, name, threads, streams, tokens, bar = sys.argv[1:8]
rounds, bar = int(rounds), float(bar)
runs = {s: [json.load(open(os.path.join(out, f"{s}-{r}.json"))) for r in range(1, rounds + 1)] for s in ("llama", "shelf")}
agg = {s: [r["aggregate_tps"] for r in runs[s]] for s in runs}
med = {s: statistics.median(v) for s, v in agg.items()}
ratio = med["shelf"] / med["llama"]
print(f"model: {name}  threads: {threads}  streams: {streams} x {tokens} tokens  rounds: {rounds}")
print("| server | aggregate t/s (median) | rounds | max TTFT ms (last round) |")
print("| --- | ---: | --- | ---: |")
for s, label in (("llama", "llama-server"), ("shelf", "shelf")):
    print(f"| {label} | {med[s]:.1f} | {', '.join(f'{v:.1f}' for v in agg[s])} | {runs[s][-1]['ttft_ms_max']:.0f} |")
verdict = "meets" if ratio >= bar else "BELOW"
print(f"shelf / llama-server: {ratio:.3f} ({verdict} the {bar} bar)")
sys.exit(0 if ratio >= bar else 1)
PY
