#!/usr/bin/env bash
# Speculative decoding against plain decode, the planner's prediction, and
# llama.cpp's own speculation, on the same tasks (bench/tasks), model,
# threads and machine, in one run.
#
#  1. n-gram lookup (inexact verification, adaptive): `shelf bench` on
#     rewrite, code and prose. Bar: rewrite >= NGRAM_BAR times plain decode.
#  2. the draft model as shipped (adaptive, exact): every task >= FALLBACK_BAR
#     times plain decode (where drafting loses, the fallback must hold).
#  3. the draft model drafting a fixed K tokens (inexact): acceptance and
#     speed-up per task; `shelf fit --draft --acceptance A --draft-tokens K`
#     at the measured per-token rate A must predict the speed-up within
#     PLANNER_BAR.
#  4. reference (unless SKIP_REFERENCE=1): shelf serve and llama-server
#     (built from the llama-cpp-python sdist), each plain, with n-gram lookup
#     and with the draft model, the same prompts over HTTP, speed-ups side by
#     side. Informational: llama-server's are the figures to match or beat.
#
# Usage: bench/speculative.sh [TARGET] [DRAFT] [THREADS]
# Env:   SHELF_BIN, LLAMA_SERVER, GPU_LAYERS (0), TOKENS (192), REPS (1), K (4),
#        NGRAM_BAR (1.5), FALLBACK_BAR (0.97), PLANNER_BAR (0.25), SKIP_REFERENCE
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib/servers.sh
models=${SHELF_TEST_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/shelf/test-models}
target=${1:-$models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf}
draft=${2:-$models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf}
threads=${3:-2}
ngl=${GPU_LAYERS:-0}
tokens=${TOKENS:-192}
reps=${REPS:-1}
k=${K:-4}
ngram_bar=${NGRAM_BAR:-1.5}
fallback_bar=${FALLBACK_BAR:-0.97}
planner_bar=${PLANNER_BAR:-0.25}
if [ -z "${SHELF_BIN:-}" ]; then
  cargo build --release --bin shelf >&2
  SHELF_BIN=target/release/shelf
fi
out=$(mktemp -d)
status=0
bench() { "$SHELF_BIN" bench "$target" --threads "$threads" --gpu-layers "$ngl" --tg "$tokens" --reps "$reps" "$@"; }
# field FILE TASK KEY: one task's figure from a `shelf bench --json` report.
field() { python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print(next(t[sys.argv[3]] for t in r["tasks"] if t["task"] == sys.argv[2]))' "$@"; }

echo "== 1. n-gram lookup"
bench --speculate ngram --inexact --json > "$out/ngram.json"
for task in rewrite code prose; do
  echo "$task: $(field "$out/ngram.json" $task speedup | xargs printf '%.3f')x, acceptance $(field "$out/ngram.json" $task acceptance | xargs printf '%.2f')"
done
speedup=$(field "$out/ngram.json" rewrite speedup)
python3 -c "import sys; sys.exit(float(sys.argv[1]) < float(sys.argv[2]))" "$speedup" "$ngram_bar" \
  || { echo "MISSED: n-gram lookup on rewrite is ${speedup}x, bar ${ngram_bar}x"; status=1; }

echo "== 2. draft model as shipped (adaptive, exact)"
bench --draft "$draft" --json > "$out/draft-adaptive.json"
for task in rewrite code prose; do
  speedup=$(field "$out/draft-adaptive.json" $task speedup)
  echo "$task: $(printf '%.3f' "$speedup")x"
  python3 -c "import sys; sys.exit(float(sys.argv[1]) < float(sys.argv[2]))" "$speedup" "$fallback_bar" \
    || { echo "MISSED: the draft model's fallback on $task gives ${speedup}x, bar ${fallback_bar}x"; status=1; }
done

echo "== 3. draft model drafting $k tokens, against the planner"
bench --draft "$draft" --draft-fixed --draft-max "$k" --inexact --json > "$out/draft-fixed.json"
for task in code prose; do
  measured=$(field "$out/draft-fixed.json" $task speedup)
  acceptance=$(field "$out/draft-fixed.json" $task rate)
  predicted=$("$SHELF_BIN" fit "$target" --draft "$draft" --acceptance "$acceptance" --draft-tokens "$k" \
    --threads "$threads" --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["speculative"]["speedup"])')
  off=$(python3 -c "import sys; print(float(sys.argv[1]) / float(sys.argv[2]) - 1)" "$predicted" "$measured")
  printf '%s: per-token rate %.2f, measured %.3fx, planner %.3fx (%+.0f%%)\n' "$task" "$acceptance" "$measured" "$predicted" \
    "$(python3 -c "print(100 * $off)")"
  python3 -c "import sys; sys.exit(abs(float(sys.argv[1])) > float(sys.argv[2]))" "$off" "$planner_bar" \
    || { echo "MISSED: the planner is off by more than ${planner_bar} on $task"; status=1; }
done

if [ -z "${SKIP_REFERENCE:-}" ]; then
  echo "== 4. reference: decode t/s over HTTP, the same prompts"
  LLAMA_SERVER=${LLAMA_SERVER:-$(bench/build-llama-server.sh)}
  ctx=4096
  name=$(basename "$target" .gguf)
  measure() {  # measure LABEL EXTRA_BODY: every task against the running server
    local label=$1 extra=$2 task
    for task in rewrite code prose; do
      python3 bench/lib/decode_speed.py "$SERVER_URL" "$name" "bench/tasks/$task.txt" "$tokens" "$reps" "$extra" \
        > "$out/http-$label-$task.json"
    done
  }
  start_shelf "$target" "$threads" 1 "$ctx" "$ngl"; measure shelf-plain '{}'; stop_server
  SHELF_ARGS="--speculate ngram --inexact" start_shelf "$target" "$threads" 1 "$ctx" "$ngl"
  measure shelf-ngram '{}'; stop_server
  SHELF_ARGS="--draft $draft" start_shelf "$target" "$threads" 1 "$ctx" "$ngl"
  measure shelf-draft '{}'; stop_server
  start_llama_server "$target" "$threads" 1 "$ctx" "$ngl"; measure llama-plain '{}'; stop_server
  LLAMA_SERVER_ARGS="--spec-type ngram-simple" start_llama_server "$target" "$threads" 1 "$ctx" "$ngl"
  measure llama-ngram '{}'; stop_server
  LLAMA_SERVER_ARGS="--spec-type draft-simple --model-draft $draft --spec-draft-ngl $ngl" start_llama_server "$target" "$threads" 1 "$ctx" "$ngl"
  measure llama-draft '{}'; stop_server
  tps() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["tps"])' "$out/http-$1-$2.json"; }
  echo "| task | shelf plain t/s | shelf n-gram | shelf draft | llama-server plain t/s | llama-server ngram-simple | llama-server draft |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
  for task in rewrite code prose; do
    sp=$(tps shelf-plain $task); lp=$(tps llama-plain $task)
    python3 -c '
import sys
sp, sn, sd, lp, ln, ld = map(float, sys.argv[2:8])
print(f"| {sys.argv[1]} | {sp:.2f} | {sn:.2f} ({sn / sp:.2f}x) | {sd:.2f} ({sd / sp:.2f}x) | {lp:.2f} | {ln:.2f} ({ln / lp:.2f}x) | {ld:.2f} ({ld / lp:.2f}x) |")
' "$task" "$sp" "$(tps shelf-ngram $task)" "$(tps shelf-draft $task)" "$lp" "$(tps llama-ngram $task)" "$(tps llama-draft $task)"
  done
fi
rm -rf "$out"
exit $status
