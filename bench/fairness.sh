#!/usr/bin/env bash
# Fairness under a long prompt: STREAMS streams are decoding when a prompt
# of PROMPT_TOKENS tokens arrives; the longest gap any of them sees between
# two tokens while it is admitted. shelf and llama-server in one run, same
# model, threads, slots and client; exits non-zero when shelf's worst gap
# over ROUNDS rounds is above BAR_MS.
#
# Usage: bench/fairness.sh [MODEL.gguf] [THREADS]
# Env:   STREAMS (4) PROMPT_TOKENS (2000) ROUNDS (3) CTX per slot (4096)
#        GPU_LAYERS (0) BAR_MS (250)  SHELF_BIN LOADGEN LLAMA_SERVER
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib/servers.sh

models=${SHELF_TEST_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/shelf/test-models}
model=${1:-$models/smollm2-135m-instruct-q4_1.gguf}
threads=${2:-2}
streams=${STREAMS:-4} prompt=${PROMPT_TOKENS:-2000} rounds=${ROUNDS:-3} ctx=${CTX:-4096}
ngl=${GPU_LAYERS:-0} bar=${BAR_MS:-250}
[ -f "$model" ] || python3 scripts/fetch-models.py smollm2-135m-instruct-q4_1 >&2
prepare_binaries
trap stop_server EXIT

out=$(mktemp -d)
name=$(basename "$model" .gguf)
run_rounds "$rounds" $((streams + 1)) "$ctx" "$out" fairness --streams "$streams" --prompt-tokens "$prompt"

python3 - "$out" "$rounds" "$name" "$threads" "$streams" "$bar" <<'PY'
import json, os, sys
out, rounds, name, threads, streams, bar = sys.argv[1:7]
rounds, bar = int(rounds), float(bar)
runs = {s: [json.load(open(os.path.join(out, f"{s}-{r}.json"))) for r in range(1, rounds + 1)] for s in ("llama", "shelf")}
print(f"model: {name}  threads: {threads}  {streams} streams decoding, then a {runs['shelf'][0]['long_prompt_tokens']}-token prompt  rounds: {rounds}")
print("| server | longest gap while the prompt is admitted, ms (worst; rounds) | usual gap before, ms | prompt's time to first token, ms |")
print("| --- | ---: | ---: | ---: |")
for s, label in (("llama", "llama-server"), ("shelf", "shelf")):
    gaps = [r["max_gap_ms"] for r in runs[s]]
    print(f"| {label} | {max(gaps):.0f} ({', '.join(f'{g:.0f}' for g in gaps)}) | "
          f"{max(r['max_gap_before_ms'] for r in runs[s]):.0f} | {max(r['long_ttft_ms'] for r in runs[s]):.0f} |")
worst = max(r["max_gap_ms"] for r in runs["shelf"])
print(f"shelf's longest gap: {worst:.0f} ms ({'within' if worst <= bar else 'OVER'} the {bar:.0f} ms bar)")
sys.exit(0 if worst <= bar else 1)
PY
