#!/usr/bin/env bash
# shelf against raw llama.cpp, same vendored source, same model and threads,
# in one run. Builds both if needed, alternates them ROUNDS times (so drift in
# machine load hits both alike, each going first in every other round), and
# prints each result and shelf's ratio.
#
# Exits non-zero when shelf is below BAR x raw llama.cpp on any test.
#
# Usage: bench/compare-llama.sh [MODEL.gguf] [THREADS]
# Env:   PP (512) TG (128) REPS (5) ROUNDS (2) GPU_LAYERS (0 on CPU builds) BAR (0.95)
#        SHELF_BIN, LLAMA_BENCH: use prebuilt binaries instead of building
set -euo pipefail
cd "$(dirname "$0")/.."

models=${SHELF_TEST_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/shelf/test-models}
model=${1:-$models/smollm2-135m-instruct-q4_1.gguf}
threads=${2:-2}
pp=${PP:-512} tg=${TG:-128} reps=${REPS:-5} rounds=${ROUNDS:-2} ngl=${GPU_LAYERS:-0}
[ -f "$model" ] || python3 scripts/fetch-models.py smollm2-135m-instruct-q4_1 >&2

if [ -z "${SHELF_BIN:-}" ]; then
  cargo build --release --bin shelf >&2
  SHELF_BIN=target/release/shelf
fi
LLAMA_BENCH=${LLAMA_BENCH:-$(bench/build-llama.sh)}

out=$(mktemp -d)
run_llama() { "$LLAMA_BENCH" "$model" "$threads" "$pp" "$tg" "$reps" "$ngl" > "$out/llama-$1.json"; }
run_shelf() {
  SHELF_LOG=error "$SHELF_BIN" bench "$model" --threads "$threads" --gpu-layers "$ngl" \
    --pp "$pp" --tg "$tg" --reps "$reps" --json > "$out/shelf-$1.json"
}
# Each goes first in every other round, so neither always gets the cooler start.
for round in $(seq "$rounds"); do
  if [ $((round % 2)) = 1 ]; then run_llama "$round"; run_shelf "$round"
  else run_shelf "$round"; run_llama "$round"; fi
done

python3 - "$out" "$rounds" "$model" "$threads" "${BAR:-0.95}" <<'PY'
import json, os, statistics, sys
out, rounds, model, threads, bar = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5])
llama, shelf = {}, {}
for r in range(1, rounds + 1):
    for line in open(os.path.join(out, f"llama-{r}.json")):
        t = json.loads(line)
        llama.setdefault(t["test"], []).append(t["avg_ts"])
    for t in json.load(open(os.path.join(out, f"shelf-{r}.json")))["results"]:
        shelf.setdefault(t["test"], []).append(t["avg_ts"])
print(f"model: {os.path.basename(model)}  threads: {threads}  rounds: {rounds}")
print("| test | llama.cpp t/s | shelf t/s | shelf / llama.cpp | per-round ratios |")
print("| --- | ---: | ---: | ---: | --- |")
worst = None
for test in llama:
    a, b = statistics.mean(llama[test]), statistics.mean(shelf[test])
    ratio = b / a
    worst = ratio if worst is None else min(worst, ratio)
    rounds_ratio = ", ".join(f"{y / x:.3f}" for x, y in zip(llama[test], shelf[test]))
    print(f"| {test} | {a:.2f} | {b:.2f} | {ratio:.3f} | {rounds_ratio} |")
print(f"lowest ratio: {worst:.3f} ({'meets' if worst >= bar else 'BELOW'} the {bar} bar)")
sys.exit(0 if worst >= bar else 1)
PY
